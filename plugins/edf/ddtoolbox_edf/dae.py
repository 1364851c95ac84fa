"""DAE (EDF): Discriminative Area Enhancement, Grad-CAM-weighted image gradients.

Every ``--dae-every K`` iterations (iteration 0 included, before its gradient is used) DAE computes
Grad-CAM maps ``M`` of the current, unaugmented synthetic images for their own classes with an
activation model G: by default the final snapshot of expert 0 of the run's buffer (a network
trained on the real data); ``--dae-model FILE`` takes any network ``ddtool train-full --save-model``
wrote for the dataset instead, and ``--dae-layer`` the layer its maps come from. Which G and layer
land on the object can be measured before distilling (``ddtool compdd stats``, docs/edf.md). Between refreshes, after each backward pass, it multiplies the image
gradient in place by Eq. 4's weights, broadcast over channels::

    w = 1          where M <  mean(M)   (per image; or a fixed --dae-threshold)
    w = beta + M   where M >= mean(M)

At each refresh it writes ``dae/maps_itNNNNNN.png`` (the images with their maps overlaid in red)
under the run's output folder and logs ``dae_area``, the mean share of pixels at or above their
image's mean activation (the paper's "discriminative area", Figure 5b). After the last iteration
it does the same for the final images (``dae/maps_final.png``, ``dae_area_final``).

``--dae-measure-only`` keeps the maps, the pictures and the ``dae_area`` curve but leaves the
gradient alone, so a run without DAE's effect can still log how the discriminative area evolves
(the rows of an ablation that lack DAE); such a run is bit for bit the run without the plugin.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ddtoolbox import hookimpl
from ddtoolbox.errors import UsageError, brief, warn
from ddtoolbox.options import Settings, integer, number, option, positive_int
from ddtoolbox.teacher import load_teacher
from ddtoolbox.viz import save_image_grid

from . import maps as M

DEFAULT_BETA = 1.0
DEFAULT_EVERY = 100
BETA_WARN = 5.0


def parse_threshold(value) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "mean":
        return "mean"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--dae-threshold must be 'mean' or a number in (0, 1] (got {value!r})") from None
    if not 0 < t <= 1:
        raise UsageError(f"--dae-threshold must be 'mean' or a number in (0, 1], e.g. 0.5 (got {value})")
    return t


def _threshold_type(value):
    try:
        return parse_threshold(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--dae-threshold ", "", 1)) from None


def _beta_type(value) -> float:
    beta = number(value)
    if not beta >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, e.g. 1 (got {value})")
    return beta


def _every_type(value) -> int:
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {value})") from None


@dataclass(kw_only=True)
class DAEOptions(Settings):
    """DAE's ``distill`` options."""

    dae_beta: float = option(DEFAULT_BETA, "enhancement factor: weight beta + M on discriminative pixels, >= 0 "
                                           "(default 1; the paper uses 1-2 and shows that >= 10 distorts images)",
                             metavar="BETA", type=_beta_type)
    dae_every: int = option(DEFAULT_EVERY, "recompute the activation maps every K iterations, iteration 0 included "
                                           "(default 100; the paper uses 50 at IPC 1, 100 at IPC 10, 200 at IPC 50)",
                            metavar="K", type=_every_type)
    dae_threshold: object = option("mean", "pixels at or above this activation are enhanced: 'mean' (each map's "
                                           "mean, default) or a fixed number in (0, 1] (the ablation of the "
                                           "paper's Table 6b)", metavar="mean|T", type=_threshold_type)
    dae_layer: list = option([], "Grad-CAM layer, a name from model.named_modules() (repeatable: maps are summed); "
                                 "default the last convolutional block (ConvNet: its last ReLU; ResNet: layer4)",
                             metavar="NAME", repeat=True)
    dae_model: str = option("expert", "activation model G: 'expert' (default: the final snapshot of a buffer "
                                      "expert), a network FILE written by 'ddtool train-full --save-model' on this "
                                      "dataset, or a torchvision architecture such as resnet18, with --dae-weights",
                            metavar="expert|FILE|ARCH")
    dae_expert: int = option(0, "which buffer expert is G when --dae-model expert (default 0)", metavar="I",
                             type=integer)
    dae_weights: str | None = option(None, "state dict for a torchvision --dae-model (loaded with "
                                           "weights_only=True)", metavar="FILE")
    dae_measure_only: bool = option(False, "compute the maps and log dae_area at every refresh, but leave the image "
                                           "gradient unweighted (the run then equals one without DAE; for ablation rows "
                                           "that should log the area curve too)")
    dae_class_map: str | None = option(None, "model output index of each synthetic class: '0,217,482,...', a file, "
                                             "or a known ImageNet subset name (imagenette, imagewoof, ...); needed "
                                             "when G has other classes than the dataset", metavar="LIST|FILE|SUBSET")

    def check(self) -> None:
        if self.dae_beta > BETA_WARN:
            warn(f"--dae-beta {self.dae_beta:g} is above {BETA_WARN:g}; the paper (Table 6a, Appendix C.3) shows "
                 f"that large enhancement factors distort the images (best: 1-2)")


@hookimpl
def add_options(command):
    return DAEOptions if command == "distill" else None


# ---------------------------------------------------------------------------- per-run state
#
# state (saved with the run): "maps" and "weights" of the last refresh, "maps_iteration"
# cache (rebuilt at the start): "model" (G), "layers", "targets" (G's output index per image)


def build_model(run, a: DAEOptions) -> tuple[torch.nn.Module, int]:
    """The activation model G, prepared for Grad-CAM and on the run's device; and its output count."""
    info = run.info
    choice = (a.dae_model or "expert").strip()
    # building a network draws its initialisation from torch's global RNG; keep the run's stream
    # exactly as it would be without DAE
    with torch.random.fork_rng(devices=[]):
        if choice == "expert":
            if a.dae_weights:
                raise UsageError("--dae-weights only applies to a torchvision --dae-model; drop it or name the architecture")
            if run.buffer is None:
                raise UsageError(f"--dae-model expert uses a buffer expert, and --matcher {run.config.matcher} runs "
                                 f"without a buffer; give --dae-model FILE (a network 'ddtool train-full --save-model' "
                                 f"wrote) or --dae-model ARCH --dae-weights FILE (a torchvision network trained on "
                                 f"the real data)")
            n = run.buffer.num_experts
            if not 0 <= a.dae_expert < n:
                raise UsageError(f"--dae-expert must be in [0, {n}) for buffer {run.buffer.path} (got {a.dae_expert})")
            model = run.expert_model(expert=a.dae_expert, epoch=-1)
        elif getattr(info, "zca", False):
            raise UsageError(f"--dae-model {choice} expects normalised images, but this run's images are "
                             f"ZCA-whitened (--zca); use --dae-model expert")
        elif choice.endswith(".pt") or os.sep in choice or Path(choice).is_file():
            if a.dae_weights:
                raise UsageError(f"--dae-model {choice} is a saved network and carries its weights; drop --dae-weights")
            model, _ = load_teacher(choice, info, "cpu", role="DAE activation model", option="--dae-model")
        else:
            model = M.load_torchvision_model(choice, a.dae_weights)
            if M.needs_adapter(info.mean, info.std, info.channels):
                model = M.InputAdapter(model, info.mean, info.std)
    model = M.prepare_model(model).to(run.device)
    with torch.no_grad():
        try:
            out = model(run.images.detach()[:1])
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--dae-model {choice} cannot process this dataset's {tuple(run.images.shape[1:])} images "
                             f"({brief(exc)})") from exc
    if out.dim() != 2:
        raise UsageError(f"--dae-model {choice} does not output (N, classes) logits (got shape {tuple(out.shape)})")
    return model, out.shape[1]


def layer_owner(model):
    """The module whose ``named_modules()`` names ``--dae-layer`` refers to (not our adapter)."""
    return model.model if isinstance(model, M.InputAdapter) else model


@hookimpl
def on_run_start(run, options, state, cache):
    model, outputs = build_model(run, options)
    names, layers = M.resolve_layers(layer_owner(model), options.dae_layer)
    num_classes = run.info.num_classes
    if options.dae_class_map:
        class_map = M.parse_class_map(options.dae_class_map, num_classes, outputs)
    elif outputs != num_classes:
        raise UsageError(f"the DAE activation model has {outputs} outputs but the dataset has {num_classes} classes; "
                         f"give --dae-class-map with each class's output index (e.g. imagenette or '0,217,...')")
    else:
        class_map = torch.arange(num_classes)
    cache.update(model=model, layer_names=names, layers=layers, targets=class_map.to(run.device)[run.labels])


def refresh(run, cache: dict, images: torch.Tensor, tag: str) -> torch.Tensor:
    """Recompute the maps of ``images``; save the overlay picture; return the maps."""
    maps = M.gradcam_maps(cache["model"], images.detach(), cache["targets"], cache["layers"])
    if not getattr(run, "writes", True):   # under torchrun only rank 0 writes the picture
        return maps
    path = run.out_dir / "dae" / f"maps_{tag}.png"
    save_image_grid(path, run.train_set.unwhiten(images.detach()), run.labels, run.info, overlay=maps)
    return maps


@hookimpl
def on_pixel_grad(run, grad, images, options, state, cache):
    it = run.iteration
    if "maps" not in state or (it % options.dae_every == 0 and state["maps_iteration"] != it):
        maps = refresh(run, cache, images, f"it{it:06d}")
        weights = None if options.dae_measure_only else \
            M.dae_weights(maps, options.dae_beta, options.dae_threshold).to(images.dtype)
        state.update(maps=maps, weights=weights, maps_iteration=it)
        run.log(dae_area=M.discriminative_area(maps).mean().item())
        if options.dae_threshold != "mean":
            run.log(dae_enhanced=M.discriminative_area(maps, options.dae_threshold).mean().item())
    if options.dae_measure_only:
        return
    if grad is None:
        warn("dae: the images have no gradient this iteration; nothing to reweight")
        return
    grad.mul_(state["weights"])


@hookimpl
def on_iteration(run, record, cache):
    if run.iteration != run.config.iterations - 1:
        return
    final = refresh(run, cache, run.images, "final")
    record["dae_area_final"] = M.discriminative_area(final).mean().item()


@hookimpl
def on_run_end(run, cache):
    cache.clear()   # release G and its Grad-CAM hooks with the run
