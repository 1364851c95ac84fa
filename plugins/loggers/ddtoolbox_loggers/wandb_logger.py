"""Weights & Biases: every iteration's record as a W&B history row, the synthetic images as pictures.

``ddtool distill ... --plugin wandb`` starts a W&B run in project ``--wandb-project`` (named
after the output folder unless ``--wandb-name``), with the run's settings as its config. Each
iteration's ``metrics.json`` record is logged at step = iterations done; the images (one row per
class) at step 0, every ``--wandb-every`` iterations and at the end. W&B keeps its files under
``--wandb-dir`` (default OUT, so OUT/wandb/). Without an account or network, run offline:
``WANDB_MODE=offline`` (or ``--wandb-mode offline``) and later ``wandb sync``. Needs the ``wandb``
package (``pip install 'ddtoolbox-loggers[wandb]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ddtoolbox import hookimpl
from ddtoolbox.options import Settings, non_negative_int, option

from .common import images_due, picture, require, same_random_numbers, scalars, settings, step_of

PLUGIN = "wandb"
MODES = ("online", "offline", "disabled")


@dataclass(kw_only=True)
class WandbOptions(Settings):
    wandb_project: str = option("ddtoolbox", "W&B project (default ddtoolbox)", metavar="NAME")
    wandb_name: str | None = option(None, "W&B run name (default: the output folder's name)", metavar="NAME")
    wandb_dir: str | None = option(None, "folder for W&B's files (default OUT: they go to OUT/wandb/)", metavar="DIR")
    wandb_every: int = option(100, "log the synthetic images every N iterations, besides the first and the last "
                                   "(default 100; 0: only those two)", metavar="N", type=non_negative_int)
    wandb_mode: str | None = option(None, "online, offline or disabled (default: W&B's own setting, such as "
                                          "$WANDB_MODE)", choices=MODES)


@hookimpl
def add_options(command):
    return WandbOptions if command == "distill" else None


def _images(wandb, run) -> dict:
    return {"synthetic_images": wandb.Image(picture(run), caption=f"after {step_of(run)} iterations")}


@hookimpl
def on_run_start(run, options, cache):
    wandb = require("wandb", PLUGIN, "wandb")
    folder = Path(options.wandb_dir) if options.wandb_dir else run.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    with same_random_numbers(run):
        wb = wandb.init(project=options.wandb_project, name=options.wandb_name or run.out_dir.resolve().name,
                        dir=str(folder), config=settings(run), mode=options.wandb_mode, reinit="create_new")
        wb.log(_images(wandb, run), step=0)
    cache.update(wandb=wandb, run=wb, last_images=0)


@hookimpl
def on_iteration(run, record, options, cache):
    wandb, wb, step = cache["wandb"], cache["run"], step_of(run)
    values = scalars(record)
    with same_random_numbers(run):
        if images_due(step, options.wandb_every):
            values.update(_images(wandb, run))
            cache["last_images"] = step
        wb.log(values, step=step)


@hookimpl
def on_run_end(run, exception, cache):
    wb = cache.pop("run", None)
    if wb is None:
        return
    with same_random_numbers(run):
        step = step_of(run)
        if exception is None and cache.get("last_images") != step:
            wb.log(_images(cache["wandb"], run), step=step)
        wb.finish(exit_code=0 if exception is None else 1)
