"""TensorBoard: every number of every iteration's record as a scalar, the synthetic images as pictures.

``ddtool distill ... --plugin tensorboard`` writes event files to ``OUT/tensorboard`` (or
``--tensorboard-dir``); watch them with ``tensorboard --logdir OUT/tensorboard``. Scalars are filed
under their ``metrics.json`` names (``loss``, ``syn_lr``, ``skipped``, ``eval_mean``, ``dae_area``,
...) at step = iterations done; the images (one row per class) at step 0, every
``--tensorboard-every`` iterations and at the end; the settings as text. Needs the ``tensorboard``
package (``pip install 'ddtoolbox-loggers[tensorboard]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddtoolbox import hookimpl
from ddtoolbox.options import Settings, non_negative_int, option

from .common import images_due, picture, require, same_random_numbers, scalars, settings, step_of

PLUGIN = "tensorboard"


@dataclass(kw_only=True)
class TensorBoardOptions(Settings):
    tensorboard_dir: str | None = option(None, "folder for the event files (default OUT/tensorboard)", metavar="DIR")
    tensorboard_every: int = option(100, "log the synthetic images every N iterations, besides the first and the "
                                         "last (default 100; 0: only those two)", metavar="N", type=non_negative_int)


@hookimpl
def add_options(command):
    return TensorBoardOptions if command == "distill" else None


def _log_images(run, writer, step: int) -> None:
    image = np.asarray(picture(run))   # H x W x 3, uint8
    writer.add_image("synthetic_images", image, step, dataformats="HWC")


@hookimpl
def on_run_start(run, options, cache):
    module = require("torch.utils.tensorboard", PLUGIN, "tensorboard")
    folder = Path(options.tensorboard_dir) if options.tensorboard_dir else run.out_dir / "tensorboard"
    with same_random_numbers(run):
        writer = module.SummaryWriter(log_dir=str(folder))
        table = "\n".join(f"| {k} | {v} |" for k, v in settings(run).items())
        writer.add_text("settings", "| setting | value |\n|---|---|\n" + table, 0)
        _log_images(run, writer, 0)
    cache.update(writer=writer, last_images=0)


@hookimpl
def on_iteration(run, record, options, cache):
    writer, step = cache["writer"], step_of(run)
    with same_random_numbers(run):
        for key, value in scalars(record).items():
            writer.add_scalar(key, value, step)
        if images_due(step, options.tensorboard_every):
            _log_images(run, writer, step)
            cache["last_images"] = step


@hookimpl
def on_run_end(run, exception, cache):
    writer = cache.pop("writer", None)
    if writer is None:
        return
    with same_random_numbers(run):
        step = step_of(run)
        if exception is None and cache.get("last_images") != step:
            _log_images(run, writer, step)
        writer.close()
