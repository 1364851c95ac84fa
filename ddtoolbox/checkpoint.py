"""A distillation run's full state on disk, so a killed run continues exactly where it stopped.

``OUT/checkpoint.pt`` holds everything the next iteration depends on: the synthetic images, the
targets, the learned lr, every optimiser's state, every random generator's state (torch's CPU and
CUDA generators, which Kornia's augmentation also draws from; numpy's; Python's), the iteration,
the matcher's state, each plugin's ``run.state``, the metrics history, and the settings the run
was started with. It is written atomically, so a kill while writing leaves the previous one.

Resuming restores it *after* the matcher and the plugins have started (which may draw random
numbers to build networks), so the iterations that follow draw exactly what an uninterrupted run
would have drawn: on the CPU the final ``synthetic.pt`` is bit-identical.

Everything is stored as tensors and plain values, so the file loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import UsageError
from .io import load_tensors, save_tensors

CHECKPOINT = "checkpoint.pt"
FORMAT = "ddtoolbox-checkpoint"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- random generators


def rng_state() -> dict:
    """Every generator the toolbox draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- the file


def checkpoint_path(out) -> Path:
    return Path(out) / CHECKPOINT


def save_checkpoint(path, *, iteration: int, config: dict, plugins: list, options: dict, images, labels, targets,
                    syn_lr, optimisers: dict, matcher_state: dict, plugin_state: dict, history: list,
                    seconds: float, device: str, generator: torch.Generator | None = None) -> Path:
    """Write the run's state after ``iteration`` (atomically); ``device`` is the kind it ran on (cpu, cuda)."""
    return save_tensors(path, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ddtoolbox_version": __version__,
        "iteration": int(iteration), "config": config, "plugins": list(plugins), "options": options,
        "images": images.detach().cpu().clone(), "labels": labels.detach().cpu().clone(),
        "targets": targets.detach().cpu().clone(),
        "syn_lr": syn_lr.detach().cpu().clone(),
        "optimisers": {name: opt.state_dict() for name, opt in optimisers.items()},
        "rng": {**rng_state(), **({"run": generator.get_state()} if generator is not None else {})},
        "matcher": matcher_state, "plugin_state": plugin_state, "history": history,
        "seconds": float(seconds), "device": str(device),
    })


def load_checkpoint(path) -> dict:
    """Read and check a checkpoint; every problem is one line that says what to do."""
    path = Path(path)
    fix = ("start the run afresh without --resume (add --overwrite if the folder holds a finished result), "
           "or point --out at the run's folder")
    if not path.is_file():
        raise UsageError(f"--resume: there is no checkpoint in {path.parent} ({path.name} is missing); {fix}")
    ckpt = load_tensors(path, "checkpoint", fix)
    if ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not a ddtoolbox checkpoint; {fix}")
    if not isinstance(ckpt.get("format_version"), int) or ckpt["format_version"] > FORMAT_VERSION:
        raise UsageError(f"{path} was written by a newer ddtoolbox; upgrade ddtoolbox to resume it")
    expected = {"iteration": int, "config": dict, "plugins": list, "options": dict, "images": torch.Tensor,
                "labels": torch.Tensor,
                "targets": torch.Tensor, "syn_lr": torch.Tensor, "optimisers": dict, "rng": dict, "matcher": dict,
                "plugin_state": dict, "history": list, "seconds": float}
    bad = [k for k, kind in expected.items() if not isinstance(ckpt.get(k), kind)]
    if bad:
        raise UsageError(f"checkpoint {path} lacks or has malformed {', '.join(bad)}; {fix}")
    return ckpt
