"""Every file ddtoolbox writes, written at toy scale and checked against its schema in
ddtoolbox/schemas.py, which docs/formats.md is generated from: neither the doc nor the files can drift."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ddtoolbox import distill
from ddtoolbox import schemas as formats
from ddtoolbox.errors import Interrupted
from ddtoolbox.testing import toy_config

ROOT = Path(__file__).resolve().parents[1]

STOPPER = '''
import os, signal
from ddtoolbox import hookimpl

@hookimpl
def on_iteration(run, record):
    record["stopper_tag"] = "x"      # plugins' keys are allowed in a history entry
    if run.iteration == 1:
        os.kill(os.getpid(), signal.SIGTERM)     # the loop checkpoints after this iteration and stops
'''


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def toy_run(toy_buffer, tmp_path_factory):
    out = tmp_path_factory.mktemp("formats") / "run"
    distill(toy_config(toy_buffer, out, iterations=2))
    return out


@pytest.fixture(scope="module")
def stopped_run(toy_buffer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stopper")
    (folder / "formats_stopper.py").write_text(STOPPER)
    sys.path.insert(0, str(folder))
    try:
        with pytest.raises(Interrupted):
            distill(toy_config(toy_buffer, folder / "run", iterations=4, checkpoint_every=0),
                    plugins=["formats_stopper"])
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("formats_stopper", None)
    return folder / "run"


def test_the_doc_is_generated_from_the_schemas():
    assert (ROOT / "docs" / "formats.md").read_text() == formats.render(), \
        "docs/formats.md is stale: run python -m ddtoolbox.schemas > docs/formats.md"


def test_synthetic_pt_fits_its_schema(toy_run):
    obj = load(toy_run / "synthetic.pt")
    assert formats.check(obj, formats.SYNTHETIC) == []
    assert obj["meta"]["format_version"] == formats.SYNTHETIC.version


def test_metrics_json_fits_its_schema(toy_run):
    obj = json.loads((toy_run / "metrics.json").read_text())
    assert formats.check(obj, formats.METRICS) == []
    assert obj["format_version"] == formats.METRICS.version


def test_manifest_json_fits_its_schema(toy_run):
    obj = json.loads((toy_run / "manifest.json").read_text())
    assert formats.check(obj, formats.MANIFEST) == []
    assert set(obj["files"]) == {"synthetic.pt", "synthetic.png", "metrics.json"}


def test_buffer_json_and_experts_fit_their_schemas(toy_buffer):
    meta = json.loads((Path(toy_buffer) / "buffer.json").read_text())
    assert formats.check(meta, formats.BUFFER) == []
    for entry in meta["experts"]:
        expert = load(Path(toy_buffer) / entry["file"])
        assert formats.check(expert, formats.EXPERT) == []
        assert expert["trajectory"].shape == (meta["epochs"] + 1, meta["num_params"])


def test_checkpoint_pt_fits_its_schema(stopped_run):
    obj = load(stopped_run / "checkpoint.pt")
    assert formats.check(obj, formats.CHECKPOINT) == []
    assert obj["iteration"] == 1 and [h["iteration"] for h in obj["history"]] == [0, 1]
    assert "run" in obj["rng"]                 # run.generator is checkpointed


def test_bench_result_json_fits_its_schema(toy_dataset, tmp_path):
    from ddtoolbox.bench.runner import BenchRunner, cells_of
    from ddtoolbox.bench.spec import read_spec
    from ddtoolbox.cli import manager
    from ddtoolbox.cli.parsing import build_parser
    from ddtoolbox.cli.testing import run_cli

    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f'[bench]\ntitle = "t"\ndatasets = ["{toy_dataset}"]\nipcs = [1]\n[buffer]\nwidth = 8\n'
                         f'[eval]\neval_runs = 1\neval_epochs = 1\n[methods.random]\nrandom = true\n')
    spec = read_spec(spec_path)

    def execute(argv, log):
        r = run_cli(*argv, "--threads", "1")
        assert r.code == 0, r.err

    runner = BenchRunner(spec, tmp_path, ["--device", "cpu", "--quiet"], {"device": "cpu", "date": "2026-12-02"},
                         build_parser(manager()).commands, execute, progress=False)
    cell, = cells_of(spec)
    runner.run_cell(cell)
    obj = json.loads((cell.folder(tmp_path) / "result.json").read_text())
    assert formats.check(obj, formats.BENCH_RESULT) == []


# ---------------------------------------------------------------------------- the checker itself


def test_the_checker_names_what_is_wrong(toy_run):
    obj = load(toy_run / "synthetic.pt")
    obj["labels"] = obj["labels"].float()
    del obj["meta"]["ipc"]
    obj["meta"]["seed"] = "zero"
    problems = formats.check(obj, formats.SYNTHETIC)
    assert any("synthetic.pt.labels" in p and "tensor[int64](N)" in p for p in problems), problems
    assert any("lacks 'ipc'" in p for p in problems), problems
    assert any(".seed" in p for p in problems), problems
    manifest = json.loads((toy_run / "manifest.json").read_text())
    manifest["surprise"] = 1
    assert formats.check(manifest, formats.MANIFEST) == ["manifest.json: unexpected key 'surprise'"]


@pytest.mark.parametrize("value, kind, ok", [
    (1, "int", True), (True, "int", False), (1.5, "number", True), (None, "str | null", True),
    ([1, 2], "list[int]", True), ([1, "a"], "list[int]", False), ("a", "int | str", True),
    (torch.zeros(2, 3), "tensor[float](N, K)", True), (torch.zeros(2, 3), "tensor[float](N)", False),
    (torch.zeros(2, dtype=torch.int64), "tensor[float](N)", False), (torch.tensor(1.0), "tensor[float]()", True),
])
def test_kinds(value, kind, ok):
    assert formats.matches(value, kind) is ok
