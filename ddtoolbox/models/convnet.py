"""The ConvNet family used throughout the dataset-distillation literature.

Blocks of conv3x3 -> norm -> ReLU -> 2x2 pool, then one linear layer. Instance norm is implemented
as GroupNorm with one group per channel: it has no running statistics, so a network is a pure
function of its parameters, which the functional student unroll relies on.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import UsageError
from .registry import register_model

NORMS = ("instancenorm", "batchnorm", "layernorm", "none")
POOLINGS = ("avgpool", "maxpool", "none")


def _norm(kind: str, width: int, size: tuple[int, int]) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "layernorm":
        return nn.LayerNorm([width, *size])
    return nn.Identity()


class ConvNet(nn.Module):
    """ConvNet of configurable width, depth, norm and pooling.

    28-pixel one-channel inputs (MNIST family) get padding 3 in the first convolution, growing them
    to 32 pixels as the reference networks do, so a depth-3 net ends at 4x4 for both 28 and 32 px.
    """

    def __init__(self, channels: int, num_classes: int, image_size=(32, 32), width: int = 128,
                 depth: int = 3, norm: str = "instancenorm", pooling: str = "avgpool"):
        super().__init__()
        if norm not in NORMS:
            raise UsageError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")
        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}")
        if width < 1 or depth < 1:
            raise UsageError(f"ConvNet needs width >= 1 and depth >= 1 (got {width}, {depth})")
        self.norm_kind = norm
        h, w = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            pad = 3 if (d == 0 and channels == 1 and (h, w) == (28, 28)) else 1
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers.append(_norm(norm, width, (h, w)))
            layers.append(nn.ReLU(inplace=True))
            if pooling != "none":
                if h < 2 or w < 2:
                    raise UsageError(f"ConvNet depth {depth} is too deep for {image_size} inputs")
                layers.append(nn.AvgPool2d(2) if pooling == "avgpool" else nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * w, num_classes)
        self.feature_shape = (width, h, w)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model("ConvNet")
def convnet(channels, num_classes, image_size, **options):
    return ConvNet(channels, num_classes, image_size, **options)


def _fixed_depth(depth):
    def make(channels, num_classes, image_size, **options):
        if "depth" in options and options["depth"] != depth:
            raise UsageError(f"ConvNetD{depth} has depth {depth}; use 'ConvNet' with depth={options['depth']}")
        options.pop("depth", None)
        return ConvNet(channels, num_classes, image_size, depth=depth, **options)

    make.__doc__ = f"ConvNet of depth {depth}."
    return make


for _d in (3, 4, 5):
    register_model(f"ConvNetD{_d}")(_fixed_depth(_d))
