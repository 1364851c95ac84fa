"""Loading an arbitrary ``root/{train,val|test}/<class>/<image>`` tree into memory.

This is how users bring their own data (and how ImageNet subsets arrive before being
prepared to a cache). Everything is decoded once into one uint8 tensor because distillation
re-reads the real images many times; the decoding cost is paid once per process.

Normalisation statistics are computed from the *train* split only (per channel, over every
pixel of every train image, after resizing), and the test split is normalised with those same
numbers, so evaluation never peeks at test data. ``imagenet_stats=True`` uses the ImageNet
constants instead, which is what ImageNet-pretrained models and ImageNet-subset papers expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ddtoolbox.errors import UsageError

from .info import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

PREFIX = "imagefolder:"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TEST_DIRS = ("val", "test")  # val first: ImageNet-style trees call their held-out split val/


def parse_name(name: str, data_root: str | None) -> Path:
    """``imagefolder:PATH`` -> absolute root; a relative PATH is taken under ``data_root`` if
    given (so ``--data-root /data --dataset imagefolder:imagenette`` works) else the cwd."""
    raw = name[len(PREFIX):]
    if not raw:
        raise UsageError("imagefolder: needs a path; write imagefolder:/path/to/root with train/ and val/ inside")
    path = Path(raw).expanduser()
    if not path.is_absolute() and data_root is not None:
        path = Path(data_root).expanduser() / path
    path = path.resolve()
    if not (path / "train").is_dir():
        raise UsageError(
            f"{path} has no train/ folder; an imagefolder root needs train/<class>/<images> and val/ (or test/) "
            f"with the same class folders"
        )
    return path


def split_dir(root: Path, split: str) -> Path:
    if split == "train":
        return root / "train"
    for d in TEST_DIRS:
        if (root / d).is_dir():
            return root / d
    raise UsageError(f"{root} has no val/ or test/ folder for the test split; add one with the same class folders as train/")


def class_names(root: Path) -> tuple[str, ...]:
    """Sorted train class folders: the sort makes label numbers reproducible across machines."""
    names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise UsageError(f"{root / 'train'} has no class folders; put each class's images in train/<class>/")
    return names


@dataclass(frozen=True)
class _Listing:
    files: list[Path]
    labels: list[int]


def list_split(root: Path, split: str, classes: tuple[str, ...]) -> _Listing:
    folder = split_dir(root, split)
    index = {c: i for i, c in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in index:
            raise UsageError(f"{d} is a class that train/ does not have; rename or remove it, or add it to train/")
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not imgs and split == "train":
            raise UsageError(f"{d} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder")
        files += imgs
        labels += [index[d.name]] * len(imgs)
    if not files:
        raise UsageError(f"{folder} holds no images; put them in {folder}/<class>/")
    return _Listing(files, labels)


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UsageError(f"cannot read image {path} ({e}); replace or delete the file") from None


def probe(files: list[Path]) -> tuple[int, tuple[int, int]]:
    """Channels (1 only if every image is grayscale) and the first image's (H, W).

    Only headers are read (PIL opens lazily), so this is cheap even for large trees.
    """
    gray = True
    first_size = None
    for p in files:
        with _open(p) as im:
            gray = gray and im.mode in GRAY_MODES
            if first_size is None:
                first_size = (im.height, im.width)
    return (1 if gray else 3), first_size


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    # Shorter side to `size`, then a centred square: keeps aspect ratio and the object centre,
    # the convention ImageNet-subset distillation papers use.
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode(files: list[Path], channels: int, image_size: int | None, expect_hw: tuple[int, int]) -> torch.Tensor:
    """All images as one (N, C, H, W) uint8 tensor."""
    mode = "L" if channels == 1 else "RGB"
    h, w = (image_size, image_size) if image_size else expect_hw
    out = torch.empty((len(files), channels, h, w), dtype=torch.uint8)
    for i, p in enumerate(files):
        with _open(p) as im:
            try:
                im = im.convert(mode)
            except OSError as e:
                raise UsageError(f"cannot decode image {p} ({e}); replace or delete the file") from None
            if image_size:
                im = _resize_crop(im, image_size)
            elif (im.height, im.width) != (h, w):
                raise UsageError(
                    f"{p} is {im.height}x{im.width} but the first train image is {h}x{w}; "
                    f"pass image_size (--image-size) to resize all images, or make them the same size"
                )
            arr = np.asarray(im, dtype=np.uint8)
        out[i] = torch.from_numpy(arr.reshape(h, w, channels).copy()).permute(2, 0, 1)
    return out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images in [0, 1] units, in float64 to avoid drift over
    millions of pixels; a constant channel gets std 1 so normalising cannot divide by zero."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def describe(
    root: Path, name: str, image_size: int | None, imagenet_stats: bool
) -> tuple[DatasetInfo, torch.Tensor | None, torch.Tensor | None]:
    """The dataset's info, plus the decoded train split when computing the statistics needed it
    (returned so the caller can keep it instead of decoding the same files twice)."""
    classes = class_names(root)
    train = list_split(root, "train", classes)
    channels, first_hw = probe(train.files)
    hw = (image_size, image_size) if image_size else first_hw
    images = labels = None
    if imagenet_stats:
        if channels != 3:
            raise UsageError(f"{root} holds grayscale images but ImageNet statistics are for RGB; drop imagenet_stats")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        images = decode(train.files, channels, image_size, hw)
        labels = torch.tensor(train.labels, dtype=torch.int64)
        mean, std = channel_stats(images)
    info = DatasetInfo(name=name, channels=channels, image_size=hw, num_classes=len(classes),
                       mean=mean, std=std, class_names=classes, resize="crop" if image_size else None)
    return info, images, labels


def load_split(root: Path, split: str, info: DatasetInfo, image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as uint8 images and int64 labels, shaped and coloured to match ``info``."""
    listing = list_split(root, split, info.class_names)
    images = decode(listing.files, info.channels, image_size, info.image_size)
    return images, torch.tensor(listing.labels, dtype=torch.int64)
