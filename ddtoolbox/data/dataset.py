"""The in-memory dataset container every distillation method consumes.

The datasets this toolbox targets fit in memory, and distillation methods sample real images
class by class thousands of times; holding one pre-normalised tensor per split makes that a
cheap index operation instead of a DataLoader round trip per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ddtoolbox.errors import UsageError

from .info import DatasetInfo


def _as_generator(generator: torch.Generator | int) -> torch.Generator:
    # An int seed is accepted because config files and the CLI carry seeds, not generators.
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError("generator must be a torch.Generator or an int seed")


@dataclass
class TensorDataset:
    """Images already normalised with ``info.mean``/``info.std``, plus integer labels.

    Tensors may be shared with the loader's in-process cache (see
    :func:`ddtoolbox.data.load_dataset`): never modify ``images`` or ``labels`` in place; derive
    new tensors instead.

    Optional, carried along by :meth:`subset` and :meth:`to`:

    * ``boxes``: ``(N, 4)`` int64 object boxes ``(x0, y0, x1, y1)`` in pixels (end exclusive), for
      datasets that know where their object is (cluttered Fashion-MNIST);
    * ``whitening``: the fitted ZCA transform the images went through (``info.zca``), used to turn
      whitened images back into pictures (:meth:`unwhiten`).
    """

    images: Tensor
    labels: Tensor
    info: DatasetInfo
    boxes: Tensor | None = None
    whitening: object = None

    def __post_init__(self) -> None:
        # Catch a malformed registration at construction rather than deep inside a training loop.
        c, (h, w) = self.info.channels, self.info.image_size
        if self.images.dim() != 4 or tuple(self.images.shape[1:]) != (c, h, w):
            raise ValueError(f"{self.info.name}: images must be (N, {c}, {h}, {w}), got {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise ValueError(f"{self.info.name}: images must be float32, got {self.images.dtype}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.info.name}: labels must be int64 of shape ({self.images.shape[0]},)")
        if self.boxes is not None and (self.boxes.dtype != torch.int64 or self.boxes.shape != (len(self.images), 4)):
            raise ValueError(f"{self.info.name}: boxes must be int64 of shape ({self.images.shape[0]}, 4)")
        if (self.whitening is not None) != self.info.zca:
            raise ValueError(f"{self.info.name}: info.zca is {self.info.zca} but the whitening transform is "
                             f"{'missing' if self.whitening is None else 'given'}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "TensorDataset":
        """Copy to a device once, so per-step class sampling does not cross the bus."""
        return TensorDataset(self.images.to(device), self.labels.to(device), self.info,
                             None if self.boxes is None else self.boxes.to(device), self.whitening)

    def select(self, index: Tensor) -> "TensorDataset":
        """The images (and boxes) at ``index``, with the same info and whitening."""
        boxes = None if self.boxes is None else self.boxes[index.to(self.boxes.device)]
        return TensorDataset(self.images[index], self.labels[index], self.info, boxes, self.whitening)

    def unwhiten(self, images: Tensor) -> Tensor:
        """``images`` in plain normalised space: the ZCA transform undone (a no-op without ZCA).

        For pictures only: the synthetic images of a whitened run live in whitened space.
        """
        if self.whitening is None:
            return images
        from .zca import unwhiten

        return unwhiten(self.whitening, images)

    def _check_class(self, c: int) -> int:
        if not 0 <= int(c) < self.info.num_classes:
            raise UsageError(
                f"class {c} does not exist in {self.info.name}; use a class index from 0 to {self.info.num_classes - 1}"
            )
        return int(c)

    def class_indices(self, c: int) -> Tensor:
        """Indices (into this dataset) of all images of class ``c``, in dataset order."""
        return torch.nonzero(self.labels == self._check_class(c)).flatten()

    def class_counts(self) -> Tensor:
        """Images per class (length ``num_classes``), e.g. to check a subset is balanced."""
        return torch.bincount(self.labels, minlength=self.info.num_classes)

    def subset(
        self,
        n_per_class: int | None = None,
        fraction: float | None = None,
        *,
        generator: torch.Generator | int,
    ) -> "TensorDataset":
        """Stratified random subset: the same choice for the same generator state.

        Stratified because distillation baselines (random real images per class, coreset
        comparisons) are defined per class, and an unstratified draw from a small budget can
        miss classes entirely. Pass exactly one of ``n_per_class`` (every class must have that
        many images) or ``fraction`` in (0, 1] (each class keeps ``round(fraction * count)``,
        at least one image). Classes are drawn in class order from ``generator``; the chosen
        indices are returned in their original dataset order.
        """
        if (n_per_class is None) == (fraction is None):
            raise UsageError("subset needs exactly one of n_per_class or fraction; pass one and drop the other")
        gen = _as_generator(generator)
        counts = self.class_counts().tolist()
        if n_per_class is not None:
            if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
                raise UsageError(f"n_per_class must be a positive integer, got {n_per_class!r}; pass e.g. 10")
            short = [(self.info.class_names[c], n) for c, n in enumerate(counts) if n < n_per_class]
            if short:
                listed = ", ".join(f"{name!r} has {n}" for name, n in short)
                raise UsageError(
                    f"cannot take {n_per_class} images per class from {self.info.name}: {listed}; "
                    f"use n_per_class <= {min(counts)}"
                )
            wanted = [n_per_class] * len(counts)
        else:
            if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
                raise UsageError(f"fraction must be in (0, 1], got {fraction!r}; pass e.g. 0.1")
            wanted = [max(1, math.floor(fraction * n + 0.5)) if n else 0 for n in counts]

        chosen = []
        labels_cpu = self.labels.cpu()
        for c, k in enumerate(wanted):
            if k == 0:
                continue
            idx = torch.nonzero(labels_cpu == c).flatten()
            chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
        picked = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)
        order = torch.sort(picked).values.to(self.labels.device)
        return self.select(order)

    def sample_per_class(self, ipc: int, generator: torch.Generator | int) -> tuple[Tensor, Tensor]:
        """``ipc`` random images of every class, grouped by class in class order.

        The starting point of a synthetic set and the random-real-images baseline are the same
        draw, so both use this.
        """
        sub = self.subset(n_per_class=ipc, generator=generator)
        order = torch.sort(sub.labels, stable=True).indices
        return sub.images[order], sub.labels[order]
