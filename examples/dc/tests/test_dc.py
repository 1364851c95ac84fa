"""The DC matcher: its distance by hand, its gradient by float64 gradcheck, runs end to end and resume.

``toy_dataset``, ``toy_buffer`` and ``ddtool`` are ddtoolbox's pytest fixtures. The package need not be
installed: ``plugins=["ddtoolbox_dc"]`` loads it by module path (installed, that is the plugin ``dc``).
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from ddtoolbox import DistillConfig, distill
from ddtoolbox.errors import Interrupted, UsageError
from ddtoolbox.distillation import resume_settings
from ddtoolbox.models.convnet import ConvNet
from ddtoolbox_dc import DC, gradient_terms, layer_distance

PLUGIN = "ddtoolbox_dc"


def config(toy_dataset, out, **changes):
    values = dict(dataset=toy_dataset, out=str(out), matcher="dc", ipc=1, iterations=3, device="cpu", quiet=True,
                  threads=1)
    return DistillConfig(**{**values, **changes})


# ---------------------------------------------------------------------------- the numbers


def test_layer_distance_by_hand():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    syn = torch.tensor([[0.0, 5.0], [0.0, 2.0], [-3.0, -4.0]])
    # orthogonal rows: 1; parallel: 0 (up to DC's epsilon); opposite: 2
    torch.testing.assert_close(layer_distance(real, syn), torch.tensor([1.0, 0.0, 2.0]), atol=1e-5, rtol=0)
    conv = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(layer_distance(conv, conv * 7), torch.zeros(4), atol=1e-5, rtol=0)
    assert layer_distance(conv, -conv).shape == (4,)                 # one term per output channel
    assert layer_distance(torch.randn(5), torch.randn(5)).numel() == 0   # biases and norms are left out


def tiny_net():
    torch.manual_seed(0)
    return ConvNet(1, 3, (8, 8), width=3, depth=1).double()


def batches(seed, sizes, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64).requires_grad_(requires_grad) for n in sizes]


def test_gradient_terms_pass_a_float64_gradcheck():
    """d terms / d synthetic images, a second-order derivative through the network, against finite differences."""
    net = tiny_net()
    real = batches(1, (4, 3, 5))
    syn = batches(2, (2, 1, 2), requires_grad=True)
    real_t = [torch.full((len(r),), c) for c, r in enumerate(real)]
    syn_t = [torch.full((len(s),), c) for c, s in enumerate(syn)]
    ce = torch.nn.functional.cross_entropy

    def terms(*syn_images):
        return gradient_terms(net, ce, real, list(syn_images), real_t, syn_t)

    out = terms(*syn)
    # three classes x (conv weight: 3 channels + linear weight: 3 rows)
    assert out.shape == (3 * (3 + 3),) and (out >= 0).all() and (out <= 2).all()
    assert torch.autograd.gradcheck(terms, tuple(syn), eps=1e-6, atol=1e-5)


def test_identical_real_and_synthetic_batches_have_no_distance():
    net = tiny_net()
    real = batches(3, (2, 2, 2))
    targets = [torch.full((2,), c) for c in range(3)]
    out = gradient_terms(net, torch.nn.functional.cross_entropy, real, [r.clone() for r in real], targets, targets)
    assert out.abs().max() < 1e-4           # what remains is DC's epsilon: eps / (|g|^2 + eps) per row
    other = gradient_terms(net, torch.nn.functional.cross_entropy, real, batches(4, (2, 2, 2)), targets, targets)
    assert other.mean() > 100 * out.mean()


# ---------------------------------------------------------------------------- runs


def test_dc_runs_with_its_own_defaults_and_loops(toy_dataset, tmp_path):
    run = distill(config(toy_dataset, tmp_path / "one", iterations=3), plugins=[PLUGIN])
    assert run.config.lr_img == 0.1                                  # DC's image lr, declared by the matcher
    assert [h["dc_step"] for h in run.history] == [0, 0, 0]          # IPC 1: a fresh network every update
    assert all(h["loss"] > 0 for h in run.history)
    meta = torch.load(tmp_path / "one" / "synthetic.pt", weights_only=True)["meta"]
    assert meta["syn_steps"] is None and "lr_lr" in meta["unused"]
    run = distill(config(toy_dataset, tmp_path / "two", ipc=2, iterations=5),
                  plugins=[PLUGIN], options={"dc_outer_loop": 2, "dc_inner_loop": 1})
    assert [h["dc_step"] for h in run.history] == [0, 1, 0, 1, 0]


def test_an_ipc_without_published_loops_names_the_options(ddtool, toy_dataset, tmp_path):
    r = ddtool("distill", "--matcher", "dc", "--plugin", PLUGIN, "--dataset", toy_dataset, "--out", tmp_path,
               "--ipc", "2", "--iterations", "1", "--device", "cpu", "--quiet", "--threads", "1")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "--dc-outer-loop" in r.err and "--dc-inner-loop" in r.err


STOPPER = '''
import os, signal
from ddtoolbox import hookimpl

@hookimpl
def on_iteration(run):
    if os.environ.get("DC_STOP_AT") == str(run.iteration):
        os.kill(os.getpid(), signal.SIGTERM)
'''


def test_a_resumed_dc_run_is_bit_identical(toy_dataset, tmp_path, monkeypatch):
    """Stopped in the middle of an outer loop: the trained network and the step come back from the checkpoint."""
    (tmp_path / "dc_stopper.py").write_text(STOPPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    options = {"dc_outer_loop": 3, "dc_inner_loop": 2}
    whole = distill(config(toy_dataset, tmp_path / "whole", iterations=5), plugins=[PLUGIN, "dc_stopper"],
                    options=options)
    monkeypatch.setenv("DC_STOP_AT", "1")
    with pytest.raises(Interrupted):
        distill(config(toy_dataset, tmp_path / "cut", iterations=5, checkpoint_every=0),
                plugins=[PLUGIN, "dc_stopper"], options=options)
    monkeypatch.delenv("DC_STOP_AT")
    resumed = distill(*resume_settings(tmp_path / "cut"))
    assert torch.equal(resumed.images, whole.images)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


SMOOTHING = '''
import torch.nn.functional as F
from ddtoolbox import hookimpl

@hookimpl
def on_inner_loss(run, loss_fn):
    return lambda logits, targets: F.cross_entropy(logits, targets, label_smoothing=0.2)
'''


def test_a_label_smoothing_plugin_reaches_dcs_student(toy_dataset, tmp_path, monkeypatch):
    (tmp_path / "dc_smooth.py").write_text(SMOOTHING)
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = distill(config(toy_dataset, tmp_path / "plain"), plugins=[PLUGIN])
    smoothed = distill(config(toy_dataset, tmp_path / "smooth"), plugins=[PLUGIN, "dc_smooth"])
    assert not torch.equal(plain.images, smoothed.images)


def test_a_matcher_made_by_hand_gets_the_default_options(toy_dataset):
    from ddtoolbox.data import load_dataset
    from ddtoolbox.matchers import MatcherContext

    ctx = MatcherContext(config=DistillConfig(dataset=toy_dataset, out="-", matcher="dc", ipc=10), options=None,
                         train_set=load_dataset(toy_dataset, "train"), buffer=None, device=torch.device("cpu"))
    dc = DC(ctx)
    assert (dc.outer_loop, dc.inner_loop) == (10, 50) and dc.options.dc_batch_real == 256
