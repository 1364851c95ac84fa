"""The matching loss and its gradient: Eq. 1 exactly, and gradients against finite differences."""

import torch

import ddtoolbox.unroll as unroll_mod
from ddtoolbox import hookimpl
from ddtoolbox.augment import DSA
from ddtoolbox.losses import matching_loss as reduce_loss
from ddtoolbox.builtin.mtt import MTT
from ddtoolbox.models import FlatModel, create_model
from ddtoolbox.distillation import distill
from ddtoolbox.testing import toy_config
from ddtoolbox.buffer import Buffer
from ddtoolbox.unroll import batch_schedule, unroll


def test_reduce_without_weights_is_eq1():
    g = torch.Generator().manual_seed(0)
    theta_n, theta_0, theta_star = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(3))
    num, den = MTT.parameter_terms(None, theta_n, theta_0, theta_star)
    expected = torch.linalg.vector_norm(theta_n - theta_star) ** 2 / torch.linalg.vector_norm(theta_0 - theta_star) ** 2
    assert torch.allclose(reduce_loss(num, den, None), expected, rtol=1e-12)


def test_reduce_with_mask_uses_the_same_indices_above_and_below():
    num = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    den = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    w = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    assert reduce_loss(num, den, w).item() == (2.0 + 4.0) / (20.0 + 40.0)


def test_batch_schedule_covers_every_image_before_repeating():
    torch.manual_seed(0)
    batches = batch_schedule(10, 4, 5)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))


def _tiny_problem():
    torch.manual_seed(0)
    net = create_model("ConvNet", 1, 3, (6, 6), width=2, depth=1).double()
    student = FlatModel(net)
    theta_0 = student.flatten()
    theta_star = theta_0 + 0.1 * torch.randn_like(theta_0)
    images = torch.randn(6, 1, 6, 6, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return student, theta_0, theta_star, images, labels


def test_image_and_lr_gradients_match_finite_differences_with_augmentation():
    student, theta_0, theta_star, images, labels = _tiny_problem()
    augment = DSA()
    lr = torch.tensor(0.05, dtype=torch.float64)
    _, trace = unroll(student, theta_0, images, labels, lr, 3, 4, torch.nn.functional.cross_entropy, augment)

    def loss(x, lr):
        theta_n, _ = unroll(student, theta_0, x, labels, lr, 3, 4, torch.nn.functional.cross_entropy,
                            augment, trace=trace)
        return reduce_loss((theta_n - theta_star) ** 2, (theta_0 - theta_star) ** 2, None)

    x = images.clone().requires_grad_(True)
    lr = lr.clone().requires_grad_(True)
    # fast_mode checks random directional derivatives: the full Jacobian would take minutes
    assert torch.autograd.gradcheck(loss, (x, lr), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_replayed_unroll_is_bit_identical():
    student, theta_0, _, images, labels = _tiny_problem()
    augment = DSA()
    lr = torch.tensor(0.05, dtype=torch.float64)
    first, trace = unroll(student, theta_0, images, labels, lr, 4, 3, torch.nn.functional.cross_entropy, augment)
    again, _ = unroll(student, theta_0, images, labels, lr, 4, 3, torch.nn.functional.cross_entropy, augment, trace=trace)
    assert torch.equal(first, again)


class Capture:
    """A test plugin that keeps what the loss hooks saw."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def on_loss_vector(self, run, num, den):
        self.seen.append({"num": num.detach().clone(), "den": den.detach().clone(), "segment": dict(run.segment)})

    @hookimpl
    def on_iteration(self, run):
        self.seen[-1]["loss"] = run.loss
        self.seen[-1]["iteration"] = run.iteration


def test_loop_loss_is_eq1_of_the_sampled_segment(toy_dataset, toy_buffer, tmp_path, monkeypatch):
    """With no plugin weights, the loop's loss is Eq. 1 of the segment the matcher picked."""
    from ddtoolbox.plugins import PluginManager

    thetas = []
    real_unroll = unroll_mod.unroll

    def recording_unroll(*args, **kwargs):
        theta_n, trace = real_unroll(*args, **kwargs)
        thetas.append(theta_n.detach().clone())
        return theta_n, trace

    monkeypatch.setattr(unroll_mod, "unroll", recording_unroll)
    pm = PluginManager()
    capture = Capture()
    pm.pm.register(capture, name="capture")
    config = toy_config(toy_buffer, tmp_path, iterations=3, unroll="full")
    distill(config, plugins=["capture"], manager=pm)

    buffer = Buffer.open(toy_buffer)
    assert [s["iteration"] for s in capture.seen] == [0, 1, 2]
    for seen, theta_n in zip(capture.seen, thetas):
        traj = buffer.trajectory(seen["segment"]["expert"])
        start = seen["segment"]["start_epoch"]
        theta_0, theta_star = traj[start], traj[start + config.expert_epochs]
        assert 0 <= start < config.max_start_epoch
        assert torch.equal(seen["den"], (theta_0 - theta_star) ** 2)
        assert torch.equal(seen["num"], (theta_n - theta_star) ** 2)
        direct = ((theta_n - theta_star) ** 2).sum() / ((theta_0 - theta_star) ** 2).sum()
        assert abs(seen["loss"] - direct.item()) <= 1e-6 * direct.item()
