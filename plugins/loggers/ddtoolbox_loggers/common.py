"""What both loggers share: the numbers of a record, the picture of the images, untouched RNGs."""

from __future__ import annotations

import importlib
import math

from ddtoolbox.errors import UsageError
from ddtoolbox.runtime import random_state_kept
from ddtoolbox.viz import grid_image


def require(module: str, plugin: str, package: str):
    """Import an optional logging library, or stop the run with one line naming the install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"--plugin {plugin} needs the {package} package, which is not installed: "
                         f"pip install 'ddtoolbox-loggers[{plugin}]' (or pip install {package})") from exc


def step_of(run) -> int:
    """The step a logger files the current iteration under: iterations done (1 after the first)."""
    return run.iteration + 1


def scalars(record: dict) -> dict[str, float]:
    """Every plain number of a ``metrics.json`` record (true/false as 1/0), but the iteration."""
    out = {}
    for key, value in record.items():
        if key == "iteration" or not isinstance(value, (bool, int, float)):
            continue
        value = float(value)
        if math.isfinite(value):
            out[key] = value
    return out


def images_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def picture(run):
    """The synthetic images as one row per class (a PIL image), as synthetic.png shows them."""
    return grid_image(run.images.detach(), run.labels, run.info)


def settings(run) -> dict:
    """The run's settings and its plugins' options, flat, for the logger's config / hyper-parameters."""
    values = {k: v for k, v in run.config.as_dict().items()}
    for plugin, options in run.options.items():
        if options is not None and hasattr(options, "as_dict"):
            values.update(options.as_dict())
    values["plugins"] = ",".join(run.plugins)
    return {k: (v if isinstance(v, (bool, int, float, str)) or v is None else str(v)) for k, v in values.items()}


def same_random_numbers(run):
    """Whatever the logging library draws, the run's random streams continue as if it had not run."""
    return random_state_kept(run.device)
