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

import torch
import torch.nn as nn

from ddtoolbox import gradcam as G
from ddtoolbox.data.imagenet_subsets import class_maps
from ddtoolbox.errors import UsageError

# The generic Grad-CAM machinery lives in ddtoolbox.gradcam (the Comp-DD complexity score uses the
# same maps); this module binds it to DAE's option names and adds what only DAE needs.
CHUNK = G.CHUNK
CONSTANT_RTOL = G.CONSTANT_RTOL
IMAGENET_MEAN, IMAGENET_STD = G.IMAGENET_MEAN, G.IMAGENET_STD
_WHAT = "the DAE activation model"

#: ImageNet-1K class indices of the registered ImageNet subsets (ImageNette, ..., the Comp-DD
#: subsets), in the prepared datasets' class order; ``--dae-class-map imagenette`` etc.
SUBSET_CLASS_MAPS = class_maps()

normalise_maps = G.normalise_maps
is_constant = G.is_constant
prepare_model = G.prepare_model
needs_adapter = G.needs_adapter


# ---------------------------------------------------------------------------- maps


def gradcam_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layers: list[nn.Module],
                 chunk: int = CHUNK) -> torch.Tensor:
    """Grad-CAM maps in [0, 1], shape ``(N, 1, H, W)``: :func:`ddtoolbox.gradcam.gradcam_maps`."""
    return G.gradcam_maps(model, images, targets, layers, chunk=chunk, layer_option="--dae-layer")


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


def default_layers(model: nn.Module) -> list[str]:
    """The last convolutional block of ``model``: :func:`ddtoolbox.gradcam.default_layers`."""
    return G.default_layers(model, _WHAT, "--dae-layer")


def resolve_layers(model: nn.Module, names: list[str] | None) -> tuple[list[str], list[nn.Module]]:
    """Module objects for ``names`` (default: :func:`default_layers`); unknown names are a UsageError."""
    return G.resolve_layers(model, names, _WHAT, "--dae-layer")


class InputAdapter(G.InputAdapter):
    """:class:`ddtoolbox.gradcam.InputAdapter`, with DAE's wording in its errors."""

    def __init__(self, model: nn.Module, data_mean, data_std, model_mean=IMAGENET_MEAN,
                 model_std=IMAGENET_STD, model_channels: int = 3):
        super().__init__(model, data_mean, data_std, model_mean, model_std, model_channels, what=_WHAT)


def load_torchvision_model(arch: str, weights) -> nn.Module:
    """A torchvision classifier ``arch`` with the state dict in ``weights`` (loaded safely).

    See :func:`ddtoolbox.gradcam.load_torchvision_model`; nothing is downloaded.
    """
    if not G.is_torchvision_model(arch):
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        close = [k for k in known if k.startswith(arch[:3])][:8] or ["resnet18", "resnet50", "vgg11"]
        raise UsageError(f"--dae-model '{arch}' is neither 'expert' nor a torchvision classification model; "
                         f"e.g. {', '.join(close)}")
    return G.load_torchvision_model(arch, weights, "--dae-model", "--dae-weights")


def parse_class_map(value: str, num_classes: int, num_outputs: int) -> torch.Tensor:
    """``--dae-class-map``: model output index of each synthetic class, as a LongTensor.

    ``value`` is a comma-separated list (``"0,217,482,..."``), the name of a registered ImageNet
    subset (``imagenette``, ``imagewoof``, ``cdd-bird-hard``, ...), or a file holding the numbers
    (separated by commas or white space; ``#`` starts a comment). See
    :func:`ddtoolbox.gradcam.parse_class_map`.
    """
    return G.parse_class_map(value, num_classes, num_outputs, option="--dae-class-map")
