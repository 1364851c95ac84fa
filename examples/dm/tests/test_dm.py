"""The DM matcher: its terms by hand, its gradient by finite differences, and runs end to end.

``toy_dataset`` and ``ddtool`` are ddtoolbox's pytest fixtures (loaded through its entry points).
"""

from __future__ import annotations

import json
import types

import pytest
import torch

from ddtoolbox import DistillConfig, MatcherContext, UsageError, distill
from ddtoolbox.data import load_dataset
from ddtoolbox.models.convnet import ConvNet
from ddtoolbox_dm import DM, DMOptions, class_mean_gaps, embedder

#: a DM run on the toy dataset, small enough for a test
TOY_DM = ("--ipc", "2", "--device", "cpu", "--quiet")


@pytest.fixture(autouse=True)
def one_thread():
    # tiny networks on a shared CPU: extra threads only add overhead
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------- the command line


def test_dm_runs_without_a_buffer(ddtool, toy_dataset, tmp_path):
    out = tmp_path / "dm"
    r = ddtool("distill", "--matcher", "dm", "--dataset", toy_dataset, "--out", out, "--iterations", "3", *TOY_DM)
    assert r.code == 0, r.err
    assert (out / "synthetic.pt").is_file()
    metrics = read_metrics(out)
    assert metrics["meta"]["unroll"] == "none"
    assert metrics["meta"]["buffer"] is None
    assert metrics["meta"]["matcher"] == "dm"
    assert metrics["options"]["dm"] == {"dm_batch_real": 64}
    assert [h["iteration"] for h in metrics["history"]] == [0, 1, 2]
    assert all(h["loss"] > 0 for h in metrics["history"])
    saved = torch.load(out / "synthetic.pt", weights_only=True)
    assert saved["images"].shape == (8, 1, 16, 16)       # 4 classes x 2 images
    assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_cpd_composes_with_dm(ddtool, toy_dataset, tmp_path):
    out = tmp_path / "dm-cpd"
    r = ddtool("distill", "--matcher", "dm", "--dataset", toy_dataset, "--out", out, "--iterations", "3", *TOY_DM,
               "--plugin", "cpd", "--cpd-alpha", "0.5")
    assert r.code == 0, r.err
    history = read_metrics(out)["history"]
    assert len(history) == 3
    for h in history:
        # CPD logs the undropped loss; dropping the smaller half of the gaps keeps the larger ones,
        # so the kept mean is at least the full mean
        assert h["cpd_full_loss"] > 0
        assert h["loss"] >= h["cpd_full_loss"]


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_batch_real_is_one_line_naming_the_option(ddtool, toy_dataset, tmp_path, value):
    r = ddtool("distill", "--matcher", "dm", "--dataset", toy_dataset, "--out", tmp_path / "bad", "--iterations",
               "1", *TOY_DM, "--dm-batch-real", value)
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "--dm-batch-real" in lines[0]
    assert not (tmp_path / "bad" / "synthetic.pt").exists()


def test_bad_batch_real_from_python_names_the_option(toy_dataset, tmp_path):
    config = DistillConfig(dataset=toy_dataset, out=str(tmp_path), matcher="dm", iterations=1, ipc=1,
                           device="cpu", quiet=True)
    with pytest.raises(UsageError, match="--dm-batch-real"):
        distill(config, options={"dm_batch_real": 0})


# ---------------------------------------------------------------------------- the numbers


def tiny_net(classes=3, dtype=torch.float64):
    torch.manual_seed(0)
    return ConvNet(1, classes, (8, 8), width=4, depth=1).to(dtype)


def hand_gaps(features, real_by_class, syn_by_class):
    """The DM terms written out: class by class, feature by feature."""
    out = []
    for real, syn in zip(real_by_class, syn_by_class):
        fr, fs = features(real), features(syn)
        for j in range(fr.shape[1]):
            out.append((sum(fr[i, j] for i in range(len(fr))) / len(fr)
                        - sum(fs[i, j] for i in range(len(fs))) / len(fs)) ** 2)
    return torch.stack(out)


def test_embedder_takes_the_classifier_input():
    net = tiny_net()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    features = embedder(net)(x)
    assert features.shape == (5, 4 * 4 * 4)
    torch.testing.assert_close(features, net.features(x).flatten(1))
    # the hook is gone afterwards: the network is left as it was
    assert not net.classifier._forward_pre_hooks


def test_embedder_prefers_embed():
    class WithEmbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 2)

        def embed(self, x):
            return x * 2

        def forward(self, x):
            return self.head(x)

    x = torch.randn(4, 3)
    torch.testing.assert_close(embedder(WithEmbed())(x), x * 2)


def test_embedder_without_a_linear_layer_is_a_usage_error():
    with pytest.raises(UsageError, match="--model"):
        embedder(torch.nn.Conv2d(1, 2, 3))


def test_class_mean_gaps_match_the_hand_computation():
    net = tiny_net()
    g = torch.Generator().manual_seed(1)
    real = [torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64) for n in (5, 3, 4)]
    syn = [torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64) for n in (2, 2, 1)]
    gaps = class_mean_gaps(embedder(net), real, syn)
    assert gaps.shape == (3 * 64,)
    torch.testing.assert_close(gaps, hand_gaps(lambda x: net.features(x).flatten(1), real, syn))
    # a synthetic set equal in mean to the real one has no gap in any class
    assert class_mean_gaps(embedder(net), real, [r.clone() for r in real]).abs().max() == 0


def test_class_mean_gaps_gradient_matches_finite_differences():
    net = tiny_net(classes=2)
    net.requires_grad_(False)
    embed = embedder(net)
    g = torch.Generator().manual_seed(2)
    real = [torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    syn = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)

    def loss_terms(images):
        return class_mean_gaps(embed, real, [images[:2], images[2:]])

    assert torch.autograd.gradcheck(loss_terms, (syn,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # and the scalar loss the core forms (den = 1: the mean of the terms), coordinate by coordinate
    (grad,) = torch.autograd.grad(loss_terms(syn).mean(), syn)
    flat = syn.detach().flatten()
    for k in torch.randperm(flat.numel(), generator=g)[:6].tolist():
        up, down = flat.clone(), flat.clone()
        up[k] += 1e-6
        down[k] -= 1e-6
        numeric = (loss_terms(up.view_as(syn)).mean() - loss_terms(down.view_as(syn)).mean()) / 2e-6
        assert numeric.item() == pytest.approx(grad.flatten()[k].item(), rel=1e-5, abs=1e-10)


def test_loss_terms_are_class_mean_gaps_of_the_whole_class(toy_dataset, monkeypatch):
    """With a fixed network, no augmentation and a real batch as large as each class, the terms are
    fixed numbers: the squared gaps between the class means of all real and all synthetic images."""
    train = load_dataset(toy_dataset, "train")
    config = DistillConfig(dataset=toy_dataset, out="unused", matcher="dm", ipc=2, device="cpu", no_dsa=True)
    ctx = MatcherContext(config=config, options=DMOptions(dm_batch_real=1000), train_set=train, buffer=None,
                         device=torch.device("cpu"), augment=None)
    dm = DM(ctx)
    torch.manual_seed(0)
    net = ConvNet(1, 4, (16, 16), width=8)
    monkeypatch.setattr(dm, "make_model", lambda: net)
    images, labels = dm.initial_images(2, torch.Generator().manual_seed(0))
    images = (images + 0.1 * torch.randn_like(images)).requires_grad_(True)
    run = types.SimpleNamespace(info=train.info, labels=labels, images=images, segment=None)
    dm.start(run)
    num, den = dm.loss_terms(run)

    features = lambda x: net.features(x).flatten(1)  # noqa: E731
    with torch.no_grad():
        expected = torch.cat([(features(train.images[train.labels == c]).mean(0)
                               - features(images[labels == c]).mean(0)) ** 2 for c in range(4)])
    assert num.shape == den.shape == (4 * 8 * 2 * 2,)
    # float32 sums over a class in other orders: gaps of means ~0.1 apart carry ~1e-8 of rounding, so
    # each squared gap is compared to within 1e-6 of the largest one (a wrong term is off by far more)
    torch.testing.assert_close(num.detach(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert torch.equal(den, torch.ones_like(num))
    assert run.segment == {}
    # the terms reach the images, and the network was left untrained
    num.mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------- learning


def dm_losses(toy_dataset, out, lr_img, no_dsa):
    config = DistillConfig(dataset=toy_dataset, out=str(out), matcher="dm", ipc=2, iterations=20, lr_img=lr_img,
                           no_dsa=no_dsa, seed=0, device="cpu", quiet=True)
    return [h["loss"] for h in distill(config).history]


@pytest.mark.parametrize("no_dsa, margin", [(True, 0.7), (False, 0.85)])
def test_distilling_lowers_the_dm_loss(toy_dataset, tmp_path, no_dsa, margin):
    trained = dm_losses(toy_dataset, tmp_path / "trained", 1000.0, no_dsa)
    # the same seed draws the same networks, real batches and augmentations whatever the images are,
    # so a run that never moves its images (--lr-img 0) tells what the draws alone do to the loss
    frozen = dm_losses(toy_dataset, tmp_path / "frozen", 0.0, no_dsa)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert trained[0] == pytest.approx(frozen[0])
    assert mean(trained[-3:]) < mean(trained[:3])
    assert mean(trained[-3:]) < margin * mean(frozen[-3:]), (trained, frozen)
    if no_dsa:
        assert mean(trained[-3:]) < margin * mean(trained[:3])
