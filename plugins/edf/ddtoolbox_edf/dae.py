"""DAE (EDF): Discriminative Area Enhancement, Grad-CAM-weighted image gradients.

Every ``--dae-every K`` iterations (iteration 0 included, before its gradient is used) DAE computes
Grad-CAM maps ``M`` of the current, unaugmented synthetic images for their own classes with an
activation model G (by default the final snapshot of expert 0 of the run's buffer: a network
trained on the real data). Between refreshes, after each backward pass, it multiplies the image
gradient in place by Eq. 4's weights, broadcast over channels::

    w = 1          where M <  mean(M)   (per image; or a fixed --dae-threshold)
    w = beta + M   where M >= mean(M)

At each refresh it writes ``dae/maps_itNNNNNN.png`` (the images with their maps overlaid in red)
under the run's output folder and logs ``dae_area``, the mean share of pixels at or above their
image's mean activation (the paper's "discriminative area", Figure 5b). After the last iteration
it does the same for the final images (``dae/maps_final.png``, ``dae_area_final``).
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass

import torch

from ddtoolbox import hookimpl
from ddtoolbox.errors import UsageError
from ddtoolbox.viz import save_image_grid

from . import maps as M

DEFAULT_BETA = 1.0
DEFAULT_EVERY = 100
BETA_WARN = 5.0


def warn(message: str) -> None:
    """One line on stderr, in the style of ddtool's one-line errors (the run goes on)."""
    print(f"ddtool: warning: {message}", file=sys.stderr)


@hookimpl
def add_options(command, parser):
    if command != "distill":
        return
    parser.add_argument("--dae-beta", type=float, default=DEFAULT_BETA, metavar="BETA",
                        help="enhancement factor: weight beta + M on discriminative pixels, >= 0 (default 1; "
                             "the paper uses 1-2 and shows that >= 10 distorts images)")
    parser.add_argument("--dae-every", type=int, default=DEFAULT_EVERY, metavar="K",
                        help="recompute the activation maps every K iterations, iteration 0 included (default 100; "
                             "the paper uses 50 at IPC 1, 100 at IPC 10, 200 at IPC 50)")
    parser.add_argument("--dae-threshold", default="mean", metavar="mean|T",
                        help="pixels at or above this activation are enhanced: 'mean' (each map's mean, default) "
                             "or a fixed number in (0, 1] (the ablation of the paper's Table 6b)")
    parser.add_argument("--dae-layer", action="append", default=[], metavar="NAME",
                        help="Grad-CAM layer, a name from model.named_modules() (repeatable: maps are summed); "
                             "default the last convolutional block (ConvNet: its last ReLU; ResNet: layer4)")
    parser.add_argument("--dae-model", default="expert", metavar="expert|ARCH",
                        help="activation model G: 'expert' (default: the final snapshot of a buffer expert) or a "
                             "torchvision architecture such as resnet18, with --dae-weights")
    parser.add_argument("--dae-expert", type=int, default=0, metavar="I",
                        help="which buffer expert is G when --dae-model expert (default 0)")
    parser.add_argument("--dae-weights", default=None, metavar="FILE",
                        help="state dict for a torchvision --dae-model (loaded with weights_only=True)")
    parser.add_argument("--dae-class-map", default=None, metavar="LIST|FILE|SUBSET",
                        help="model output index of each synthetic class: '0,217,482,...', a file, or a known "
                             "ImageNet subset name (imagenette, imagewoof, ...); needed when G has other classes "
                             "than the dataset")


# ---------------------------------------------------------------------------- per-run state


@dataclass
class DAEState:
    """What DAE keeps between iterations of one run."""

    model: torch.nn.Module
    layer_names: list
    layers: list
    targets: torch.Tensor          #: model output index of each synthetic image
    beta: float
    every: int
    threshold: object              #: "mean" or a float
    maps: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    maps_iteration: int = -1


#: state of the runs in progress, keyed by id(run); an entry is dropped when its run ends or is
#: garbage collected (the core registers this module, not an object, so state cannot live on self)
_STATE: dict[int, DAEState] = {}


def state_of(run) -> DAEState:
    try:
        return _STATE[id(run)]
    except KeyError:
        raise RuntimeError("dae: on_run_start was not called for this run") from None


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


def check_options(args) -> tuple[float, int, object]:
    beta = float(args.dae_beta)
    if not beta >= 0:
        raise UsageError(f"--dae-beta must be >= 0, e.g. 1 (got {args.dae_beta})")
    if beta > BETA_WARN:
        warn(f"--dae-beta {beta:g} is above {BETA_WARN:g}; the paper (Table 6a, Appendix C.3) shows that "
             f"large enhancement factors distort the images (best: 1-2)")
    every = args.dae_every
    if not isinstance(every, int) or every < 1:
        raise UsageError(f"--dae-every must be an integer >= 1 (got {every})")
    return beta, every, parse_threshold(args.dae_threshold)


def build_model(run) -> tuple[torch.nn.Module, int]:
    """The activation model G, prepared for Grad-CAM and on the run's device; and its output count."""
    a, info = run.args, run.info
    choice = (a.dae_model or "expert").strip()
    # building a network draws its initialisation from torch's global RNG; keep the run's stream
    # exactly as it would be without DAE
    with torch.random.fork_rng(devices=[]):
        if choice == "expert":
            if a.dae_weights:
                raise UsageError("--dae-weights only applies to a torchvision --dae-model; drop it or name the architecture")
            n = run.buffer.num_experts
            if not 0 <= a.dae_expert < n:
                raise UsageError(f"--dae-expert must be in [0, {n}) for buffer {run.buffer.path} (got {a.dae_expert})")
            model = run.expert_model(expert=a.dae_expert, epoch=-1)
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
                             f"({str(exc).splitlines()[0][:120]})") from exc
    if out.dim() != 2:
        raise UsageError(f"--dae-model {choice} does not output (N, classes) logits (got shape {tuple(out.shape)})")
    return model, out.shape[1]


def layer_owner(model):
    """The module whose ``named_modules()`` names ``--dae-layer`` refers to (not our adapter)."""
    return model.model if isinstance(model, M.InputAdapter) else model


@hookimpl
def on_run_start(run):
    a = run.args
    beta, every, threshold = check_options(a)
    model, outputs = build_model(run)
    names, layers = M.resolve_layers(layer_owner(model), a.dae_layer)
    num_classes = run.info.num_classes
    if a.dae_class_map:
        class_map = M.parse_class_map(a.dae_class_map, num_classes, outputs)
    elif outputs != num_classes:
        raise UsageError(f"the DAE activation model has {outputs} outputs but the dataset has {num_classes} classes; "
                         f"give --dae-class-map with each class's output index (e.g. imagenette or '0,217,...')")
    else:
        class_map = torch.arange(num_classes)
    targets = class_map.to(run.device)[run.labels]
    state = DAEState(model=model, layer_names=names, layers=layers, targets=targets, beta=beta, every=every,
                     threshold=threshold)
    key = id(run)
    _STATE[key] = state
    weakref.finalize(run, _STATE.pop, key, None)


def refresh(run, state: DAEState, images: torch.Tensor, tag: str) -> torch.Tensor:
    """Recompute the maps of ``images``; save the overlay picture; return the maps."""
    maps = M.gradcam_maps(state.model, images.detach(), state.targets, state.layers)
    path = run.out_dir / "dae" / f"maps_{tag}.png"
    save_image_grid(path, images.detach(), run.labels, run.info, overlay=maps)
    return maps


@hookimpl
def on_pixel_grad(run, grad, images):
    state = state_of(run)
    it = run.iteration
    if state.maps is None or (it % state.every == 0 and state.maps_iteration != it):
        state.maps = refresh(run, state, images, f"it{it:06d}")
        state.weights = M.dae_weights(state.maps, state.beta, state.threshold).to(images.dtype)
        state.maps_iteration = it
        values = {"dae_area": M.discriminative_area(state.maps).mean().item()}
        if state.threshold != "mean":
            values["dae_enhanced"] = M.discriminative_area(state.maps, state.threshold).mean().item()
        run.log(**values)
    if grad is None:
        warn("dae: the images have no gradient this iteration; nothing to reweight")
        return
    grad.mul_(state.weights)


@hookimpl
def on_iteration(run):
    if run.iteration != run.args.iterations - 1:
        return
    state = state_of(run)
    final = refresh(run, state, run.images, "final")
    run.log(dae_area_final=M.discriminative_area(final).mean().item())


@hookimpl
def on_run_end(run):
    _STATE.pop(id(run), None)
