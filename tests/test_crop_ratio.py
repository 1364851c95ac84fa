"""``--dsa-crop-ratio``: the DSA crop's reach, on distill, buffer and eval, validated and recorded."""

import json

import pytest
import torch

from ddtoolbox.augment import CROP_RATIO, DSA, crop_pad
from ddtoolbox.config import BufferConfig, DistillConfig, EvalSettings
from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors
from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL


def _shifts(ratio, size, batch=400, seed=0):
    """The integer (dx, dy) translation of every image in one crop draw, checked against the pixels."""
    x = torch.zeros(batch, 1, size, size)
    x[:, :, size // 2, size // 2] = 1.0     # one bright pixel in the middle of every image
    torch.manual_seed(seed)
    out, params = DSA(groups=("crop",), crop_ratio=ratio)(x)
    assert params.group == "crop"
    shifts = crop_pad(size, ratio) - params.params["src"][:, 0, :].long()   # (dx, dy): content moves by this
    for img, (dx, dy) in zip(out[:, 0], shifts.tolist()):
        ys, xs = torch.nonzero(img == 1.0, as_tuple=True)
        cy, cx = size // 2 + dy, size // 2 + dx
        if 0 <= cy < size and 0 <= cx < size:
            assert (ys.tolist(), xs.tolist()) == ([cy], [cx])
        else:
            assert len(ys) == 0 and img.abs().sum() == 0     # moved out of the frame, zero fill
    return shifts, out


@pytest.mark.parametrize("ratio, size, pad", [(0.125, 32, 4), (0.25, 32, 8), (0.25, 28, 7), (0.125, 28, 4),
                                              (0.5, 16, 8), (0.0, 16, 0), (0.1, 20, 2)])
def test_the_largest_shift_is_int_of_size_times_ratio_plus_half(ratio, size, pad):
    assert crop_pad(size, ratio) == pad
    shifts, _ = _shifts(ratio, size)
    assert shifts.abs().max().item() == pad
    # every translation in [-pad, pad] occurs on both axes, and nothing beyond
    assert set(shifts[:, 0].tolist()) == set(range(-pad, pad + 1))
    assert set(shifts[:, 1].tolist()) == set(range(-pad, pad + 1))


def test_a_wider_crop_moves_content_further_with_zero_fill():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 2, 32, 32, generator=g) + 0.5
    torch.manual_seed(3)
    out, params = DSA(groups=("crop",), crop_ratio=0.25)(x)
    shift = 8 - params.params["src"][:, 0, :].long()      # content moves right/down by this much
    assert shift.abs().max() > 4                           # beyond what 0.125 allows
    for b in range(len(x)):
        dx, dy = shift[b].tolist()
        expected = torch.zeros_like(x[b])
        src = x[b][:, max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)]
        expected[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
        assert torch.equal(out[b], expected), (b, dx, dy)
    # replay applies the same shifts
    again, _ = DSA(groups=("crop",), crop_ratio=0.25)(x, params)
    assert torch.equal(again, out)


def test_default_is_mtts_eighth():
    assert CROP_RATIO == 0.125 and DSA().crop_ratio == 0.125
    for cls in (BufferConfig, DistillConfig, EvalSettings):
        assert cls.__dataclass_fields__["dsa_crop_ratio"].default == 0.125


@pytest.mark.parametrize("bad", [-0.1, 0.51, float("nan"), True, "x"])
def test_dsa_refuses_ratios_outside_the_range(bad):
    with pytest.raises(UsageError, match="dsa-crop-ratio"):
        DSA(crop_ratio=bad)


@pytest.mark.parametrize("bad", ["0.6", "-0.01", "nan", "wide"])
@pytest.mark.parametrize("command", ["distill", "buffer", "eval"])
def test_bad_values_exit_2_with_one_line(ddtool, tmp_path, command, bad):
    base = {"distill": ["--out", tmp_path], "buffer": ["--out", tmp_path], "eval": ["--random-ipc", "1"]}[command]
    r = ddtool(command, *base, "--dsa-crop-ratio", bad)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "--dsa-crop-ratio" in lines[0], r.err
    assert ("[0, 0.5]" in lines[0]) != (bad == "wide") and ("number" in lines[0]) == (bad == "wide"), r.err
    assert "Traceback" not in r.err


def test_settings_objects_check_the_range_too():
    with pytest.raises(UsageError, match=r"--dsa-crop-ratio must be in \[0, 0.5\]"):
        DistillConfig(out="x", dsa_crop_ratio=0.75)
    assert DistillConfig(out="x", dsa_crop_ratio=0.5).dsa_crop_ratio == 0.5


def test_recorded_in_buffer_synthetic_set_and_eval_json(ddtool, toy_dataset, tmp_path):
    buf = tmp_path / "buf"
    r = ddtool("buffer", "--dataset", toy_dataset, "--out", buf, *TOY_BUFFER, "--num-experts", "1",
               "--dsa-crop-ratio", "0.2")
    assert r.code == 0, r.err
    assert json.loads((buf / "buffer.json").read_text())["dsa_crop_ratio"] == 0.2
    run = tmp_path / "run"
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", buf, "--out", run, *TOY_DISTILL,
               "--iterations", "1", "--dsa-crop-ratio", "0.25")
    assert r.code == 0, r.err
    meta = load_tensors(run / "synthetic.pt", "synthetic set", "")["meta"]
    assert meta["dsa_crop_ratio"] == 0.25
    r = ddtool("eval", "--synthetic", run / "synthetic.pt", "--runs", "1", "--epochs", "1", "--device", "cpu",
               "--quiet", "--dsa-crop-ratio", "0.3", "--json", tmp_path / "eval.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "eval.json").read_text())["dsa_crop_ratio"] == 0.3


def test_the_run_uses_the_ratio_it_was_given(toy_buffer, tmp_path):
    """distill builds its DSA with --dsa-crop-ratio (not the default)."""
    from ddtoolbox import distill
    from ddtoolbox.testing import toy_config

    run = distill(toy_config(toy_buffer, tmp_path, iterations=1, dsa_crop_ratio=0.375))
    assert run.augment.crop_ratio == 0.375
