"""``ddtool report`` and the report ``ddtool distill`` writes: what the page shows, bad input, no
matplotlib, comparisons, and the page opened in a real headless browser."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from ddtoolbox.report import write_report
from ddtoolbox.testing import TOY_DISTILL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402  (tests/browser.py: the headless-browser helpers)

RUN_SECTIONS = ["summary", "evaluation", "curves", "images", "dae", "settings"]
COMPARISON_SECTIONS = ["results", "curves", "images", "settings"]


def distill(ddtool, toy_dataset, toy_buffer, out, *extra, iterations=4):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out,
               "--iterations", str(iterations), *TOY_DISTILL, *extra)
    assert r.code == 0, r.err
    return r


@pytest.fixture(scope="module")
def runs(toy_dataset, toy_buffer, tmp_path_factory):
    """Two finished toy runs side by side (one with DAE + CPD and in-run evaluations), with their reports."""
    from ddtoolbox.cli.testing import run_cli

    root = tmp_path_factory.mktemp("runs")
    evals = ("--eval-every", "2", "--eval-runs", "2", "--eval-epochs", "3")
    distill(run_cli, toy_dataset, toy_buffer, root / "edf", *evals, "--plugin", "dae", "--dae-every", "2",
            "--plugin", "cpd", "--cpd-alpha", "0.2")
    distill(run_cli, toy_dataset, toy_buffer, root / "plain", "--lr-img", "100")
    return root


def sections(page: str) -> list[str]:
    return re.findall(r"<section id='([^']+)'", page)


def embedded_pngs(page: str) -> int:
    return page.count('src="data:image/png;base64,')


def one_line_error(r, *needles):
    assert r.code == 2, (r.out, r.err)
    lines = [l for l in r.err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddtool: error:"), r.err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------------------- one run


def test_distill_writes_a_self_contained_report(runs):
    page = (runs / "edf" / "report.html").read_text()
    metrics = json.loads((runs / "edf" / "metrics.json").read_text())
    assert sections(page) == RUN_SECTIONS
    # 5 plots, 5 snapshots (initial, after 1..3, final), DAE's maps of iterations 0 and 2 and the final ones
    assert embedded_pngs(page) == 5 + 5 + 3
    assert not re.search(r"""(src|href)=["'](https?:|//)""", page), "the page must not fetch anything"
    assert "<script" not in page
    last_eval = [h for h in metrics["history"] if "eval_mean" in h][-1]
    assert f"{last_eval['eval_mean'] * 100:.2f} ± {last_eval['eval_std'] * 100:.2f}%" in page
    assert "--dae-beta" in page and "--cpd-alpha" in page        # the plugins' options
    assert metrics["environment"]["torch"] in page               # provenance
    assert "after iteration 4" in page                           # where the final evaluation comes from


def test_snapshots_change_no_result(toy_dataset, toy_buffer, ddtool, tmp_path):
    distill(ddtool, toy_dataset, toy_buffer, tmp_path / "a", "--snapshot-every", "1", "--no-report", iterations=3)
    distill(ddtool, toy_dataset, toy_buffer, tmp_path / "b", "--snapshot-every", "0", "--no-report", iterations=3)
    assert sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir()) == [
        "synthetic_it000000.png", "synthetic_it000001.png", "synthetic_it000002.png"]   # the end: synthetic.png
    assert not (tmp_path / "b" / "snapshots").exists() and not (tmp_path / "a" / "report.html").exists()
    a = torch.load(tmp_path / "a" / "synthetic.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["lr"], b["lr"])


def test_run_without_evaluation_says_so(runs, tmp_path):
    page = write_report([runs / "plain"], tmp_path / "plain.html").read_text()
    assert "This run has no evaluation" in page and "ddtool eval --synthetic" in page
    assert "dae" not in sections(page)           # no DAE, no DAE section
    assert "Not logged by this run: evaluation accuracy, discriminative area" in page


def test_run_of_zero_iterations(toy_dataset, toy_buffer, ddtool, tmp_path):
    """The initial images only (the EDF ablation's init row): nothing to plot, still a page."""
    distill(ddtool, toy_dataset, toy_buffer, tmp_path, iterations=0)
    page = (tmp_path / "report.html").read_text()
    assert sections(page) == ["summary", "evaluation", "curves", "images", "settings"]
    assert "Nothing to plot" in page and embedded_pngs(page) == 1


def test_eval_json_in_the_run_folder_is_the_final_evaluation(runs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("metrics.json", "synthetic.png"):
        (run / f).write_bytes((runs / "plain" / f).read_bytes())
    (run / "eval.json").write_text(json.dumps({
        "what": "x", "model": "ConvNet", "mean": 0.8125, "std": 0.0125, "runs": [0.8, 0.825], "protocol": "standard",
        "epochs": 300, "full_accuracy": 0.9, "recovery": 0.8125 / 0.9, "results": []}))
    page = write_report([run]).read_text()
    assert "81.25 ± 1.25%" in page and "80.00%, 82.50%" in page
    assert "90.3% of the full-data accuracy 90.00%" in page
    assert "eval.json" in page and "no evaluation" not in page


def test_old_benchmark_run_with_eval_json_beside_it(tmp_path):
    """A run written before reports existed (settings under 'args', no environment, no snapshots), evaluated by
    'ddtool bench' into an eval.json beside the run folder."""
    cell = ROOT / "benchmarks/fmnist-cpu/cells/fashion-mnist/ipc1/datm_cpd_dae"
    page = write_report([cell / "run"], tmp_path / "r.html").read_text()
    result = json.loads((cell / "eval.json").read_text())
    assert f"{result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%" in page
    assert sections(page) == RUN_SECTIONS
    assert "not recorded" in page              # the environment of an old run
    assert "Only the final images" in page


# ---------------------------------------------------------------------------- several runs


def test_comparison_of_two_runs(runs, ddtool, tmp_path):
    r = ddtool("report", runs / "edf", runs / "plain")
    assert r.code == 0, r.err
    out = runs / "comparison.html"
    assert f"report: {out}" in r.out
    page = out.read_text()
    assert sections(page) == COMPARISON_SECTIONS
    table = page.split("<section id='results'>")[1].split("</section>")[0]
    assert "<b>edf</b>" in table and "<b>plain</b>" in table and "not evaluated" in table
    assert "href='edf/report.html'" in table     # each run's own page, relative
    differ = page.split("What differs")[1].split("</table>")[0]
    assert "--lr-img" in differ and "--seed" not in differ
    r = ddtool("report", runs / "edf", runs / "plain", "--out", tmp_path / "c.html")
    assert r.code == 0 and (tmp_path / "c.html").is_file()


# ---------------------------------------------------------------------------- no matplotlib


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError


def test_report_without_matplotlib_says_so(runs, no_matplotlib, tmp_path):
    page = write_report([runs / "edf"], tmp_path / "r.html").read_text()
    assert "pip install &#x27;ddtoolbox[plots]&#x27;" in page
    assert sections(page) == RUN_SECTIONS
    assert embedded_pngs(page) == 5 + 3      # the pictures, no plots


def test_distill_without_matplotlib_skips_the_report_with_one_warning(toy_dataset, toy_buffer, ddtool,
                                                                     no_matplotlib, tmp_path):
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, iterations=1)
    warnings = [l for l in r.err.splitlines() if "warning" in l]
    assert len(warnings) == 1 and "pip install 'ddtoolbox[plots]'" in warnings[0], r.err
    assert (tmp_path / "synthetic.pt").is_file() and not (tmp_path / "report.html").exists()


def test_a_failing_report_does_not_fail_the_finished_run(toy_dataset, toy_buffer, ddtool, monkeypatch, tmp_path):
    import ddtoolbox.report

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the report")

    monkeypatch.setattr(ddtoolbox.report, "write_report", broken)
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, iterations=1)
    warnings = [l for l in r.err.splitlines() if "warning" in l]
    assert len(warnings) == 1 and "a bug in the report" in warnings[0] and "ddtool report" in warnings[0]
    assert (tmp_path / "synthetic.pt").is_file()


# ---------------------------------------------------------------------------- bad input


def test_bad_run_folders(ddtool, runs, tmp_path):
    one_line_error(ddtool("report", tmp_path / "nowhere"), "nowhere", "does not exist", "--out folder")
    one_line_error(ddtool("report", tmp_path), "no metrics.json", "finished run")
    one_line_error(ddtool("report", runs), "holds runs in subfolders", "ddtool report", "edf")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    text = (runs / "edf" / "metrics.json").read_text()
    (truncated / "metrics.json").write_text(text[: len(text) // 2])
    one_line_error(ddtool("report", truncated), "truncated or not valid JSON", "re-run")
    (truncated / "metrics.json").write_text("[1, 2]")
    one_line_error(ddtool("report", truncated), "not a ddtoolbox metrics file")
    one_line_error(ddtool("report", runs / "edf", truncated), "not a ddtoolbox metrics file")
    assert not (tmp_path / "report.html").exists()


# ---------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def chromium():
    why = browser.missing()
    if why:
        pytest.skip(f"no headless browser: {why}")
    driver = browser.start()
    yield driver
    driver.quit()


@pytest.mark.parametrize("page, expected", [("edf/report.html", RUN_SECTIONS),
                                            ("comparison.html", COMPARISON_SECTIONS)])
def test_report_renders_in_a_browser(chromium, runs, page, expected):
    if page == "comparison.html":
        write_report([runs / "edf", runs / "plain"])
    html = (runs / page).read_text()
    state = browser.load(chromium, runs / page)
    assert [s["id"] for s in state["sections"]] == expected
    assert all(s["height"] > 40 and (s["text"] > 40 or s["images"]) for s in state["sections"]), state["sections"]
    assert len(state["images"]) == embedded_pngs(html) > 0
    broken = [i["alt"] for i in state["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, broken
    assert not state["external"], state["external"]
    assert browser.console_errors(chromium) == []


def test_the_browser_check_catches_a_broken_image(chromium, tmp_path):
    """The check above could fail: a page with a corrupt embedded PNG and a script error is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><section id='s'>x</section><img alt='bad' src='data:image/png;base64,iVBORw0K'>"
                    "<script>undefined_function()</script></body></html>")
    state = browser.load(chromium, page)
    assert [i["width"] for i in state["images"]] == [0]
    assert any("undefined_function" in e for e in browser.console_errors(chromium))
