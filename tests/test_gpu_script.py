"""benchmarks/gpu/run.sh: valid bash, its usage, its time guard, and (slow) a dry run of every step on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def _run(tmp_path, *args, **env):
    full = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work"), **env}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=900)


def test_the_script_is_valid_bash_and_names_no_package_host():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    text = SCRIPT.read_text()
    assert "://" not in text and "pypi" not in text.lower()
    assert "--no-index" in text                     # installs only what was brought along


def test_without_a_results_folder_it_prints_its_usage(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 2 and "RESULTS_DIR" in r.stderr and "DRY=1" in r.stderr


def test_steps_that_do_not_fit_the_budget_are_skipped_and_reported(tmp_path):
    r = _run(tmp_path, tmp_path / "out", DRY="1", BUDGET_S="0")
    assert r.returncode == 1, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["speed-fmnist-ipc10", "speed-imagenet-ipc1",
                                                     "speed-imagenet-ipc10", "buffer", "distill-dc"]
    assert {s["status"] for s in summary["steps"]} == {"skipped"}
    assert [p["accuracy_mean"] for p in summary["protocol"]] == [None, None]
    assert [c["accuracy_mean"] for c in summary["compiled_evaluation"]] == [None, None]
    assert summary["gradient_matching"]["accuracy_mean"] is None
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "Dry run" in md and "buffer: skipped" in md and "| MTT | - |" in md


@pytest.mark.slow
def test_a_dry_run_goes_through_every_step(tmp_path):
    r = _run(tmp_path, tmp_path / "out", DRY="1")
    assert r.returncode == 0, r.stderr + (tmp_path / "out" / "log.txt").read_text()[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "datm_cpd_dae-eval.json", "datm_cpd_dae-metrics.json", "log.txt", "mtt-eval.json", "mtt-metrics.json",
        "speed.jsonl", "summary.json", "summary.md"])           # at most 8 files come back from a device run
    summary = json.loads((out / "summary.json").read_text())
    assert all(s["status"] == "ok" for s in summary["steps"]) and len(summary["steps"]) == 11
    assert [s["step"] for s in summary["steps"][-3:]] == ["eval-mtt-compiled", "distill-dc", "eval-dc"]
    dc = summary["gradient_matching"]
    assert 0 <= dc["accuracy_mean"] <= 1 and len(dc["accuracies"]) == 2 and dc["seconds_per_iteration"] > 0
    eager, comp = summary["compiled_evaluation"]
    assert (eager["training"], comp["training"]) == ("eager", "compiled")
    assert len(comp["accuracies"]) == 2 and comp["seconds"] > 0
    rows = [(r["channels"], r["size"], r["model"], r["ipc"], r["mode"]) for r in summary["speed"]]
    assert rows == [(1, 28, "ConvNet", 10, "full"), (1, 28, "ConvNet", 10, "checkpointed"),
                    (3, 128, "ConvNetD5", 1, "checkpointed"), (3, 128, "ConvNetD5", 10, "checkpointed")]
    assert [p["method"] for p in summary["protocol"]] == ["MTT", "DATM+CPD+DAE"]
    assert all(0 <= p["accuracy_mean"] <= 1 and len(p["accuracies"]) == 2 for p in summary["protocol"])
    metrics = json.loads((out / "datm_cpd_dae-metrics.json").read_text())
    assert metrics["meta"]["matcher"] == "datm" and set(metrics["meta"]["plugins"]) >= {"cpd", "dae"}
