"""One factory for every network, by name (the timm pattern).

Model constructors take ``(channels, num_classes, image_size, **options)`` so the same name works
for any dataset; the registry lets plugins and later work add architectures without touching the
callers.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import UsageError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: make a constructor available to :func:`create_model` under ``name``."""

    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, channels: int, num_classes: int, image_size, **options) -> nn.Module:
    """Build a freshly initialised network; initialisation draws from torch's global RNG."""
    if name not in _MODELS:
        raise UsageError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        return _MODELS[name](channels=channels, num_classes=num_classes, image_size=size, **options)
    except TypeError as exc:
        raise UsageError(f"bad options for model '{name}': {exc}") from exc
