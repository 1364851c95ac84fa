"""Seeds and devices, the two things every command sets the same way; and the facts of the environment a
result was made in (versions, device, host, date), for the records that keep results."""

from __future__ import annotations

import datetime
import platform
import random

import numpy as np
import torch

from .errors import UsageError


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the toolbox draws from (Kornia draws from torch's global RNG).

    Returns a CPU generator seeded the same way, for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available; asking for CUDA without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{name}'; use auto, cpu or cuda") from exc


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def configure_backends(device: torch.device, tf32: bool = False) -> None:
    """Speed settings that do not change results beyond what the user allowed.

    cuDNN autotuning pays off because every step of a run has the same shapes. TF32 is off unless
    asked for (PyTorch enables it for convolutions by default), so float32 results stay float32.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


def environment(device: torch.device) -> dict:
    """Where and with what a result is being made: date (UTC), device, host, CPU and versions."""
    import kornia

    from . import __version__

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "host": platform.node(), "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "kornia": kornia.__version__,
        "ddtoolbox": __version__, "cuda": torch.version.cuda,
    }
