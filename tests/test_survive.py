"""Buffers and evaluations that survive: verified resume, mid-expert resume, resumable eval, locks."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

import ddtoolbox.evaluate as evaluate_mod
from ddtoolbox.buffer import Buffer
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.outputs import OutputLock
from ddtoolbox.testing import TOY_BUFFER, TOY_NAME

LAUNCH = ("import sys; from ddtoolbox.testing import register_toy_dataset; register_toy_dataset(); "
          "from ddtoolbox.cli import main; sys.exit(main(sys.argv[1:]))")


def buffer_argv(out, *extra):
    return ["buffer", "--dataset", TOY_NAME, "--out", str(out), *TOY_BUFFER, *extra]


def trajectories(folder):
    buf = Buffer.open(folder)
    return [buf.trajectory(i) for i in range(buf.num_experts)]


def test_buffer_resume_retrains_a_damaged_expert_identically(toy_dataset, toy_buffer, tmp_path):
    out = tmp_path / "b"
    assert run_cli(*buffer_argv(out)).code == 0
    before = trajectories(out)
    (out / "expert_001.pt").write_bytes(b"damaged")
    r = run_cli(*buffer_argv(out, "--resume"))
    assert r.code == 0, r.err
    assert "expert_001.pt is missing or damaged; training expert 1 again" in r.err
    after = trajectories(out)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert [e["file"] for e in Buffer.open(out).meta["experts"]] == ["expert_000.pt", "expert_001.pt"]


def test_buffer_killed_mid_expert_loses_at_most_an_epoch(toy_dataset, tmp_path):
    argv = buffer_argv(tmp_path / "k", "--num-experts", "1", "--epochs", "30", "--threads", "1")
    reference = subprocess.run([sys.executable, "-c", LAUNCH, *buffer_argv(tmp_path / "ref", "--num-experts", "1",
                                "--epochs", "30", "--threads", "1")], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = tmp_path / "k" / "expert_000.partial.pt"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(partial, weights_only=True)["snapshots"]
    assert 2 <= len(done) <= 30                                   # it stopped part-way through the expert
    r = run_cli(*argv, "--resume")
    assert r.code == 0, r.err
    assert torch.equal(trajectories(tmp_path / "k")[0], trajectories(tmp_path / "ref")[0])
    assert not partial.exists()


def test_an_expert_at_chance_is_reported(toy_dataset, tmp_path):
    r = run_cli(*buffer_argv(tmp_path, "--num-experts", "1", "--epochs", "1"), "--lr", "100")   # finite, at chance
    assert r.code == 0
    assert "expert 0 ended at chance accuracy" in r.err and "lower --lr" in r.err


def test_two_buffer_writers_cannot_share_a_folder(toy_dataset, tmp_path):
    with OutputLock(tmp_path):
        r = run_cli(*buffer_argv(tmp_path))
    assert r.code == 2 and "another ddtool process is writing" in r.err
    assert not (tmp_path / "buffer.json").exists()


def test_an_interrupted_eval_resumes_from_its_finished_networks(toy_dataset, tmp_path, monkeypatch):
    argv = ("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--runs", "3", "--epochs", "2", "--width", "8",
            "--device", "cpu", "--quiet")
    assert run_cli(*argv, "--json", tmp_path / "ref.json").code == 0
    real = evaluate_mod.train_on_set
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "train_on_set", interrupted_second)
    r = run_cli(*argv, "--json", tmp_path / "run.json")
    assert r.code == 130 and (tmp_path / "run.json.partial").exists() and not (tmp_path / "run.json").exists()
    calls.clear()
    monkeypatch.setattr(evaluate_mod, "train_on_set", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    r = run_cli(*argv, "--json", tmp_path / "run.json")
    assert r.code == 0, r.err
    assert len(calls) == 2                                       # network 0 was kept, 1 and 2 trained
    ref, got = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ref", "run"))
    assert ref["runs"] == got["runs"] and not (tmp_path / "run.json.partial").exists()


def test_eval_and_train_full_check_their_outputs_before_training(toy_dataset, tmp_path):
    (tmp_path / "dir.json").mkdir()
    r = run_cli("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--json", tmp_path / "dir.json",
                "--device", "cpu", "--quiet")
    assert r.code == 2 and "is a folder" in r.err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("train-full", "--dataset", toy_dataset, "--save-model", blocker / "teacher.pt", "--device", "cpu",
                "--quiet")
    assert r.code == 2 and "--save-model" in r.err
