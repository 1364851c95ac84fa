"""CPD (EDF): Common Pattern Dropout, drop the alpha share of lowest-loss parameter terms.

The matching loss of one iteration is a ratio of sums over every scalar network parameter ``i``:
``l_i = (theta_N,i - theta_star,i)^2`` over ``d_i = (theta_0,i - theta_star,i)^2``. CPD drops the
``floor(alpha * P)`` smallest ``l_i`` (those parameters are already matched; the paper argues they
carry the patterns that every class shares) and keeps the ratio over the *same* kept indices::

    L = sum_kept(l) / sum_kept(d)

It does so by returning a 0/1 keep-mask from ``on_loss_vector``; the core multiplies the masks of
all plugins and reduces ``sum(w * l) / sum(w * d)``. ``--cpd-alpha 0`` (the default, and the
paper's IPC 1 setting) returns no mask, so the loss is exactly the plain matcher's.

Ties are broken by parameter index: among equal values at the cut, the lowest indices are dropped
first, so exactly ``floor(alpha * P)`` terms are dropped and the result does not depend on how a
sorting routine happens to order equal keys. The cut is found by selection, not by sorting: O(P)
per iteration (``numpy.partition`` on the CPU, which is about 30x faster there than
``torch.kthvalue``; ``torch.kthvalue`` on other devices).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from ddtoolbox import hookimpl
from ddtoolbox.errors import UsageError
from ddtoolbox.options import Settings, option

#: paper values: 0 for IPC 1, 0.25 for IPC 10, 0.375 for IPC 50 (0.5 for ImageSquawk IPC 50)
DEFAULT_ALPHA = 0.0


def check_alpha(alpha) -> float:
    """Return ``alpha`` as a float, or raise a UsageError that names ``--cpd-alpha``."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise UsageError(f"--cpd-alpha must be a number in [0, 1) (got {alpha!r})") from None
    if not (0.0 <= value < 1.0):  # also rejects NaN
        raise UsageError(f"--cpd-alpha must be in [0, 1), e.g. 0.25 (got {alpha})")
    return value


def _alpha_type(value) -> float:
    try:
        return check_alpha(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--cpd-alpha ", "", 1)) from None


@dataclass(kw_only=True)
class CPDOptions(Settings):
    """CPD's ``distill`` options."""

    cpd_alpha: float = option(
        DEFAULT_ALPHA, "share of the lowest per-parameter matching losses to drop, in [0, 1) (default 0: no dropout; "
                       "the paper uses 0 at IPC 1, 0.25 at IPC 10, 0.375 at IPC 50)", metavar="ALPHA",
        type=_alpha_type)


@hookimpl
def add_options(command):
    return CPDOptions if command == "distill" else None


def num_dropped(alpha: float, size: int) -> int:
    """``floor(alpha * size)``, computed exactly on the decimal value of ``alpha``.

    Plain float arithmetic gets this wrong at boundaries (``0.29 * 100 == 28.999999999999996``).
    """
    return math.floor(Fraction(repr(float(alpha))) * size)


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest entry (1-based) of a 1-D tensor, as a 0-d tensor on its device."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.as_tensor(np.partition(values.numpy(), k - 1)[k - 1])
    return torch.kthvalue(values, k).values


def keep_mask(losses: torch.Tensor, alpha: float) -> torch.Tensor | None:
    """A 0/1 mask (dtype of ``losses``) keeping all but the ``floor(alpha * P)`` smallest entries.

    :param losses: 1-D tensor of per-parameter losses ``l_i`` (not modified; need not be detached).
    :param alpha: dropout ratio in [0, 1).
    :return: ``None`` when nothing is dropped (``alpha * P < 1``), else the mask.

    Among entries equal to the cut value, the ones with the lowest indices are dropped first.
    """
    if losses.dim() != 1:
        raise ValueError(f"keep_mask expects a 1-D tensor, got shape {tuple(losses.shape)}")
    k = num_dropped(alpha, losses.numel())
    if k <= 0:
        return None
    values = losses.detach()
    cut = kth_smallest(values, k)                    # the k-th smallest value (1-based)
    keep = values > cut                              # everything above the cut is kept ...
    surplus = values.numel() - int(keep.sum()) - k   # ... and entries equal to the cut that need not go
    if surplus > 0:
        ties = torch.nonzero(values == cut).squeeze(1)
        keep[ties[len(ties) - surplus:]] = True      # drop the lowest-index ties, keep the rest
    return keep.to(losses.dtype)


@hookimpl
def on_loss_vector(run, num, den, options):
    mask = keep_mask(num, options.cpd_alpha)
    if mask is None:
        return None
    with torch.no_grad():
        # the plain (no-dropout) loss, so runs with and without CPD can be compared in metrics.json
        run.log(cpd_full_loss=(num.detach().sum() / den.detach().sum()).item())
    return mask
