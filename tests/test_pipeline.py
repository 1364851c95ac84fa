"""Buffer format, reproducibility, outputs of distill and eval, on the toy dataset."""

import json

import pytest
import torch

from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL
from ddtoolbox.buffer import Buffer
from ddtoolbox.evaluate import load_synthetic


def test_buffer_format_loads_without_unpickling(toy_buffer):
    buf = Buffer.open(toy_buffer)
    meta = buf.meta
    for key in ("dataset", "model", "model_options", "image_size", "mean", "std", "epochs", "lr", "seed", "channels"):
        assert key in meta
    assert meta["dataset"] == "toy-quadrants" and meta["epochs"] == 4 and buf.num_experts == 2
    for e in meta["experts"]:
        data = torch.load(f"{toy_buffer}/{e['file']}", weights_only=True)
        assert data["trajectory"].shape == (5, meta["num_params"])
        assert 0 <= e["test_accuracy"] <= 1
    traj = buf.trajectory(0)
    # experts move: consecutive snapshots differ, and index 0 is the initialisation
    assert all((traj[i + 1] - traj[i]).abs().sum() > 0 for i in range(4))


def test_buffer_is_reproducible_and_resumable(ddtool, toy_dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    opts = [o for o in TOY_BUFFER]
    n = opts.index("--num-experts")
    one = opts[:n + 1] + ["1"] + opts[n + 2:]
    assert ddtool("buffer", "--dataset", toy_dataset, "--out", a, *TOY_BUFFER).code == 0
    assert ddtool("buffer", "--dataset", toy_dataset, "--out", b, *one).code == 0
    assert Buffer.open(b).num_experts == 1
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", b, "--resume", *TOY_BUFFER)
    assert r.code == 0, r.err
    for i in range(2):
        assert torch.equal(Buffer.open(a).trajectory(i), Buffer.open(b).trajectory(i))
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", b, "--resume", *TOY_BUFFER, "--lr", "0.5")
    assert r.code == 2 and "different settings (lr)" in r.err


def test_distill_outputs_and_same_seed_same_result(ddtool, toy_dataset, toy_buffer, tmp_path):
    runs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / name,
                   "--iterations", "4", "--seed", seed, *TOY_DISTILL)
        assert r.code == 0, r.err
        runs.append(torch.load(tmp_path / name / "synthetic.pt", weights_only=True))
    a, b, c = runs
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["lr"], b["lr"])
    assert not torch.equal(a["images"], c["images"])
    assert a["images"].shape == (8, 1, 16, 16)
    assert a["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert a["lr"].item() > 0
    meta = a["meta"]
    assert meta["dataset"] == toy_dataset and meta["matcher"] == "mtt" and meta["ipc"] == 2
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [h["iteration"] for h in metrics["history"]] == [0, 1, 2, 3]
    assert all(h["loss"] > 0 for h in metrics["history"])
    from PIL import Image

    png = Image.open(tmp_path / "a" / "synthetic.png")
    assert png.width > 64 * 2 and png.height >= 64 * 4  # two columns, four class rows, enlarged tiles
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_learned_lr_stays_positive(ddtool, toy_dataset, toy_buffer, tmp_path, monkeypatch):
    """A step that would drive the student lr negative leaves it at a small positive floor."""
    from ddtoolbox.loop import MIN_SYN_LR

    (tmp_path / "push_lr_plugin.py").write_text(
        "from ddtoolbox import hookimpl\n"
        "@hookimpl\n"
        "def on_pixel_grad(run, grad):\n"
        "    run.syn_lr.grad.fill_(1e3)  # with --lr-lr 1 the step is -1000\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "o",
               "--iterations", "2", *TOY_DISTILL, "--lr-lr", "1", "--plugin", "push_lr_plugin")
    assert r.code == 0, r.err
    history = json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert [h["syn_lr"] for h in history] == [pytest.approx(MIN_SYN_LR)] * 2


def test_eval_reports_mean_and_std_and_eval_every(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "d",
               "--iterations", "3", "--eval-every", "1", "--eval-runs", "2", "--eval-epochs", "5", *TOY_DISTILL)
    assert r.code == 0, r.err
    history = json.loads((tmp_path / "d" / "metrics.json").read_text())["history"]
    assert [("eval_mean" in h) for h in history] == [True, True, True]
    r = ddtool("eval", "--synthetic", tmp_path / "d" / "synthetic.pt", "--runs", "2", "--epochs", "5",
               "--device", "cpu", "--json", tmp_path / "e.json", "--quiet")
    assert r.code == 0, r.err
    result = json.loads((tmp_path / "e.json").read_text())
    assert len(result["runs"]) == 2 and 0 <= result["mean"] <= 1
    assert abs(result["mean"] - sum(result["runs"]) / 2) < 1e-12
    assert "±" in r.out
    # The last evaluation during the run is the one `ddtool eval` gives on the result (same seed,
    # same networks), and evaluating along the way leaves the run's images untouched.
    assert history[-1]["eval_runs"] == result["runs"]
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "plain",
               "--iterations", "3", *TOY_DISTILL)
    assert r.code == 0, r.err
    with_evals, without = (load_synthetic(tmp_path / d / "synthetic.pt") for d in ("d", "plain"))
    assert torch.equal(with_evals["images"], without["images"]) and torch.equal(with_evals["lr"], without["lr"])


def test_random_baseline_beats_chance_on_toy(ddtool, toy_dataset, tmp_path):
    r = ddtool("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--width", "8", "--runs", "2",
               "--epochs", "40", "--lr", "0.05", "--device", "cpu", "--quiet", "--json", tmp_path / "r.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "r.json").read_text())["mean"] > 0.5  # 4 classes: chance is 0.25
