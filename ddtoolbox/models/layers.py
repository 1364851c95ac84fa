"""Small building blocks shared by the cross-architecture networks."""

from __future__ import annotations

import torch.nn as nn

from ..errors import UsageError

#: norms the cross-architecture networks accept (``instancenorm`` is GroupNorm with one group per
#: channel, as in the ConvNet family: no running statistics)
NORMS = ("instancenorm", "batchnorm", "none")


def check_norm(norm: str, model: str) -> str:
    if norm not in NORMS:
        raise UsageError(f"unknown norm '{norm}' for {model}; choose one of {', '.join(NORMS)}")
    return norm


def norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def check_width(width: int, model: str) -> int:
    if not isinstance(width, int) or width < 1:
        raise UsageError(f"{model} needs width >= 1 (got {width})")
    return width


def first_padding(size: tuple[int, int], normal: int) -> int:
    """28-pixel inputs (MNIST family) are padded to 32 by the first layer, as the DC/MTT nets do."""
    return normal + 2 if tuple(size) == (28, 28) else normal


class FeaturesThenLinear(nn.Module):
    """A convolutional feature stack and one linear layer sized from the final map (VGG11, AlexNet)."""

    def set_layers(self, layers: list[nn.Module], feature_shape: tuple[int, int, int], num_classes: int) -> None:
        c, h, w = feature_shape
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)
        self.feature_shape = feature_shape

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
