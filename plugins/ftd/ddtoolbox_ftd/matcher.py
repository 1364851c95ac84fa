"""The FTD matcher: MTT's matching plus an exponential moving average of the synthetic images.

Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation"
(CVPR 2023). The matching itself is MTT's; the
flat experts come from ``ddtool buffer --trainer ftd`` (see :mod:`ddtoolbox_ftd.gsam`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddtoolbox.builtin.mtt import MTT
from ddtoolbox.errors import UsageError
from ddtoolbox.options import Settings, number, option


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


def ema_decay(value) -> float:
    d = number(value)
    if not 0 <= d < 1:
        raise UsageError(f"--ema-decay must be in [0, 1) (got {value}); FTD uses 0.999")
    return d


@dataclass(kw_only=True)
class FTDOptions(Settings):
    """The ``ftd`` matcher's ``distill`` options."""

    ema_decay: float = option(0.999, "ftd matcher: decay d of the image average e <- d*e + (1-d)*x (default 0.999)",
                              type=ema_decay)


class FTD(MTT):
    """Flat Trajectory Distillation (Du et al., CVPR 2023): MTT matching plus an EMA of the images."""

    name = "ftd"
    description = "FTD (Du et al., 2023): MTT matching + EMA of the synthetic images (flat experts: buffer --trainer ftd)"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ema_decay = (self.options or FTDOptions()).ema_decay
        self.ema: EMA | None = None
        self.last_skipped = False

    def start(self, run) -> None:
        """MTT's start, and the average starts at the initial synthetic images."""
        super().start(run)
        self.ema = EMA(self.ema_decay, run.images.detach())

    def skip_update(self, loss: float) -> bool:
        self.last_skipped = super().skip_update(loss)
        return self.last_skipped

    def after_step(self, images: torch.Tensor) -> None:
        """Fold the just-updated images into the average (called from ``on_iteration``).

        An iteration whose update was skipped did not change the images and is not counted.
        """
        if self.ema is None:
            raise RuntimeError("FTD.after_step before start(run)")
        if not self.last_skipped:
            self.ema.update(images)

    def state_dict(self) -> dict:
        if self.ema is None:
            return {}
        return {"ema": self.ema.value.detach().cpu().clone(), "ema_steps": self.ema.steps,
                "last_skipped": self.last_skipped}

    def load_state_dict(self, state: dict) -> None:
        if "ema" in state:
            self.ema.value.copy_(state["ema"])
            self.ema.steps = int(state["ema_steps"])
            self.last_skipped = bool(state["last_skipped"])

    def extra_state(self) -> dict:
        if self.ema is None:
            return {}
        return {"ema_images": self.ema.value.detach().cpu().clone(), "ema_decay": self.ema.decay,
                "ema_steps": self.ema.steps}
