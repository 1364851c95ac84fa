"""The DATM matcher: MTT plus soft labels, difficulty-aligned start epochs and a loss threshold.

Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching"
(ICLR 2024), as summarised in reference-notes section 5. Everything not overridden here is MTT's
(:class:`ddtoolbox.matchers.mtt.MTT`).
"""

from __future__ import annotations

import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.evaluate import soft_cross_entropy
from ddtoolbox.matchers.mtt import MTT
from ddtoolbox.models import load_flat

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


class DATM(MTT):
    """Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024): soft labels, staged start epochs."""

    name = "datm"
    description = "DATM (Guo et al., 2024): learned soft labels, difficulty-aligned start epochs, loss threshold"
    learn_targets = True

    def __init__(self, args, buffer, train_set, device):
        super().__init__(args, buffer, train_set, device)
        self.sequential = not getattr(args, "no_sequential_generation", False)
        self.threshold = getattr(args, "threshold", None)
        self.expansion_end = getattr(args, "expansion_end_epoch", 1000)
        current = getattr(args, "current_max_start_epoch", None)
        low, high = args.min_start_epoch, args.max_start_epoch
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
        self._label_models = None

    # ------------------------------------------------------------------ experts used for labels

    def label_models(self) -> list[torch.nn.Module]:
        """The final snapshots of the experts used to pick images and initialise labels."""
        if self._label_models is None:
            n = self.buffer.num_experts
            wanted = getattr(self.args, "label_experts", None)
            count = n if not wanted else min(int(wanted), n)
            models = []
            for i in range(count):
                net = load_flat(self.buffer.make_model().to(self.device), self.buffer.trajectory(i)[-1])
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
        low, high = self.args.min_start_epoch, self.args.max_start_epoch
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
