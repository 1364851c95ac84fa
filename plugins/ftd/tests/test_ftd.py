"""FTD: the GSAM expert step, the EMA of the images, and both end to end on the toy fixtures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddtoolbox.evaluate import load_synthetic
from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL
from ddtoolbox.matchers import MatcherContext
from ddtoolbox_ftd import EMA, EMA_FILE, FTD, FTDOptions, GSAMOptions, gsam_step_factory

# ---------------------------------------------------------------------------- GSAM


class Quadratic(torch.nn.Module):
    """Two parameters; the 'logits' are the parameters themselves."""

    def __init__(self, w1, w2):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([w1, w2], dtype=torch.float64))

    def forward(self, x):
        return self.w


def quad_loss(w, labels):
    """L(w) = w1^2 + w1 w2 + 2 w2^2, gradient (2 w1 + w2, w1 + 4 w2)."""
    return w[0] ** 2 + w[0] * w[1] + 2 * w[1] ** 2


def grad_by_hand(w1, w2):
    return 2 * w1 + w2, w1 + 4 * w2


def gsam_by_hand(w1, w2, rho, alpha, lr):
    """Reference-notes section 1, one scalar at a time."""
    g0 = grad_by_hand(w1, w2)
    norm_wg = math.sqrt((abs(w1) * g0[0]) ** 2 + (abs(w2) * g0[1]) ** 2)
    e = (rho * g0[0] * w1 ** 2 / (norm_wg + 1e-12), rho * g0[1] * w2 ** 2 / (norm_wg + 1e-12))
    g1 = grad_by_hand(w1 + e[0], w2 + e[1])
    n0, n1 = math.hypot(*g0), math.hypot(*g1)
    cos = (g0[0] * g1[0] + g0[1] * g1[1]) / (n0 * n1)
    g = [g1[i] - alpha * (g0[i] - cos * n0 * g1[i] / n1) for i in range(2)]
    return w1 - lr * g[0], w2 - lr * g[1]


def one_step(w1, w2, rho, alpha, lr):
    model = Quadratic(w1, w2)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0)
    step = gsam_step_factory(GSAMOptions(rho=rho, gsam_alpha=alpha))
    loss = step(model, opt, torch.zeros(1), torch.zeros(1), quad_loss)
    return model.w.detach().tolist(), float(loss)


def test_gsam_step_matches_hand_computation():
    # w = (1, 2): g0 = (4, 9); |w| g0 = (4, 18), norm sqrt(340); e = 0.1 (4, 36) / sqrt(340)
    e = (0.4 / math.sqrt(340), 3.6 / math.sqrt(340))
    assert e == pytest.approx((0.0216930, 0.1952373), rel=1e-5)
    w, loss = one_step(1.0, 2.0, rho=0.1, alpha=0.3, lr=0.1)
    assert loss == 11.0                                     # the loss at w, not at w + e
    assert w == pytest.approx(gsam_by_hand(1.0, 2.0, 0.1, 0.3, 0.1), abs=1e-12)
    # negative weights: the perturbation scales with w^2, its sign follows the gradient
    w, _ = one_step(-0.5, 1.5, rho=0.05, alpha=0.3, lr=0.2)
    assert w == pytest.approx(gsam_by_hand(-0.5, 1.5, 0.05, 0.3, 0.2), abs=1e-12)


def test_gsam_without_perturbation_is_sgd():
    w, _ = one_step(1.0, 2.0, rho=0.0, alpha=0.3, lr=0.1)
    assert w == pytest.approx([1.0 - 0.1 * 4, 2.0 - 0.1 * 9], abs=1e-12)


def test_gsam_alpha_zero_steps_along_the_perturbed_gradient():
    w, _ = one_step(1.0, 2.0, rho=0.1, alpha=0.0, lr=0.1)
    e = (0.4 / math.sqrt(340), 3.6 / math.sqrt(340))
    g1 = grad_by_hand(1 + e[0], 2 + e[1])
    assert w == pytest.approx([1 - 0.1 * g1[0], 2 - 0.1 * g1[1]], abs=1e-12)


# ---------------------------------------------------------------------------- EMA


def test_ema_after_k_steps_matches_closed_form():
    torch.manual_seed(0)
    d, xs = 0.9, [torch.randn(3, 1, 4, 4) for _ in range(6)]
    ema = EMA(d, xs[0])
    for x in xs[1:]:
        ema.update(x)
    k = len(xs) - 1
    closed = d ** k * xs[0] + (1 - d) * sum(d ** (k - j) * xs[j] for j in range(1, k + 1))
    torch.testing.assert_close(ema.value, closed)
    assert ema.steps == k


def test_ftd_matcher_skips_skipped_iterations():
    m = FTD(MatcherContext(config=None, options=FTDOptions(ema_decay=0.5), train_set=None, buffer=None,
                           device=torch.device("cpu")))
    m.ema = EMA(m.ema_decay, torch.zeros(2))     # what start(run) does, without a run
    m.skip_update(1.0)
    m.after_step(torch.full((2,), 4.0))          # 0.5 * 0 + 0.5 * 4 = 2
    m.last_skipped = True                        # as if the matcher had skipped the update
    m.after_step(torch.full((2,), 100.0))        # not counted
    m.last_skipped = False
    m.after_step(torch.full((2,), 6.0))          # 0.5 * 2 + 0.5 * 6 = 4
    torch.testing.assert_close(m.ema.value, torch.full((2,), 4.0))
    assert m.extra_state()["ema_steps"] == 2


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_bad_decay_is_a_usage_error(decay):
    from ddtoolbox.errors import UsageError

    with pytest.raises(UsageError, match="--ema-decay"):
        FTDOptions(ema_decay=decay)


# ---------------------------------------------------------------------------- end to end


def test_distill_ftd_end_to_end_and_eval_ema(ddtool, toy_dataset, toy_buffer, tmp_path):
    out = tmp_path / "run"
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out, *TOY_DISTILL,
               "--iterations", "3", "--matcher", "ftd", "--ema-decay", "0.5")
    assert r.code == 0, r.err
    raw = load_synthetic(out / "synthetic.pt")
    ema = load_synthetic(out / EMA_FILE)
    assert "targets" not in raw and raw["meta"]["matcher"] == "ftd"
    torch.testing.assert_close(raw["ema_images"], ema["images"])
    assert not torch.equal(raw["images"], ema["images"])
    assert torch.equal(raw["labels"], ema["labels"]) and torch.equal(raw["lr"], ema["lr"])
    assert ema["meta"]["variant"] == "ema" and ema["meta"]["ema_steps"] == 3 and "ema_images" not in ema
    assert (out / "synthetic_ema.png").is_file()
    # closed form over the run: with the initial images x0 (0 iterations, same seed) and the final x3
    # the EMA lies between them; with decay 0 it is exactly the last images
    r0 = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "d0",
                *TOY_DISTILL, "--iterations", "3", "--matcher", "ftd", "--ema-decay", "0")
    assert r0.code == 0, r0.err
    d0 = load_synthetic(tmp_path / "d0" / "synthetic.pt")
    torch.testing.assert_close(d0["ema_images"], d0["images"])
    ev = ddtool("eval", "--synthetic", out / EMA_FILE, "--runs", "1", "--epochs", "2", "--device", "cpu", "--quiet")
    assert ev.code == 0, ev.err
    assert EMA_FILE in ev.out


def test_eval_every_reports_ema_on_fresh_networks(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path, *TOY_DISTILL,
               "--iterations", "3", "--matcher", "ftd", "--eval-every", "1", "--eval-runs", "1",
               "--eval-epochs", "2")
    assert r.code == 0, r.err
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert "eval_ema_mean" in history[-1] and "eval_mean" in history[-1]
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path / "plain", *TOY_DISTILL,
               "--iterations", "3", "--matcher", "ftd")
    assert r.code == 0, r.err
    with_evals, without = (load_synthetic(d / "synthetic.pt") for d in (tmp_path, tmp_path / "plain"))
    assert torch.equal(with_evals["images"], without["images"])   # evaluating draws from no stream of the run
    assert torch.equal(with_evals["ema_images"], without["ema_images"])


def test_plugin_ftd_with_another_matcher_is_refused(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path, *TOY_DISTILL,
               "--iterations", "1", "--plugin", "ftd")
    assert r.code == 2 and "--matcher ftd" in r.err


def test_flat_buffer_is_accepted_by_the_distiller(ddtool, toy_dataset, tmp_path):
    buf = tmp_path / "flat"
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", buf, *TOY_BUFFER, "--num-experts", "1",
               "--epochs", "2", "--trainer", "ftd", "--rho", "0.05", "--gsam-alpha", "0.3")
    assert r.code == 0, r.err
    meta = json.loads((buf / "buffer.json").read_text())
    assert meta["trainer"] == "ftd" and meta["epochs"] == 2 and len(meta["experts"]) == 1
    assert meta["trainer_options"] == {"rho": 0.05, "gsam_alpha": 0.3}
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", buf, *TOY_BUFFER, "--num-experts", "2", "--epochs", "2",
               "--trainer", "ftd", "--rho", "0.1", "--gsam-alpha", "0.3", "--resume")
    assert r.code == 2 and "trainer_options" in r.err    # resuming with another rho would mix two kinds of experts
    for matcher in ("ftd", "mtt"):
        r = ddtool("distill", "--dataset", toy_dataset, "--buffer", buf, "--out", tmp_path / matcher, *TOY_DISTILL,
                   "--iterations", "2", "--max-start-epoch", "1", "--matcher", matcher)
        assert r.code == 0, r.err


def test_bad_rho_is_a_usage_error(ddtool, toy_dataset, tmp_path):
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", tmp_path, *TOY_BUFFER, "--trainer", "ftd", "--rho", "-1")
    assert r.code == 2 and "--rho" in r.err


def test_plugins_lists_ftd_and_its_options(ddtool):
    r = ddtool("plugins")
    assert r.code == 0, r.err
    for text in ("ftd", "--rho", "--gsam-alpha", "--ema-decay"):
        assert text in r.out
