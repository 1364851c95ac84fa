"""Activation maps for DAE: the Grad-CAM model G, its layers, class mapping and Eq. 4 weights.

Everything here is a plain function of tensors and modules, so it can be tested without a run:

* :func:`gradcam_maps`: Captum ``LayerGradCam`` on one or more layers -> per-image maps in [0, 1];
* :func:`normalise_maps`: per-image min-max, constant maps -> zeros;
* :func:`dae_weights`: Eq. 4, ``1`` below the threshold, ``beta + M`` at or above it;
* :func:`discriminative_area`: the share of pixels at or above each map's mean (Figure 5b);
* :func:`default_layers`, :func:`resolve_layers`: which modules Grad-CAM looks at;
* :func:`load_torchvision_model`, :func:`parse_class_map`: the optional ImageNet-pretrained G.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors

#: maps are computed in chunks of this many images (bounds the memory of one Grad-CAM pass)
CHUNK = 128
#: a map whose value range is at most this fraction of its largest magnitude counts as constant
CONSTANT_RTOL = 1e-6

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: ImageNet-1K class indices of the usual 10-class subsets, in the subsets' class order
#: (docs/reference-notes.md section 8); ``--dae-class-map imagenette`` etc.
SUBSET_CLASS_MAPS = {
    "imagenette": (0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
    "imagewoof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
    "imagemeow": (281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
    "imagesquawk": (84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
    "imagefruit": (953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
    "imageyellow": (309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
}


# ---------------------------------------------------------------------------- maps


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``(N, 1, H, W)`` maps to [0, 1].

    A constant map (value range at most ``CONSTANT_RTOL`` times its largest magnitude, e.g. all
    zeros because the ReLU removed every negative-evidence pixel) has no discriminative area and
    becomes all zeros; :func:`dae_weights` then leaves that image's gradient unchanged.
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
                 chunk: int = CHUNK) -> torch.Tensor:
    """Grad-CAM activation maps of ``images`` for classes ``targets``, shape ``(N, 1, H, W)`` in [0, 1].

    For each layer: Captum's ``LayerGradCam`` with ``relu_attributions=True`` (channel weights =
    spatial mean of d y_target / d A, map = ReLU(sum_k w_k A_k)), resized bilinearly to the image
    size. Several layers are summed after resizing (Eq. 3 sums over layers; their resolutions
    differ, so the sum is taken at image resolution). Then per-image min-max to [0, 1]
    (:func:`normalise_maps`). The result is detached.

    ``model`` should be in eval mode with frozen parameters; ``images`` are not modified.
    """
    from captum.attr import LayerGradCam

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
                        f"--dae-layer: Grad-CAM needs a layer with a (N, C, H, W) output, got shape {tuple(a.shape)}; "
                        f"pick a convolutional layer"
                    )
                total += F.interpolate(a.detach().to(total.dtype), size=size, mode="bilinear", align_corners=False)
            parts.append(total)
    return normalise_maps(torch.cat(parts))


def dae_weights(maps: torch.Tensor, beta: float, threshold: str | float = "mean") -> torch.Tensor:
    """Eq. 4: per-pixel gradient weights from ``(N, 1, H, W)`` maps in [0, 1].

    ``1`` where ``M < t``, ``beta + M`` where ``M >= t``; ``t`` is the image's mean activation
    (``threshold="mean"``, the paper's choice) or a fixed number (the ablation of Table 6b). A
    constant map has no discriminative area: its weights are all 1.
    """
    thr = _threshold(maps, threshold)
    high = (maps >= thr) & ~is_constant(maps).view(-1, 1, 1, 1)
    return torch.where(high, beta + maps, torch.ones_like(maps))


def discriminative_area(maps: torch.Tensor, threshold: str | float = "mean") -> torch.Tensor:
    """``(N,)`` share of each image's pixels at or above its threshold (0 for a constant map).

    With ``threshold="mean"`` this is the paper's "discriminative area" (Section 2, Figure 5b).
    """
    thr = _threshold(maps, threshold)
    high = (maps >= thr) & ~is_constant(maps).view(-1, 1, 1, 1)
    return high.flatten(1).float().mean(1)


def _threshold(maps, threshold):
    if threshold == "mean":
        return maps.flatten(1).mean(1).view(-1, 1, 1, 1)
    return float(threshold)


# ---------------------------------------------------------------------------- the model G


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


def default_layers(model: nn.Module) -> list[str]:
    """The last convolutional block of ``model``, as module names.

    * a module named ``layer4`` (torchvision ResNets): that block, as the reference does;
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
        raise UsageError("the DAE activation model has no Conv2d layer; Grad-CAM needs a convolutional network "
                         "(choose another --dae-model or name a layer with --dae-layer)")
    for name, m in ordered[last_conv + 1:]:
        if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ReLU6, nn.ELU)):
            return [name]
    return [ordered[last_conv][0]]


def resolve_layers(model: nn.Module, names: list[str] | None) -> tuple[list[str], list[nn.Module]]:
    """Module objects for ``names`` (default: :func:`default_layers`); unknown names are a UsageError."""
    names = list(names) if names else default_layers(model)
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules or name == "":
            candidates = [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.ReLU, nn.Sequential))
                          or re.fullmatch(r"layer\d", n or "")]
            shown = ", ".join(candidates[:24]) + (", ..." if len(candidates) > 24 else "")
            raise UsageError(f"--dae-layer '{name}' is not a module of the DAE activation model; "
                             f"use a name from model.named_modules(), e.g. {shown}")
        found.append(modules[name])
    return names, found


class InputAdapter(nn.Module):
    """Feeds images normalised with the dataset's mean/std to a model that expects another
    normalisation (and 3 channels): undo the dataset's, repeat grey to RGB, apply the model's."""

    def __init__(self, model: nn.Module, data_mean, data_std, model_mean=IMAGENET_MEAN,
                 model_std=IMAGENET_STD, model_channels: int = 3):
        super().__init__()
        self.model = model
        self.model_channels = model_channels
        self.register_buffer("data_mean", torch.tensor(data_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("data_std", torch.tensor(data_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("model_mean", torch.tensor(model_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("model_std", torch.tensor(model_std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        pixels = x * self.data_std + self.data_mean
        if pixels.shape[1] == 1 and self.model_channels == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        elif pixels.shape[1] != self.model_channels:
            raise UsageError(f"the DAE activation model expects {self.model_channels}-channel images, "
                             f"the dataset has {pixels.shape[1]}")
        return self.model((pixels - self.model_mean) / self.model_std)


def needs_adapter(data_mean, data_std, channels: int, model_mean=IMAGENET_MEAN, model_std=IMAGENET_STD) -> bool:
    same = (channels == len(model_mean) and all(abs(a - b) < 1e-6 for a, b in zip(data_mean, model_mean))
            and all(abs(a - b) < 1e-6 for a, b in zip(data_std, model_std)))
    return not same


def load_torchvision_model(arch: str, weights) -> nn.Module:
    """A torchvision classifier ``arch`` with the state dict in ``weights`` (loaded safely).

    The number of outputs is taken from the weights file (the last 2-D weight tensor), so a
    1000-way ImageNet model and a fine-tuned 10-way one both load. Nothing is downloaded.
    """
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = [k for k in known if k.startswith(arch[:3])][:8] or ["resnet18", "resnet50", "vgg11"]
        raise UsageError(f"--dae-model '{arch}' is neither 'expert' nor a torchvision classification model; "
                         f"e.g. {', '.join(close)}")
    if not weights:
        raise UsageError(f"--dae-model {arch} needs --dae-weights FILE (a state dict saved with "
                         f"torch.save(model.state_dict(), FILE)); nothing is downloaded")
    path = Path(weights)
    state = load_tensors(path, "--dae-weights",
                         f"give the path of a {arch} state dict saved with torch.save(model.state_dict(), FILE)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--dae-weights file {path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    num_classes = matrices[-1].shape[0] if matrices else 1000
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(f"--dae-weights file {path} does not fit a torchvision {arch} ({reason}); "
                         f"check --dae-model") from exc
    return model


def parse_class_map(value: str, num_classes: int, num_outputs: int) -> torch.Tensor:
    """``--dae-class-map``: model output index of each synthetic class, as a LongTensor.

    ``value`` is a comma-separated list (``"0,217,482,..."``), the name of a known ImageNet subset
    (``imagenette``, ``imagewoof``, ...), or a file holding the numbers (separated by commas or
    white space; ``#`` starts a comment).
    """
    text = value.strip()
    if text.lower() in SUBSET_CLASS_MAPS:
        numbers = list(SUBSET_CLASS_MAPS[text.lower()])
    else:
        if Path(text).is_file():
            try:
                body = Path(text).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--dae-class-map file {text} cannot be read ({exc})") from exc
            body = "\n".join(line.split("#", 1)[0] for line in body.splitlines())
        elif re.fullmatch(r"[\d,\s]+", text):
            body = text
        else:
            raise UsageError(f"--dae-class-map '{value}' is not a comma-separated list of integers, a known subset "
                             f"({', '.join(SUBSET_CLASS_MAPS)}) or an existing file")
        tokens = [t for t in re.split(r"[,\s]+", body.strip()) if t]
        try:
            numbers = [int(t) for t in tokens]
        except ValueError:
            raise UsageError(f"--dae-class-map {value}: every entry must be an integer (got {tokens[:12]})") from None
    if len(numbers) != num_classes:
        raise UsageError(f"--dae-class-map has {len(numbers)} entries but the dataset has {num_classes} classes; "
                         f"give one model output index per class, in class order")
    bad = [n for n in numbers if not 0 <= n < num_outputs]
    if bad:
        raise UsageError(f"--dae-class-map entries {bad[:8]} are outside the model's {num_outputs} outputs")
    return torch.tensor(numbers, dtype=torch.long)
