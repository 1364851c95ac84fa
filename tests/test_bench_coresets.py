"""``ddtool bench`` with coreset rows and DD-Ranking's scores."""

import json

import pytest

from ddtoolbox.bench.report import render
from ddtoolbox.bench.runner import BenchRunner, cells_of
from ddtoolbox.bench.spec import check_spec, read_spec
from ddtoolbox.cli import manager
from ddtoolbox.cli.parsing import build_parser
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.errors import UsageError

SPEC = """
[bench]
title = "toy coresets"
datasets = ["{dataset}"]
ipcs = [1]
scores = true

[buffer]
num_experts = 1
train_epochs = 4
width = 8
batch_size = 32
lr = 0.05

[distill]
iterations = 1
syn_steps = 3
expert_epochs = 1
max_start_epoch = 3
lr_img = 10

[eval]
eval_runs = 1
eval_epochs = 2

[full]
train_epochs = 1

[methods.random]
random = true

[methods.herding]
coreset = "herding"

[methods.k-center]
coreset = "kcenter"
options = {{ kcenter_start = "random" }}

[methods.MTT]
matcher = "mtt"
"""


def _run(argv, log):
    result = run_cli(*argv, "--threads", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.out + result.err)
    if result.code != 0:
        raise UsageError(result.err.strip())
    _run.calls.append(argv)


def test_coreset_rows_and_scores(tmp_path, toy_dataset, monkeypatch):
    import ddtoolbox.bench.report as bench_report

    monkeypatch.setattr(bench_report, "plot", lambda *a: None)     # matplotlib is not what this test is about
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(dataset=toy_dataset))
    spec = read_spec(path)
    parsers = build_parser(manager()).commands
    check_spec(spec, parsers)
    _run.calls = []
    bench = BenchRunner(spec, tmp_path, ["--device", "cpu", "--quiet"], {"device": "cpu", "date": "2026-12-02"},
                        parsers, _run, progress=False)
    bench.check(manager())
    # a distilled cell's evaluation asks for the scores like a coreset's (not run here: distilling is slow)
    mtt = next(c for c in cells_of(spec) if c.method.name == "MTT")
    evaluate = bench.commands_of(mtt, mtt.folder(tmp_path))[1]
    assert evaluate[0] == "eval" and "--scores" in evaluate and evaluate[evaluate.index("--teacher") + 1].endswith(
        "teacher.pt")
    only = {"random", "herding", "k-center"}
    records = {r["method"]: r for r in bench.run(only, log=lambda *_: None)}
    assert set(records) == only
    selects = [c for c in _run.calls if c[0] == "select"]
    assert sorted(c[c.index("--method") + 1] for c in selects) == ["herding", "kcenter"]
    assert "--kcenter-start" in next(c for c in selects if "kcenter" in c)
    assert any("--save-model" in c for c in _run.calls if c[0] == "train-full")
    for name in ("herding", "k-center"):
        scores = records[name]["scores"]
        assert 0 < scores["LRS"]["mean"] < 1 and 0 < scores["ARS"]["mean"] < 1 and len(scores["LRS"]["rounds"]) == 1
        assert records[name]["settings"]["scores"] is True
    assert "scores" not in records["random"]
    cell = next(c for c in cells_of(spec) if c.method.name == "herding")
    meta = json.loads((cell.folder(tmp_path) / "run" / "metrics.json").read_text())["meta"]
    assert meta["matcher"] == "coreset-herding"
    written = render(spec, tmp_path)
    table = written["markdown"].read_text()
    assert "| herding |" in table and "## DD-Ranking scores" in table
    lrs = records["herding"]["scores"]["LRS"]["mean"]
    assert f"| herding | {lrs:.3f} / " in table
    rows = written["csv"].read_text().splitlines()
    assert rows[0].endswith(",lrs,ars") and any(r.startswith(f"{toy_dataset},1,herding,") for r in rows)
    # a second run has nothing to do
    _run.calls = []
    assert bench.run(only, log=lambda *_: None) == [] and [c[0] for c in _run.calls] == []


@pytest.mark.parametrize("change, message", [
    (('coreset = "herding"', 'coreset = "bogus"'), "coreset must be one of"),
    (('coreset = "herding"', 'coreset = "herding"\nmatcher = "mtt"'), "is a coreset"),
    (("[full]\ntrain_epochs = 1", ""), "needs a [full] section"),
    (('options = {{ kcenter_start = "random" }}', 'options = {{ kcenter_sart = "random" }}'), "kcenter_sart"),
])
def test_spec_mistakes_fail_before_anything_runs(tmp_path, toy_dataset, change, message):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.replace(*change).format(dataset=toy_dataset))
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        check_spec(read_spec(path), build_parser(manager()).commands)
