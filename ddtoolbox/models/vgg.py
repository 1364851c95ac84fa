"""VGG11 for small images (the cross-architecture VGG11 of DC/MTT/DATM/EDF).

Eight 3x3 convolutions, each followed by a norm and ReLU, in the VGG11 pattern
``w, M, 2w, M, 4w, 4w, M, 8w, 8w, M, 8w, 8w, M`` (``width`` 64 gives the standard 64-512
channels), where ``M`` is a 2x2 max-pool; then one linear layer on the flattened final feature map,
whose size follows from the input: 1x1 for 32 px (and 28 px, padded to 32 by the first
convolution), 2x2 for 64 px, 4x4 for 128 px. ``norm``: ``instancenorm`` (default, as DC/MTT's
"VGG11"), ``batchnorm`` ("VGG11BN") or ``none``.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import UsageError
from .layers import FeaturesThenLinear, check_norm, check_width, first_padding, norm2d
from .registry import register_model

PATTERN = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(FeaturesThenLinear):
    def __init__(self, channels: int, num_classes: int, image_size=(32, 32), width: int = 64,
                 norm: str = "instancenorm"):
        super().__init__()
        check_norm(norm, "VGG11")
        check_width(width, "VGG11")
        h, w = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for item in PATTERN:
            if item == "M":
                if h < 2 or w < 2:
                    raise UsageError(f"VGG11 needs inputs of at least 28 pixels (got {image_size[0]}x{image_size[1]})")
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
                continue
            pad = first_padding(image_size, 1) if not layers else 1
            out_ch = width * item
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=pad), norm2d(norm, out_ch), nn.ReLU(inplace=True)]
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            in_ch = out_ch
        self.set_layers(layers, (in_ch, h, w), num_classes)


@register_model("VGG11")
def vgg11(channels, num_classes, image_size, width: int = 64, norm: str = "instancenorm"):
    """VGG11 with a norm after every convolution and a linear classifier sized from the input."""
    return VGG11(channels, num_classes, image_size, width=width, norm=norm)
