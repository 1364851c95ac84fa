"""The DATM matcher: start-epoch schedule, soft-label initialisation, threshold, end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from ddtoolbox.config import DistillConfig
from ddtoolbox.errors import UsageError
from ddtoolbox.matchers import MatcherContext
from ddtoolbox.evaluate import load_synthetic, soft_cross_entropy
from ddtoolbox.testing import TOY_DISTILL
from ddtoolbox_datm import DATM, DATMOptions, mean_correct_logits, start_epoch_upper


def make(buffer=None, train_set=None, **kw):
    """A DATM matcher as the core makes one: core settings and the plugin's own options, kept apart."""
    core = {k: kw.pop(k) for k in ("min_start_epoch", "max_start_epoch") if k in kw}
    config = DistillConfig(out="unused", **{"min_start_epoch": 0, "max_start_epoch": 20, "expert_epochs": 2, **core})
    options = DATMOptions(**{"current_max_start_epoch": 10, **kw})
    return DATM(MatcherContext(config=config, options=options, train_set=train_set, buffer=buffer,
                               device=torch.device("cpu")))


# ---------------------------------------------------------------------------- the schedule


def test_upper_bound_start_middle_end():
    m = make()
    assert m.start_epoch_bounds(0) == (0, 10)          # start: current max
    assert m.start_epoch_bounds(500) == (0, 15)        # middle: 10 + int(10 * 500 / 1000)
    assert m.start_epoch_bounds(999) == (0, 19)        # 10 + int(9.99)
    assert m.start_epoch_bounds(1000) == (0, 20)       # end: max start epoch
    assert m.start_epoch_bounds(5000) == (0, 20)       # and it stays there
    assert start_epoch_upper(250, 5, 10, 1000) == 6    # 5 + int(1.25)


def test_sequential_generation_off_uses_full_range():
    m = make(no_sequential_generation=True, min_start_epoch=1)
    assert m.start_epoch_bounds(0) == m.start_epoch_bounds(10_000) == (1, 20)


def test_default_current_max_is_half_of_max():
    m = make(current_max_start_epoch=None)
    assert m.start_epoch_bounds(0) == (0, 10)


@pytest.mark.parametrize("kw", [dict(current_max_start_epoch=21), dict(current_max_start_epoch=0),
                                dict(expansion_end_epoch=0), dict(threshold=0.0)])
def test_bad_schedule_is_a_usage_error(kw):
    with pytest.raises(UsageError):
        make(**kw)


def test_threshold_skips_only_above():
    m = make(threshold=1.0)
    assert not m.skip_update(0.99) and not m.skip_update(1.0) and m.skip_update(1.01)
    assert not make().skip_update(1e9)


# ---------------------------------------------------------------------------- soft labels


class StubBuffer:
    """Three 'experts' that are linear maps of a 2-pixel image to 3 classes (weight 3x2, then bias 3)."""

    FINALS = {
        "A": ([[1, 0], [0, 1], [0, 0]], [0, 0, 0.5]),
        "B": ([[0, 1], [1, 0], [0, 0]], [0, 0, 0]),
        "C": ([[2, 0], [0, 2], [0, 0]], [0, 0, 0]),
    }

    def __init__(self):
        self.finals = [torch.tensor(w, dtype=torch.float32).flatten().tolist() + b for w, b in self.FINALS.values()]

    @property
    def num_experts(self):
        return len(self.finals)

    def trajectory(self, i):
        final = torch.tensor(self.finals[i])
        return torch.stack([torch.zeros_like(final), final])

    def make_model(self):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))

    def expert_model(self, expert, epoch, device=None):
        net = self.make_model()
        torch.nn.utils.vector_to_parameters(self.trajectory(expert)[epoch], net.parameters())
        return net


class StubSet:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.info = argparse.Namespace(num_classes=3)

    def class_indices(self, c):
        return torch.nonzero(self.labels == c).flatten()


def pixels(*pairs):
    return torch.tensor(pairs, dtype=torch.float32).view(-1, 1, 1, 2)


def test_soft_labels_average_only_the_correct_experts():
    # Logits by hand (W x + b):
    #   x=(2,1), class 0: A (2, 1, .5) ok; B (1, 2, 0) wrong -> excluded; C (4, 2, 0) ok -> (3, 1.5, .25)
    #   x=(0,0), class 2: A (0, 0, .5) ok; B (0, 0, 0) and C (0, 0, 0) pick class 0 -> (0, 0, .5)
    #   x=(1,3), class 1: A (1, 3, .5) ok; B (3, 1, 0) wrong; C (2, 6, 0) ok -> (1.5, 4.5, .25)
    m = make(buffer=StubBuffer(), label_experts=0)
    targets = m.initial_targets(pixels((2, 1), (0, 0), (1, 3)), torch.tensor([0, 2, 1]))
    expected = torch.tensor([[3.0, 1.5, 0.25], [0.0, 0.0, 0.5], [1.5, 4.5, 0.25]])
    torch.testing.assert_close(targets, expected)


def test_mean_correct_logits_counts_and_fallback():
    logits = torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]]])     # 2 experts, 1 image, 2 classes
    t, n = mean_correct_logits(logits, torch.tensor([0]))
    torch.testing.assert_close(t, torch.tensor([[1.0, 0.0]]))
    assert n.tolist() == [1]
    t, n = mean_correct_logits(logits, torch.tensor([1]))
    torch.testing.assert_close(t, torch.tensor([[0.0, 3.0]]))
    # no expert right (3 classes, label 2): mean of all, count 0
    t, n = mean_correct_logits(torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]]]), torch.tensor([2]))
    torch.testing.assert_close(t, torch.tensor([[0.5, 1.5, 0.0]]))
    assert n.tolist() == [0]


def test_initial_images_are_classified_correctly_by_an_expert():
    # class 2 holds (5, 0), which every expert puts in class 0, and (0, 0), which expert A gets right
    images = pixels((2, 1), (4, 1), (1, 3), (1, 5), (5, 0), (0, 0))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    m = make(buffer=StubBuffer(), train_set=StubSet(images, labels), label_experts=0)
    for seed in range(5):
        x, y = m.initial_images(1, torch.Generator().manual_seed(seed))
        assert y.tolist() == [0, 1, 2]
        torch.testing.assert_close(x[2], pixels((0, 0))[0])
    with pytest.raises(UsageError, match="class 2 has only 1"):
        m.initial_images(2, torch.Generator().manual_seed(0))


def test_label_experts_limits_the_experts():
    m = make(buffer=StubBuffer(), label_experts=2)
    # expert C excluded: x=(2,1) class 0 -> A only (B is wrong)
    torch.testing.assert_close(m.initial_targets(pixels((2, 1)), torch.tensor([0])), torch.tensor([[2.0, 1.0, 0.5]]))
    # x=(1,2) class 0: only B is right -> B's logits
    torch.testing.assert_close(m.initial_targets(pixels((1, 2)), torch.tensor([0])), torch.tensor([[2.0, 1.0, 0.0]]))


def test_by_default_expert_0_alone_picks_images_and_labels():
    """The reference filters the initial images and initialises the labels with expert 0 only."""
    assert DATMOptions().label_experts == 1
    m = make(buffer=StubBuffer())
    assert len(m.label_models()) == 1
    # x=(1,3) class 1: A (1, 3, .5) and C (2, 6, 0) are right; by default only A's logits count
    torch.testing.assert_close(m.initial_targets(pixels((1, 3)), torch.tensor([1])), torch.tensor([[1.0, 3.0, 0.5]]))
    # (1, 2) of class 0 is right for expert B only: eligible with all experts, never by default
    images = pixels((1, 2), (2, 1), (1, 3), (0, 0))
    labels = torch.tensor([0, 0, 1, 2])
    default = make(buffer=StubBuffer(), train_set=StubSet(images, labels))
    every = make(buffer=StubBuffer(), train_set=StubSet(images, labels), label_experts=0)
    picked_default = {tuple(default.initial_images(1, torch.Generator().manual_seed(s))[0][0].flatten().tolist())
                      for s in range(12)}
    picked_every = {tuple(every.initial_images(1, torch.Generator().manual_seed(s))[0][0].flatten().tolist())
                    for s in range(12)}
    assert picked_default == {(2.0, 1.0)} and picked_every == {(2.0, 1.0), (1.0, 2.0)}
    with pytest.raises(UsageError, match="class 0 has only 1"):
        default.initial_images(2, torch.Generator().manual_seed(0))


def test_inner_loss_is_soft_cross_entropy():
    m = make()
    logits, y = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(m.inner_loss(logits, y), soft_cross_entropy(logits, y))
    by_hand = -(torch.log_softmax(logits, 1) * torch.softmax(y, 1)).sum(1).mean()
    torch.testing.assert_close(m.inner_loss(logits, y), by_hand)


# ---------------------------------------------------------------------------- end to end


def toy_distill(ddtool, toy_dataset, toy_buffer, out, *extra):
    return ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out, *TOY_DISTILL,
                  "--matcher", "datm", *extra)


def test_distill_datm_end_to_end_and_eval(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path / "run", "--iterations", "4",
                    "--current-max-start-epoch", "1", "--expansion-end-epoch", "2")
    assert r.code == 0, r.err
    record = load_synthetic(tmp_path / "run" / "synthetic.pt")
    assert record["meta"]["matcher"] == "datm" and record["meta"]["soft_labels"]
    assert record["targets"].shape == (8, 4) and record["targets"].dtype == torch.float32
    # the initial labels point at the true class (every initial image is classified correctly)
    init = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path / "init", "--iterations", "0")
    assert init.code == 0, init.err
    start = load_synthetic(tmp_path / "init" / "synthetic.pt")
    assert (start["targets"].argmax(1) == start["labels"]).all()
    assert not torch.equal(start["targets"], record["targets"])        # labels were learned
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["start_upper"] for h in history] == [1, 2, 3, 3]
    assert all(0 <= h["start_epoch"] < h["start_upper"] for h in history)
    ev = ddtool("eval", "--synthetic", tmp_path / "run" / "synthetic.pt", "--runs", "1", "--epochs", "2",
                "--device", "cpu", "--quiet")
    assert ev.code == 0, ev.err
    assert "datm" in ev.out and "%" in ev.out


def test_threshold_skips_every_update(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path / "skip", "--iterations", "2", "--threshold", "1e-9")
    assert r.code == 0, r.err
    r0 = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path / "init", "--iterations", "0")
    assert r0.code == 0, r0.err
    a, b = (load_synthetic(tmp_path / d / "synthetic.pt") for d in ("skip", "init"))
    for key in ("images", "targets", "lr"):
        assert torch.equal(a[key], b[key]), key
    history = json.loads((tmp_path / "skip" / "metrics.json").read_text())["history"]
    assert all(h["skipped"] for h in history)


def test_bad_window_is_reported(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--iterations", "1", "--current-max-start-epoch", "9")
    assert r.code == 2 and "--current-max-start-epoch" in r.err


def test_plugins_lists_datm_and_its_options(ddtool):
    r = ddtool("plugins")
    assert r.code == 0, r.err
    assert "datm" in r.out
    for opt in ("--current-max-start-epoch", "--expansion-end-epoch", "--no-sequential-generation", "--threshold"):
        assert opt in r.out


@pytest.mark.slow
def test_datm_with_edf_plugins_on_toy(ddtool, toy_dataset, toy_buffer, tmp_path):
    from ddtoolbox.plugins import PluginManager

    if not {"cpd", "dae"} <= set(PluginManager().plugin_names()):
        pytest.skip("ddtoolbox-edf is not installed")
    r = toy_distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--iterations", "3", "--plugin", "cpd",
                    "--plugin", "dae", "--cpd-alpha", "0.25", "--dae-every", "2")
    assert r.code == 0, r.err
    assert Path(tmp_path / "synthetic.pt").is_file()
