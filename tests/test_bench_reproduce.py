"""Reproduction specs: published values in a spec, ``bench --compare``, per-IPC method options, and the
shipped specs of benchmarks/reproduce/ (written from the presets, dry-run here as CI does)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddtoolbox.bench.report import comparison
from ddtoolbox.bench.runner import cells_of
from ddtoolbox.bench.spec import read_spec
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = sorted((ROOT / "benchmarks" / "reproduce").glob("**/spec.toml"))

SPEC = """
[bench]
title = "toy reproduction"
datasets = ["fashion-mnist"]
ipcs = [1, 10]
source = "A paper, Table 9"

[buffer]
width = 8

[distill]
iterations = 2

[methods.random]
random = true
paper = { fashion-mnist = { 1 = [50.0, 2.0] } }

[methods.MTT]
matcher = "mtt"
ipc = { 10 = { lr_img = 99 } }
paper = { fashion-mnist = { 1 = [70.0, 1.0], 10 = [80.0] } }
gpu_hours = { fashion-mnist = { 1 = 0.5 } }
"""


def _spec(tmp_path, text=SPEC):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return read_spec(path)


def _finish(spec, out, method, ipc, runs):
    """Write a cell's result.json as the runner does when a cell finishes."""
    cell = next(c for c in cells_of(spec) if c.method.name == method and c.ipc == ipc)
    folder = cell.folder(out)
    folder.mkdir(parents=True)
    mean = sum(runs) / len(runs)
    std = (sum((r - mean) ** 2 for r in runs) / len(runs)) ** 0.5
    (folder / "result.json").write_text(json.dumps({"mean": mean, "std": std, "runs": runs}))


def test_paper_values_and_per_ipc_options_are_read(tmp_path):
    spec = _spec(tmp_path)
    mtt = spec.methods[1]
    assert mtt.paper == {("fashion-mnist", 1): (70.0, 1.0), ("fashion-mnist", 10): (80.0,)}
    assert mtt.gpu_hours == {("fashion-mnist", 1): 0.5} and spec.source == "A paper, Table 9"
    assert spec.distill_options(10, mtt)["lr_img"] == 99 and "lr_img" not in spec.distill_options(1, mtt)


PAPER = 'paper = { fashion-mnist = { 1 = [70.0, 1.0], 10 = [80.0] } }'


@pytest.mark.parametrize("old, bad, expected", [
    (PAPER, 'paper = { fashion-mnist = { 1 = [70.0, 1.0, 3.0] } }', "[mean, spread]"),
    (PAPER, 'paper = { cifar10 = { 1 = [70.0, 1.0] } }', "name a [bench] dataset"),
    (PAPER, 'paper = { fashion-mnist = { one = [70.0] } }', "must be an IPC"),
    ('gpu_hours = { fashion-mnist = { 1 = 0.5 } }', 'gpu_hours = { fashion-mnist = { 1 = -2 } }', "a positive number"),
    ('ipc = { 10 = { lr_img = 99 } }', 'ipc = { ten = { lr_img = 1 } }', "ipc must be a table of IPC"),
])
def test_bad_paper_values_are_refused_in_one_line(tmp_path, old, bad, expected):
    assert old in SPEC
    with pytest.raises(UsageError, match=expected.replace("[", r"\[")):
        _spec(tmp_path, SPEC.replace(old, bad))


def test_a_per_ipc_option_is_checked_at_its_ipc(tmp_path):
    text = SPEC.replace("ipc = { 10 = { lr_img = 99 } }", "ipc = { 10 = { lr_imgg = 99 } }")
    r = run_cli("bench", _spec(tmp_path, text).path, "--dry-run", "--device", "cpu")
    assert r.code == 2 and "lr_imgg" in r.err and "IPC 10" in r.err, r.err


def test_compare_puts_each_cell_beside_the_paper(tmp_path):
    spec = _spec(tmp_path)
    out = spec.path.parent
    _finish(spec, out, "MTT", 1, [0.705, 0.715])      # 71.0: 1.0 above 70.0, within its ± 1.0
    _finish(spec, out, "random", 1, [0.40, 0.44])     # 42.0: 8 below 50.0, 6 points past its ± 2.0
    _finish(spec, out, "MTT", 10, [0.79])             # the paper gives no spread here
    text = comparison(spec, out)
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    assert "71.00 ± 0.50" in lines["fashion-mnist IPC 1 MTT"] and "within the published spread" in lines["fashion-mnist IPC 1 MTT"]
    assert "+1.00" in lines["fashion-mnist IPC 1 MTT"] and lines["fashion-mnist IPC 1 MTT"].rstrip().endswith("0.5")
    assert "below it by 6.00 points" in lines["fashion-mnist IPC 1 random"]
    assert "the paper gives no spread" in lines["fashion-mnist IPC 10 MTT"]
    assert "A paper, Table 9" in text
    r = run_cli("bench", spec.path, "--compare", "--device", "cpu")
    assert r.code == 0 and r.out == text
    assert not (out / "table.md").exists()               # --compare runs and renders nothing


def test_compare_shows_the_best_evaluation_along_a_run_beside_the_final_set(tmp_path):
    """MTT and DATM reported their best iteration, picked on the test set; the comparison shows that
    figure beside ours (the final set), and the verdict stays with the final set."""
    spec = _spec(tmp_path)
    out = spec.path.parent
    _finish(spec, out, "MTT", 1, [0.66, 0.68])        # final set: 67.0, 3 below 70.0 ± 1.0
    _finish(spec, out, "random", 1, [0.50, 0.50])
    cell = next(c for c in cells_of(spec) if c.method.name == "MTT" and c.ipc == 1)
    (cell.folder(out) / "run").mkdir()
    history = [{"iteration": 0, "loss": 1.0}, {"iteration": 9, "eval_runs": [0.70, 0.72]},
               {"iteration": 19, "eval_runs": [0.66, 0.68]}]
    (cell.folder(out) / "run" / "metrics.json").write_text(json.dumps({"history": history}))
    text = comparison(spec, out)
    header, *rows = text.splitlines()
    assert "best along the run (%)" in header
    mtt = next(line for line in rows if line.startswith("fashion-mnist IPC 1 MTT "))
    assert "71.00 ± 1.00 (it. 10)" in mtt                 # the higher of the two evaluations, not the last
    assert "-3.00" in mtt and "below it by 2.00 points" in mtt
    random = next(line for line in rows if line.startswith("fashion-mnist IPC 1 random "))
    assert re.split(r"  +", random)[2] == "-"          # no run along which to pick
    assert "chosen on the test set" in text
    (cell.folder(out) / "run" / "metrics.json").unlink()
    assert "best along the run" not in comparison(spec, out)   # no evaluations along any run: no column


def test_compare_lists_published_cells_not_run_yet(tmp_path):
    spec = _spec(tmp_path)
    text = comparison(spec, spec.path.parent)
    row = next(line for line in text.splitlines() if line.startswith("fashion-mnist IPC 10 MTT "))
    assert row.split()[4:7] == ["not", "run", "yet"] and "80.0" in row
    assert "fashion-mnist IPC 10 random" not in text      # neither published nor run


def test_reproduction_specs_are_written_from_the_presets():
    """The specs agree with the generator, which reads the presets: the two cannot drift apart."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce" / "make_specs.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(REPRODUCE) == 11


@pytest.mark.parametrize("spec", REPRODUCE, ids=lambda p: str(p.parent.relative_to(ROOT / "benchmarks")))
def test_every_reproduction_spec_dry_runs_and_compares(spec, tmp_path):
    parsed = read_spec(spec)
    r = run_cli("bench", spec, "--dry-run", "--device", "cpu", "--out", tmp_path)
    assert r.code == 0, r.err
    assert len(cells_of(parsed)) == r.out.count("\n  ")
    r = run_cli("bench", spec, "--compare", "--device", "cpu", "--out", tmp_path)
    assert r.code == 0, r.err
    assert sum(len(m.paper) for m in parsed.methods) == r.out.count("not run yet") > 0


def test_a_long_spec_title_is_wrapped_to_the_figure_not_cut_off(tmp_path):
    from ddtoolbox.bench.report import _pyplot, _write_png

    plt = _pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    title = "CIFAR-10 IPC 1, MTT's and DATM's published settings on a CPU budget (JPEG copy, 2 experts, 300 iterations)"
    fig, ax = plt.subplots(1, 1, figsize=(5.5, 4))
    ax.plot([1, 2], [3, 4])
    _write_png(plt, fig, title, tmp_path / "t.png")
    shown = fig._suptitle.get_text()
    assert shown.replace("\n", " ") == title and shown.count("\n") >= 1
    # every line fits: its rendered width is within the figure's
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    for line in shown.splitlines():
        assert fig.text(0, 0, line, fontsize=10).get_window_extent(renderer).width <= fig.bbox.width
