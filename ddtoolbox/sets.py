"""Reading a distilled set back: ``load_set(path)`` -> a typed :class:`SyntheticSet` with its dataset.

``synthetic.pt`` is a plain dict (docs/formats.md) so any tool can read it; this module is for
Python code that wants it checked and typed, above all plugin commands that work on a finished
run. The checks are ``ddtool eval``'s own (a file that ``eval`` refuses, this refuses in the same
words), and the :class:`~ddtoolbox.data.DatasetInfo` is rebuilt from ``meta`` alone, so reading a
set never needs the dataset's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import DatasetInfo
from .errors import UsageError

__all__ = ["SyntheticSet", "info_from_meta", "load_set"]

#: the keys of synthetic.pt that SyntheticSet has fields for; any other key is a matcher's extra_state()
CORE_KEYS = ("images", "labels", "lr", "targets", "meta")


@dataclass
class SyntheticSet:
    """A distilled set as ``ddtool distill`` wrote it (see docs/formats.md, "synthetic.pt")."""

    images: torch.Tensor              #: (N, C, H, W) float32, normalised (and whitened when ``info.zca``)
    labels: torch.Tensor              #: (N,) int64 class ids, classes in order
    lr: float                         #: the learned student learning rate
    targets: torch.Tensor | None      #: (N, K) learned soft labels, or None for hard-labelled sets
    meta: dict                        #: how the set was made (``meta`` of docs/formats.md)
    info: DatasetInfo                 #: the dataset the set was distilled from, rebuilt from ``meta``
    path: Path                        #: where it was read from
    extra: dict = field(default_factory=dict)   #: what the matcher added (``Matcher.extra_state()``)

    @property
    def ipc(self) -> int:
        return int(self.meta["ipc"])

    @property
    def soft_labels(self) -> bool:
        return self.targets is not None

    def pixels(self) -> torch.Tensor:
        """The images in pixel units (0-1 for real images), for pictures and other tools.

        A whitened set has no per-pixel inverse without the dataset's whitening, which lives with the
        training data: load the dataset (``load_dataset(..., zca=True).unwhiten``) for that.
        """
        if self.info.zca:
            raise UsageError(f"{self.path} holds ZCA-whitened images; un-whiten them with the dataset's own "
                             f"whitening (ddtoolbox.data.load_dataset(name, 'train', zca=True).unwhiten(images))")
        mean = torch.tensor(self.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std).view(1, -1, 1, 1)
        return self.images * std + mean


def info_from_meta(meta: dict) -> DatasetInfo:
    """The :class:`DatasetInfo` a ``synthetic.pt``'s ``meta`` (or a ``buffer.json``) records."""
    try:
        classes = int(meta["num_classes"])
        names = meta.get("class_names") or [str(i) for i in range(classes)]
        return DatasetInfo(str(meta["dataset"]), int(meta["channels"]), tuple(int(v) for v in meta["image_size"]),
                           classes, tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"]),
                           tuple(str(n) for n in names), meta.get("resize"), bool(meta.get("zca", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the set's metadata does not describe its dataset ({exc!r}); point at a synthetic.pt "
                         f"written by 'ddtool distill'") from exc


def load_set(path) -> SyntheticSet:
    """Read, check and type a ``synthetic.pt`` (or the folder holding one).

    Raises :class:`ddtoolbox.UsageError` with one line for a missing, corrupt, unpublished (its
    folder's manifest disagrees) or malformed file, exactly as ``ddtool eval`` would.
    """
    from .evaluate import check_fits, load_synthetic

    path = Path(path)
    if path.is_dir():
        path = path / "synthetic.pt"
    record = load_synthetic(path)
    meta = record["meta"]
    info = info_from_meta(meta)
    check_fits(record, info, f"synthetic set {path}")
    return SyntheticSet(images=record["images"], labels=record["labels"], lr=float(record["lr"].item()),
                        targets=record.get("targets"), meta=meta, info=info, path=path,
                        extra={k: v for k, v in record.items() if k not in CORE_KEYS})
