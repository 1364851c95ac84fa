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


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def canonical_model_name(name: str) -> str:
    """The registered spelling of ``name``, matched ignoring case, ``_`` and ``-`` (``vgg11`` -> ``VGG11``)."""
    if name in _MODELS:
        return name
    matches = [n for n in _MODELS if _fold(n) == _fold(name)]
    if len(matches) != 1:
        raise UsageError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    return matches[0]


def model_defaults(name: str) -> dict:
    """The keyword options a registered constructor declares, with their defaults (may be empty)."""
    import inspect

    fn = _MODELS[canonical_model_name(name)]
    skip = {"channels", "num_classes", "image_size"}
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.name not in skip and p.default is not inspect.Parameter.empty}


def create_model(name: str, channels: int, num_classes: int, image_size, **options) -> nn.Module:
    """Build a freshly initialised network; initialisation draws from torch's global RNG.

    ``name`` is matched ignoring case, ``_`` and ``-`` (see :func:`canonical_model_name`).
    """
    name = canonical_model_name(name)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        return _MODELS[name](channels=channels, num_classes=num_classes, image_size=size, **options)
    except TypeError as exc:
        raise UsageError(f"bad options for model '{name}': {exc}") from exc


#: the network options every command takes (``--width`` ...); ``None`` means "the model's own default"
NETWORK_FIELDS = ("width", "depth", "norm", "pooling")
#: options that only the ConvNet family takes (cross-architecture nets refuse them)
CONVNET_ONLY = ("depth", "pooling")
CONVNET_DEFAULTS = {"width": 128, "norm": "instancenorm", "pooling": "avgpool"}


def model_options(model: str, given=None, base: dict | None = None) -> dict:
    """The options to build ``model`` with: ``base`` (e.g. a synthetic set's own) or the model's
    defaults, overridden by what was ``given``.

    :param given: a dict, or any object with ``width``/``depth``/``norm``/``pooling`` attributes
        (settings, parsed arguments); ``None`` values count as not given.
    ConvNet-only options given for another architecture are a usage error.
    """
    name = canonical_model_name(model)
    if given is None:
        given = {}
    elif not isinstance(given, dict):
        given = {k: getattr(given, k, None) for k in NETWORK_FIELDS}
    given = {k: v for k, v in given.items() if v is not None}
    if name.startswith("ConvNet"):
        opts = dict(base) if base is not None else dict(CONVNET_DEFAULTS)
    else:
        bad = [k for k in CONVNET_ONLY if k in given]
        if bad:
            raise UsageError(f"--{bad[0]} applies to the ConvNet family only, not {name}; drop it for {name}")
        opts = dict(base) if base is not None else {}
    opts.update(given)
    return opts
