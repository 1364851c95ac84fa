"""``ddtool data prepare``: turn an ImageNet subset into a cache that loads in seconds.

Decoding ~13,000 full-size ImageNet JPEGs takes minutes, and a distillation workflow loads the same
subset many times (buffer, distill, eval), so each subset is decoded once, transformed and stored
as uint8 tensors: ``OUT/train.pt`` (ImageNet ``train/``), ``OUT/test.pt`` (ImageNet ``val/``, the
50 images per class the papers test on) and ``OUT/meta.json``. The registry then loads
``--dataset imagenette`` from there and applies the ImageNet normalisation, like every other
dataset (normalisation is not baked into the cache, so one constant lives in one place).

How images become 128 x 128 (``--resize``):

* ``squash`` (default): the whole image resized to 128 x 128, aspect ratio not kept. This is what
  the MTT, DATM and EDF code does to ImageNet subsets (its centre crop to 128 x 128 after that
  resize is a no-op), so only this choice gives numbers comparable with the papers'.
* ``crop``: shorter side resized to 128, then a centred 128 x 128 crop: keeps the aspect ratio but
  cuts off the sides of wide images.

Both resize bilinearly with antialiasing through torchvision's own ``resize`` (and ``center_crop``,
so the crop offset is rounded as torchvision rounds it), on the decoded 8-bit image. The references
resize the normalised float tensor instead; storing uint8 costs at most half a grey level.

The choice is written into the cache (``meta.json`` and both split files) and the registry hands it
on as ``DatasetInfo.resize``; buffers and synthetic sets record it, and ``distill`` and ``eval``
refuse to mix a buffer or a synthetic set with a cache prepared the other way. A cache from before
this choice was recorded is refused until it is prepared again.

Where the cache goes: ``--out`` if given, else ``DATA_ROOT/<subset>`` for ``--data-root`` or
``$DDTOOL_DATA``, else ``~/.cache/ddtoolbox/<subset>`` (``$XDG_CACHE_HOME`` respected): exactly the
places ``--dataset <subset>`` looks.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ddtoolbox.errors import UsageError, warn
from ddtoolbox.io import load_tensors, save_tensors, user_cache_dir, write_json

from .imagefolder import IMAGE_EXTENSIONS
from .imagenet_subsets import IMAGE_SIZE, ImageNetSubset, duplicate_warning, get_subset
from .locate import ENV_VAR

FORMAT = "ddtoolbox-imagenet-subset"
FORMAT_VERSION = 1
#: ImageNet folder -> registry split
SPLITS = {"train": "train", "val": "test"}
#: ``--resize`` -> what it does, as recorded in the cache's metadata
TRANSFORMS = {
    "squash": f"resize the whole image to {IMAGE_SIZE}x{IMAGE_SIZE} (bilinear, antialiased; aspect ratio not kept)",
    "crop": f"resize shorter side to {IMAGE_SIZE} (bilinear, antialiased), centre crop {IMAGE_SIZE}x{IMAGE_SIZE}",
}
DEFAULT_RESIZE = "squash"


def check_resize(resize: str) -> str:
    if resize not in TRANSFORMS:
        raise UsageError(f"--resize must be one of {', '.join(TRANSFORMS)} (got {resize!r}); squash is what the "
                         f"reference implementations do")
    return resize


def is_prepared_dir(path: Path) -> bool:
    return (path / "train.pt").is_file() and (path / "test.pt").is_file()


def output_dir(subset_name: str, out=None, data_root=None) -> Path:
    """Where the cache of ``subset_name`` is written: see the module docstring."""
    if out:
        return Path(out).expanduser()
    root = data_root or os.environ.get(ENV_VAR)
    if root:
        return Path(root).expanduser() / subset_name
    return user_cache_dir() / subset_name


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def list_subset_files(imagenet_root, wnids, what: str = "this subset") -> dict[str, list[tuple[Path, int]]]:
    """ImageNet split folder -> [(image file, label)] for the given wnids (label = position).

    Every problem is collected before raising, so one error message lists everything missing
    instead of the user discovering the folders one run at a time.
    """
    root = Path(imagenet_root).expanduser()
    if not root.is_dir():
        raise UsageError(f"--imagenet-root {root} does not exist or is not a folder; point it at the folder "
                         f"holding ImageNet's train/ and val/")
    missing_dirs = [d for d in SPLITS if not (root / d).is_dir()]
    if missing_dirs:
        raise UsageError(f"--imagenet-root {root} has no {' or '.join(d + '/' for d in missing_dirs)} folder; "
                         f"it needs train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageFolder layout)")
    problems: list[str] = []
    out: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        missing, empty, files = [], [], []
        for label, wnid in enumerate(wnids):
            folder = root / split / wnid
            if not folder.is_dir():
                missing.append(wnid)
                continue
            imgs = _images_in(folder)
            if not imgs:
                empty.append(wnid)
            files += [(p, label) for p in imgs]
        if missing:
            flat = split == "val" and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in (root / split).iterdir())
            hint = " (val/ holds images directly: sort them into one folder per wnid first)" if flat else ""
            problems.append(f"{split}/ lacks {len(missing)} class folder(s): {', '.join(missing)}{hint}")
        if empty:
            problems.append(f"{split}/ has no images in: {', '.join(empty)}")
        out[split] = files
    if problems:
        raise UsageError(f"ImageNet at {root} is incomplete for {what}: {'; '.join(problems)}; "
                         f"add the missing class folders (named by wnid) or choose another --subset")
    return out


def transform_image(path: Path, size: int = IMAGE_SIZE, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """One image file -> (3, size, size) uint8: ``resize`` ``squash`` (the references') or ``crop``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    check_resize(resize)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # ImageNet holds a few CMYK and grey JPEGs
            if resize == "squash":
                im = TF.resize(im, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
            else:
                im = TF.resize(im, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
                im = TF.center_crop(im, [size, size])
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {path} ({exc}); replace or delete the file") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _decode_all(files: list[tuple[Path, int]], desc: str, workers: int, progress: bool,
                resize: str = DEFAULT_RESIZE) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm import tqdm

    images = torch.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    paths = [p for p, _ in files]
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    # PIL releases the GIL while decoding and resizing, so threads scale without pickling images
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr in enumerate(pool.map(lambda p: transform_image(p, IMAGE_SIZE, resize), paths)):
            images[i] = torch.from_numpy(arr)
            bar.update(1)
    bar.close()
    return images, labels


def prepare_subset(imagenet_root, subset: str | ImageNetSubset, out=None, *, data_root=None, workers: int = 1,
                   progress: bool = True, warn=warn, resize: str = DEFAULT_RESIZE) -> dict:
    """Decode, transform and cache one subset; return the summary written to ``meta.json``."""
    check_resize(resize)
    sub = subset if isinstance(subset, ImageNetSubset) else get_subset(subset)
    message = duplicate_warning(sub)
    if message:
        warn(message)
    wnids = [sub.wnids[sub.indices.index(i)] for i in sub.distinct_indices]
    files = list_subset_files(imagenet_root, wnids, sub.name)
    target = output_dir(sub.name, out, data_root)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "subset": sub.name, "title": sub.title,
            "wnids": wnids, "imagenet_indices": list(sub.distinct_indices), "class_names": list(sub.class_names),
            "image_size": IMAGE_SIZE, "resize": resize, "transform": TRANSFORMS[resize],
            "imagenet_root": str(Path(imagenet_root).resolve())}
    counts = {}
    for folder, split in SPLITS.items():
        images, labels = _decode_all(files[folder], f"{sub.name} {folder}", workers, progress, resize)
        save_tensors(target / f"{split}.pt", {"images": images, "labels": labels,
                                              "meta": {**meta, "split": split, "imagenet_split": folder}})
        counts[split] = torch.bincount(labels, minlength=len(wnids)).tolist()
    summary = {**meta, "images_per_class": counts, "path": str(target.resolve())}
    write_json(target / "meta.json", summary)
    return summary



def load_prepared(folder: Path, split: str, subset: ImageNetSubset) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The cached split as (uint8 images, labels, ``{"info": {"resize": ...}}``), after checking it
    is this subset's cache and says how it was resized."""
    path = Path(folder) / f"{split}.pt"
    fix = f"re-create it with: ddtool data prepare --imagenet-root IMAGENET --subset {subset.name} --out {folder}"
    data = load_tensors(path, f"prepared {subset.name}", fix)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    images, labels = data.get("images"), data.get("labels")
    if meta.get("format") != FORMAT or not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise UsageError(f"{path} is not a prepared ImageNet subset; {fix}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UsageError(f"{path} was written by a newer ddtoolbox; upgrade ddtoolbox or {fix}")
    wanted = [subset.wnids[subset.indices.index(i)] for i in subset.distinct_indices]
    if meta.get("subset") != subset.name or list(meta.get("wnids", [])) != wanted:
        raise UsageError(f"{path} holds subset '{meta.get('subset')}', not {subset.name}; point --data-root at the "
                         f"{subset.name} cache, or {fix}")
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE) or len(labels) != len(images):
        raise UsageError(f"{path} holds images {tuple(images.shape)} {images.dtype}, not (N, 3, {IMAGE_SIZE}, "
                         f"{IMAGE_SIZE}) uint8; {fix}")
    resize = meta.get("resize")
    if resize not in TRANSFORMS:
        raise UsageError(f"{path} does not record how its images were resized (prepared by an older ddtoolbox); "
                         f"{fix} --resize squash (the references' way) or --resize crop")
    return images, labels, {"info": {"resize": resize}}
