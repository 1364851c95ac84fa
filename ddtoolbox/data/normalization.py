"""Moving between pixel space ([0, 1]) and the normalised space models and synthetic sets live in.

Synthetic images are optimised in normalised space; they are mapped back with
:func:`denormalize` only to be saved as pictures, so both directions must use exactly the
constants in :class:`~ddtoolbox.data.info.DatasetInfo`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .info import DatasetInfo


def _stats(x: Tensor, info: DatasetInfo) -> tuple[Tensor, Tensor]:
    # Built on x's device and dtype so the functions work unchanged on GPU batches and in half
    # precision, and broadcast over an optional leading batch dimension.
    if x.dim() not in (3, 4) or x.shape[-3] != info.channels:
        raise ValueError(
            f"expected images shaped (N, {info.channels}, H, W) or ({info.channels}, H, W) for {info.name}, "
            f"got {tuple(x.shape)}"
        )
    mean = torch.tensor(info.mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(info.std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return mean, std


def normalize(x: Tensor, info: DatasetInfo) -> Tensor:
    """Map pixels in [0, 1] to the dataset's normalised space (returns a new tensor)."""
    mean, std = _stats(x, info)
    return (x - mean) / std


def denormalize(x: Tensor, info: DatasetInfo) -> Tensor:
    """Map normalised images back to pixel space; not clamped, so callers see how far outside
    [0, 1] an optimised synthetic image has drifted and clamp only when writing a picture."""
    mean, std = _stats(x, info)
    return x * std + mean
