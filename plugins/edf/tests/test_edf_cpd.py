"""CPD: which terms are dropped, and what loss the core reduces to (hand computations)."""

import math
from types import SimpleNamespace

import pytest
import torch

from ddtoolbox.losses import combine_weights, matching_loss as reduce_loss
from ddtoolbox.errors import UsageError
from ddtoolbox_edf import cpd


def _run():
    return SimpleNamespace(log=lambda **kw: None, iteration=0)


def _vector(alpha, num, den):
    """CPD's on_loss_vector as the core calls it: the run, the terms and CPD's own options."""
    return cpd.on_loss_vector(_run(), num, den, cpd.CPDOptions(cpd_alpha=alpha))


def test_drops_the_smallest_by_hand():
    l = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    # floor(0.4 * 5) = 2: drop 1.0 (index 1) and 2.0 (index 3)
    assert cpd.keep_mask(l, 0.4).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    # floor(0.5 * 5) = 2 as well; floor(0.6 * 5) = 3 also drops 3.0
    assert cpd.keep_mask(l, 0.5).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert cpd.keep_mask(l, 0.6).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    # floor(0.19 * 5) = 0: nothing dropped, no mask at all
    assert cpd.keep_mask(l, 0.19) is None


def test_ties_drop_lowest_indices_first_and_exactly_k():
    l = torch.tensor([2.0, 1.0, 1.0, 1.0, 3.0])
    assert cpd.keep_mask(l, 0.4).tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    flat = torch.full((10,), 7.0)
    assert cpd.keep_mask(flat, 0.35).tolist() == [0.0] * 3 + [1.0] * 7
    # tie below the cut and at the cut: [0, 0, 1, 1, 1, 5], k = 3 -> both zeros and the first 1
    l = torch.tensor([1.0, 0.0, 1.0, 5.0, 0.0, 1.0])
    assert cpd.keep_mask(l, 0.5).tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("alpha", [0.01, 0.125, 0.25, 0.29, 0.375, 0.5, 0.75, 0.999])
def test_exact_count_with_many_ties(alpha):
    g = torch.Generator().manual_seed(0)
    l = torch.randint(0, 4, (1000,), generator=g).float()
    mask = cpd.keep_mask(l, alpha)
    k = math.floor(round(alpha * 1000, 9))
    assert int((mask == 0).sum()) == k
    if 0 < k < 1000:
        assert l[mask == 0].max() <= l[mask == 1].min()
    # deterministic: same input, same mask
    assert torch.equal(mask, cpd.keep_mask(l.clone(), alpha))


def test_floor_is_exact_on_the_decimal_value():
    assert 0.29 * 100 < 29  # what plain float arithmetic would floor to 28
    assert cpd.num_dropped(0.29, 100) == 29
    assert cpd.num_dropped(0.25, 615_690) == 153_922
    assert cpd.num_dropped(0.375, 320_010) == 120_003
    assert cpd.num_dropped(0.0, 10) == 0


def test_reduce_with_core_is_sum_over_kept_indices():
    num = torch.tensor([4.0, 1.0, 9.0, 0.5, 2.0], requires_grad=True)
    den = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    w = combine_weights([("cpd", _vector(0.4, num, den))], num)
    loss = reduce_loss(num, den, w)
    # drops 0.5 (index 3) and 1.0 (index 1), keeps 0, 2, 4: (4 + 9 + 2) / (1 + 3 + 5)
    assert loss.item() == pytest.approx(15.0 / 9.0, rel=1e-7)
    loss.backward()
    # dropped terms get no gradient; kept ones get 1 / sum_kept(d)
    assert num.grad.tolist() == pytest.approx([1 / 9, 0.0, 1 / 9, 0.0, 1 / 9])


def test_alpha_zero_is_exactly_the_plain_loss():
    g = torch.Generator().manual_seed(1)
    num, den = torch.rand(1234, generator=g), torch.rand(1234, generator=g) + 0.1
    assert _vector(0.0, num, den) is None
    w = combine_weights([("cpd", _vector(0.0, num, den))], num)
    assert w is None
    assert torch.equal(reduce_loss(num, den, w), num.sum() / den.sum())
    # an alpha too small to drop one element is also a no-op
    assert _vector(1e-4, num, den) is None


def test_mask_combines_with_another_plugin_by_product():
    num = torch.tensor([3.0, 1.0, 2.0, 4.0])
    den = torch.ones(4)
    other = torch.tensor([1.0, 1.0, 0.0, 1.0])
    w = combine_weights([("cpd", cpd.keep_mask(num, 0.25)), ("other", other)], num)
    assert w.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert reduce_loss(num, den, w).item() == pytest.approx(7.0 / 2.0)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "x"])
def test_bad_alpha_names_the_option(bad):
    with pytest.raises(UsageError, match="--cpd-alpha"):
        cpd.CPDOptions(cpd_alpha=bad)


def test_good_alpha_passes():
    for ok in (0.0, 0.25, 0.999, "0.5"):
        assert cpd.CPDOptions(cpd_alpha=ok).cpd_alpha == float(ok)
