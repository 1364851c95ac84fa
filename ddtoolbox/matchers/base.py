"""What a matcher decides, as overridable methods.

A matcher owns the method-specific choices of trajectory matching: how the synthetic set starts,
what the student's inner loss is, which segment of which expert trajectory to match, and how the
per-parameter loss terms are formed. The core owns everything else (unroll, hooks, optimisers,
saving). Subclass :class:`Matcher` (or the MTT matcher) and override only what differs; DATM and FTD
are written this way.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F



class Matcher:
    """Base trajectory matcher: MTT's choices (Cazenavette et al., 2022)."""

    #: the ``--matcher`` name
    name = "base"
    #: one line for ``ddtool plugins``
    description = ""
    #: whether the inner targets (labels) are learned; the core then adds an optimiser for them
    learn_targets = False

    def __init__(self, args: argparse.Namespace, buffer, train_set, device: torch.device):
        self.args = args
        self.buffer = buffer
        self.train_set = train_set
        self.device = device

    # ------------------------------------------------------------------ the synthetic set

    def initial_images(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` random real images per class and their class ids, classes in order."""
        return self.train_set.sample_per_class(ipc, generator)

    def initial_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What the inner loss compares the student's logits with (hard labels for MTT)."""
        return labels

    def inner_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    # ------------------------------------------------------------------ the segment

    def start_epoch_bounds(self, iteration: int) -> tuple[int, int]:
        """Start epochs are drawn uniformly from ``[low, high)``."""
        return self.args.min_start_epoch, self.args.max_start_epoch

    def sample_segment(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Pick an expert and a start epoch; return ``(theta_0, theta_star, info)``."""
        low, high = self.start_epoch_bounds(iteration)
        expert = int(torch.randint(self.buffer.num_experts, ()).item())
        start = int(torch.randint(low, max(high, low + 1), ()).item())
        traj = self.buffer.trajectory(expert)
        theta_0 = traj[start].to(self.device)
        theta_star = traj[start + self.args.expert_epochs].to(self.device)
        return theta_0, theta_star, {"expert": expert, "start_epoch": start}

    # ------------------------------------------------------------------ the loss

    def loss_terms(self, theta_n, theta_0, theta_star) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element numerator and denominator of Eq. 1."""
        return (theta_n - theta_star) ** 2, (theta_0 - theta_star) ** 2

    def skip_update(self, loss: float) -> bool:
        """Whether to skip the optimiser steps of this iteration (DATM's loss threshold)."""
        return False

    def extra_state(self) -> dict:
        """Tensors to save in ``synthetic.pt`` beside the images (e.g. FTD's EMA images)."""
        return {}
