"""The DATM matcher: MTT plus soft labels, difficulty-aligned start epochs and a loss threshold.

Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching"
(ICLR 2024). Everything not overridden here is MTT's (:class:`ddtoolbox.builtin.mtt.MTT`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddtoolbox.builtin.mtt import MTT
from ddtoolbox.errors import UsageError
from ddtoolbox.losses import soft_cross_entropy
from ddtoolbox.options import Settings, non_negative_int, option, positive_float, positive_int

#: candidate real images pushed through the experts at once when picking initial images
CHUNK = 256


def start_epoch_upper(iteration: int, current_max: int, max_start: int, expansion_end: int) -> int:
    """DATM's upper bound of the start epoch at ``iteration`` (exclusive).

    ``min(current_max + int((max_start - current_max) * iteration / expansion_end), max_start)``:
    the window grows linearly from ``current_max`` at iteration 0 to ``max_start`` at iteration
    ``expansion_end`` and stays there.
    """
    return min(current_max + int((max_start - current_max) * iteration / expansion_end), max_start)


def expert_logits(models, images: torch.Tensor) -> torch.Tensor:
    """Raw logits of every model on ``images``: shape ``(num_models, N, num_classes)``."""
    with torch.no_grad():
        return torch.stack([m(images) for m in models])


def mean_correct_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DATM's soft-label initialisation from the logits of several experts.

    :param logits: ``(E, N, K)`` raw logits of ``E`` experts on ``N`` images.
    :param labels: ``(N,)`` true class of each image.
    :return: ``(targets, counts)``: per image the mean of the logits of the experts whose argmax
        is the true class (an expert that misclassifies the image is excluded), shape ``(N, K)``,
        and how many experts were averaged, shape ``(N,)``. An image no expert classifies correctly
        gets the mean over all experts (count 0); :meth:`DATM.initial_images` never picks one.
    """
    correct = (logits.argmax(-1) == labels.unsqueeze(0)).to(logits.dtype)          # (E, N)
    counts = correct.sum(0)                                                         # (N,)
    summed = (logits * correct.unsqueeze(-1)).sum(0)                                # (N, K)
    targets = torch.where((counts > 0).unsqueeze(-1), summed / counts.clamp(min=1).unsqueeze(-1),
                          logits.mean(0))
    return targets, counts.long()


@dataclass(kw_only=True)
class DATMOptions(Settings):
    """The ``datm`` plugin's ``distill`` options."""

    current_max_start_epoch: int | None = option(
        None, "datm: upper bound (exclusive) of the start epoch at iteration 0; it grows linearly to "
              "--max-start-epoch at --expansion-end-epoch (default: half of --max-start-epoch)",
        metavar="N", type=positive_int)
    expansion_end_epoch: int = option(
        1000, "datm: the iteration at which the start-epoch window reaches --max-start-epoch (DATM's name; it "
              "counts iterations, default 1000)", metavar="IT", type=positive_int)
    no_sequential_generation: bool = option(
        False, "datm: draw start epochs from the full [--min-start-epoch, --max-start-epoch) from the first "
               "iteration (sequential generation is on by default)", off_flag="--sequential-generation")
    threshold: float | None = option(
        None, "datm: skip the image, lr and label steps of an iteration whose matching loss exceeds L "
              "(default: never skip)", metavar="L", type=positive_float)
    label_experts: int = option(
        1, "datm: pick the initial images and initialise the soft labels with the final snapshots of the first N "
           "experts (default 1: expert 0 only, as the DATM and EDF code does; 0: all experts)",
        metavar="N", type=non_negative_int)


class DATM(MTT):
    """Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024): soft labels, staged start epochs."""

    name = "datm"
    description = "DATM (Guo et al., 2024): learned soft labels, difficulty-aligned start epochs, loss threshold"
    learn_targets = True

    def __init__(self, ctx):
        super().__init__(ctx)
        opts = self.options or DATMOptions()
        self.sequential = not opts.no_sequential_generation
        self.threshold = opts.threshold
        self.expansion_end = opts.expansion_end_epoch
        self.label_experts = opts.label_experts
        current = opts.current_max_start_epoch
        low, high = self.config.min_start_epoch, self.config.max_start_epoch
        if current is None:
            current = max(low + 1, high // 2)
        self.current_max = current
        if self.sequential:
            if not low < current <= high:
                raise UsageError(
                    f"need --min-start-epoch < --current-max-start-epoch <= --max-start-epoch "
                    f"(got {low}, {current}, {high}); change --current-max-start-epoch or pass "
                    f"--no-sequential-generation"
                )
            if self.expansion_end < 1:
                raise UsageError(f"--expansion-end-epoch must be at least 1 (got {self.expansion_end})")
        if self.threshold is not None and not self.threshold > 0:
            raise UsageError(f"--threshold must be positive (got {self.threshold}); leave it out to never skip")
        if self.buffer is not None and self.label_experts > self.buffer.num_experts:
            raise UsageError(f"--label-experts {self.label_experts}, but buffer {self.buffer.path} holds "
                             f"{self.buffer.num_experts} experts; give at most {self.buffer.num_experts} (0: all)")
        self._label_models = None

    # ------------------------------------------------------------------ experts used for labels

    def label_models(self) -> list[torch.nn.Module]:
        """The final snapshots of the experts used to pick images and initialise labels: the first
        ``--label-experts`` (default 1: expert 0 alone, as the reference code), or all for 0."""
        if self._label_models is None:
            n = self.buffer.num_experts
            count = n if not self.label_experts else self.label_experts     # checked against n when made
            models = []
            for i in range(count):
                net = self.buffer.expert_model(i, -1, self.device)
                net.eval()
                models.append(net)
            self._label_models = models
        return self._label_models

    # ------------------------------------------------------------------ the synthetic set

    def initial_images(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class, ``ipc`` random real images that at least one expert's final snapshot classifies correctly."""
        models = self.label_models()
        ds = self.train_set
        images, labels = [], []
        for c in range(ds.info.num_classes):
            pool = ds.class_indices(c)
            pool = pool[torch.randperm(len(pool), generator=generator)]
            picked = []
            for start in range(0, len(pool), CHUNK):
                idx = pool[start:start + CHUNK]
                logits = expert_logits(models, ds.images[idx].to(self.device))
                ok = (logits.argmax(-1) == c).any(0).cpu()
                picked.append(idx[ok][: ipc - sum(len(p) for p in picked)])
                if sum(len(p) for p in picked) >= ipc:
                    break
            found = sum(len(p) for p in picked)
            if found < ipc:
                raise UsageError(
                    f"class {c} has only {found} training images that one of the {len(models)} experts "
                    f"classifies correctly, fewer than --ipc {ipc}; lower --ipc, or train better experts"
                )
            pick = torch.cat(picked)
            images.append(ds.images[pick])
            labels.append(torch.full((ipc,), c, dtype=torch.long))
        return torch.cat(images), torch.cat(labels)

    def initial_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean raw logits of the experts (final snapshots) that classify each image correctly."""
        logits = torch.cat([expert_logits(self.label_models(), images[i:i + CHUNK].to(self.device))
                            for i in range(0, len(images), CHUNK)], dim=1)
        targets, _ = mean_correct_logits(logits, labels.to(logits.device))
        self._label_models = None       # the core asks once; do not hold the experts through the run
        return targets.detach()

    def inner_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, targets)

    # ------------------------------------------------------------------ the segment

    def start_epoch_bounds(self, iteration: int) -> tuple[int, int]:
        low, high = self.config.min_start_epoch, self.config.max_start_epoch
        if not self.sequential:
            return low, high
        return low, start_epoch_upper(iteration, self.current_max, high, self.expansion_end)

    def sample_segment(self, iteration: int):
        theta_0, theta_star, info = super().sample_segment(iteration)
        info["start_upper"] = self.start_epoch_bounds(iteration)[1]
        return theta_0, theta_star, info

    # ------------------------------------------------------------------ the loss

    def skip_update(self, loss: float) -> bool:
        """Skip the image, lr and label steps when the matching loss exceeds ``--threshold``."""
        return self.threshold is not None and loss > self.threshold
