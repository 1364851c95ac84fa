"""Runs that survive: kill -9 and resume bit-identically, signals, divergence, locked and checked outputs."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.outputs import OutputLock
from ddtoolbox.testing import TOY_DISTILL, TOY_NAME

#: runs ddtool in a fresh process that knows the toy dataset, single-threaded like the tests
LAUNCH = ("import sys; from ddtoolbox.testing import register_toy_dataset; register_toy_dataset(); "
          "from ddtoolbox.cli import main; sys.exit(main(sys.argv[1:]))")
EDF = ("--matcher", "datm", "--plugin", "cpd", "--plugin", "dae", "--cpd-alpha", "0.25", "--dae-every", "3")
FTD = ("--matcher", "ftd", "--ema-decay", "0.9")


def distill_argv(buffer, out, *extra, iterations=12):
    return ["distill", "--dataset", TOY_NAME, "--buffer", buffer, "--out", str(out), *TOY_DISTILL,
            "--iterations", str(iterations), "--threads", "1", "--checkpoint-every", "2", *extra]


def start(argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def checkpointed_iteration(out) -> int:
    """The iteration of the newest complete checkpoint, or -1 (the file is replaced atomically)."""
    try:
        return int(torch.load(Path(out) / "checkpoint.pt", weights_only=True)["iteration"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


def wait_until(proc, out, iteration, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if checkpointed_iteration(out) >= iteration:
            return True
        time.sleep(0.02)
    return False


def stopped_early(buffer, out, *extra):
    """A 40-iteration run stopped by SIGTERM once it has checkpointed, so it can be resumed."""
    proc = start(distill_argv(buffer, out, *extra, iterations=40))
    assert wait_until(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    proc.wait()


def images_of(out):
    return torch.load(Path(out) / "synthetic.pt", weights_only=True)


def kill_and_resume(buffer, out, extra, kills, rng):
    """Run to the end, kill -9'd after each of ``kills`` checkpointed iterations and resumed each time."""
    proc = start(distill_argv(buffer, out, *extra))
    for target in kills:
        assert wait_until(proc, out, target), proc.communicate()[1][-2000:]
        time.sleep(rng.uniform(0, 0.15))                  # somewhere inside a later iteration
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (Path(out) / "synthetic.pt").exists()
        proc = start(distill_argv(buffer, out, *extra) + ["--resume"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return images_of(out)


@pytest.mark.parametrize("extra", [EDF, FTD], ids=["datm+cpd+dae", "ftd"])
def test_kill_9_and_resume_is_bit_identical(toy_buffer, tmp_path, extra):
    reference = start(distill_argv(toy_buffer, tmp_path / "ref", *extra))
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    rng = random.Random(len(extra))
    resumed = kill_and_resume(toy_buffer, tmp_path / "killed", extra, sorted(rng.sample(range(1, 10), 2)), rng)
    ref = images_of(tmp_path / "ref")
    for key in ("images", "labels", "lr", "targets", "ema_images"):
        if key in ref:
            assert torch.equal(ref[key], resumed[key]), key
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()       # the finished run leaves none behind
    ref_hist = json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]
    got_hist = json.loads((tmp_path / "killed" / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in ref_hist] == [h["loss"] for h in got_hist]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [EDF, FTD], ids=["datm+cpd+dae", "ftd"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_random_kills_and_resumes(toy_buffer, tmp_path, extra, seed):
    reference = start(distill_argv(toy_buffer, tmp_path / "ref", *extra, "--seed", str(seed)))
    assert reference.wait(timeout=300) == 0
    rng = random.Random(seed)
    resumed = kill_and_resume(toy_buffer, tmp_path / "killed", (*extra, "--seed", str(seed)),
                              sorted(rng.sample(range(0, 11), 4)), rng)
    assert torch.equal(images_of(tmp_path / "ref")["images"], resumed["images"])


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_iteration_checkpoints_and_says_how_to_resume(toy_buffer, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = start(distill_argv(toy_buffer, out, *EDF, iterations=40))
    assert wait_until(proc, out, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().count("\n") == 0 and f"ddtool distill --resume --out {out}" in err
    assert checkpointed_iteration(out) >= 1 and not (out / "synthetic.pt").exists()
    r = run_cli(*distill_argv(toy_buffer, out, *EDF, iterations=40), "--resume", "--quiet")
    assert r.code == 0, r.err


# ---------------------------------------------------------------------------- resuming


def test_resume_takes_the_checkpoints_settings_and_refuses_contradictions(toy_dataset, toy_buffer, tmp_path):
    out = tmp_path / "run"
    stopped_early(toy_buffer, out, *EDF)
    r = run_cli("distill", "--resume", "--out", out, "--lr-img", "99")
    assert r.code == 2 and "--lr-img 99.0 contradicts the run" in r.err
    r = run_cli("distill", "--resume", "--out", out, "--cpd-alpha", "0.5")
    assert r.code == 2 and "--cpd-alpha 0.5 contradicts" in r.err
    r = run_cli("distill", "--resume", "--out", out, "--plugin", "cpd")
    assert r.code == 2 and "resume it without --plugin" in r.err
    # the same values, and settings about how it runs, are fine; everything else comes from the checkpoint
    r = run_cli("distill", "--resume", "--out", out, "--lr-img", "10", "--quiet", "--checkpoint-every", "5")
    assert r.code == 0, r.err
    meta = images_of(out)["meta"]
    assert meta["matcher"] == "datm" and meta["plugins"] == ["cpd", "dae", "datm"] and meta["iterations"] == 40


def test_resume_without_a_checkpoint_and_fresh_runs_over_old_ones(toy_dataset, toy_buffer, tmp_path):
    r = run_cli("distill", "--resume", "--out", tmp_path / "nothing")
    assert r.code == 2 and "no checkpoint" in r.err
    argv = distill_argv(toy_buffer, tmp_path / "a", iterations=2)
    assert run_cli(*argv).code == 0
    r = run_cli(*argv)
    assert r.code == 2 and "already holds a distilled set" in r.err and "--overwrite" in r.err
    assert run_cli(*argv, "--overwrite").code == 0
    (tmp_path / "a" / "checkpoint.pt").write_bytes(b"unfinished")
    (tmp_path / "a" / "synthetic.pt").unlink()
    r = run_cli(*argv)
    assert r.code == 2 and "unfinished run" in r.err and "--resume" in r.err
    r = run_cli(*argv, "--resume")
    assert r.code == 2 and "checkpoint" in r.err and r.err.count("\n") == 1


# ---------------------------------------------------------------------------- divergence


def test_learning_rates_beyond_float32_are_refused(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=1), "--lr-img", "1e40")
    assert r.code == 2 and r.err.count("\n") == 1 and "--lr-img" in r.err and "float32" in r.err


def test_divergence_stops_with_exit_3_and_writes_no_result(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=6), "--lr-img", "1e12")
    assert r.code == 3, r.err
    assert r.err.count("\n") == 1 and "diverged at iteration" in r.err and "--on-divergence skip" in r.err
    assert not (tmp_path / "synthetic.pt").exists() and not (tmp_path / "manifest.json").exists()


def test_divergence_skip_drops_the_updates_and_counts_them(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=6), "--lr-img", "1e12", "--on-divergence", "skip")
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["divergent_updates_skipped"] == 6 and all(h["skipped"] for h in metrics["history"])
    images = images_of(tmp_path)["images"]
    assert torch.isfinite(images).all() and images.abs().max() < 10


def test_a_learned_lr_stuck_at_its_floor_warns_once(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=55), "--lr-teacher", "1e-8", "--lr-lr", "0")
    assert r.code == 0, r.err
    assert r.err.count("learned lr has been at its floor") == 1


def test_eval_rejects_non_finite_soft_labels(toy_dataset, toy_buffer, tmp_path):
    assert run_cli(*distill_argv(toy_buffer, tmp_path, iterations=1), "--matcher", "datm").code == 0
    record = images_of(tmp_path)
    record["targets"][0, 0] = float("nan")
    torch.save(record, tmp_path / "bad.pt")
    record["meta"]["published"] = False
    torch.save(record, tmp_path / "bad.pt")
    r = run_cli("eval", "--synthetic", tmp_path / "bad.pt", "--runs", "1", "--epochs", "1", "--device", "cpu")
    assert r.code == 2 and "labels" in r.err and "finite" in r.err


# ---------------------------------------------------------------------------- outputs


def test_a_second_writer_is_refused_at_once(toy_dataset, toy_buffer, tmp_path):
    with OutputLock(tmp_path):
        started = time.time()
        r = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=2))
        assert r.code == 2 and "another ddtool process is writing" in r.err and str(tmp_path) in r.err
        assert time.time() - started < 30
    assert run_cli(*distill_argv(toy_buffer, tmp_path, iterations=2)).code == 0   # free again


def test_a_lock_of_a_killed_process_does_not_block(toy_buffer, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ddtoolbox.outputs import OutputLock; "
                               f"lock = OutputLock({str(tmp_path)!r}); lock.__enter__(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    held = run_cli(*distill_argv(toy_buffer, tmp_path, iterations=1))
    assert held.code == 2 and "another ddtool process" in held.err      # the lock was really held
    holder.kill()
    holder.wait()
    assert (tmp_path / ".ddtool.lock").exists()
    assert run_cli(*distill_argv(toy_buffer, tmp_path, iterations=1)).code == 0


def test_unusable_output_paths_fail_before_any_compute(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli(*distill_argv(toy_buffer, blocker, iterations=1))
    assert r.code == 2 and "is a file, not a folder" in r.err
    r = run_cli(*distill_argv(toy_buffer, blocker / "sub", iterations=1))
    assert r.code == 2 and "cannot write" in r.err
    import shutil

    from ddtoolbox import outputs

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    r = run_cli(*distill_argv(toy_buffer, tmp_path / "full", iterations=1))
    assert r.code == 2 and "MiB free" in r.err


def test_a_reader_never_takes_a_mixed_set(toy_dataset, toy_buffer, tmp_path):
    assert run_cli(*distill_argv(toy_buffer, tmp_path, iterations=1)).code == 0
    evaluate = ("eval", "--synthetic", tmp_path / "synthetic.pt", "--runs", "1", "--epochs", "1", "--device", "cpu",
                "--width", "8", "--quiet")
    assert run_cli(*evaluate).code == 0
    record = images_of(tmp_path)
    record["images"] = record["images"] * 0.5                      # another run's file, without its manifest
    torch.save(record, tmp_path / "synthetic.pt")
    r = run_cli(*evaluate)
    assert r.code == 2 and "not the file its run published" in r.err
    (tmp_path / "manifest.json").unlink()
    r = run_cli(*evaluate)
    assert r.code == 2 and "not part of a complete result" in r.err


def test_a_run_begun_on_another_device_goes_on_here_with_a_warning(toy_dataset, toy_buffer, tmp_path):
    """A checkpoint written on a GPU (as its device and --device say) finishes on the CPU when asked."""
    out = tmp_path / "run"
    stopped_early(toy_buffer, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["device"] == "cpu"
    r = run_cli("distill", "--resume", "--out", out, "--quiet")
    assert "began on" not in r.err                       # same device: no warning (and it finishes)
    assert r.code == 0, r.err
    # the same interruption, as if it had run on a GPU
    out = tmp_path / "gpu-run"
    stopped_early(toy_buffer, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["device"], ckpt["config"]["device"] = "cuda", "cuda"
    torch.save(ckpt, out / "checkpoint.pt")
    if not torch.cuda.is_available():
        r = run_cli("distill", "--resume", "--out", out, "--quiet")
        assert r.code == 2 and "use --device cpu" in r.err
    r = run_cli("distill", "--resume", "--out", out, "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    assert "began on cuda and now runs on cpu" in r.err
    assert images_of(out)["meta"]["iterations"] == 40
