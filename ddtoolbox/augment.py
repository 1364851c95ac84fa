"""Differentiable Siamese Augmentation (DSA) built on Kornia, with exact parameter replay.

Dataset distillation optimises *images*, so every augmentation sits between the learnable pixels and the
loss: it must pass gradients back to the pixels, and it must be possible to apply the *same* random
transform twice. The second requirement comes from two places:

* siamese sharing: DSA compares a real batch and a synthetic batch under one and the same random
  transform; augmenting them independently would add a random mismatch to the matching loss;
* checkpointed unrolls: trajectory-style matchers recompute inner training steps in the backward pass
  instead of storing them, and the recomputation is only correct if it reproduces the forward step
  bit for bit, augmentation included.

Both are served by returning the drawn parameters from every call (:class:`AugParams`) and accepting
them back (``dsa(x, params)``), which replays without touching the random number generator.

Reference strategy ``color_crop_cutout_flip_scale_rotate``: each call picks one group uniformly and
draws that group's parameters independently per image. Group choice uses ``torch.randint`` and the
per-image draws go through Kornia, which uses torch's global generator, so ``torch.manual_seed``
makes a whole run reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from kornia.augmentation import RandomAffine, RandomCrop, RandomHorizontalFlip, RandomRotation
from kornia.augmentation._2d.intensity.base import IntensityAugmentationBase2D
from torch import Tensor

from ddtoolbox.errors import UsageError

__all__ = ["GROUPS", "AugParams", "DSA", "dsa_disabled", "crop_pad", "siamese", "RandomCutout", "RandomDSAColor"]

GROUPS: Tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")

# Constants of the reference DSA parameter set. They are fixed (not constructor arguments) because
# published distilled sets are only comparable when produced under the same augmentation. The one
# exception is the crop's reach: MTT, FTD and DATM translate by up to 12.5% of the side everywhere,
# while EDF's distillation and evaluation use 25% (its expert training keeps 12.5%), so it is a
# constructor argument (``--dsa-crop-ratio``) with MTT's value as the default.
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
CROP_RATIO = 0.125
#: the range ``--dsa-crop-ratio`` accepts: 0.5 already lets the content leave the frame entirely
CROP_RATIO_RANGE = (0.0, 0.5)
CUTOUT_RATIO = 0.5
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5


def _extent(size: int, ratio: float) -> int:
    """Round half up, as the reference does (``int(size * ratio + 0.5)``), so sizes match it exactly."""
    return int(size * ratio + 0.5)


def crop_pad(size: int, ratio: float = CROP_RATIO) -> int:
    """The crop group's largest translation, in pixels, for images of side ``size``: ``int(size * ratio + 0.5)``."""
    return _extent(size, ratio)


@dataclass(frozen=True)
class AugParams:
    """What one DSA call drew: enough to apply the identical transform again.

    ``params`` is the dict Kornia recorded for the chosen group (tensors on the CPU unless the module
    was moved). Keeping Kornia's own format, rather than a translation of it, is what makes replay
    exact: the replay runs the very code path that produced the original output.
    """

    group: str
    params: dict


class RandomCutout(IntensityAugmentationBase2D):
    """Zero one ``round(ratio * H) x round(ratio * W)`` rectangle per image, centred at a random pixel.

    Kornia's ``RandomErasing`` draws the rectangle inside the image with a random size and aspect; DSA
    needs a fixed-size hole whose centre may sit near the border, so the hole can be partly outside
    and is clipped. The centre is drawn as in the reference: uniform over ``[0, H - 1]`` when the side
    is odd and over ``[0, H]`` when it is even (the even square has no middle pixel, so the reference
    lets it reach one row further to keep the hole's coverage symmetric).

    The hole is a boolean mask applied with ``masked_fill``, so untouched pixels keep an identity
    gradient and erased ones get zero, and no in-place write touches the input.
    """

    def __init__(self, ratio: float = CUTOUT_RATIO) -> None:
        super().__init__(p=1.0)
        self.flags = {"ratio": ratio}

    def generate_parameters(self, batch_shape: Tuple[int, ...]) -> Dict[str, Tensor]:
        batch, height, width = batch_shape[0], batch_shape[-2], batch_shape[-1]
        side_h, side_w = _extent(height, self.flags["ratio"]), _extent(width, self.flags["ratio"])
        center_y = torch.randint(0, height + 1 - side_h % 2, (batch,), device=self.device)
        center_x = torch.randint(0, width + 1 - side_w % 2, (batch,), device=self.device)
        return {"center_y": center_y, "center_x": center_x}

    def apply_transform(
        self, input: Tensor, params: Dict[str, Tensor], flags: Dict[str, Any], transform: Optional[Tensor] = None
    ) -> Tensor:
        _, _, height, width = input.shape
        side_h, side_w = _extent(height, flags["ratio"]), _extent(width, flags["ratio"])
        top = params["center_y"].to(input.device).view(-1, 1) - side_h // 2
        left = params["center_x"].to(input.device).view(-1, 1) - side_w // 2
        rows = torch.arange(height, device=input.device)
        cols = torch.arange(width, device=input.device)
        in_rows = (rows >= top) & (rows < top + side_h)  # (B, H)
        in_cols = (cols >= left) & (cols < left + side_w)  # (B, W)
        hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
        return input.masked_fill(hole, 0.0)


class RandomDSAColor(IntensityAugmentationBase2D):
    """DSA colour group: brightness shift, then saturation, then contrast, one draw of each per image.

    Kornia's ``ColorJitter`` clamps to ``[0, 1]`` and works in HSV for saturation; both break the
    property the distillation relies on, an affine map of the pixels with an everywhere-nonzero
    gradient, and both differ numerically from the reference. So the three steps are written out:

    * brightness ``x + (r1 - 0.5) * 1.0``;
    * saturation ``(x - m_c) * (2 r2) + m_c`` with ``m_c`` the per-pixel channel mean (a no-op for
      one channel, because then ``x == m_c``);
    * contrast ``(x - m) * (r3 + 0.5) + m`` with ``m`` the image mean over channels and pixels.

    The recorded parameters are the raw draws ``r1, r2, r3 ~ U(0, 1)`` under the keys ``brightness``,
    ``saturation`` and ``contrast``; all three at 0.5 is the identity.
    """

    def __init__(self) -> None:
        super().__init__(p=1.0)
        self.flags = {"brightness": BRIGHTNESS, "saturation": SATURATION, "contrast": CONTRAST}

    def generate_parameters(self, batch_shape: Tuple[int, ...]) -> Dict[str, Tensor]:
        batch = batch_shape[0]
        # Three separate draws in the reference's order, so one seed gives the reference's values.
        brightness = torch.rand(batch, device=self.device, dtype=self.dtype)
        saturation = torch.rand(batch, device=self.device, dtype=self.dtype)
        contrast = torch.rand(batch, device=self.device, dtype=self.dtype)
        return {"brightness": brightness, "saturation": saturation, "contrast": contrast}

    def apply_transform(
        self, input: Tensor, params: Dict[str, Tensor], flags: Dict[str, Any], transform: Optional[Tensor] = None
    ) -> Tensor:
        def per_image(key: str) -> Tensor:
            return params[key].to(device=input.device, dtype=input.dtype).view(-1, 1, 1, 1)

        out = input + (per_image("brightness") - 0.5) * flags["brightness"]
        mean = out.mean(dim=1, keepdim=True)
        out = (out - mean) * (per_image("saturation") * flags["saturation"]) + mean
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        return (out - mean) * (per_image("contrast") + flags["contrast"]) + mean


class _ReferenceScale(RandomAffine):
    """Independent x/y scaling with the reference's parametrisation.

    The reference samples the input at ``s * p`` for output position ``p`` (``s`` uniform in
    ``[1/1.2, 1.2]``), i.e. it *shrinks* content by ``s``; Kornia's ``scale`` magnifies content by
    ``scale``. Drawing ``s`` uniformly through Kornia and storing ``1/s`` gives exactly the reference
    distribution instead of its reciprocal (which has a different mean: 0.994 vs 1.017 for the
    magnification). ``align_corners=True`` puts the centre of the scaling at pixel ``(W-1)/2``, as the
    reference's ``affine_grid(..., align_corners=True)`` does.
    """

    def __init__(self, ratio: float = SCALE_RATIO) -> None:
        low, high = 1.0 / ratio, ratio
        super().__init__(degrees=0.0, scale=(low, high, low, high), align_corners=True, p=1.0)

    def generate_parameters(self, batch_shape: Tuple[int, ...]) -> Dict[str, Tensor]:
        params = super().generate_parameters(batch_shape)
        params["scale"] = params["scale"].reciprocal()
        return params


class _ShiftCrop(RandomCrop):
    """Kornia's ``RandomCrop`` on a zero-padded canvas, with a batched pixel copy.

    A crop of the original size out of a canvas padded by ``pad`` on every side is an integer
    translation with zero fill; Kornia draws the crop start uniformly in ``{0, ..., 2 pad}``, so the
    shift is uniform in ``{-pad, ..., pad}`` as in the reference. Parameters, their storage and replay
    are Kornia's. Only the copy is replaced: Kornia's "slice" mode slices each image in a Python loop,
    which dominated the cost of this group on small batches; two ``gather`` calls give the same values
    bit for bit (it is a pure copy) with an identity/zero gradient, in two kernels for any batch size.
    """

    def __init__(self, height: int, width: int, ratio: float = CROP_RATIO) -> None:
        pad_h, pad_w = _extent(height, ratio), _extent(width, ratio)
        super().__init__(
            (height, width), padding=(pad_w, pad_h), fill=0.0, padding_mode="constant", p=1.0, cropping_mode="slice"
        )

    def apply_transform(
        self, input: Tensor, params: Dict[str, Tensor], flags: Dict[str, Any], transform: Optional[Tensor] = None
    ) -> Tensor:
        batch, channels, height, width = input.shape
        if tuple(flags["size"]) != (height, width):
            raise ValueError(f"crop built for size {tuple(flags['size'])} applied to images of size {(height, width)}.")
        left, right, top, bottom = self.compute_padding(tuple(input.shape), flags)
        canvas = F.pad(input, [left, right, top, bottom])  # zero fill
        start = params["src"][:, 0, :].to(device=input.device, dtype=torch.long)  # (B, 2) as (x, y)
        rows = start[:, 1:2] + torch.arange(height, device=input.device)  # (B, H)
        cols = start[:, 0:1] + torch.arange(width, device=input.device)  # (B, W)
        out = canvas.gather(2, rows[:, None, :, None].expand(batch, channels, height, canvas.shape[-1]))
        return out.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def _check_batch(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"DSA expects a torch.Tensor of shape (B, C, H, W); got {type(x).__name__}.")
    if x.dim() != 4:
        raise ValueError(
            f"DSA expects a batch of shape (B, C, H, W); got a {x.dim()}-D tensor of shape {tuple(x.shape)}. "
            "Add the missing dimension (e.g. x.unsqueeze(0) for a single image)."
        )
    if not x.is_floating_point():
        raise TypeError(f"DSA expects a floating-point batch; got dtype {x.dtype}. Convert with x.float().")


class DSA(torch.nn.Module):
    """Pick one augmentation group per call, draw per-image parameters, and return them for replay.

    One group per call (rather than a chain of all six) is the reference DSA behaviour: it keeps each
    augmented image recognisably close to the original, which matters when the images themselves are
    what is being learned.

    ``groups`` may repeat a name to make it proportionally more likely; the choice is uniform over
    the sequence as given, like the reference's split of the strategy string.

    The Kornia modules are built once here (the crop module once per image size, on first use or from
    ``image_size``), because this runs thousands of times inside inner loops.

    ``crop_ratio`` sets the crop group's reach: translations of up to ``int(H * crop_ratio + 0.5)``
    pixels (0.125, the default, as MTT/FTD/DATM; 0.25 in EDF's distillation and evaluation).
    """

    def __init__(self, groups: Sequence[str] = GROUPS, image_size: Optional[Tuple[int, int]] = None,
                 crop_ratio: float = CROP_RATIO) -> None:
        super().__init__()
        low, high = CROP_RATIO_RANGE
        if isinstance(crop_ratio, bool) or not isinstance(crop_ratio, (int, float)) or not low <= crop_ratio <= high:
            raise UsageError(f"--dsa-crop-ratio must be a number in [{low:g}, {high:g}] (got {crop_ratio!r}); "
                             f"e.g. 0.125 (MTT) or 0.25 (EDF's distillation)")
        self.crop_ratio = float(crop_ratio)
        if isinstance(groups, str):
            groups = (groups,)
        groups = tuple(groups)
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise UsageError(
                f"unknown DSA augmentation group {unknown[0]!r}; valid groups are: {', '.join(GROUPS)}. "
                "Fix the group list (e.g. the DSA strategy string)."
            )
        if not groups:
            raise UsageError(f"no DSA augmentation group given; choose from: {', '.join(GROUPS)}.")
        self.groups: Tuple[str, ...] = groups
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

        factories = {
            "color": RandomDSAColor,
            "cutout": RandomCutout,
            "flip": lambda: RandomHorizontalFlip(p=0.5),
            "scale": _ReferenceScale,
            # Kornia rotates about pixel ((W-1)/2, (H-1)/2) in pixel units; for square images this is the
            # reference's normalised-coordinate rotation. The sign convention is irrelevant: the angle
            # distribution is symmetric.
            "rotate": lambda: RandomRotation(degrees=ROTATE_DEGREES, align_corners=True, p=1.0),
        }
        self.augs = torch.nn.ModuleDict({g: factories[g]() for g in dict.fromkeys(groups) if g != "crop"})
        self.crops = torch.nn.ModuleDict()
        if "crop" in groups and self.image_size is not None:
            self.crops[self._size_key(*self.image_size)] = _ShiftCrop(*self.image_size, ratio=self.crop_ratio)

    @staticmethod
    def _size_key(height: int, width: int) -> str:
        return f"{height}x{width}"

    def _module(self, group: str, x: Tensor) -> torch.nn.Module:
        if group != "crop":
            return self.augs[group]
        height, width = x.shape[-2:]
        key = self._size_key(height, width)
        if key not in self.crops:
            crop = _ShiftCrop(height, width, ratio=self.crop_ratio)
            # Draw where the other groups draw (CPU unless this module was moved), so one seed gives the
            # same stream whichever group happens to be built lazily.
            sibling = next(iter([*self.augs.values(), *self.crops.values()]), None)
            if sibling is not None:
                crop.set_rng_device_and_dtype(sibling.device, sibling.dtype)
            self.crops[key] = crop
        return self.crops[key]

    def _check_replay_shape(self, params: AugParams, x: Tensor) -> None:
        """Refuse a replay on a batch the parameters were not drawn for.

        Kornia would either fail deep inside a warp or, worse, silently apply e.g. a cutout centre
        drawn for 32x32 images to 28x28 ones, which breaks the "same transform" promise.
        """
        recorded = params.params.get("forward_input_shape")
        if recorded is None:
            return
        batch, _, height, width = (int(v) for v in recorded.tolist())
        if params.group == "crop":  # Kornia records the padded canvas for crops
            height -= 2 * _extent(x.shape[-2], self.crop_ratio)
            width -= 2 * _extent(x.shape[-1], self.crop_ratio)
        if (batch, height, width) != (x.shape[0], x.shape[-2], x.shape[-1]):
            raise ValueError(
                f"cannot replay {params.group!r} parameters drawn for {batch} images of size {(height, width)} "
                f"on {x.shape[0]} images of size {tuple(x.shape[-2:])}: per-image parameters need the same "
                "batch size and image size."
            )

    def forward(self, x: Tensor, params: Optional[AugParams] = None) -> Tuple[Tensor, AugParams]:
        """Augment ``x``; with ``params`` from an earlier call, apply exactly that transform again.

        A replay draws no random numbers, so it neither depends on nor disturbs the generator state:
        recomputing a checkpointed step does not shift the randomness of the steps after it.
        """
        _check_batch(x)
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"DSA was built for images of size {self.image_size} but got {tuple(x.shape[-2:])}; "
                "pass the right image_size (or None to accept any size)."
            )
        if params is None:
            group = self.groups[int(torch.randint(len(self.groups), (1,)))]
            aug = self._module(group, x)
            out = aug(x)
            # Snapshot the dict: Kornia keeps a reference and replaces it on the next call.
            return out, AugParams(group, dict(aug._params))

        if not isinstance(params, AugParams):
            raise TypeError(f"params must be the AugParams returned by a DSA call; got {type(params).__name__}.")
        if params.group not in self.groups:
            raise ValueError(
                f"cannot replay group {params.group!r}: this DSA only applies {', '.join(self.groups)}."
            )
        self._check_replay_shape(params, x)
        aug = self._module(params.group, x)
        # A shallow copy: Kornia may insert keys into the dict it is given, and AugParams is meant to be
        # reusable any number of times.
        return aug(x, params=dict(params.params)), params


def first_images(params: AugParams, n: int) -> AugParams:
    """The parameters ``params`` drew for its first ``n`` images, to replay on a batch of ``n``."""
    out = {}
    batch = int(params.params["forward_input_shape"][0])
    for key, value in params.params.items():
        if key == "forward_input_shape":
            value = value.clone()
            value[0] = n
        elif isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
            value = value[:n]
        out[key] = value
    return AugParams(params.group, out)


def siamese(augment, real: Tensor, syn: Tensor, params=None) -> Tuple[Tensor, Tensor, Optional[tuple]]:
    """One DSA draw applied to a real and a synthetic batch: ``(real_aug, syn_aug, params)``.

    Gradient- and distribution-matching compare a real and a synthetic batch; augmenting them
    independently would add a random mismatch to what is compared. As the reference DSA's shared
    seed does, both batches get the same group, and image ``i`` of each the same parameters: the
    parameters are drawn once, for the larger batch, and the smaller batch replays those of its
    first images (:func:`first_images`). The generator advances by that one draw.

    ``params`` (the third value of an earlier call) replays the same transforms on both batches
    without drawing, as :meth:`DSA.forward` does. ``augment`` ``None`` (``--no-dsa``) returns the
    batches unchanged and ``None``.
    """
    if augment is None:
        return real, syn, None
    if params is None:
        big = real if len(real) >= len(syn) else syn
        big_aug, drawn = augment(big)
        if drawn is None:          # dsa_disabled(): nothing was drawn, nothing to share
            return augment(real)[0], augment(syn)[0], None
        small = syn if big is real else real
        small_params = first_images(drawn, len(small))
        params = (drawn, small_params) if big is real else (small_params, drawn)
        real_aug = big_aug if big is real else augment(real, params=params[0])[0]
        syn_aug = big_aug if big is syn else augment(syn, params=params[1])[0]
        return real_aug, syn_aug, params
    real_params, syn_params = params
    return augment(real, params=real_params)[0], augment(syn, params=syn_params)[0], params


class _NoDSA(torch.nn.Module):
    """Identity with DSA's call signature, so training code needs no ``if dsa:`` branches."""

    def forward(self, x: Tensor, params: Optional[AugParams] = None) -> Tuple[Tensor, None]:
        return x, None


def dsa_disabled() -> _NoDSA:
    """The ``--no-dsa`` stand-in: returns ``(x, None)`` unchanged, for ablations against DSA."""
    return _NoDSA()
