"""The on-disk expert-trajectory ("buffer") format.

A buffer is a folder: ``buffer.json`` (the metadata every consumer checks before trusting the
numbers) and one ``expert_NNN.pt`` per expert holding a ``(epochs + 1, P)`` tensor of flat
parameter snapshots, index 0 being the initialisation. Tensors only, so loading never unpickles
code. :mod:`ddtoolbox.experts` writes buffers; everything else reads them through :class:`Buffer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .errors import UsageError
from .io import check_fields, load_tensors, read_json, sha256
from .models import create_model, load_flat

FORMAT = "ddtoolbox-buffer"
FORMAT_VERSION = 1
META = "buffer.json"



def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _numbers(n=None):
    return lambda v: (isinstance(v, list) and (n is None or len(v) == n)
                      and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _expert_entries(v) -> bool:
    return isinstance(v, list) and all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                       and Path(e["file"]).name == e["file"] for e in v)


#: what ``buffer.json`` must hold, and of which kind, before any number in it is trusted
FIELDS = {
    "dataset": str, "model": str, "model_options": dict,
    "channels": (_positive_int, "a positive integer"), "num_classes": (_positive_int, "a positive integer"),
    "image_size": (lambda v: _numbers(2)(v) and all(isinstance(x, int) and x > 0 for x in v), "[height, width]"),
    "epochs": (_positive_int, "a positive integer"), "num_params": (_positive_int, "a positive integer"),
    "lr": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number"),
    "mean": (_numbers(), "a list of numbers"), "std": (_numbers(), "a list of numbers"),
    "experts": (_expert_entries, "a list of {\"file\": \"expert_NNN.pt\", ...} entries"),
}


@dataclass
class Buffer:
    """A folder of expert trajectories and the metadata that says what they were trained on."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path) -> "Buffer":
        path = Path(path)
        fix = "point --buffer at a folder made by 'ddtool buffer'"
        if not path.is_dir():
            raise UsageError(f"buffer folder {path} does not exist; {fix}")
        meta = read_json(path / META, "buffer metadata", fix)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UsageError(f"{path / META} is not a ddtoolbox buffer; {fix}")
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UsageError(f"buffer {path} was written by a newer ddtoolbox; upgrade ddtoolbox")
        if not meta.get("experts"):
            raise UsageError(f"buffer {path} holds no finished expert; run 'ddtool buffer --resume' on it")
        check_fields(meta, FIELDS, f"buffer metadata {path / META}",
                     f"it was edited or damaged; re-create it with 'ddtool buffer --resume --out {path}'")
        buf = cls(path, meta)
        buf._load = lru_cache(maxsize=8)(buf._load_uncached)
        return buf

    def check_files(self) -> None:
        """Every listed expert file is there and not empty (cheap: nothing is loaded), so a damaged
        buffer is found before a run starts rather than when an expert is first drawn."""
        for entry in self.meta["experts"]:
            path = self.path / entry["file"]
            if not path.is_file() or path.stat().st_size == 0:
                raise UsageError(f"expert file {path} is missing or empty; re-create it with 'ddtool buffer --resume "
                                 f"--out {self.path}' (with the buffer's original settings)")

    @property
    def num_experts(self) -> int:
        return len(self.meta["experts"])

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    def trajectory(self, i: int) -> torch.Tensor:
        """Snapshots of expert ``i``, shape ``(epochs + 1, P)``, on the CPU."""
        return self._load(i)

    def _load_uncached(self, i: int) -> torch.Tensor:
        entry = self.meta["experts"][i]
        fix = f"delete it and re-create the buffer with 'ddtool buffer --resume --out {self.path}'"
        path = self.path / entry["file"]
        recorded = entry.get("sha256")
        if isinstance(recorded, str) and sha256(path) != recorded:
            raise UsageError(f"expert trajectory {path} is corrupt: its bytes differ from those recorded in "
                             f"{self.path / META} when it was written; {fix}")
        data = load_tensors(path, "expert trajectory", fix)
        traj = data.get("trajectory")
        expected = (self.epochs + 1, int(self.meta["num_params"]))
        if not isinstance(traj, torch.Tensor) or tuple(traj.shape) != expected:
            got = tuple(traj.shape) if isinstance(traj, torch.Tensor) else type(traj).__name__
            raise UsageError(f"expert trajectory {self.path / entry['file']} has shape {got}, expected {expected}; {fix}")
        if not bool(torch.isfinite(traj).all()):   # ddtool never writes one (ddtoolbox.finite): the file was damaged
            raise UsageError(f"expert trajectory {path} is corrupt: it holds NaN or infinite values, which ddtool "
                             f"never writes; {fix}")
        return traj

    def make_model(self) -> torch.nn.Module:
        m = self.meta
        return create_model(m["model"], m["channels"], m["num_classes"], tuple(m["image_size"]), **m["model_options"])

    def check_compatible(self, dataset: str, model: str | None = None, model_options: dict | None = None,
                         needed_epochs: int | None = None, info=None) -> None:
        """Refuse a buffer made for another dataset, model, shorter training, or (with ``info``, the
        :class:`~ddtoolbox.data.DatasetInfo` of the images loaded now) other images: another
        ``--resize`` of a prepared subset, or with/without ``--zca``."""
        m = self.meta
        if m["dataset"] != dataset:
            raise UsageError(
                f"buffer {self.path} was trained on '{m['dataset']}', not '{dataset}'; "
                f"use --dataset {m['dataset']} or make a buffer for {dataset} with 'ddtool buffer'"
            )
        if model is not None and model != m["model"]:
            raise UsageError(
                f"buffer {self.path} holds {m['model']} experts, not {model}; use --model {m['model']} "
                f"or make a buffer for {model}"
            )
        if model_options:
            diff = {k: v for k, v in model_options.items() if m["model_options"].get(k) != v}
            if diff:
                raise UsageError(f"buffer {self.path} experts were built with {m['model_options']}, not {diff}; drop those options or make a matching buffer")
        if info is not None:
            from .data import check_same_images

            from .data.normalization import check_normalisation

            check_same_images(info, m, f"buffer {self.path}", "use a buffer made from these images")
            check_normalisation(info, m, f"buffer {self.path / META}", "use a buffer made from these images, or "
                                f"make one with 'ddtool buffer'")
        if needed_epochs is not None and needed_epochs > self.epochs:
            raise UsageError(
                f"buffer {self.path} has {self.epochs}-epoch trajectories but the run needs "
                f"{needed_epochs} (max start epoch + expert epochs); lower --max-start-epoch or "
                f"--expert-epochs, or train longer experts"
            )

    def expert_model(self, expert: int = 0, epoch: int = -1, device=None) -> torch.nn.Module:
        """Expert ``expert``'s snapshot at ``epoch`` as a ready network (``-1``: its final, trained state)."""
        net = self.make_model()
        if device is not None:
            net = net.to(device)
        return load_flat(net, self.trajectory(expert)[epoch])
