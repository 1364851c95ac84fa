"""Moving between pixel space ([0, 1]) and the normalised space models and synthetic sets live in.

Synthetic images are optimised in normalised space; they are mapped back with
:func:`denormalize` only to be saved as pictures, so both directions must use exactly the
constants in :class:`~ddtoolbox.data.info.DatasetInfo`.
"""

from __future__ import annotations

import math

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


#: recorded and current normalisation constants must agree this closely (JSON keeps a float's 17 digits)
NORMALISATION_TOLERANCE = 1e-6


def check_normalisation(info: DatasetInfo, recorded: dict, what: str, remake: str) -> None:
    """Refuse a file whose recorded ``mean``/``std`` are not the dataset's: its numbers live in
    another normalised space (or the record was damaged), and using them would silently shift
    every pixel. A record without the keys (older files) passes.

    :param what: the file, for the message ("buffer runs/b").
    :param remake: the way out, e.g. "make the buffer again with 'ddtool buffer'".
    """
    from ddtoolbox.errors import UsageError

    for key, now in (("mean", info.mean), ("std", info.std)):
        then = recorded.get(key)
        if then is None:
            continue
        ok = (isinstance(then, (list, tuple)) and len(then) == len(now)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in then)
              and all(abs(a - b) <= NORMALISATION_TOLERANCE * max(1.0, abs(b)) for a, b in zip(then, now)))
        if not ok:
            raise UsageError(f"{what} records the normalisation {key} {then!r}, but {info.name}'s is {list(now)}: it "
                             f"was made from other images or its metadata was edited; {remake}")
