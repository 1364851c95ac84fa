"""The prepared store: one copy of a dataset, decoded once, with a record of where it came from.

Photo datasets arrive as trees of JPEGs that take minutes to decode, and a distillation workflow
reads the same split many times (buffer, distil, evaluate), so ``ddtool data prepare`` decodes a
tree once into ``train.pt`` and ``test.pt`` (uint8 images and int64 labels) beside a ``meta.json``.

Two copies of "CIFAR-10" are not the same data: the JPEG copy differs from the lossless pixels by
about 30 dB PSNR, and a resize at another size or in another way changes every pixel. A result is
only meaningful together with the copy it was made from, so the store records its provenance
(source folder, images per class, greyscale images converted, the resize) and a *content id*: a
hash of the decoded pixels and labels of both splits. The id travels in ``DatasetInfo.source``;
buffers, synthetic sets, saved networks and evaluations record it, and a set made on one copy is
refused on another (:func:`ddtoolbox.data.info.check_same_images`).

Normalisation is not baked in: the store keeps uint8 pixels and the registry normalises them with
the dataset's constants, so one constant lives in one place. A dataset the registry does not know
records the statistics of its own train split in ``meta.json`` instead.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors, read_json, save_tensors, write_json

FORMAT = "ddtoolbox-prepared"
FORMAT_VERSION = 2
#: the format of version 1, which held ImageNet subsets only and recorded no provenance
LEGACY_FORMAT = "ddtoolbox-imagenet-subset"
SPLITS = ("train", "test")
META = "meta.json"

if TYPE_CHECKING:
    from .imagenet_subsets import ImageNetSubset


def is_store_dir(path: Path) -> bool:
    path = Path(path)
    return (path / "train.pt").is_file() and (path / "test.pt").is_file()


def content_id(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    """``sha256:`` + 16 hex digits over the pixels and labels of every split, in split order.

    The shape goes into the hash too, so the same bytes at another size are another copy.
    """
    h = hashlib.sha256()
    for name in SPLITS:
        images, labels = splits[name]
        h.update(f"{name}:{tuple(images.shape)}:{images.dtype}".encode())
        h.update(images.contiguous().numpy().tobytes())
        h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def write_store(target: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], meta: dict) -> dict:
    """Write both splits and ``meta.json``; return the full record (``meta`` plus what the data says).

    ``meta.json`` is written last, so a folder interrupted half-way is not taken for a store that
    records its provenance (the loader refuses split files whose content id does not match it).
    """
    target = Path(target)
    num_classes = len(meta["class_names"])
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **meta,
        "content_id": content_id(splits),
        "images_per_class": {s: torch.bincount(splits[s][1], minlength=num_classes).tolist() for s in SPLITS},
        "prepared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "path": str(target.resolve()),
    }
    from ddtoolbox import __version__

    record["ddtoolbox_version"] = __version__
    for split in SPLITS:
        images, labels = splits[split]
        save_tensors(target / f"{split}.pt", {"images": images, "labels": labels,
                                              "meta": {**record, "split": split}})
    write_json(target / META, record)
    return record


def read_meta(folder: Path, fix: str) -> dict | None:
    """The store's ``meta.json``, or None when the folder has none (an older store)."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    return read_json(path, "prepared dataset record", fix)


def load_split(folder: Path, split: str, fix: str, *, what: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One split as (uint8 images, int64 labels, the split file's meta), checked structurally.

    :param what: the dataset the caller expects, for messages ("prepared cifar10").
    """
    path = Path(folder) / f"{split}.pt"
    data = load_tensors(path, what, fix)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    images, labels = data.get("images"), data.get("labels")
    if meta.get("format") not in (FORMAT, LEGACY_FORMAT) or not isinstance(images, torch.Tensor) \
            or not isinstance(labels, torch.Tensor):
        raise UsageError(f"{path} is not a dataset written by 'ddtool data prepare'; {fix}")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise UsageError(f"{path} was written by a newer ddtoolbox; upgrade ddtoolbox or {fix}")
    if images.dtype != torch.uint8 or images.dim() != 4 or labels.dim() != 1 or len(labels) != len(images):
        raise UsageError(f"{path} holds images {tuple(images.shape)} {images.dtype} and {tuple(labels.shape)} labels, "
                         f"not (N, C, H, W) uint8 with N labels; {fix}")
    return images, labels, meta


def _fix(name: str, folder, subset: bool) -> str:
    how = f"--imagenet-root IMAGENET --subset {name}" if subset else f"--source TREE --dataset {name}"
    return f"prepare it again with 'ddtool data prepare {how} --out {folder}'"


def load_prepared(folder: Path, split: str, subset: "ImageNetSubset | str") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A stored split as (uint8 images, labels, ``{"info": ...}``), the loader every prepared dataset
    registers, after checking that the store is this dataset's, that both splits come from one
    preparation, and how it was resized.

    :param subset: the ImageNet subset (its classes are checked too) or the dataset's name.
    """
    from .imagenet_subsets import ImageNetSubset
    from .info import RESIZE_MODES

    is_subset = isinstance(subset, ImageNetSubset)
    name = subset.name if is_subset else subset
    fix = _fix(name, folder, is_subset)
    images, labels, meta = load_split(folder, split, fix, what=f"prepared {name}")
    path = Path(folder) / f"{split}.pt"
    stored = meta.get("dataset", meta.get("subset"))
    if stored != name:
        raise UsageError(f"{path} holds dataset '{stored}', not {name}; point --data-root at the {name} store, or {fix}")
    if is_subset:
        wanted = [subset.wnids[subset.indices.index(i)] for i in subset.distinct_indices]
        if list(meta.get("wnids", [])) != wanted:
            raise UsageError(f"{path} holds other classes than {name}; {fix}")
    if "resize" not in meta or (is_subset and meta["resize"] not in RESIZE_MODES):
        raise UsageError(f"{path} does not record how its images were resized (prepared by an older ddtoolbox); "
                         f"{fix} --resize squash (the references' way) or --resize crop")
    info: dict = {"resize": meta["resize"], "image_size": tuple(images.shape[2:])}
    if meta.get("content_id"):
        record = read_meta(folder, fix)
        if record is None or record.get("content_id") != meta["content_id"]:
            raise UsageError(f"{path} is not from the preparation that {folder}/meta.json records (an interrupted or "
                             f"mixed store); {fix}")
        info["source"] = meta["content_id"]
    return images, labels, {"info": info}
