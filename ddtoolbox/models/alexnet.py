"""AlexNet for small images (the cross-architecture AlexNet of DC/MTT/DATM/EDF).

Five convolutions with small kernels (5x5, 5x5, 3x3, 3x3, 3x3; stride 1) of ``w, 1.5w, 2w, 1.5w,
1.5w`` channels (``width`` 128 gives DC's 128-192-256-192-192), ReLU, 2x2 max-pools after the
first, second and fifth, and one linear layer on the flattened final map: 4x4 for 32 px (28 px
inputs are padded to 32 by the first convolution), 8x8 for 64 px, 16x16 for 128 px. No norm by
default, as in DC; ``norm=instancenorm`` or ``batchnorm`` adds one after every convolution.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import UsageError
from .layers import FeaturesThenLinear, check_norm, check_width, first_padding, norm2d
from .registry import register_model

# (channel multiplier, kernel, max-pool after)
LAYERS = ((1.0, 5, True), (1.5, 5, True), (2.0, 3, False), (1.5, 3, False), (1.5, 3, True))


class AlexNet(FeaturesThenLinear):
    def __init__(self, channels: int, num_classes: int, image_size=(32, 32), width: int = 128,
                 norm: str = "none"):
        super().__init__()
        check_norm(norm, "AlexNet")
        check_width(width, "AlexNet")
        h, w = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for i, (mult, k, pool) in enumerate(LAYERS):
            out_ch = max(1, int(round(width * mult)))
            pad = first_padding(image_size, k // 2) if i == 0 else k // 2
            layers += [nn.Conv2d(in_ch, out_ch, k, padding=pad), norm2d(norm, out_ch), nn.ReLU(inplace=True)]
            h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            if pool:
                if h < 2 or w < 2:
                    raise UsageError(f"AlexNet needs inputs of at least 8 pixels (got {image_size[0]}x{image_size[1]})")
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.set_layers(layers, (in_ch, h, w), num_classes)


@register_model("AlexNet")
def alexnet(channels, num_classes, image_size, width: int = 128, norm: str = "none"):
    """AlexNet with small kernels and a linear classifier sized from the input."""
    return AlexNet(channels, num_classes, image_size, width=width, norm=norm)
