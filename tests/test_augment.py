"""Tests for ddtoolbox.augment: DSA on Kornia with exact replay.

The reference formulas used below (affine_grid/grid_sample with align_corners=True, integer shifts with
zero fill, clipped squares, the three colour steps) are the DSA definitions the module must reproduce.
"""

import gc
import math
import weakref
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from kornia.augmentation import RandomCrop

from ddtoolbox.augment import GROUPS, DSA, AugParams, dsa_disabled
from ddtoolbox.errors import UsageError


def _batch(b=6, c=3, h=8, w=8, dtype=torch.float32, seed=123):
    g = torch.Generator().manual_seed(seed)
    # Strictly positive, so a zero in the output can only come from the augmentation.
    return (torch.rand(b, c, h, w, generator=g) + 0.1).to(dtype)


def _draw(group, x, seed=0):
    dsa = DSA(groups=(group,))
    torch.manual_seed(seed)
    out, params = dsa(x)
    return dsa, out, params


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_bit_exact_replay(group, dtype):
    x = _batch(dtype=dtype)
    dsa, out, params = _draw(group, x)
    assert params.group == group
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    again, same = dsa(x, params)
    assert same is params
    assert torch.equal(again, out)
    # A replay can be repeated: the recorded dict is not consumed or altered by Kornia.
    assert torch.equal(dsa(x, params)[0], out)


@pytest.mark.parametrize("group", GROUPS)
def test_replay_draws_no_random_numbers(group):
    x = _batch()
    dsa, _, params = _draw(group, x)
    state = torch.get_rng_state()
    dsa(x, params)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "flip"])
def test_augmentation_changes_the_batch(group):
    # Guards against a group that silently does nothing (flip may legitimately leave an image alone).
    x = _batch()
    _, out, _ = _draw(group, x)
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("group", GROUPS)
def test_replay_on_other_input_applies_same_linear_map(group):
    # With parameters fixed every group is affine in x (linear except colour's offset), so replaying on
    # a, b and a + b must satisfy f(a + b) - f(0) = (f(a) - f(0)) + (f(b) - f(0)). Different parameters
    # on the second input would break this.
    a, b = _batch(dtype=torch.float64, seed=1), _batch(dtype=torch.float64, seed=2)
    dsa, _, params = _draw(group, a)
    f = lambda z: dsa(z, params)[0]  # noqa: E731
    zero = f(torch.zeros_like(a))
    torch.testing.assert_close(f(a + b) - zero, (f(a) - zero) + (f(b) - zero))


@pytest.mark.parametrize("group", GROUPS)
def test_gradcheck_with_replayed_params(group):
    x = _batch(b=2, c=3, h=6, w=6, dtype=torch.float64)
    dsa, _, params = _draw(group, x, seed=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: dsa(z, params)[0], (x,))


@pytest.mark.parametrize("group", GROUPS)
def test_gradient_reaches_input_on_fresh_draw(group):
    x = _batch().requires_grad_(True)
    out, _ = DSA(groups=(group,))(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_flip_flips_exactly_the_recorded_images():
    x = torch.arange(16 * 2 * 5 * 7, dtype=torch.float32).reshape(16, 2, 5, 7)  # asymmetric in width
    dsa, out, params = _draw("flip", x, seed=4)
    chosen = params.params["batch_prob"] > 0.5
    assert 0 < int(chosen.sum()) < 16, "seeded draw should flip some images and keep others"
    expected = torch.where(chosen[:, None, None, None], torch.flip(x, dims=[-1]), x)
    assert torch.equal(out, expected)
    # Siamese use: another batch under the same params flips the same indices.
    y = -x * 3 + 1
    expected_y = torch.where(chosen[:, None, None, None], torch.flip(y, dims=[-1]), y)
    assert torch.equal(dsa(y, params)[0], expected_y)


def _shifted(x, dy, dx):
    """Manual reference: out[i, j] = x[i - dy, j - dx], zero where that falls outside."""
    out = torch.zeros_like(x)
    _, h, w = x.shape
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = x[:, si, sj]
    return out


def test_crop_is_integer_shift_with_zero_fill():
    x = _batch(b=12, c=2, h=16, w=16)
    dsa, out, params = _draw("crop", x, seed=5)
    pad = int(16 * 0.125 + 0.5)
    start = params.params["src"][:, 0, :].long()  # crop start (x, y) on the padded canvas
    shifts = pad - start  # content moves right/down by this much
    assert shifts.abs().max() <= pad
    assert (shifts != 0).any()
    for b in range(x.shape[0]):
        dx, dy = int(shifts[b, 0]), int(shifts[b, 1])
        assert torch.equal(out[b], _shifted(x[b], dy, dx)), (b, dx, dy)
    # Same shift on another batch.
    y = x.flip(0)
    y_out, _ = dsa(y, params)
    for b in range(x.shape[0]):
        assert torch.equal(y_out[b], _shifted(y[b], int(shifts[b, 1]), int(shifts[b, 0])))


def test_crop_matches_kornia_random_crop_on_same_params():
    # The batched copy replaces Kornia's per-image slicing; it must give Kornia's values exactly.
    x = _batch(b=9, c=3, h=12, w=10)
    dsa, out, params = _draw("crop", x, seed=6)
    kornia_crop = RandomCrop((12, 10), padding=(1, 2), fill=0.0, p=1.0, cropping_mode="slice")
    assert torch.equal(kornia_crop(x, params=dict(params.params)), out)


def test_crop_shift_distribution_covers_all_offsets():
    x = _batch(b=200, c=1, h=8, w=8)
    _, _, params = _draw("crop", x, seed=7)
    pad = int(8 * 0.125 + 0.5)
    shifts = pad - params.params["src"][:, 0, :].long()
    assert set(shifts[:, 0].tolist()) == set(range(-pad, pad + 1))
    assert set(shifts[:, 1].tolist()) == set(range(-pad, pad + 1))


def _square_mask(h, w, cy, cx, side_h, side_w):
    mask = torch.zeros(h, w, dtype=torch.bool)
    top, left = cy - side_h // 2, cx - side_w // 2
    mask[max(top, 0) : max(top + side_h, 0), max(left, 0) : max(left + side_w, 0)] = True
    return mask


@pytest.mark.parametrize("size", [8, 6])  # even side 4 and odd side 3
def test_cutout_zeroes_exactly_the_clipped_square(size):
    x = _batch(b=20, c=2, h=size, w=size)
    dsa, out, params = _draw("cutout", x, seed=8)
    side = int(size * 0.5 + 0.5)
    cy, cx = params.params["center_y"], params.params["center_x"]
    for b in range(x.shape[0]):
        mask = _square_mask(size, size, int(cy[b]), int(cx[b]), side, side)
        assert torch.equal(out[b] == 0, mask.expand_as(out[b])), b
        assert torch.equal(out[b][:, ~mask], x[b][:, ~mask])


@pytest.mark.parametrize("size", [8, 6])
def test_cutout_centre_range_matches_reference(size):
    # Reference: centre in [0, H - 1] for an odd side, [0, H] for an even side (no middle pixel).
    side = int(size * 0.5 + 0.5)
    _, _, params = _draw("cutout", _batch(b=300, c=1, h=size, w=size), seed=16)
    expected = set(range(size + 1 - side % 2))
    assert set(params.params["center_y"].tolist()) == expected
    assert set(params.params["center_x"].tolist()) == expected


def test_cutout_square_clipped_at_corners():
    x = _batch(b=2, c=1, h=8, w=8)
    dsa, _, params = _draw("cutout", x, seed=9)
    corner = AugParams(
        "cutout",
        {**params.params, "center_y": torch.tensor([0, 8]), "center_x": torch.tensor([0, 3])},
    )
    out, _ = dsa(x, corner)
    # side 4, centre 0 -> rows/cols -2..1 -> a 2x2 block; centre row 8 -> rows 6..9 -> rows 6, 7.
    assert (out[0, 0] == 0).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    zeros_1 = (out[1, 0] == 0).nonzero().tolist()
    assert zeros_1 == [[r, c] for r in (6, 7) for c in (1, 2, 3, 4)]


def _color_params(dsa, x, r1, r2, r3):
    """Hand-made colour parameters: take a real draw's dict and overwrite the three U(0,1) draws."""
    _, params = dsa(x)
    n = x.shape[0]
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return AugParams(
        "color", {**params.params, "brightness": full(r1), "saturation": full(r2), "contrast": full(r3)}
    )


def test_color_half_draws_are_identity():
    x = _batch(dtype=torch.float64)
    dsa = DSA(groups=("color",))
    out, _ = dsa(x, _color_params(dsa, x, 0.5, 0.5, 0.5))
    torch.testing.assert_close(out, x)


def test_color_steps_match_reference_formulas():
    x = _batch(dtype=torch.float64)
    dsa = DSA(groups=("color",))
    # brightness alone: r1 = 1 adds 0.5
    torch.testing.assert_close(dsa(x, _color_params(dsa, x, 1.0, 0.5, 0.5))[0], x + 0.5)
    # saturation alone: r2 = 0 collapses channels to their per-pixel mean (grey)
    grey = x.mean(dim=1, keepdim=True).expand_as(x)
    torch.testing.assert_close(dsa(x, _color_params(dsa, x, 0.5, 0.0, 0.5))[0], grey)
    # contrast alone: r3 = 0 halves the deviation from the per-image mean
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(dsa(x, _color_params(dsa, x, 0.5, 0.5, 0.0))[0], (x - m) * 0.5 + m)
    # order brightness -> saturation -> contrast, on a random draw
    _, params = dsa(x)
    r1, r2, r3 = (params.params[k].double().view(-1, 1, 1, 1) for k in ("brightness", "saturation", "contrast"))
    y = x + (r1 - 0.5)
    y = (y - y.mean(1, keepdim=True)) * (2 * r2) + y.mean(1, keepdim=True)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * (r3 + 0.5) + y.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(dsa(x, params)[0], y)


def test_color_single_channel_saturation_is_noop():
    x = _batch(c=1, dtype=torch.float64)
    dsa = DSA(groups=("color",))
    torch.testing.assert_close(dsa(x, _color_params(dsa, x, 0.5, 0.0, 0.5))[0], x)


def _reference_affine(x, theta):
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def test_scale_matches_reference_parametrisation():
    x = _batch(b=16, dtype=torch.float64)
    _, out, params = _draw("scale", x, seed=10)
    # Kornia stores the content magnification; the reference sampling factor is its reciprocal.
    s = 1.0 / params.params["scale"].double()
    assert float(s.min()) >= 1 / 1.2 - 1e-6 and float(s.max()) <= 1.2 + 1e-6
    assert not torch.allclose(s[:, 0], s[:, 1]), "sx and sy must be drawn independently"
    zero = torch.zeros_like(s[:, 0])
    theta = torch.stack([torch.stack([s[:, 0], zero, zero], -1), torch.stack([zero, s[:, 1], zero], -1)], 1)
    torch.testing.assert_close(out, _reference_affine(x, theta))


def test_scale_factor_distribution_is_reference_uniform():
    # The reference sampling factor s is uniform on [1/1.2, 1.2] (mean 1.0167); its reciprocal, which is
    # what Kornia's own scale would give, has mean 0.9944. 4000 images x 2 axes separate these by > 10 sigma.
    _, _, params = _draw("scale", _batch(b=4000, c=1, h=4, w=4), seed=17)
    s = 1.0 / params.params["scale"].double()
    low, high = 1 / 1.2, 1.2
    assert abs(float(s.mean()) - (low + high) / 2) < 0.006
    assert abs(float((s < 1.0).double().mean()) - (1.0 - low) / (high - low)) < 0.02


def test_rotate_matches_reference_rotation():
    x = _batch(b=16, dtype=torch.float64)
    _, out, params = _draw("rotate", x, seed=11)
    deg = params.params["degrees"].double()
    assert float(deg.abs().max()) <= 15.0 and float(deg.abs().max()) > 5.0
    # Kornia's positive angle is the reference's negative one; the distribution is symmetric.
    th = -deg * math.pi / 180
    zero = torch.zeros_like(th)
    theta = torch.stack(
        [torch.stack([th.cos(), th.sin(), zero], -1), torch.stack([-th.sin(), th.cos(), zero], -1)], 1
    )
    torch.testing.assert_close(out, _reference_affine(x, theta))


def test_group_choice_is_roughly_uniform():
    dsa = DSA()
    x = _batch(b=2, c=1, h=6, w=6)
    torch.manual_seed(12)
    counts = Counter(dsa(x)[1].group for _ in range(600))
    assert set(counts) == set(GROUPS)
    assert all(60 <= n <= 140 for n in counts.values()), counts


def test_group_subset_only_uses_given_groups():
    dsa = DSA(groups=("flip", "rotate"))
    x = _batch(b=2, c=1, h=6, w=6)
    torch.manual_seed(13)
    assert {dsa(x)[1].group for _ in range(40)} == {"flip", "rotate"}


def test_seeding_reproduces_outputs():
    x = _batch()

    def run(seed):
        dsa = DSA()
        torch.manual_seed(seed)
        return [dsa(x) for _ in range(12)]

    first, second = run(14), run(14)
    assert [p.group for _, p in first] == [p.group for _, p in second]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second))
    other = run(15)
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(first, other))


def test_crop_module_built_once_per_size():
    dsa = DSA(groups=("crop",))
    x = _batch()
    dsa(x)
    module = dsa._module("crop", x)
    for _ in range(3):
        dsa(x)
    assert dsa._module("crop", x) is module and len(dsa.crops) == 1
    assert len(DSA(groups=("crop",), image_size=(8, 8)).crops) == 1


@pytest.mark.parametrize("group", GROUPS)
def test_module_does_not_keep_the_input_alive(group):
    # In long unrolls the input carries a large autograd graph; a module that kept a reference to the last
    # input (e.g. for a lazily built transform matrix) would hold that graph until the next call.
    dsa = DSA(groups=(group,))
    y = torch.rand(4, 3, 8, 8, requires_grad=True) * 2
    alive = weakref.ref(y)
    out, params = dsa(y)
    del y, out
    gc.collect()
    assert alive() is None


def test_unknown_group_is_usage_error_naming_it():
    with pytest.raises(UsageError, match="bogus") as info:
        DSA(groups=("flip", "bogus"))
    for name in GROUPS:
        assert name in str(info.value)


def test_three_dimensional_input_is_rejected_clearly():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DSA()(torch.rand(3, 8, 8))


def test_integer_input_is_rejected_clearly():
    with pytest.raises(TypeError, match="floating"):
        DSA()(torch.ones(2, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("group", GROUPS)
def test_replay_on_mismatched_batch_is_rejected(group):
    x = _batch(b=4)
    dsa, _, params = _draw(group, x)
    with pytest.raises(ValueError, match="same batch size"):
        dsa(x[:3], params)
    with pytest.raises(ValueError, match="image size"):
        dsa(_batch(b=4, h=10, w=10), params)


def test_replay_of_group_not_enabled_is_rejected():
    x = _batch()
    _, _, params = _draw("flip", x)
    with pytest.raises(ValueError, match="flip"):
        DSA(groups=("rotate",))(x, params)


def test_image_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        DSA(image_size=(32, 32))(_batch())


def test_augparams_is_frozen():
    _, _, params = _draw("flip", _batch())
    with pytest.raises(AttributeError):
        params.group = "rotate"  # type: ignore[misc]


def test_dsa_disabled_is_identity():
    x = _batch().requires_grad_(True)
    off = dsa_disabled()
    out, params = off(x)
    assert out is x and params is None
    assert off(x, None)[0] is x
