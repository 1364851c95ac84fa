"""The name -> dataset registry, the lookup front door, and the in-process cache.

Datasets are registered rather than hard-coded so later work (ImageNet subsets prepared to a
cache file, a cluttered Fashion-MNIST, plugins) can add names without touching this module:
call :func:`register_dataset` with a :class:`DatasetInfo` and a loader. Names with a
``scheme:`` prefix are reserved for parameterised sources; ``imagefolder:PATH`` is the one
built in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from torch import Tensor

from ddtoolbox.errors import UsageError

from . import imagefolder
from .dataset import TensorDataset
from .info import DatasetInfo
from .locate import DataLocation, locate

ArrayLike = Union[Tensor, np.ndarray]
Loader = Callable[[Union[Path, None], str], "tuple[ArrayLike, ArrayLike] | tuple[ArrayLike, ArrayLike, dict]"]
"""``loader(folder, split) -> (images, labels)`` or ``(images, labels, extra)``.

``folder`` is the located data folder when the dataset was registered with a
:class:`DataLocation`, else the caller's ``data_root`` as a Path (or None). ``split`` is
``"train"`` or ``"test"``. ``images`` are (N, C, H, W), either uint8 in 0..255 or floating
point in [0, 1] (un-normalised: the registry normalises with the registered info, so the
constants live in exactly one place). ``labels`` are (N,) integers in [0, num_classes).
Raise :class:`UsageError` for problems with the user's files.

``extra`` may hold ``"info"``: :class:`DatasetInfo` fields that the files decide (a prepared
ImageNet subset says how it was resized: ``{"resize": "squash"}``), and ``"boxes"``: (N, 4)
integer object boxes ``(x0, y0, x1, y1)``.
"""

SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    loader: Loader
    location: DataLocation | None


_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}
# (name, split, resolved folder, options) -> dataset. Loading is the slow part of short runs
# and several components (distiller, evaluator, picture writer) ask for the same split.
_CACHE: dict[tuple, TensorDataset] = {}
_IMAGEFOLDER_INFO: dict[tuple, DatasetInfo] = {}
# the key of a train split -> the ZCA transform fitted on it
_ZCA: dict[tuple, object] = {}


def register_dataset(
    name: str,
    info: DatasetInfo,
    loader: Loader,
    *,
    location: DataLocation | None = None,
    aliases: tuple[str, ...] = (),
    replace: bool = False,
) -> None:
    """Make ``name`` loadable. ``replace=True`` is required to re-register a name, so two
    plugins claiming the same name fail loudly instead of the last import winning."""
    if name != name.lower() or ":" in name or not name:
        raise ValueError(f"dataset names are lower case without ':' (reserved for schemes), got {name!r}")
    if info.name != name:
        raise ValueError(f"info.name {info.name!r} must equal the registered name {name!r}")
    taken = [n for n in (name, *aliases) if (n in _REGISTRY or n in _ALIASES) and not replace]
    if taken:
        raise ValueError(f"dataset name(s) {taken} already registered; pass replace=True to override")
    _REGISTRY[name] = _Entry(info, loader, location)
    for alias in aliases:
        _ALIASES[alias.lower()] = name
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]
    for key in [k for k in _ZCA if k[0] == name]:
        del _ZCA[key]


def list_datasets() -> list[str]:
    """Registered names (sorted). ``imagefolder:PATH`` is accepted too but is not a fixed name."""
    return sorted(_REGISTRY)


def clear_cache() -> None:
    """Drop cached splits, e.g. to free memory after the real data is no longer needed."""
    _CACHE.clear()
    _IMAGEFOLDER_INFO.clear()
    _ZCA.clear()


def _unknown(name: str) -> UsageError:
    return UsageError(
        f"unknown dataset {name!r}; use one of {', '.join(list_datasets())}, "
        f"or imagefolder:PATH for a folder with train/ and val/ (or test/) holding one folder per class, "
        f"or make {name!r} a dataset with 'ddtool data prepare --source TREE --dataset {name}'"
    )


def _entry(name: str, data_root) -> _Entry:
    """The registered entry of ``name``, or one made from a prepared store of that name.

    ``ddtool data prepare --source TREE --dataset NAME`` makes a dataset the registry does not
    know; its ``meta.json`` says what it is, so it is found where a registered dataset would be
    (``data_root``, ``$DDTOOL_DATA``, the user cache) and loads like any other.
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in _REGISTRY:
        return _REGISTRY[key]
    if not key or ":" in key or "/" in key:
        raise _unknown(name)
    from . import store
    from ddtoolbox.io import user_cache_dir

    def is_this_store(folder: Path) -> bool:
        if not store.is_store_dir(folder):
            return False
        try:
            meta = store.read_meta(folder, "")
        except UsageError:
            return False
        return bool(meta) and meta.get("dataset") == key and "mean" in meta

    location = DataLocation(is_data_dir=is_this_store, folder_names=(key,),
                            default_dirs=lambda: (user_cache_dir() / key,))
    try:
        folder = locate(key, location, data_root)
    except UsageError:
        raise _unknown(name) from None
    meta = store.read_meta(folder, f"prepare it again with 'ddtool data prepare --dataset {key} --source TREE'")
    try:
        info = DatasetInfo(key, int(meta["channels"]), tuple(meta["image_size"]), len(meta["class_names"]),
                           tuple(meta["mean"]), tuple(meta["std"]), tuple(meta["class_names"]), meta.get("resize"))
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{folder}/meta.json does not describe a dataset ({type(e).__name__}: {e}); prepare it "
                         f"again with 'ddtool data prepare --dataset {key} --source TREE'") from None

    def load(where: Path, split: str):
        from .store import load_prepared

        return load_prepared(where, split, key)

    return _Entry(info, load, location)


def _is_imagefolder(name: str) -> bool:
    return name.strip().lower().startswith(imagefolder.PREFIX)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


def _check_image_size(image_size: int | None) -> int | None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UsageError(f"image_size must be a positive integer (pixels), got {image_size!r}; pass e.g. 32")
    return image_size


def _check_fixed_options(info: DatasetInfo, image_size: int | None, imagenet_stats: bool) -> None:
    # Fixed datasets have one size and their own constants; accepting the native size keeps a
    # CLI that always passes --image-size working, anything else would be silently ignored.
    if image_size is not None and (image_size, image_size) != tuple(info.image_size):
        h, w = info.image_size
        raise UsageError(
            f"{info.name} images are {h}x{w} and cannot be resized (image_size={image_size}); "
            f"drop image_size, it only applies to imagefolder:PATH datasets"
        )
    if imagenet_stats:
        raise UsageError(f"imagenet_stats only applies to imagefolder:PATH datasets, not {info.name}; drop it")


def _finish(images: ArrayLike, labels: ArrayLike, info: DatasetInfo, extra: dict | None = None) -> TensorDataset:
    """Convert a loader's output to the normalised float32 container."""
    extra = dict(extra or {})
    unknown = sorted(set(extra) - {"info", "boxes"})
    if unknown:
        raise ValueError(f"{info.name}: loader returned unknown extra key(s) {unknown}; use 'info' or 'boxes'")
    if extra.get("info"):
        info = dataclasses.replace(info, **extra["info"])
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # e.g. np.frombuffer over file bytes; torch wants writable memory
    images = torch.as_tensor(images)
    labels = torch.as_tensor(np.array(labels) if isinstance(labels, np.ndarray) else labels)
    if images.dtype == torch.uint8:
        x = images.to(torch.float32).div_(255)  # fresh tensor: safe to normalise in place
    elif images.is_floating_point():
        x = images.to(torch.float32, copy=True)  # never touch the loader's own tensor
    else:
        raise ValueError(f"{info.name}: loader returned images of dtype {images.dtype}; use uint8 or float")
    c, (h, w) = info.channels, info.image_size
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise ValueError(f"{info.name}: loader returned images {tuple(x.shape)}, expected (N, {c}, {h}, {w})")
    x.sub_(torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1))
    x.div_(torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1))
    labels = labels.to(torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise ValueError(f"{info.name}: loader returned labels outside 0..{info.num_classes - 1}")
    boxes = extra.get("boxes")
    if boxes is not None:
        boxes = torch.as_tensor(np.asarray(boxes)).to(torch.int64)
    return TensorDataset(x, labels, info, boxes)  # validates shapes


def find_data_root(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The folder the dataset's files will be read from.

    Lookup order: ``data_root`` (the folder itself or a parent with a subfolder named like the
    dataset; must hold the data if given), then ``$DDTOOL_DATA`` (same rules), then the
    dataset's default folders (for Fashion-MNIST the Debian package's
    /usr/share/datasets/fashion-mnist). Raises :class:`UsageError` listing every place tried.
    """
    if _is_imagefolder(name):
        return imagefolder.parse_name(name.strip(), data_root)
    entry = _entry(name, data_root)
    if entry.location is None:
        raise UsageError(f"{entry.info.name} is not read from a data folder; drop --data-root for it")
    return locate(entry.info.name, entry.location, data_root)


def _imagefolder_info(root: Path, image_size: int | None, imagenet_stats: bool) -> DatasetInfo:
    name = f"{imagefolder.PREFIX}{root}"
    key = (name, image_size, imagenet_stats)
    if key not in _IMAGEFOLDER_INFO:
        info, train_images, train_labels = imagefolder.describe(root, name, image_size, imagenet_stats)
        _IMAGEFOLDER_INFO[key] = info
        if train_images is not None:
            # The statistics needed the whole train split decoded; keep it rather than decode twice.
            _CACHE[(name, "train", str(root), image_size, imagenet_stats)] = _finish(train_images, train_labels, info)
    return _IMAGEFOLDER_INFO[key]


def _load_imagefolder(name: str, split: str, data_root, image_size: int | None, imagenet_stats: bool) -> TensorDataset:
    root = imagefolder.parse_name(name.strip(), data_root)
    info = _imagefolder_info(root, image_size, imagenet_stats)
    key = (info.name, split, str(root), image_size, imagenet_stats)
    if key not in _CACHE:
        images, labels = imagefolder.load_split(root, split, info, image_size)
        _CACHE[key] = _finish(images, labels, info)
    return _CACHE[key]


def dataset_info(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    image_size: int | None = None,
    imagenet_stats: bool = False,
) -> DatasetInfo:
    """Shapes, classes and normalisation of a dataset, without loading it when possible.

    For ``imagefolder:PATH`` the info depends on the files (classes, size, train statistics),
    so the train split is scanned, and decoded unless ``imagenet_stats`` is set; the decoded
    split is cached for the following :func:`load_dataset`.
    """
    _check_image_size(image_size)
    if _is_imagefolder(name):
        return _imagefolder_info(imagefolder.parse_name(name.strip(), data_root), image_size, imagenet_stats)
    info = _entry(name, data_root).info
    _check_fixed_options(info, image_size, imagenet_stats)
    return info


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    imagenet_stats: bool = False,
    zca: bool = False,
) -> TensorDataset:
    """Load one split fully into memory, normalised with the dataset's constants.

    Results are cached per process by (name, split, data folder, options): a second call
    returns a new :class:`TensorDataset` sharing the *same* tensors, so callers must not
    modify ``images``/``labels`` in place. ``image_size`` and ``imagenet_stats`` only apply to
    ``imagefolder:PATH`` (resize the shorter side then centre-crop to a square; use ImageNet
    constants instead of the train split's statistics). ``zca`` whitens the split after the
    normalisation with a ZCA transform fitted on the *train* split (:mod:`ddtoolbox.data.zca`);
    the result's ``info.zca`` is then true and its ``whitening`` holds the transform.
    """
    _check_split(split)
    _check_image_size(image_size)
    ds, key = _load_plain(name, split, data_root, image_size, imagenet_stats)
    if zca:
        ds = _whitened(name, split, data_root, image_size, imagenet_stats, ds, key)
    return TensorDataset(ds.images, ds.labels, ds.info, ds.boxes, ds.whitening)


def _load_plain(name, split, data_root, image_size, imagenet_stats) -> tuple[TensorDataset, tuple]:
    """The cached, normalised split and its cache key."""
    if _is_imagefolder(name):
        root = imagefolder.parse_name(name.strip(), data_root)
        ds = _load_imagefolder(name, split, data_root, image_size, imagenet_stats)
        return ds, (ds.info.name, split, str(root), image_size, imagenet_stats)
    entry = _entry(name, data_root)
    _check_fixed_options(entry.info, image_size, imagenet_stats)
    if entry.location is not None:
        folder: Path | None = locate(entry.info.name, entry.location, data_root)
    else:
        folder = Path(data_root).expanduser().resolve() if data_root is not None else None
    key = (entry.info.name, split, str(folder) if folder else None)
    if key not in _CACHE:
        images, labels, *extra = entry.loader(folder, split)
        _CACHE[key] = _finish(images, labels, entry.info, extra[0] if extra else None)
    return _CACHE[key], key


def _whitened(name, split, data_root, image_size, imagenet_stats, plain: TensorDataset, key: tuple) -> TensorDataset:
    """``plain`` whitened with the ZCA transform of its dataset's train split (fitted once, cached)."""
    from . import zca as Z

    zkey = key + ("zca",)
    if zkey not in _CACHE:
        train, train_key = (plain, key) if split == "train" else _load_plain(name, "train", data_root, image_size,
                                                                          imagenet_stats)
        if train_key not in _ZCA:
            _ZCA[train_key] = Z.fit_zca(train.images)
        transform = _ZCA[train_key]
        info = dataclasses.replace(plain.info, zca=True)
        _CACHE[zkey] = TensorDataset(Z.whiten(transform, plain.images), plain.labels, info, plain.boxes, transform)
    return _CACHE[zkey]
