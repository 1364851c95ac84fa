"""Several processes under torchrun (gloo on the CPU): the same buffers, sets and accuracies as one process.

One torchrun launch of two ranks (``tests/parallel_worker.py``) runs every multi-process job; the
tests compare its files with one process's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddtoolbox import parallel
from ddtoolbox.buffer import Buffer
from ddtoolbox.cli.testing import run_cli
from ddtoolbox.errors import UsageError
from ddtoolbox.loop import Loop
from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL, TOY_NAME

WORKER = Path(__file__).with_name("parallel_worker.py")
sys.path.insert(0, str(WORKER.parent))
import parallel_worker  # noqa: E402

DISTILL = ("distill", "--dataset", TOY_NAME, *TOY_DISTILL, "--iterations", "3", "--batch-syn", "4", "--threads", "1")
EDF = ("--matcher", "datm", "--plugin", "cpd", "--plugin", "dae", "--cpd-alpha", "0.25", "--dae-every", "1")
EVAL = ("eval", "--runs", "3", "--epochs", "3", "--device", "cpu", "--quiet", "--threads", "1")
EVALS_ALONG = ("--eval-every", "1", "--eval-runs", "3", "--eval-epochs", "3")


def interrupted_before(iteration: int, *argv):
    """Run ``ddtool argv`` in this process as if Ctrl-C came just before ``iteration``."""
    step = Loop.step

    def stop(self, it):
        if it == iteration:
            raise KeyboardInterrupt
        step(self, it)

    Loop.step = stop
    try:
        return run_cli(*argv)
    finally:
        Loop.step = step


@pytest.fixture(scope="module")
def two_ranks(toy_dataset, toy_buffer, tmp_path_factory):
    """Run the jobs on two ranks once; return the folder and torchrun's output."""
    tmp = tmp_path_factory.mktemp("parallel")
    half = tmp / "resumed-buffer"       # one expert made by one process, the second added by two
    r = run_cli("buffer", "--dataset", TOY_NAME, "--out", str(half), *TOY_BUFFER, "--num-experts", "1")
    assert r.code == 0, r.err
    resumed = tmp / "resumed-run"       # a run checkpointed by one process after 2 of 3 iterations
    r = interrupted_before(2, *DISTILL, "--buffer", toy_buffer, "--out", str(resumed), "--checkpoint-every", "1")
    assert r.code != 0 and (resumed / "checkpoint.pt").exists(), r.err
    jobs = [
        ["grad", str(tmp / "grads.pt")],
        ["grad-checkpointed", str(tmp / "grads-checkpointed.pt")],
        ["cli", ["buffer", "--dataset", TOY_NAME, "--out", str(tmp / "buffer"), *TOY_BUFFER, "--threads", "1"]],
        ["cli", ["buffer", "--dataset", TOY_NAME, "--out", str(half), *TOY_BUFFER, "--threads", "1", "--resume"]],
        ["cli", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "batch")]],
        ["cli", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "segments"), "--parallel", "segments"]],
        ["cli", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "edf"), *EDF]],
        ["cli", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "checkpointed"), "--unroll", "checkpointed"]],
        ["cli", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "evals"), *EVALS_ALONG]],
        ["cli", [*EVAL, "--synthetic", str(tmp / "batch" / "synthetic.pt"), "--json", str(tmp / "eval.json")]],
        ["cli", ["distill", "--resume", "--out", str(resumed), "--quiet", "--threads", "1"]],
        ["cli-fails", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "tiny"), "--batch-syn", "1"]],
        ["cli-fails", [*DISTILL, "--buffer", toy_buffer, "--out", str(tmp / "batch")]],   # rank 0's check, shared
    ]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(WORKER), str(tmp / "jobs.json")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["grads.pt", "grads-checkpointed.pt"])
def test_split_unroll_gradients_equal_one_process(two_ranks, name):
    """float64, DSA on: the image, soft-label and lr gradients of two ranks are one process's
    (full unroll), for the full and the checkpointed split unroll alike."""
    tmp, _ = two_ranks
    split = torch.load(tmp / name, weights_only=True)
    one = parallel_worker.grads(split=False)
    assert torch.allclose(split["theta_n"], one["theta_n"], rtol=0, atol=1e-12)
    for name in ("images", "soft", "lr"):
        assert one[name].abs().sum() > 0, name
        rel = ((split[name] - one[name]).norm() / one[name].norm()).item()
        assert rel < 1e-10, f"{name}: relative error {rel}"


def test_split_gradients_are_not_trivially_equal(two_ranks):
    """The comparison above can fail: one rank's shard alone (no all-reduce) gives other gradients."""
    one = parallel_worker.grads(split=False)
    other = parallel_worker.grads(split=False, batch=3)
    assert ((other["images"] - one["images"]).norm() / one["images"].norm()).item() > 1e-3


def test_buffer_on_two_ranks_is_bit_identical(two_ranks, toy_buffer):
    tmp, _ = two_ranks
    for folder in (tmp / "buffer", tmp / "resumed-buffer"):
        buf, ref = Buffer.open(folder), Buffer.open(toy_buffer)
        assert buf.num_experts == 2
        for e in range(2):
            assert torch.equal(buf.trajectory(e), ref.trajectory(e)), (folder, e)
        assert [x["test_accuracy"] for x in buf.meta["experts"]] == \
               [x["test_accuracy"] for x in ref.meta["experts"]]


@pytest.fixture(scope="module")
def one_process(toy_dataset, toy_buffer, tmp_path_factory):
    """One process's set, and (under start/) the images it started from (a zero-iteration run)."""
    out = tmp_path_factory.mktemp("one-process")
    r = run_cli(*DISTILL, "--buffer", toy_buffer, "--out", str(out))
    assert r.code == 0, r.err
    r = run_cli(*DISTILL, "--buffer", toy_buffer, "--out", str(out / "start"), "--iterations", "0")
    assert r.code == 0, r.err
    return out


def same_set(one_dir, two_dir):
    one = torch.load(one_dir / "synthetic.pt", weights_only=True)
    two = torch.load(two_dir / "synthetic.pt", weights_only=True)
    start = torch.load(one_dir / "start" / "synthetic.pt", weights_only=True)["images"]
    moved = (one["images"] - start).abs().max()
    assert moved > 1e-3                                   # the images did change, so the match means something
    assert (one["images"] - two["images"]).abs().max() < 1e-4 * moved
    assert abs(one["lr"].item() - two["lr"].item()) < 1e-6 * one["lr"].item()
    return two


def test_distill_batch_mode_matches_one_process(two_ranks, one_process):
    tmp, _ = two_ranks
    two = same_set(one_process, tmp / "batch")
    assert two["meta"]["world_size"] == 2 and two["meta"]["parallel"] == "batch"
    metrics = json.loads((tmp / "batch" / "metrics.json").read_text())
    ref = json.loads((one_process / "metrics.json").read_text())
    assert [h["expert"] for h in metrics["history"]] == [h["expert"] for h in ref["history"]]
    assert metrics["history"][-1]["loss"] == pytest.approx(ref["history"][-1]["loss"], rel=1e-5)


def test_datm_cpd_dae_batch_mode_matches_one_process(two_ranks, toy_buffer, tmp_path):
    """Learned soft labels, CPD's mask and DAE's weights: the same on two ranks as in one process."""
    tmp, _ = two_ranks
    r = run_cli(*DISTILL, "--buffer", toy_buffer, "--out", str(tmp_path), *EDF)
    assert r.code == 0, r.err
    one = torch.load(tmp_path / "synthetic.pt", weights_only=True)
    two = torch.load(tmp / "edf" / "synthetic.pt", weights_only=True)
    assert two["meta"]["plugins"] == one["meta"]["plugins"]
    for name in ("images", "targets", "lr"):
        scale = one[name].abs().max()
        assert (one[name] - two[name]).abs().max() < 1e-5 * scale, name
    assert (tmp / "edf" / "dae").is_dir()


def test_checkpointed_unroll_splits_too(two_ranks, one_process):
    tmp, _ = two_ranks
    two = same_set(one_process, tmp / "checkpointed")
    assert two["meta"]["unroll"] == "checkpointed (split over ranks)"


def test_a_one_process_checkpoint_resumes_on_two_ranks(two_ranks, one_process):
    tmp, _ = two_ranks
    same_set(one_process, tmp / "resumed-run")
    assert not (tmp / "resumed-run" / "checkpoint.pt").exists()


def test_distill_segments_mode_runs_and_says_so(two_ranks):
    tmp, _ = two_ranks
    record = torch.load(tmp / "segments" / "synthetic.pt", weights_only=True)
    assert record["meta"]["parallel"] == "segments" and record["meta"]["world_size"] == 2
    assert torch.isfinite(record["images"]).all()
    assert not (tmp / "segments" / "checkpoint.pt").exists()


def test_eval_on_two_ranks_matches_one_process(two_ranks, tmp_path):
    tmp, _ = two_ranks
    r = run_cli(*EVAL, "--synthetic", str(tmp / "batch" / "synthetic.pt"), "--json", str(tmp_path / "one.json"))
    assert r.code == 0, r.err
    two = json.loads((tmp / "eval.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert len(two["runs"]) == 3 and two["runs"] == one["runs"]


def test_eval_every_on_two_ranks_spreads_the_networks_and_leaves_the_images_alone(two_ranks, one_process, tmp_path):
    """The ranks share the evaluation networks along the way; the set is one process's without
    evaluations, and the last evaluation is what `ddtool eval` gives on it."""
    tmp, _ = two_ranks
    same_set(one_process, tmp / "evals")
    history = json.loads((tmp / "evals" / "metrics.json").read_text())["history"]
    assert all(len(h["eval_runs"]) == 3 for h in history)
    r = run_cli(*EVAL, "--synthetic", str(tmp / "evals" / "synthetic.pt"), "--json", str(tmp_path / "one.json"))
    assert r.code == 0, r.err
    assert history[-1]["eval_runs"] == json.loads((tmp_path / "one.json").read_text())["runs"]


def test_lines_along_the_run_are_shown_once(two_ranks):
    """Only rank 0 speaks: each evaluation along the way is one line, not one per rank."""
    _, output = two_ranks
    for it in (1, 2, 3):
        assert output.count(f"iteration {it}: accuracy") == 1, output[-2000:]


def test_more_ranks_than_batch_images_is_refused_in_one_line(two_ranks):
    """Both ranks refuse (neither may wait for the other), but the launch prints the line once."""
    _, output = two_ranks
    assert output.count("2 ranks cannot split a batch of 1 synthetic images (--batch-syn)") == 1, output[-2000:]


def test_a_refusal_rank_0_shares_is_printed_once(two_ranks):
    tmp, output = two_ranks
    assert output.count(f"{tmp / 'batch'} already holds a distilled set (synthetic.pt)") == 1, output[-2000:]


def test_parallel_without_torchrun_is_refused(toy_dataset, toy_buffer, tmp_path):
    r = run_cli(*DISTILL, "--buffer", toy_buffer, "--out", str(tmp_path), "--parallel", "batch")
    assert r.code == 2
    assert "--parallel batch needs several processes: start the command with torchrun" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_nccl_on_the_cpu_is_refused(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = run_cli(*DISTILL, "--buffer", toy_buffer, "--out", str(tmp_path), "--dist-backend", "nccl")
    assert r.code == 2
    assert "--dist-backend nccl needs CUDA devices" in r.err


def test_a_folder_some_rank_cannot_see_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "gather_objects", lambda value: [True, False, True])
    monkeypatch.setattr(parallel, "world", lambda: 3)
    with pytest.raises(UsageError, match=r"--buffer .* is not visible to rank\(s\) 1 of 3"):
        parallel.check_folder_visible(tmp_path, "--buffer")


def test_shards_cover_the_batch(monkeypatch):
    for world in (1, 2, 3, 5):
        monkeypatch.setattr(parallel, "world", lambda: world)
        parts = []
        for r in range(world):
            monkeypatch.setattr(parallel, "rank", lambda: r)
            parts.append(parallel.shard(7))
        assert parts[0][0] == 0 and parts[-1][1] == 7
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1


def test_commands_that_run_as_one_process_refuse_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    r = run_cli("train-full", "--dataset", TOY_NAME, "--device", "cpu", "--epochs", "1", "--quiet")
    assert r.code == 2
    assert "'ddtool train-full' runs as one process; start it without torchrun" in r.err


@pytest.mark.slow
def test_a_hung_rank_stops_the_others_after_the_timeout(tmp_path):
    """--dist-timeout: rank 0 waits 3 s for a rank that sleeps, then stops with a one-line reason."""
    script = tmp_path / "hang.py"
    script.write_text("import sys, time\n"
                      "from ddtoolbox import parallel\n"
                      "parallel.setup('cpu', 'gloo', timeout=3)\n"
                      "if parallel.rank() == 1:\n"
                      "    time.sleep(15); sys.exit(0)\n"
                      "started = time.time()\n"
                      "try:\n"
                      "    parallel.barrier()\n"
                      "except parallel.RankLost as exc:\n"
                      "    print('STOPPED AFTER', round(time.time() - started), exc); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    line = next(x for x in proc.stdout.splitlines() if "STOPPED AFTER" in x)
    assert 2 <= int(line.split()[2]) <= 10
    assert "rank 0 of 2: waiting for the other ranks failed" in line and "died or hung" in line


def test_a_checkpoint_from_before_parallel_resumes(toy_dataset, toy_buffer, tmp_path):
    """Checkpoints written before --parallel existed lack it: they ran as one process and resume."""
    out = tmp_path / "old"
    interrupted_before(1, *DISTILL, "--buffer", toy_buffer, "--out", str(out), "--checkpoint-every", "1")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    for key in ("parallel", "dist_backend", "dist_timeout"):
        del ckpt["config"][key]
    torch.save(ckpt, out / "checkpoint.pt")
    r = run_cli("distill", "--resume", "--out", str(out))
    assert r.code == 0, r.err
    # a value that is not the default is still a contradiction
    ckpt["config"]["seed"] = 5
    torch.save(ckpt, out / "checkpoint.pt")
    r = run_cli("distill", "--resume", "--out", str(out), "--seed", "0")
    assert r.code == 2 and "--seed 0 contradicts the run" in r.err
