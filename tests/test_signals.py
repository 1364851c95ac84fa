"""SIGINT and SIGTERM end every long command alike: one line, exit 130 / 143, what was kept and how
to go on (issue 23). ``distill``'s own handling is tested in test_resume.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ddtoolbox.testing import TOY_NAME

LAUNCH = ("import sys; from ddtoolbox.testing import register_toy_dataset; register_toy_dataset(); "
          "from ddtoolbox.cli import main; sys.exit(main(sys.argv[1:]))")
TINY = ("--width", "8", "--device", "cpu", "--quiet", "--threads", "1")


def catches(pid: int, sig) -> bool:
    """Whether process ``pid`` has installed a handler for ``sig`` (Linux: the SigCgt mask); True
    where that cannot be read. Before ddtoolbox installs its own, SIGTERM kills a process outright,
    and on a loaded machine the interpreter's start-up alone can outlast a fixed delay."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    except (OSError, StopIteration, ValueError):
        return True
    return bool(mask >> (int(sig) - 1) & 1)


def stopped(argv, ready, sig=signal.SIGTERM, env=None, launch=("-c", LAUNCH)):
    """Start ``ddtool argv``, send ``sig`` once ``ready()`` holds and the process handles ``sig``,
    return (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, *launch, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    deadline = time.time() + 120
    while not (ready() and catches(proc.pid, sig)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running 90 s after {sig.name}: {proc.communicate()}") from None
    return proc.returncode, err


def one_line(err, *needles):
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith(("experts", "eval"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_buffer_stops_on_sigterm_in_one_line_and_resumes(tmp_path):
    argv = ["buffer", "--dataset", TOY_NAME, "--out", tmp_path, "--num-experts", "1", "--epochs", "400",
            "--batch-size", "32", *TINY]
    code, err = stopped(argv, lambda: (tmp_path / "expert_000.partial.pt").exists())
    assert code == 143
    one_line(err, "SIGTERM: buffer stopped", f"kept in {tmp_path}", "--resume")
    assert (tmp_path / "expert_000.partial.pt").exists()


def test_eval_stops_on_sigint_keeping_its_finished_networks(tmp_path):
    out = tmp_path / "e.json"
    argv = ["eval", "--random-ipc", "2", "--dataset", TOY_NAME, "--runs", "200", "--epochs", "5", "--json", out, *TINY]
    code, err = stopped(argv, lambda: (tmp_path / "e.json.partial").exists(), signal.SIGINT)
    assert code == 130
    one_line(err, "SIGINT: evaluation stopped", "finished network(s) kept in", "run the same command again")
    assert not out.exists() and json.loads((tmp_path / "e.json.partial").read_text())["done"]


def test_train_full_stops_on_sigterm_and_stores_nothing(tmp_path):
    store = tmp_path / "full.json"
    argv = ["train-full", "--dataset", TOY_NAME, "--epochs", "100000", "--full-results", store, *TINY]
    started = time.time()
    code, err = stopped(argv, lambda: time.time() - started > 4)
    assert code == 143
    one_line(err, "SIGTERM")
    assert not store.exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_is_one_line_never_a_traceback(tmp_path, sig, code):
    started = time.time()
    got, err = stopped(["buffer", "--dataset", TOY_NAME, "--out", tmp_path, *TINY],
                       lambda: time.time() - started > 0.3, sig, launch=("-m", "ddtoolbox"))
    assert got == code, err
    assert err.strip() == f"ddtool: interrupted by {sig.name} while starting"
    assert not (tmp_path / "buffer.json").exists()


def test_bench_exits_143_on_sigterm(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[bench]\ndatasets = ["fashion-mnist"]\nipcs = [1]\n[buffer]\nnum_experts = 1\n'
                    'train_epochs = 100000\nwidth = 8\ntrain_subset = 5\n[distill]\niterations = 1\n'
                    'max_start_epoch = 1\nexpert_epochs = 1\n[methods.MTT]\nmatcher = "mtt"\n')
    log = tmp_path / "buffers" / "fashion-mnist.log"
    code, err = stopped(["bench", spec, "--device", "cpu", "--threads", "1", "--quiet"],
                        lambda: log.exists() and "$ ddtool" in log.read_text(), launch=("-m", "ddtoolbox"))
    assert code == 143, err
    assert err.strip() == "ddtool: interrupted by SIGTERM"


def test_a_lost_rank_is_one_line_with_its_own_exit_code_and_the_resume_command(toy_dataset, tmp_path, monkeypatch):
    """What a surviving rank sees when a peer is killed mid-run: gloo's error from wherever the
    collective was (here the distillation itself), turned into one line and exit 4."""
    import ddtoolbox.distillation as distillation
    from ddtoolbox.cli.testing import run_cli

    def peer_gone(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                           "[127.0.0.1]:29500")

    monkeypatch.setattr(distillation, "distill", peer_gone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    r = run_cli("distill", "--dataset", TOY_NAME, "--buffer", tmp_path, "--out", tmp_path / "run", "--quiet")
    assert r.code == 4, r.err
    one_line(r.err, "rank 1 of 2", "Connection closed by peer", "another rank has probably died",
             "every rank stops", f"torchrun ... ddtool distill --resume --dataset {TOY_NAME}")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    r = run_cli("distill", "--dataset", TOY_NAME, "--buffer", tmp_path, "--out", tmp_path / "run", "--quiet")
    assert r.code == 1 and "internal error" in r.err              # outside torchrun it is no lost rank
