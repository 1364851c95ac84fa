"""FTD: flat (GSAM) expert trajectories and the FTD matcher with an EMA of the synthetic images.

Installed as the ``ftd`` plugin (entry point group ``ddtoolbox``).

* ``ddtool buffer --trainer ftd [--rho 0.01] [--gsam-alpha 0.3]`` trains flat experts.
* ``ddtool distill --matcher ftd [--ema-decay 0.999]`` matches like MTT and keeps an exponential
  moving average of the images. The run writes ``synthetic.pt`` (raw images, plus the average
  under ``ema_images``) and ``synthetic_ema.pt`` (the average as a synthetic set of its own), so
  ``ddtool eval --synthetic OUT/synthetic_ema.pt`` evaluates it on fresh networks.
"""

from __future__ import annotations

from ddtoolbox import hookimpl
from ddtoolbox.errors import UsageError

from .gsam import GSAMOptions, adaptive_perturbation, gsam_direction, gsam_step_factory
from .matcher import EMA, FTD, FTDOptions

__version__ = "0.1.0"
__all__ = ["EMA", "FTD", "FTDOptions", "GSAMOptions", "adaptive_perturbation", "gsam_direction", "gsam_step_factory", "EMA_FILE"]

#: the EMA images as a synthetic set of their own, beside ``synthetic.pt``
EMA_FILE = "synthetic_ema.pt"


@hookimpl
def register_matchers(register):
    register(FTD)


@hookimpl
def register_trainers(register):
    register("ftd", gsam_step_factory, "flat experts: SGD wrapped in GSAM (FTD; DATM and EDF train experts so)")


@hookimpl
def add_options(command):
    return {"buffer": GSAMOptions, "distill": FTDOptions}.get(command)


def _matcher(run) -> FTD:
    if not isinstance(run.matcher, FTD):
        raise UsageError(
            f"the ftd plugin adds the EMA of the images to --matcher ftd only, not to '{run.config.matcher}'; "
            f"drop --plugin ftd (flat experts come from 'ddtool buffer --trainer ftd')"
        )
    return run.matcher


@hookimpl
def on_run_start(run):
    _matcher(run)


@hookimpl
def on_iteration(run, record):
    matcher = _matcher(run)
    matcher.after_step(run.images.detach())
    c = run.config
    if c.eval_every and ((run.iteration + 1) % c.eval_every == 0 or run.iteration == c.iterations - 1):
        result = evaluate_ema(run)
        record.update(eval_ema_mean=result["mean"], eval_ema_std=result["std"])
        run.say(f"iteration {run.iteration + 1}: EMA images accuracy {result['mean'] * 100:.2f} ± "
                f"{result['std'] * 100:.2f}% (fresh networks)")


def evaluate_ema(run) -> dict:
    """The standard protocol on the EMA images: fresh networks, never the one trained on the raw images."""
    from ddtoolbox.distillation import evaluate_images

    return evaluate_images(run, run.matcher.ema.value, progress=not run.config.quiet, desc="eval EMA")


@hookimpl
def on_run_end(run, exception):
    """Write the EMA images as ``synthetic_ema.pt`` (same format as ``synthetic.pt``) and a picture."""
    if exception is not None or not getattr(run, "writes", True):   # under torchrun only rank 0 writes
        return
    from ddtoolbox.io import load_tensors, save_tensors
    from ddtoolbox.viz import save_image_grid

    matcher = _matcher(run)
    record = load_tensors(run.out_dir / "synthetic.pt", "synthetic set", "re-run the distillation")
    for key in ("ema_images", "ema_decay", "ema_steps"):
        record.pop(key, None)
    record["images"] = matcher.ema.value.detach().cpu().clone()
    record["meta"] = {**record["meta"], "variant": "ema", "ema_decay": matcher.ema.decay,
                      "ema_steps": matcher.ema.steps, "raw_images": "synthetic.pt", "published": False}
    save_tensors(run.out_dir / EMA_FILE, record)
    save_image_grid(run.out_dir / "synthetic_ema.png", run.train_set.unwhiten(record["images"]), record["labels"],
                    run.info)
