"""Trajectory matching: MTT's choices, the base of MTT, DATM and FTD.

One iteration draws an expert and a start epoch, unrolls a student from the expert's snapshot on
the augmented synthetic set for ``syn_steps`` steps, and returns the per-parameter terms of Eq. 1:
``num_i = (theta_N,i - theta_star,i)^2``, ``den_i = (theta_0,i - theta_star,i)^2``.
"""

from __future__ import annotations

import functools

import torch

from .. import parallel
from ..models import FlatModel
from ..unroll import choose_unroll, graph_bytes_per_step, unroll, unroll_checkpointed
from .base import Matcher


class TrajectoryMatcher(Matcher):
    """Match the student's parameters after N steps to an expert's after M epochs (Cazenavette et al., 2022)."""

    needs_buffer = True

    def start(self, run) -> None:
        """Build the student and choose the unroll (``--unroll``; ``auto`` measures one step's graph)."""
        cfg = self.config
        self.student = FlatModel(self.buffer.make_model().to(self.device))
        self.batch_syn = cfg.batch_syn or run.images.shape[0]
        if getattr(run, "parallel", "none") == "batch":
            if self.batch_syn < parallel.world():
                raise parallel.EveryRank(f"{parallel.world()} ranks cannot split a batch of {self.batch_syn} "
                                         f"synthetic images (--batch-syn); start at most {self.batch_syn} processes "
                                         f"or raise --batch-syn")
            norm = str((self.buffer.meta.get("model_options") or {}).get("norm"))
            if "batch" in norm:
                raise parallel.EveryRank(f"--parallel batch splits each student batch, which changes {norm}'s "
                                         f"batch statistics; use --parallel segments, or experts without batch norm")
            if cfg.unroll == "checkpointed":
                self.unroll, run.unroll_mode = functools.partial(unroll_checkpointed, split=True), \
                    "checkpointed (split over ranks)"
            else:   # auto: every rank must take the same unroll, so no per-rank memory measurement
                self.unroll, run.unroll_mode = functools.partial(unroll, split=True), "full (split over ranks)"
            return
        self.unroll, run.unroll_mode = choose_unroll(
            cfg.unroll, cfg.syn_steps, device=self.device,
            bytes_per_step=lambda: graph_bytes_per_step(
                self.student, self.buffer.trajectory(0)[0].to(self.device), run.images, run.targets, run.syn_lr,
                self.batch_syn, self.inner_loss, self.augment))

    # ------------------------------------------------------------------ the segment

    def start_epoch_bounds(self, iteration: int) -> tuple[int, int]:
        """Start epochs are drawn uniformly from ``[low, high)``."""
        return self.config.min_start_epoch, self.config.max_start_epoch

    def sample_segment(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Pick an expert and a start epoch; return ``(theta_0, theta_star, info)``."""
        low, high = self.start_epoch_bounds(iteration)
        expert = int(torch.randint(self.buffer.num_experts, ()).item())
        start = int(torch.randint(low, max(high, low + 1), ()).item())
        traj = self.buffer.trajectory(expert)
        theta_0 = traj[start].to(self.device)
        theta_star = traj[start + self.config.expert_epochs].to(self.device)
        return theta_0, theta_star, {"expert": expert, "start_epoch": start}

    # ------------------------------------------------------------------ the loss

    def parameter_terms(self, theta_n, theta_0, theta_star) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element numerator and denominator of Eq. 1."""
        return (theta_n - theta_star) ** 2, (theta_0 - theta_star) ** 2

    def loss_terms(self, run) -> tuple[torch.Tensor, torch.Tensor]:
        theta_0, theta_star, run.segment = self.sample_segment(run.iteration)
        loss_fn = getattr(run, "inner_loss", None) or self.inner_loss    # on_inner_loss may have wrapped it
        theta_n, _ = self.unroll(self.student, theta_0, run.images, run.targets, run.syn_lr, self.config.syn_steps,
                                 self.batch_syn, loss_fn, self.augment)
        return self.parameter_terms(theta_n, theta_0, theta_star)
