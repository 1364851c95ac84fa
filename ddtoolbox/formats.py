"""Reading sets in the formats others use: MTT's ``.pt`` triple and Hugging Face parquet folders.

``ddtool eval --synthetic`` takes, besides a ``synthetic.pt``:

* **an MTT triple**, a folder (or its ``images_best.pt``) holding ``images_best.pt`` (N, C, H, W;
  normalised, and ZCA-whitened where the run used ZCA, as MTT saves them), ``labels_best.pt`` (N
  hard labels, or (N, classes) learned logits as DATM saves them) and ``lr_best.pt`` (the learned
  lr). The MTT family and DD-Ranking exchange sets this way. ``ddtool export --format mtt`` adds
  ``ddtoolbox.json`` with the set's metadata; a triple from elsewhere has none, so it needs
  ``--dataset``, trains the default ConvNet, and (like DD-Ranking) takes image i of N to belong to
  class ``i // (N / classes)`` when its labels are logits.
* **a Hugging Face dataset folder**: parquet files (``data/*.parquet``, or at the top) with an
  ``image`` column (PNG) and a ``label`` column. ``ddtool export --format hf`` also writes the
  exact normalised pixels (``pixels``), the learned logits (``soft_label``) and ``ddtoolbox.json``
  (metadata and learned lr), and those are read back exactly; a folder from elsewhere is decoded
  from its PNGs, normalised with the dataset's statistics (``--dataset``) and trained at lr 0.01.

Reading parquet needs ``pyarrow`` (``pip install ddtoolbox[hf]``); nothing else here does.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from .errors import UsageError

SIDECAR = "ddtoolbox.json"
MTT_FILES = ("images_best.pt", "labels_best.pt", "lr_best.pt")
#: the lr of a foreign set that records none: the random-real baseline's
DEFAULT_LR = 0.01


def kind_of(path) -> str:
    """``synthetic`` (a synthetic.pt file), ``mtt`` or ``hf``."""
    path = Path(path)
    if path.is_file() and path.name == MTT_FILES[0]:
        return "mtt"
    if path.is_dir():
        if (path / MTT_FILES[0]).is_file():
            return "mtt"
        if parquet_files(path):
            return "hf"
        if (path / "synthetic.pt").is_file():
            raise UsageError(f"{path} is a run folder; point --synthetic at {path / 'synthetic.pt'}")
        raise UsageError(f"{path} is a folder without a set: no synthetic.pt, images_best.pt (MTT) or parquet "
                         f"files (Hugging Face); point --synthetic at one of them")
    return "synthetic"


def parquet_files(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("*.parquet")) or sorted(folder.glob("*.parquet"))


def set_digest(path) -> str:
    """SHA-256 over the files that make the set (one file, or a folder's set files in order)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "synthetic":
        files = [path]
    else:
        folder = path.parent if path.is_file() else path
        files = [folder / f for f in MTT_FILES] if kind == "mtt" else parquet_files(folder)
        files += [folder / SIDECAR] if (folder / SIDECAR).is_file() else []
    digest = hashlib.sha256()
    for f in files:
        if f.is_file():
            digest.update(f.read_bytes())
    return digest.hexdigest()


def read_foreign(path, dataset: str | None = None) -> dict:
    """A record like ``synthetic.pt``'s (images, labels, lr, meta, and targets where learned)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    meta = _sidecar(folder)
    name = meta.get("dataset") or dataset
    if not name:
        raise UsageError(f"{folder} records no dataset (no {SIDECAR}); give --dataset")
    reader = _read_mtt if kind_of(path) == "mtt" else _read_hf
    record = reader(folder, name, meta)
    n = len(record["images"])
    info = _info(name, meta)
    defaults = {"dataset": name, "model": "ConvNet", "model_options": {}, "matcher": f"unknown ({reader.__doc__})",
                "ipc": max(1, n // info.num_classes) if info else 1}
    record["meta"] = {**defaults, **{k: v for k, v in meta.items() if k != "published"}}
    return record


def _sidecar(folder: Path) -> dict:
    file = folder / SIDECAR
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{file} cannot be read ({exc}); export the set again") from exc
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        raise UsageError(f"{file} has no 'meta' object; export the set again")
    if "lr" in data:
        meta = {**meta, "_lr": data["lr"]}
    return meta


def _info(name: str, meta: dict):
    from .data import dataset_info

    try:
        return dataset_info(name)
    except UsageError:
        if {"channels", "image_size", "num_classes", "mean", "std"} <= set(meta):
            from .data import DatasetInfo

            return DatasetInfo(name, meta["channels"], tuple(meta["image_size"]), meta["num_classes"],
                               tuple(meta["mean"]), tuple(meta["std"]),
                               tuple(meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]))
        raise


def _load_pt(file: Path):
    if not file.is_file():
        raise UsageError(f"{file} is missing; an MTT set is the triple {', '.join(MTT_FILES)}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{file} is not a tensor file torch can load ({type(exc).__name__}); export it again") from exc


def _class_order(n: int, classes: int, where) -> torch.Tensor:
    if n % classes:
        raise UsageError(f"{where} holds {n} images, not a whole number per class of {classes} classes, and no hard "
                         f"labels; export it with ddtoolbox (which records them)")
    return torch.arange(classes).repeat_interleave(n // classes)


def _read_mtt(folder: Path, name: str, meta: dict) -> dict:
    """MTT triple"""
    images = _load_pt(folder / MTT_FILES[0])
    labels = _load_pt(folder / MTT_FILES[1])
    lr = _load_pt(folder / MTT_FILES[2])
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise UsageError(f"{folder}: {MTT_FILES[0]} and {MTT_FILES[1]} must each hold one tensor")
    record = {"images": images.detach().float(), "lr": torch.as_tensor(lr, dtype=torch.float32).detach().reshape(())}
    if labels.dim() == 2 and labels.is_floating_point():
        record["targets"] = labels.detach().float()
        hard = meta.get("hard_labels")
        record["labels"] = (torch.tensor(hard, dtype=torch.long) if hard is not None
                            else _class_order(len(images), labels.shape[1], folder))
    else:
        record["labels"] = labels.detach().long().reshape(-1)
    return record


def _read_hf(folder: Path, name: str, meta: dict) -> dict:
    """Hugging Face parquet"""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("reading a Hugging Face parquet folder needs pyarrow; pip install 'ddtoolbox[hf]'") from None
    files = parquet_files(folder)
    try:
        table = pq.read_table(files[0]) if len(files) == 1 else _concat([pq.read_table(f) for f in files])
    except Exception as exc:
        raise UsageError(f"{files[0]} is not a readable parquet file ({type(exc).__name__}); export it again") from exc
    columns = set(table.column_names)
    label_col = next((c for c in ("label", "labels") if c in columns), None)
    if label_col is None:
        raise UsageError(f"{folder}'s parquet has no 'label' column (it has {', '.join(sorted(columns))})")
    labels = torch.tensor(table.column(label_col).to_pylist(), dtype=torch.long)
    info = _info(name, meta)
    shape = (info.channels, *info.image_size)
    if "pixels" in columns:
        images = torch.tensor(table.column("pixels").to_pylist(), dtype=torch.float32).reshape(-1, *shape)
    elif "image" in columns:
        images = torch.stack([_decode(cell, info) for cell in table.column("image").to_pylist()])
    else:
        raise UsageError(f"{folder}'s parquet has neither an 'image' nor a 'pixels' column")
    record = {"images": images, "labels": labels,
              "lr": torch.tensor(float(meta.get("_lr", DEFAULT_LR)), dtype=torch.float32)}
    if "soft_label" in columns:
        record["targets"] = torch.tensor(table.column("soft_label").to_pylist(), dtype=torch.float32)
    return record


def _concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def _decode(cell, info) -> torch.Tensor:
    """One PNG cell (``{"bytes": ..., "path": ...}`` as ``datasets`` stores images) as a normalised tensor."""
    import numpy as np
    from PIL import Image

    from .data import normalize

    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not data:
        raise UsageError("an image cell of the parquet holds no bytes (images stored by path are not supported)")
    img = Image.open(io.BytesIO(data)).convert("L" if info.channels == 1 else "RGB")
    if img.size != (info.image_size[1], info.image_size[0]):
        raise UsageError(f"the parquet holds {img.size[0]}x{img.size[1]} images, not {info.name}'s "
                         f"{info.image_size[1]}x{info.image_size[0]}")
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    arr = arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
    return normalize(arr, info)
