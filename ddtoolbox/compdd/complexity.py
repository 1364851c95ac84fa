"""Comp-DD's complexity metric: how much of an image a network finds discriminative.

EDF (Section 3, Appendix D.2) measures an image by the share of its pixels whose Grad-CAM
activation is at or above 0.5 (maps normalised per image to [0, 1]), computed with a pretrained
ResNet for the image's own class, and a class by the mean over its images. A *large* share means
the object fills the frame ("sticker-like", simple); a small share means a small object among other
things (complex). The paper writes the indicator sum as "the complexity" but also says "higher
percentages indicating lower complexity" and ranks the ten least complex classes as *easy*; the
only reading under which both hold is

    complexity = 1 - high-activation fraction,

which is what the CSV's ``complexity`` column holds (next to the fraction itself), and what
``select`` ranks by: easy = the ten classes with the largest high-activation fraction.

The maps are :func:`ddtoolbox.gradcam.gradcam_maps`: Captum ``LayerGradCam`` on the model's last
convolutional block (``layer4`` of a ResNet), ReLU, bilinear upsampling to the input size, per-image
min-max to [0, 1] -- the normalisation EDF's reference applies to its CAMs. A constant map (no
positive evidence anywhere) counts as no high-activation pixel.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ddtoolbox import gradcam as G
from ddtoolbox.data import DatasetInfo, TensorDataset
from ddtoolbox.errors import UsageError
from ddtoolbox.io import atomic_write

from .models import CamModel

THRESHOLD = 0.5
BATCH = 64
COLUMNS = ("class", "name", "wnid", "imagenet_index", "model_output", "images", "high_activation_fraction",
           "complexity", "mean_activation")


def check_threshold(threshold) -> float:
    """Grad-CAM maps are scaled to [0, 1], so a threshold outside (0, 1] makes every pixel count
    (<= 0) or none (> 1) and every class the same complexity: a number that says nothing."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise UsageError(f"--threshold must be in (0, 1] (the maps are scaled to [0, 1]; default {THRESHOLD}), "
                         f"got {threshold}")
    return float(threshold)


def high_activation_fraction(maps: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """``(N,)`` share of each ``(N, 1, H, W)`` map's pixels with activation ``>= threshold``."""
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be (N, 1, H, W), got {tuple(maps.shape)}")
    return (maps >= threshold).flatten(1).float().mean(1)


def mean_activation(maps: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean activation of each map (Figure 1b's "activation mean")."""
    return maps.flatten(1).mean(1)


# ---------------------------------------------------------------------------- image sources


def dataset_batches(ds: TensorDataset, batch: int = BATCH, max_per_class: int | None = None,
                    seed: int = 0, with_boxes: bool = False) -> tuple[Iterator[tuple[torch.Tensor, ...]], int]:
    """Batches of ``(images, labels)`` from an in-memory dataset, and how many images they hold.

    ``max_per_class`` takes a random (seeded) sample of at most that many images of each class, so
    a quick estimate stays balanced across classes. ``with_boxes`` yields ``(images, labels,
    boxes)`` for a dataset that has object boxes.
    """
    if with_boxes and ds.boxes is None:
        raise ValueError(f"{ds.info.name} has no object boxes")
    if max_per_class:
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(ds.info.num_classes):
            idx = ds.class_indices(c)
            keep.append(idx[torch.randperm(len(idx), generator=g)[:max_per_class]])
        order = torch.sort(torch.cat(keep)).values
    else:
        order = torch.arange(len(ds))

    def gen():
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            if with_boxes:
                yield ds.images[idx], ds.labels[idx], ds.boxes[idx]
            else:
                yield ds.images[idx], ds.labels[idx]

    return gen(), len(order)


def imagenet_info(wnids: list[str]) -> DatasetInfo:
    """What the images streamed from an ImageNet tree are: 3 x 128 x 128, ImageNet statistics."""
    from ddtoolbox.data.imagenet_subsets import IMAGE_SIZE
    from ddtoolbox.data.info import IMAGENET_MEAN, IMAGENET_STD

    return DatasetInfo("imagenet", 3, (IMAGE_SIZE, IMAGE_SIZE), len(wnids), IMAGENET_MEAN, IMAGENET_STD, tuple(wnids))


def imagenet_batches(root, wnids: list[str], split: str = "train", batch: int = BATCH,
                     max_per_class: int | None = None) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], int]:
    """Batches streamed from an ImageFolder-layout ImageNet, with the reference transform.

    Scoring whole categories (hundreds of classes x 1300 images) cannot go through an in-memory
    dataset, so images are decoded a batch at a time; memory stays at one batch.
    """
    from ddtoolbox.data.info import IMAGENET_MEAN, IMAGENET_STD
    from ddtoolbox.data.prepare import list_subset_files, transform_image

    files = list_subset_files(root, wnids)[split]
    if max_per_class:
        seen: dict[int, int] = {}
        kept = []
        for path, label in files:  # files are sorted by name within a class: deterministic
            if seen.get(label, 0) < max_per_class:
                kept.append((path, label))
                seen[label] = seen.get(label, 0) + 1
        files = kept
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def gen():
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            x = torch.stack([torch.from_numpy(transform_image(p)) for p, _ in chunk]).float().div_(255)
            yield (x - mean) / std, torch.tensor([lab for _, lab in chunk])

    return gen(), len(files)


def iterate_maps(cam: CamModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], targets: torch.Tensor,
                 total: int, device, progress: bool = True, desc: str = "grad-cam") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Grad-CAM maps (on the CPU) and labels, batch by batch, for each image's own class; anything
    a batch holds beyond images and labels (boxes) is passed along after them."""
    from tqdm import tqdm

    targets = targets.to(device)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, file=sys.stderr) as bar:
        for images, labels, *rest in batches:
            images = images.to(device)
            maps = G.gradcam_maps(cam.model, images, targets[labels.to(device)], cam.layers)
            bar.update(len(images))
            yield (maps.cpu(), labels.cpu(), *rest)


# ---------------------------------------------------------------------------- scoring


def score_classes(cam: CamModel, batches, targets: torch.Tensor, info: DatasetInfo, total: int, device,
                  threshold: float = THRESHOLD, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Per-class rows (the CSV) and per-image rows, from the maps of every image."""
    from ddtoolbox.data.imagenet_subsets import SUBSETS, imagenet_class_names, imagenet_wnids, wnid_to_index

    check_threshold(threshold)
    k = info.num_classes
    count = torch.zeros(k, dtype=torch.float64)
    frac_sum = torch.zeros(k, dtype=torch.float64)
    mean_sum = torch.zeros(k, dtype=torch.float64)
    images = []
    for maps, labels in iterate_maps(cam, batches, targets, total, device, progress, desc="complexity"):
        frac = high_activation_fraction(maps, threshold).double()
        mean = mean_activation(maps).double()
        count.index_add_(0, labels, torch.ones_like(frac))
        frac_sum.index_add_(0, labels, frac)
        mean_sum.index_add_(0, labels, mean)
        images += [{"index": len(images) + i, "class": int(c), "high_activation_fraction": float(f),
                    "mean_activation": float(m)} for i, (c, f, m) in enumerate(zip(labels, frac, mean))]
    # which ImageNet class each label is, when that is known (for select and for people)
    if info.name in SUBSETS:
        inet = list(SUBSETS[info.name].distinct_indices)
    else:
        inet = [wnid_to_index(c) for c in info.class_names]
    wnids, names = imagenet_wnids(), imagenet_class_names()
    rows = []
    for c in range(k):
        n = int(count[c])
        f = float(frac_sum[c] / n) if n else float("nan")
        i = inet[c]
        rows.append({
            "class": c, "name": names[i] if i is not None else info.class_names[c],
            "wnid": wnids[i] if i is not None else "", "imagenet_index": i if i is not None else "",
            "model_output": int(targets[c]), "images": n, "high_activation_fraction": round(f, 6),
            "complexity": round(1 - f, 6), "mean_activation": round(float(mean_sum[c] / n), 6) if n else float("nan"),
        })
    return rows, images


def write_csv(path, rows: list[dict], columns=COLUMNS) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    data = buf.getvalue().encode()
    return atomic_write(path, lambda fh: fh.write(data))


def read_scores(path) -> list[dict]:
    """The rows of a ``compdd score`` CSV, checked for the columns ``select`` needs."""
    path = Path(path)
    fix = "give the CSV written by 'ddtool compdd score'"
    if not path.is_file():
        raise UsageError(f"--scores file {path} does not exist; {fix}")
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--scores file {path} cannot be read as CSV ({exc}); {fix}") from exc
    need = {"wnid", "name", "complexity", "high_activation_fraction", "images"}
    if not rows or not need <= set(rows[0]):
        have = ", ".join(rows[0]) if rows else "no rows"
        raise UsageError(f"--scores file {path} lacks columns {', '.join(sorted(need - set(rows[0] if rows else ())))} "
                         f"(has {have}); {fix}")
    for r in rows:
        try:
            r["complexity"] = float(r["complexity"])
            r["high_activation_fraction"] = float(r["high_activation_fraction"])
            r["images"] = int(r["images"])
        except ValueError as exc:
            raise UsageError(f"--scores file {path} has a non-numeric score in row {r} ({exc}); {fix}") from exc
    return rows
