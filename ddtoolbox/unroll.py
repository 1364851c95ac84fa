"""The student unroll: ``(theta_0, images, targets, lr, schedule) -> theta_N``, differentiably.

The student takes ``syn_steps`` plain SGD steps on the synthetic set, each on the next
``batch_syn`` images of a random permutation, each batch freshly augmented, and keeps the graph
(``create_graph=True``) so the matching loss can be back-propagated into the images, the learned
learning rate and anything else the targets depend on (soft labels).

The batch indices and augmentation parameters of every step are recorded in the returned
:class:`UnrollTrace`. Replaying a trace recomputes the same ``theta_N`` bit for bit, which is what a
memory-saving unroll (recompute one step at a time during the backward pass) needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .models import FlatModel


@dataclass
class UnrollTrace:
    """What an unroll drew at random: per step, the batch indices and augmentation params."""

    indices: list[torch.Tensor] = field(default_factory=list)
    aug_params: list[object] = field(default_factory=list)


def batch_schedule(n: int, batch_syn: int, steps: int, device=None) -> list[torch.Tensor]:
    """Consecutive ``batch_syn`` slices of random permutations of ``range(n)``, reshuffled when used up."""
    out, perm = [], torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if perm.numel() == 0:
            perm = torch.randperm(n)
        out.append(perm[:batch_syn].to(device))
        perm = perm[batch_syn:]
    return out


def unroll(student: FlatModel, theta0: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
           syn_lr: torch.Tensor, steps: int, batch_syn: int, loss_fn: Callable, augment=None,
           trace: UnrollTrace | None = None) -> tuple[torch.Tensor, UnrollTrace]:
    """Run the student from ``theta0`` and return ``(theta_N, trace)``.

    :param theta0: start parameters (detached; the unroll does not differentiate into the expert).
    :param targets: one entry per image, whatever ``loss_fn(logits, targets[idx])`` expects.
    :param augment: ``augment(x, params=None) -> (x_aug, params)``, or None for no augmentation.
    :param trace: replay these batch indices and augmentation parameters instead of drawing new ones.
    """
    replay = trace is not None
    if not replay:
        trace = UnrollTrace(batch_schedule(images.shape[0], batch_syn, steps, images.device))
    theta = theta0.detach().requires_grad_(True)
    for k in range(steps):
        idx = trace.indices[k]
        x = images[idx]
        if augment is not None:
            x, params = augment(x, params=trace.aug_params[k] if replay else None)
            if not replay:
                trace.aug_params.append(params)
        loss = loss_fn(student(theta, x), targets[idx])
        grad, = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - syn_lr * grad
    return theta, trace
