"""``ddtool data prepare``: turn a tree of image files into a prepared store (:mod:`.store`) once.

Two kinds of source:

* **ImageNet** (``--imagenet-root``): the full ``train/<wnid>`` and ``val/<wnid>`` tree, from which a
  registered subset (ImageNette, ImageWoof, Comp-DD, ...) takes its ten classes; the other folders
  are ignored.
* **A class-folder tree for one dataset** (``--source TREE --dataset NAME``): ``train/<class>/`` and
  ``val/<class>/`` (or ``test/<class>/``). For ``cifar10``/``cifar100`` the folders are the class
  names; for an ImageNet subset (``imagenette``, ...) they are WordNet ids or class names; any other
  NAME becomes a dataset of its own, with the sorted folder names as its classes and its train
  split's statistics as its normalisation. A folder that is not one of the dataset's classes is an
  error here, not something to skip: a tree that does not match is usually the wrong tree.

How images are brought to one size (``--size``, ``--resize``):

* ImageNet subsets default to 128 x 128, ``squash``: the whole image resized, aspect ratio not
  kept. This is what the MTT, DATM and EDF code does to ImageNet subsets (its centre crop to 128 x 128
  after that resize is a no-op), so only this choice gives numbers comparable with the papers'.
  ``crop`` resizes the shorter side and cuts a centred square. Any ``--size`` works (32 px puts
  ImageNette at CIFAR-10's resolution).
* CIFAR-10/100 keep their 32 x 32 pixels; every image must already be that size.
* Other datasets keep their size when every image shares one, and need ``--size`` otherwise.

Both resizes are bilinear with antialiasing through torchvision's ``resize`` (and ``center_crop``)
on the decoded 8-bit image. The references resize the normalised float tensor instead; storing uint8
costs at most half a grey level. Greyscale images in an RGB set are converted (channel replicated)
and counted in the record. Unreadable or truncated files are collected and named together.

Where the store goes: ``--out`` if given, else ``DATA_ROOT/<name>`` for ``--data-root`` or
``$DDTOOL_DATA``, else ``~/.cache/ddtoolbox/<name>`` (``$XDG_CACHE_HOME`` respected): exactly the
places ``--dataset <name>`` looks.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ddtoolbox.errors import UsageError, warn
from ddtoolbox.io import user_cache_dir

from . import store
from .imagefolder import GRAY_MODES, IMAGE_EXTENSIONS
from .imagenet_subsets import IMAGE_SIZE, ImageNetSubset, duplicate_warning, get_subset
from .locate import ENV_VAR

#: ImageNet folder -> registry split
SPLITS = {"train": "train", "val": "test"}
#: ``--resize`` -> what it does, as recorded in the store's metadata
TRANSFORMS = {
    "squash": "resize the whole image to {0}x{0} (bilinear, antialiased; aspect ratio not kept)",
    "crop": "resize shorter side to {0} (bilinear, antialiased), centre crop {0}x{0}",
}
DEFAULT_RESIZE = "squash"
#: how many bad files a message names before it says "and N more"
NAMED = 5


def check_resize(resize: str) -> str:
    if resize not in TRANSFORMS:
        raise UsageError(f"--resize must be one of {', '.join(TRANSFORMS)} (got {resize!r}); squash is what the "
                         f"reference implementations do")
    return resize


def output_dir(name: str, out=None, data_root=None) -> Path:
    """Where the store of ``name`` is written: see the module docstring."""
    if out:
        return Path(out).expanduser()
    root = data_root or os.environ.get(ENV_VAR)
    if root:
        return Path(root).expanduser() / name
    return user_cache_dir() / name


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _names(items, n: int = NAMED) -> str:
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# ---------------------------------------------------------------------------- listing


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


def _key(name: str) -> str:
    """Folder names and class names compared loosely: case, spaces, hyphens and underscores aside."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def _tree_split_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise UsageError(f"--source {root} does not exist or is not a folder; point it at the folder holding "
                         f"train/ and val/ (or test/), each with one folder per class")
    test = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    missing = [d for d, p in (("train/", root / "train"), ("val/ or test/", test)) if p is None or not p.is_dir()]
    if missing:
        raise UsageError(f"--source {root} has no {' and no '.join(missing)} folder; a class-folder tree needs "
                         f"train/<class>/<images> and val/<class>/ (or test/<class>/)")
    return {"train": root / "train", "test": test}


def list_tree(root, classes: list[tuple[str, ...]] | None, dataset: str) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    """Split -> [(file, label)] of a class-folder tree, and the class folders' names in label order.

    :param classes: for each label, the folder names it may have (compared by :func:`_key`); None
        takes the train folders, sorted, as the classes of a new dataset.
    """
    dirs = _tree_split_dirs(Path(root).expanduser())
    if classes is None:
        found = [d.name for d in _subdirs(dirs["train"])]
        if not found:
            raise UsageError(f"{dirs['train']} has no class folders; put each class's images in train/<class>/")
        classes = [(n,) for n in found]
    index = {_key(alias): label for label, aliases in enumerate(classes) for alias in aliases}
    out: dict[str, list[tuple[Path, int]]] = {}
    folders: list[str] = [a[0] for a in classes]
    problems: list[str] = []
    for split, folder in dirs.items():
        seen: dict[int, Path] = {}
        stray, empty, files = [], [], []
        for d in _subdirs(folder):
            label = index.get(_key(d.name))
            if label is None:
                stray.append(d.name)
                continue
            if label in seen:
                problems.append(f"{seen[label]} and {d} are the same class of {dataset}; keep one")
                continue
            seen[label] = d
            folders[label] = d.name
            imgs = _images_in(d)
            if not imgs:
                empty.append(f"{folder.name}/{d.name}")
            files += [(p, label) for p in imgs]
        missing = [classes[label][0] for label in range(len(classes)) if label not in seen]
        if stray:
            problems.append(f"{folder.name}/ has folder(s) that are not classes of {dataset}: {_names(stray)}")
        if missing:
            problems.append(f"{folder.name}/ lacks class folder(s): {_names(missing)}")
        if empty:
            problems.append(f"no images in {_names(empty)}")
        # label order, then file name: the store does not depend on how the folders are named
        out[split] = sorted(files, key=lambda f: f[1])
    if problems:
        raise UsageError(f"the tree at {root} does not match {dataset}: {'; '.join(problems)}; "
                         f"fix the folders, or prepare it under another --dataset name to make a dataset of its own")
    return out, folders


# ---------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Sizing:
    """How images become one size: ``size`` None keeps the images' own (they must all share it)."""

    size: int | None
    resize: str | None = None

    def describe(self) -> str:
        if self.size is None:
            return "stored at their own size"
        return TRANSFORMS[self.resize].format(self.size)


def _resized(im: Image.Image, sizing: Sizing) -> Image.Image:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if sizing.resize == "squash":
        return TF.resize(im, [sizing.size, sizing.size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    im = TF.resize(im, sizing.size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(im, [sizing.size, sizing.size])


def transform_image(path: Path, size: int = IMAGE_SIZE, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """One image file -> (3, size, size) uint8: ``resize`` ``squash`` (the references') or ``crop``."""
    check_resize(resize)
    arr, _ = _decode_one(Path(path), Sizing(size, resize), "RGB")
    return arr


def _decode_one(path: Path, sizing: Sizing, mode: str) -> tuple[np.ndarray, bool]:
    """(C, H, W) uint8 and whether the file was greyscale; a bad file raises UsageError naming it."""
    try:
        with Image.open(path) as im:
            grey = im.mode in GRAY_MODES
            im = im.convert(mode)   # forces the decode: a truncated file fails here
            if sizing.size is not None:
                im = _resized(im, sizing)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {path} ({exc}); replace or delete the file") from None
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), grey


@dataclass
class Decoded:
    images: torch.Tensor
    labels: torch.Tensor
    greyscale: int = 0
    problems: list[str] = field(default_factory=list)


def _try(path: Path, sizing: Sizing, mode: str):
    try:
        return _decode_one(path, sizing, mode)
    except UsageError:
        return None


def decode_files(files: list[tuple[Path, int]], sizing: Sizing, channels: int, desc: str, workers: int,
                 progress: bool) -> Decoded:
    """Decode every file; collect unreadable files and (without resizing) odd sizes instead of stopping."""
    from tqdm import tqdm

    mode = "L" if channels == 1 else "RGB"
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    images: torch.Tensor | None = None
    bad, odd, grey = [], [], 0
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    # PIL releases the GIL while decoding and resizing, so threads scale without pickling images
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, got in enumerate(pool.map(lambda f: _try(f[0], sizing, mode), files)):
            bar.update(1)
            if got is None:
                bad.append(str(files[i][0]))
                continue
            arr, was_grey = got
            grey += was_grey and channels == 3
            if images is None:
                images = torch.empty((len(files), *arr.shape), dtype=torch.uint8)
            if tuple(arr.shape) != tuple(images.shape[1:]):
                odd.append(f"{files[i][0]} ({arr.shape[1]}x{arr.shape[2]})")
                continue
            images[i] = torch.from_numpy(arr)
    bar.close()
    problems = []
    if bad:
        problems.append(f"{len(bad)} unreadable or truncated image(s): {_names(bad)}")
    if odd and images is not None:
        problems.append(f"{len(odd)} image(s) not {images.shape[2]}x{images.shape[3]} like the first: {_names(odd)}")
    return Decoded(images if images is not None else torch.empty(0, channels, 1, 1, dtype=torch.uint8),
                   labels, grey, problems)


# ---------------------------------------------------------------------------- what each dataset expects


@dataclass(frozen=True)
class Target:
    """What a prepared dataset must be: its name, classes (with the folder names each may have),
    channels, sizing, and whether its normalisation comes from the registry or from its train split."""

    name: str
    classes: list[tuple[str, ...]] | None
    channels: int
    sizing: Sizing
    extra: dict = field(default_factory=dict)
    own_statistics: bool = False


def target_for(dataset: str, size: int | None, resize: str | None) -> Target:
    """The :class:`Target` of ``--dataset`` (a registered name, or a new one) under ``--size``/``--resize``."""
    from .imagenet_subsets import SUBSETS
    from .registry import _ALIASES, _REGISTRY

    key = dataset.strip().lower()
    if not key or ":" in key or "/" in key:
        raise UsageError(f"--dataset {dataset!r} is not a dataset name; give a name like cifar10 or my-photos "
                         f"(lower case, no ':' or '/')")
    key = _ALIASES.get(key, key).replace("compdd-", "cdd-")
    if resize is not None:
        check_resize(resize)
    if key in SUBSETS:
        sub = SUBSETS[key]
        names = sub.class_names
        wnids = [sub.wnids[sub.indices.index(i)] for i in sub.distinct_indices]
        classes = [(w, n) for w, n in zip(wnids, names)]
        return Target(key, classes, 3, Sizing(size or IMAGE_SIZE, resize or DEFAULT_RESIZE),
                      {"subset": sub.name, "title": sub.title, "wnids": wnids,
                       "imagenet_indices": list(sub.distinct_indices)})
    if key in _REGISTRY:
        info = _REGISTRY[key].info
        if key not in ("cifar10", "cifar100"):
            raise UsageError(f"{key} is not read from a class-folder tree; 'ddtool data prepare --source' takes "
                             f"cifar10, cifar100, the ImageNet subsets (see 'ddtool data subsets') or a new name")
        native = info.image_size[0]
        if size not in (None, native) or resize is not None:
            raise UsageError(f"{key} images are {native}x{native} and are stored as they are; drop --size/--resize, "
                             f"or prepare the tree under a new --dataset name to resize it")
        return Target(key, [(n,) for n in info.class_names], info.channels, Sizing(None))
    return Target(key, None, 0, Sizing(size, (resize or DEFAULT_RESIZE) if size else None), own_statistics=True)


# ---------------------------------------------------------------------------- preparing


def _decode_splits(files: dict[str, list[tuple[Path, int]]], target: Target, channels: int, workers: int,
                   progress: bool, root: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    splits, grey, problems = {}, {}, []
    for split in store.SPLITS:
        got = decode_files(files[split], target.sizing, channels, f"{target.name} {split}", workers, progress)
        problems += [f"{split}: {p}" for p in got.problems]
        splits[split] = (got.images, got.labels)
        grey[split] = got.greyscale
    if problems:
        odd_sizes = any("image(s) not " in p for p in problems)   # only a size mismatch is cured by --size
        fix = ("replace those files, or pass --size N to resize every image" if odd_sizes and not target.sizing.size
               else "replace or delete those files")
        raise UsageError(f"cannot prepare {target.name} from {root}: {'; '.join(problems)}; {fix}")
    shapes = {tuple(splits[s][0].shape[2:]) for s in store.SPLITS}
    if len(shapes) > 1:
        raise UsageError(f"the train and test images of {root} differ in size ({' vs '.join(f'{h}x{w}' for h, w in shapes)}); "
                         f"pass --size N to bring both to one size")
    return splits, grey


def prepare_tree(source, dataset: str, out=None, *, data_root=None, size: int | None = None,
                 resize: str | None = None, workers: int = 1, progress: bool = True, warn=warn,
                 check_target=None) -> dict:
    """Decode a class-folder tree for ``dataset`` into a store; return its record (``meta.json``).

    :param check_target: called with the store folder once the tree has been listed and before any
        image is decoded, so a folder that cannot be written stops the command before minutes of work.
    """
    target = target_for(dataset, size, resize)
    root = Path(source).expanduser().resolve()
    files, folders = list_tree(root, target.classes, target.name)
    return _prepare(target, files, folders, root, "class-folder tree", out, data_root, workers, progress, warn,
                    check_target)


def prepare_subset(imagenet_root, subset: str | ImageNetSubset, out=None, *, data_root=None, workers: int = 1,
                   progress: bool = True, warn=warn, resize: str = DEFAULT_RESIZE, size: int = IMAGE_SIZE,
                   check_target=None) -> dict:
    """Decode, transform and store one subset taken from a full ImageNet tree; return the record
    (``check_target`` as for :func:`prepare_tree`)."""
    sub = subset if isinstance(subset, ImageNetSubset) else get_subset(subset)
    target = target_for(sub.name, size, resize)
    message = duplicate_warning(sub)
    if message:
        warn(message)
    root = Path(imagenet_root).expanduser()
    listed = list_subset_files(root, target.extra["wnids"], sub.name)
    files = {SPLITS[folder]: entries for folder, entries in listed.items()}
    return _prepare(target, files, target.extra["wnids"], root.resolve(), "ImageNet tree", out, data_root, workers, progress,
                    warn, check_target)


def _prepare(target: Target, files, folders: list[str], root: Path, kind: str, out, data_root, workers: int,
             progress: bool, warn, check_target) -> dict:
    """The steps both sources share once their files are listed: check, decode, record, publish."""
    folder = output_dir(target.name, out, data_root)
    if check_target is not None:
        check_target(folder)
    channels = target.channels
    if not channels:   # a new dataset: greyscale only when every train image is
        from .imagefolder import probe

        channels, _ = probe([p for p, _ in files["train"]])
    splits, grey = _decode_splits(files, target, channels, workers, progress, root)
    h, w = splits["train"][0].shape[2:]
    # a subset's classes are (wnid, name): the name is the class name; others are (name,) or new
    names = [c[-1] for c in target.classes] if target.classes else folders
    meta = {"dataset": target.name, "class_names": names, "class_folders": folders, "channels": channels,
            "image_size": [int(h), int(w)], "resize": target.sizing.resize, "transform": target.sizing.describe(),
            "source": {"kind": kind, "path": str(root)}, "greyscale_converted": grey, **target.extra}
    if target.own_statistics:
        from .imagefolder import channel_stats

        mean, std = channel_stats(splits["train"][0])
        meta["mean"], meta["std"] = list(mean), list(std)
    if sum(grey.values()):
        warn(f"{target.name}: converted {sum(grey.values())} greyscale image(s) to RGB (counted in meta.json)")
    return store.write_store(folder, splits, meta)
