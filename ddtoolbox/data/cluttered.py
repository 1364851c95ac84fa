"""Cluttered Fashion-MNIST: an offline stand-in for a "complex scenario".

EDF's motivating observation (its Figure 1b) is that in complex data the discriminative object
fills a small part of the image and sits among other things, so Grad-CAM's high-activation area is
small; in "sticker-like" data (CIFAR, Fashion-MNIST) the object fills the frame. ImageNet is not
available everywhere, so this dataset builds the complex case from Fashion-MNIST itself:

* every garment is shrunk to ``object_size`` pixels (drawn per image) and placed at a random
  position on a ``canvas`` x ``canvas`` black canvas;
* ``distractors`` patches, square crops of ``patch_size`` pixels cut from the central area of
  *other* images of the same split (any class) and dimmed to ``contrast`` of their brightness, are
  scattered at random positions first;
* the layers are combined with a pixel-wise maximum (Fashion-MNIST's background is black), so
  nothing draws a tell-tale box around the object; a distractor can overlap it, as clutter does.

The label stays the garment's. Patches are fragments (at most half the side of an original image),
not whole garments, so the image stays unambiguous. The defaults (40 px canvas, 18-24 px garments,
half-brightness patches) are a compromise: with a 56 px canvas, smaller garments and full-brightness
patches, a width-32 ConvNet stayed near chance after the few CPU minutes the benchmark allows
(12-37% test accuracy), and the Grad-CAM maps of a network that has not learned the task describe
nothing. Everything is drawn from ``numpy.random.default_rng([seed, split])``: the same seed and
source images give the same dataset on every machine, and train and test use different streams.

Each garment's box comes with it: ``(x0, y0, x1, y1)`` on the canvas (pixels, end exclusive), the
tightest box around the shrunk garment's non-zero pixels (so the black margin of the original
28 x 28 frame is not counted as object). The boxes need no random draws of their own, so asking for
them changes no image; they are what ``ddtool compdd stats`` measures its localisation scores
against (``TensorDataset.boxes``).

The registered ``cluttered-fashion-mnist`` (alias ``cluttered-fmnist``) is seed 0 with the defaults
below, generated from the Fashion-MNIST files when first loaded (about two seconds for both splits);
:func:`make_cluttered` makes other variants.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .info import FASHION_MNIST_CLASSES, DatasetInfo

NAME = "cluttered-fashion-mnist"
CANVAS = 40
OBJECT_SIZE = (18, 24)   # inclusive range of the shrunk garment's side
PATCH_SIZE = (6, 12)     # inclusive range of a distractor's side
DISTRACTORS = 4
CONTRAST = 0.5           # distractor brightness relative to the image it was cut from
SEED = 0
_SPLIT_STREAM = {"train": 0, "test": 1}

# Per-pixel statistics of the registered train split (seed 0, defaults above), in [0, 1] units,
# measured once with dataset_stats(); fixed here because a DatasetInfo's constants must be known
# before the data is generated.
MEAN, STD = (0.1201,), (0.2324,)


def _resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    # antialiased bilinear downscaling: shrinking without it would alias the fabric textures
    x = torch.from_numpy(images).to(torch.float32).unsqueeze(1)
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.squeeze(1).round_().clamp_(0, 255).to(torch.uint8).numpy()


def make_cluttered(images: np.ndarray, seed: int = SEED, *, stream: int = 0, canvas: int = CANVAS,
                   object_size: tuple[int, int] = OBJECT_SIZE, patch_size: tuple[int, int] = PATCH_SIZE,
                   distractors: int = DISTRACTORS, contrast: float = CONTRAST, return_boxes: bool = False):
    """Cluttered versions of ``images`` ((N, H, W) uint8, black background) as (N, canvas, canvas) uint8.

    Image ``i`` of the output shows image ``i`` of the input, so labels carry over unchanged. With
    ``return_boxes``, also each garment's box as an (N, 4) int64 array ``(x0, y0, x1, y1)``: the
    tightest box around the shrunk garment's non-zero pixels on the canvas, end exclusive (the whole
    placed square for a blank garment).
    """
    images = np.asarray(images, dtype=np.uint8)
    n, h, w = images.shape
    lo, hi = object_size
    plo, phi = patch_size
    if not (1 <= lo <= hi <= canvas and 1 <= plo <= phi <= min(h, w) and distractors >= 0):
        raise ValueError(f"bad cluttering settings: object {object_size}, patch {patch_size}, canvas {canvas}")
    rng = np.random.default_rng([seed, stream])
    # every random number is drawn up front, in a fixed order, so the result does not depend on
    # how the loops below are arranged
    sizes = rng.integers(lo, hi + 1, n)
    oy = rng.integers(0, canvas - sizes + 1)
    ox = rng.integers(0, canvas - sizes + 1)
    k = distractors
    donors = rng.integers(0, max(n - 1, 1), (n, k))
    donors += donors >= np.arange(n)[:, None]  # never the image itself
    donors = np.minimum(donors, n - 1)
    ps = rng.integers(plo, phi + 1, (n, k))
    # crops come from the central area, where Fashion-MNIST garments are, so a patch is texture
    # and edges rather than empty background
    margin = np.maximum((np.minimum(h, w) - ps) // 4, 0)
    cy = margin + (rng.random((n, k)) * (h - ps - 2 * margin + 1)).astype(np.int64)
    cx = margin + (rng.random((n, k)) * (w - ps - 2 * margin + 1)).astype(np.int64)
    py = (rng.random((n, k)) * (canvas - ps + 1)).astype(np.int64)
    px = (rng.random((n, k)) * (canvas - ps + 1)).astype(np.int64)

    out = np.zeros((n, canvas, canvas), dtype=np.uint8)
    for i in range(n):
        for j in range(k):
            p = ps[i, j]
            region = out[i, py[i, j]:py[i, j] + p, px[i, j]:px[i, j] + p]
            patch = images[donors[i, j], cy[i, j]:cy[i, j] + p, cx[i, j]:cx[i, j] + p]
            if contrast != 1.0:
                patch = (patch * contrast).astype(np.uint8)
            np.maximum(region, patch, out=region)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for s in np.unique(sizes):
        idx = np.nonzero(sizes == s)[0]
        small = _resize_batch(images[idx], int(s))
        for row, i in enumerate(idx):
            region = out[i, oy[i]:oy[i] + s, ox[i]:ox[i] + s]
            np.maximum(region, small[row], out=region)
            boxes[i] = _box(small[row], ox[i], oy[i])
    return (out, boxes) if return_boxes else out


def _box(garment: np.ndarray, left: int, top: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of ``garment``'s non-zero pixels once placed at ``(left, top)``."""
    rows, cols = np.nonzero(garment.any(1))[0], np.nonzero(garment.any(0))[0]
    if not len(rows):
        s = garment.shape[0]
        return left, top, left + s, top + s
    return left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1


def dataset_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std over every pixel, in [0, 1] units (how :data:`MEAN`/:data:`STD` were measured)."""
    x = images.astype(np.float64) / 255
    return float(x.mean()), float(x.std())


def info() -> DatasetInfo:
    return DatasetInfo(NAME, 1, (CANVAS, CANVAS), 10, MEAN, STD, FASHION_MNIST_CLASSES)


def load(folder, split):
    from .idx import load_idx_split
    from .registry import find_data_root

    source = find_data_root("fashion-mnist", folder)
    images, labels = load_idx_split(source, split, 10, "re-download it, or for the system copy run "
                                    "apt-get install --reinstall dataset-fashion-mnist")
    cluttered, boxes = make_cluttered(images, SEED, stream=_SPLIT_STREAM[split], return_boxes=True)
    return cluttered[:, None], labels, {"boxes": boxes}
