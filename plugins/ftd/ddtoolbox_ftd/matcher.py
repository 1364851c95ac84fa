"""The FTD matcher: MTT's matching plus an exponential moving average of the synthetic images.

Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation"
(CVPR 2023), as summarised in reference-notes section 4. The matching itself is MTT's; the
flat experts come from ``ddtool buffer --trainer ftd`` (see :mod:`ddtoolbox_ftd.gsam`).
"""

from __future__ import annotations

import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.matchers.mtt import MTT


class EMA:
    """``e <- d * e + (1 - d) * x`` per update, starting from ``e_0 = x_0``.

    After ``k`` updates with ``x_1 .. x_k``: ``e_k = d**k x_0 + (1 - d) * sum_j d**(k - j) x_j``.
    """

    def __init__(self, decay: float, initial: torch.Tensor):
        if not 0 <= decay < 1:
            raise UsageError(f"--ema-decay must be in [0, 1) (got {decay}); FTD uses 0.999")
        self.decay = float(decay)
        self.value = initial.detach().clone()
        self.steps = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        self.value.mul_(self.decay).add_(x.detach(), alpha=1 - self.decay)
        self.steps += 1


class FTD(MTT):
    """Flat Trajectory Distillation (Du et al., CVPR 2023): MTT matching plus an EMA of the images."""

    name = "ftd"
    description = "FTD (Du et al., 2023): MTT matching + EMA of the synthetic images (flat experts: buffer --trainer ftd)"

    def __init__(self, args, buffer, train_set, device):
        super().__init__(args, buffer, train_set, device)
        self.ema_decay = float(getattr(args, "ema_decay", 0.999))
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"--ema-decay must be in [0, 1) (got {self.ema_decay}); FTD uses 0.999")
        self.ema: EMA | None = None
        self.last_skipped = False

    def start_ema(self, images: torch.Tensor) -> None:
        """Start the average at the initial synthetic images (called from ``on_run_start``)."""
        self.ema = EMA(self.ema_decay, images)

    def skip_update(self, loss: float) -> bool:
        self.last_skipped = super().skip_update(loss)
        return self.last_skipped

    def after_step(self, images: torch.Tensor) -> None:
        """Fold the just-updated images into the average (called from ``on_iteration``).

        An iteration whose update was skipped did not change the images and is not counted.
        """
        if self.ema is None:
            raise RuntimeError("FTD.after_step before start_ema: the ftd plugin's on_run_start did not run")
        if not self.last_skipped:
            self.ema.update(images)

    def extra_state(self) -> dict:
        if self.ema is None:
            return {}
        return {"ema_images": self.ema.value.detach().cpu().clone(), "ema_decay": self.ema.decay,
                "ema_steps": self.ema.steps}
