"""Reading CIFAR-10/100 from torchvision's on-disk layout without torchvision's loader.

torchvision's ``CIFAR10(download=False)`` refuses any folder whose files do not match the
md5 sums of the official archive, and checks every train *and* test file even to read one
split. That makes small generated fixtures impossible to test against, and its error
("Dataset not found or corrupted. You can use download=True") points users at a download
this toolbox never does. Reading the batches here keeps the same folder layout (so an
existing torchvision download works) while giving errors that name the file and the fix.

The batch files are pickles. ``pickle.load`` can run arbitrary code, so they are read with an
unpickler that only rebuilds plain containers and numpy arrays; anything else is refused.
Integrity is checked structurally (keys, array shape, label range, image/label counts) rather
than by md5, which also accepts legitimately re-saved copies.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ddtoolbox.errors import UsageError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
CIFAR10_META = ("batches.meta", "label_names")
CIFAR100_META = ("meta", "fine_label_names")


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    # Pickles name numpy internals by module path, which moved from numpy.core to numpy._core
    # in numpy 2; both spellings map to whichever object this numpy provides.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import codecs

    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles at protocol 2 spell bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list: the file is not plain data, whatever else it is."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refusing to load {module}.{name}") from None


def _load_pickle(path: Path, fix: str) -> dict:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror or e}); check the file's permissions or {fix}") from None
    try:
        # latin1 turns Python 2 str payloads (the official files) back into the raw bytes.
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as e:
        raise UsageError(f"{path} is not a CIFAR batch file ({e}); {fix}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError) as e:
        raise UsageError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a CIFAR batch file (holds {type(obj).__name__}, not a dict); {fix}")
    return obj


def is_cifar10_dir(folder: Path) -> bool:
    return any((folder / n).is_file() for n in (CIFAR10_META[0], "test_batch", "data_batch_1"))


def is_cifar100_dir(folder: Path) -> bool:
    # 'train' and 'test' are too generic on their own (an ImageFolder root has such folders),
    # so the meta file must be there too, and all must be files.
    return (folder / CIFAR100_META[0]).is_file() and any((folder / n).is_file() for n in ("train", "test"))


def _check_meta(folder: Path, meta: tuple[str, str], class_names: tuple[str, ...], fix: str) -> None:
    """Reject a folder of the other CIFAR variant early, by its class list, when meta exists."""
    path = folder / meta[0]
    if not path.is_file():
        return
    names = _load_pickle(path, fix).get(meta[1])
    if names is not None and tuple(str(n) for n in names) != class_names:
        raise UsageError(f"{path} lists classes {list(names)[:5]}... which are not this dataset's; {fix}")


def load_cifar_split(
    folder: Path, split: str, *, hundred: bool, class_names: tuple[str, ...], fix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 for one split."""
    files = (CIFAR100_FILES if hundred else CIFAR10_FILES)[split]
    label_key = "fine_labels" if hundred else "labels"
    _check_meta(folder, CIFAR100_META if hundred else CIFAR10_META, class_names, fix)

    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise UsageError(f"{', '.join(missing)} missing from {folder}; {fix}")

    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _load_pickle(path, fix)
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or lab is None:
            raise UsageError(f"{path} lacks the 'data' array or '{label_key}' list of a CIFAR batch; {fix}")
        lab = np.asarray(lab)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UsageError(f"{path} has data {data.dtype}{list(data.shape)}, expected uint8 [N, 3072]; {fix}")
        if lab.ndim != 1 or lab.shape[0] != data.shape[0] or not np.issubdtype(lab.dtype, np.integer):
            raise UsageError(f"{path} has {lab.shape} labels for {data.shape[0]} images; {fix}")
        if lab.size and (lab.min() < 0 or lab.max() >= len(class_names)):
            raise UsageError(f"{path} has labels outside 0..{len(class_names) - 1}; {fix}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)
