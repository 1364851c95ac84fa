"""Grad-CAM activation maps, shared by every feature that looks at "where a network looks".

EDF's DAE plugin (gradient weights), the Comp-DD complexity score and the activation statistics of
Figure 1b all need the same thing: per-image Grad-CAM maps in [0, 1] from a model and a layer.
Keeping one implementation means a threshold of 0.5 means the same in all three places.

The maps follow the EDF reference implementation as far as it is specified:
Captum's ``LayerGradCam`` with ``relu_attributions=True`` (channel weights = spatial mean of
d y_target / d A, map = ReLU(sum_k w_k A_k)), bilinear resize to the image size, per-image min-max
to [0, 1], detached. The user-facing option names differ between commands (``--dae-layer`` versus
``--layer``), so every function that can raise a :class:`UsageError` takes the option names to put
in its message.

Captum is imported lazily: importing ddtoolbox must not require it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UsageError, brief
from .io import load_tensors

#: maps are computed in chunks of this many images (bounds the memory of one Grad-CAM pass)
CHUNK = 128
#: a map whose value range is at most this fraction of its largest magnitude counts as constant
CONSTANT_RTOL = 1e-6

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ReLU6, nn.ELU)


def _layer_gradcam():
    try:
        from captum.attr import LayerGradCam
    except ImportError:  # pragma: no cover - captum is a dependency; this is for broken installs
        raise UsageError("Grad-CAM needs the captum package; install it with: pip install 'captum>=0.7'") from None
    return LayerGradCam


# ---------------------------------------------------------------------------- maps


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``(N, 1, H, W)`` maps to [0, 1].

    A constant map (value range at most ``CONSTANT_RTOL`` times its largest magnitude, e.g. all
    zeros because the ReLU removed every negative-evidence pixel) has no discriminative area and
    becomes all zeros, so no pixel of it counts as highly activated.
    """
    flat = maps.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    span = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    varying = span > CONSTANT_RTOL * scale
    safe = torch.where(varying, span, torch.ones_like(span))
    out = (flat - lo[:, None]) / safe[:, None]
    out = torch.where(varying[:, None], out, torch.zeros_like(out))
    return out.clamp_(0, 1).view_as(maps)


def is_constant(maps: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which (normalised) maps are constant."""
    flat = maps.flatten(1)
    return flat.amax(1) == flat.amin(1)


def gradcam_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layers: list[nn.Module],
                 chunk: int = CHUNK, layer_option: str = "--layer") -> torch.Tensor:
    """Grad-CAM activation maps of ``images`` for classes ``targets``, shape ``(N, 1, H, W)`` in [0, 1].

    For each layer: ``LayerGradCam(...).attribute(relu_attributions=True)``, resized bilinearly to
    the image size. Several layers are summed after resizing (EDF's Eq. 3 sums over layers; their
    resolutions differ, so the sum is taken at image resolution). Then per-image min-max to [0, 1]
    (:func:`normalise_maps`). The result is detached.

    ``model`` should be in eval mode with frozen parameters (:func:`prepare_model`); ``images`` are
    not modified.
    """
    LayerGradCam = _layer_gradcam()
    if images.dim() != 4:
        raise ValueError(f"gradcam_maps expects images of shape (N, C, H, W), got {tuple(images.shape)}")
    if targets.shape != images.shape[:1]:
        raise ValueError(f"gradcam_maps needs one target per image, got {tuple(targets.shape)} for {len(images)} images")
    size = tuple(images.shape[-2:])
    cams = [LayerGradCam(model, layer) for layer in layers]
    parts = []
    with torch.enable_grad():
        for start in range(0, len(images), chunk):
            x = images[start:start + chunk].detach().clone().requires_grad_(True)
            t = targets[start:start + chunk]
            total = torch.zeros(len(x), 1, *size, device=images.device, dtype=images.dtype)
            for cam in cams:
                a = cam.attribute(x, target=t, relu_attributions=True)
                if a.dim() != 4:
                    raise UsageError(
                        f"{layer_option}: Grad-CAM needs a layer with a (N, C, H, W) output, got shape "
                        f"{tuple(a.shape)}; pick a convolutional layer"
                    )
                total += F.interpolate(a.detach().to(total.dtype), size=size, mode="bilinear", align_corners=False)
            parts.append(total)
    return normalise_maps(torch.cat(parts))


# ---------------------------------------------------------------------------- the model


def prepare_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for Grad-CAM: eval mode, frozen, no in-place activations.

    In-place ReLUs overwrite the very tensor Captum's hook captured as the layer output, so they
    are switched off in the copy (the network computes the same function).
    """
    model = copy.deepcopy(model)
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def default_layers(model: nn.Module, what: str = "the Grad-CAM model", layer_option: str = "--layer") -> list[str]:
    """The last convolutional block of ``model``, as module names.

    * a module named ``layer4`` (torchvision ResNets): that block, as the EDF reference does;
    * otherwise the activation that follows the last ``Conv2d`` (the first ReLU-like module after
      it in module order; for ddtoolbox's ConvNet the last block's ReLU, before its pooling), or
      that convolution itself if no activation follows.
    """
    names = dict(model.named_modules())
    if "layer4" in names:
        return ["layer4"]
    ordered = list(model.named_modules())
    last_conv = max((i for i, (_, m) in enumerate(ordered) if isinstance(m, nn.Conv2d)), default=None)
    if last_conv is None:
        raise UsageError(f"{what} has no Conv2d layer; Grad-CAM needs a convolutional network "
                         f"(choose another model or name a layer with {layer_option})")
    for name, m in ordered[last_conv + 1:]:
        if isinstance(m, _ACTIVATIONS):
            return [name]
    return [ordered[last_conv][0]]


def resolve_layers(model: nn.Module, names: list[str] | None, what: str = "the Grad-CAM model",
                   layer_option: str = "--layer") -> tuple[list[str], list[nn.Module]]:
    """Module objects for ``names`` (default: :func:`default_layers`); unknown names are a UsageError."""
    names = list(names) if names else default_layers(model, what, layer_option)
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules or name == "":
            candidates = [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.ReLU, nn.Sequential))
                          or re.fullmatch(r"layer\d", n or "")]
            shown = ", ".join(candidates[:24]) + (", ..." if len(candidates) > 24 else "")
            raise UsageError(f"{layer_option} '{name}' is not a module of {what}; "
                             f"use a name from model.named_modules(), e.g. {shown}")
        found.append(modules[name])
    return names, found


class InputAdapter(nn.Module):
    """Feeds images normalised with the dataset's mean/std to a model that expects another
    normalisation (and 3 channels): undo the dataset's, repeat grey to RGB, apply the model's."""

    def __init__(self, model: nn.Module, data_mean, data_std, model_mean=IMAGENET_MEAN,
                 model_std=IMAGENET_STD, model_channels: int = 3, what: str = "the Grad-CAM model"):
        super().__init__()
        self.model = model
        self.model_channels = model_channels
        self.what = what
        self.register_buffer("data_mean", torch.tensor(data_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("data_std", torch.tensor(data_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("model_mean", torch.tensor(model_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("model_std", torch.tensor(model_std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        pixels = x * self.data_std + self.data_mean
        if pixels.shape[1] == 1 and self.model_channels == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        elif pixels.shape[1] != self.model_channels:
            raise UsageError(f"{self.what} expects {self.model_channels}-channel images, "
                             f"the dataset has {pixels.shape[1]}")
        return self.model((pixels - self.model_mean) / self.model_std)


def needs_adapter(data_mean, data_std, channels: int, model_mean=IMAGENET_MEAN, model_std=IMAGENET_STD) -> bool:
    same = (channels == len(model_mean) and all(abs(a - b) < 1e-6 for a, b in zip(data_mean, model_mean))
            and all(abs(a - b) < 1e-6 for a, b in zip(data_std, model_std)))
    return not same


def is_torchvision_model(arch: str) -> bool:
    import torchvision

    return arch in torchvision.models.list_models(module=torchvision.models)


def load_torchvision_model(arch: str, weights, model_option: str = "--model",
                           weights_option: str = "--weights") -> nn.Module:
    """A torchvision classifier ``arch`` with the state dict in ``weights`` (loaded safely).

    The number of outputs is taken from the weights file (the last 2-D weight tensor), so a
    1000-way ImageNet model and a fine-tuned 10-way one both load. Nothing is downloaded: the
    published ImageNet weights are the user's to provide.
    """
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = [k for k in known if k.startswith(arch[:3])][:8] or ["resnet18", "resnet50", "vgg11"]
        raise UsageError(f"{model_option} '{arch}' is not a torchvision classification model; "
                         f"e.g. {', '.join(close)}")
    if not weights:
        raise UsageError(f"{model_option} {arch} needs {weights_option} FILE (a state dict saved with "
                         f"torch.save(model.state_dict(), FILE)); nothing is downloaded")
    path, state = _read_state_dict(weights, arch, weights_option)
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    num_classes = matrices[-1].shape[0] if matrices else 1000
    return _load_strict(lambda: torchvision.models.get_model(arch, weights=None, num_classes=num_classes), state,
                        f"{weights_option} file {path} does not fit a torchvision {arch}", f"check {model_option}")


def load_state_dict_file(model: nn.Module, weights, model_name: str, weights_option: str = "--weights") -> nn.Module:
    """Load a user's state dict into an already built ``model`` (strictly, safely)."""
    path, state = _read_state_dict(weights, model_name, weights_option)
    return _load_strict(lambda: model, state, f"{weights_option} file {path} does not fit {model_name} for this dataset",
                        "check --model and its options")


def _read_state_dict(weights, model_name: str, weights_option: str) -> tuple[Path, dict]:
    path = Path(weights)
    state = load_tensors(path, weights_option,
                         f"give the path of a {model_name} state dict saved with torch.save(model.state_dict(), FILE)")
    return path, _unwrap_state(state, path, weights_option)


def _load_strict(build, state: dict, problem: str, fix: str) -> nn.Module:
    """``build()`` a model and load ``state`` into it strictly; any failure is one line: problem (reason); fix."""
    try:
        model = build()
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        reason = brief(exc, 160) or type(exc).__name__
        raise UsageError(f"{problem} ({reason}); {fix}") from exc
    return model


def _unwrap_state(state, path, weights_option):
    # checkpoints often nest the weights, and DataParallel prefixes every key with "module."
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{weights_option} file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def parse_class_map(value: str, num_classes: int, num_outputs: int, option: str = "--class-map") -> torch.Tensor:
    """A class map option: the model output index of each dataset class, as a LongTensor.

    ``value`` is a comma-separated list (``"0,217,482,..."``), the name of a known ImageNet subset
    (``imagenette``, ``cdd-bird-hard``, ...: :func:`ddtoolbox.data.imagenet_subsets.class_maps`), or a file holding the numbers (separated by commas or
    white space; ``#`` starts a comment).
    """
    from .data.imagenet_subsets import class_maps

    SUBSET_CLASS_MAPS = class_maps()
    text = value.strip()
    if text.lower() in SUBSET_CLASS_MAPS:
        numbers = list(SUBSET_CLASS_MAPS[text.lower()])
    else:
        if Path(text).is_file():
            try:
                body = Path(text).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{option} file {text} cannot be read ({exc})") from exc
            body = "\n".join(line.split("#", 1)[0] for line in body.splitlines())
        elif re.fullmatch(r"[\d,\s]+", text):
            body = text
        else:
            raise UsageError(f"{option} '{value}' is not a comma-separated list of integers, a known subset "
                             f"({', '.join(SUBSET_CLASS_MAPS)}) or an existing file")
        tokens = [t for t in re.split(r"[,\s]+", body.strip()) if t]
        try:
            numbers = [int(t) for t in tokens]
        except ValueError:
            raise UsageError(f"{option} {value}: every entry must be an integer (got {tokens[:12]})") from None
    if len(numbers) != num_classes:
        raise UsageError(f"{option} has {len(numbers)} entries but the dataset has {num_classes} classes; "
                         f"give one model output index per class, in class order")
    bad = [n for n in numbers if not 0 <= n < num_outputs]
    if bad:
        raise UsageError(f"{option} entries {bad[:8]} are outside the model's {num_outputs} outputs")
    return torch.tensor(numbers, dtype=torch.long)
