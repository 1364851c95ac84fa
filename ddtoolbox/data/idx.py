"""Reading MNIST-style IDX files (MNIST, Fashion-MNIST) with numpy alone.

Parsed by hand because the format is a dozen bytes of header plus raw pixels, and reading it
directly lets every failure (missing, truncated, wrong file) be reported with the file's name
and what to do, instead of a generic decode error from deep inside a library.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ddtoolbox.errors import UsageError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IMAGES_FILE = "{prefix}-images-idx3-ubyte"
LABELS_FILE = "{prefix}-labels-idx1-ubyte"


def idx_file_names(split: str) -> tuple[str, str]:
    prefix = SPLIT_PREFIX[split]
    return IMAGES_FILE.format(prefix=prefix), LABELS_FILE.format(prefix=prefix)


def has_idx_files(folder: Path) -> bool:
    """True if the folder holds any of the four IDX files, compressed or not."""
    names = [n for split in SPLIT_PREFIX for n in idx_file_names(split)]
    return any((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in names)


def find_idx_file(folder: Path, base: str, fix: str) -> Path:
    """Prefer the uncompressed file (torchvision's raw/ folders hold both; it skips gunzip)."""
    for cand in (folder / base, folder / f"{base}.gz"):
        if cand.is_file():
            return cand
    raise UsageError(f"{base}(.gz) is missing from {folder}; {fix}")


def read_idx(path: Path, magic: int, fix: str) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking the header against the file length.

    The length check is what turns a partially downloaded file into a clear error instead of
    silently short (or garbage-padded) data.
    """
    def bad(what: str) -> UsageError:
        return UsageError(f"{path} is {what}; {fix}")

    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise bad(f"truncated or corrupt ({e})") from None
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror or e}); check the file's permissions or {fix}") from None

    if len(raw) < 4:
        raise bad("truncated (shorter than the 4-byte IDX header)")
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise bad(f"not an IDX {kind} file (magic number {found}, expected {magic})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad("truncated inside the IDX header")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise bad(f"{state} ({len(raw)} bytes, header promises {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_split(folder: Path, split: str, num_classes: int, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) uint8 for one split, cross-checked."""
    images_name, labels_name = idx_file_names(split)
    images_path = find_idx_file(folder, images_name, fix)
    labels_path = find_idx_file(folder, labels_name, fix)
    images = read_idx(images_path, IMAGES_MAGIC, fix)
    labels = read_idx(labels_path, LABELS_MAGIC, fix)
    if images.shape[0] != labels.shape[0]:
        raise UsageError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels; "
            f"the two files come from different downloads, {fix}"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise UsageError(f"{labels_path} has label {int(labels.max())}, beyond the {num_classes} classes; {fix}")
    return images, labels
