"""The rule that nothing non-finite is ever published or stored, enforced in one place.

A NaN or an infinity in an expert trajectory, a trained network, a synthetic set or a checkpoint is
never a result: it is a run that diverged. A network whose parameters overflowed still predicts one
class for every image, so its accuracy looks like a number (chance) and would be stored, printed
and compared as if it meant something. Every writer of tensors (:func:`ddtoolbox.io.save_tensors`)
and every place that turns a trained network into a number (an expert's accuracy, an evaluation,
a full-data accuracy) calls :func:`require_finite` first, so such a run stops with
:class:`~ddtoolbox.errors.Diverged` (exit 3, one line) and nothing of it is written.

Plain numbers in metadata are left alone: NaN is a legitimate "no value" in some records (a
class with no images in a Comp-DD score), and a record of a skipped iteration may hold the loss
that was skipped.
"""

from __future__ import annotations

import math

import torch

from .errors import Diverged


def first_non_finite(obj, where: str = "") -> str | None:
    """Where in ``obj`` (a tensor, or dicts and lists of them) the first non-finite tensor value is, or None.

    The answer reads like an index path (``state_dict['conv.weight']``); ``""`` means ``obj`` itself.
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return None if bool(torch.isfinite(obj).all()) else where
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def require_finite(obj, what: str, fix: str) -> None:
    """Raise :class:`Diverged` (exit 3) naming ``what`` when ``obj`` holds a NaN or an infinity.

    :param what: what is being checked, as a sentence's subject ("expert 0 after epoch 3").
    :param fix: what the user should do (lower which learning rate).
    """
    found = first_non_finite(obj)
    if found is not None:
        part = f" (at {found})" if found else ""
        raise Diverged(f"{what} holds NaN or infinite values{part}: the run diverged and nothing of it was "
                       f"written; {fix}")


def require_finite_network(net: torch.nn.Module, what: str, fix: str) -> None:
    """:func:`require_finite` on a network's parameters and buffers (batch-norm statistics included)."""
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise Diverged(f"{what} diverged: its {name} became NaN or infinite, so its accuracy would mean "
                           f"nothing and nothing of it was written; {fix}")


def require_finite_number(value: float, what: str, fix: str) -> None:
    """A number about to be stored (an accuracy, a mean) must be finite."""
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise Diverged(f"{what} is {value!r}, not a finite number; nothing was written; {fix}")


def require_finite_accuracy(accuracy: float, who: str, fix: str) -> None:
    """An accuracy from :func:`ddtoolbox.losses.accuracy` is NaN when the network's outputs overflowed."""
    if not math.isfinite(accuracy):
        raise Diverged(f"{who} diverged: its outputs on the test images are NaN or infinite, so it has no accuracy "
                       f"and nothing of it was written; {fix}")
