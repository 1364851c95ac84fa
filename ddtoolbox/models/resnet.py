"""ResNet18 and ResNet18_AP for small images (the cross-architecture nets of DC/MTT/DATM/EDF).

Both use BasicBlocks with two blocks per stage and stages of ``width, 2w, 4w, 8w`` channels
(``width`` 64 gives the standard ResNet18), global average pooling and one linear layer.

* Stem: inputs smaller than 64 pixels get a 3x3 stride-1 convolution and no max-pool (the
  CIFAR adaptation of DC/MTT); 64 pixels and up get the ImageNet stem (7x7 stride 2 + 3x3 max-pool
  stride 2), so 64 px ends at 2x2 and 128 px at 4x4. ``stem="small"``/``"imagenet"`` forces one.
* ``ResNet18_AP`` (DC's "ResNet18AP") downsamples with 2x2 average pooling after a stride-1
  convolution instead of a strided convolution, in both the residual branch and the shortcut.
* ``norm``: ``instancenorm`` (default, GroupNorm with one group per channel, as DC/MTT's
  "ResNet18"), ``batchnorm`` (their "ResNet18BN") or ``none``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .layers import check_norm, check_width, norm2d
from .registry import register_model

STEMS = ("auto", "small", "imagenet")


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, avgpool_down: bool):
        super().__init__()
        conv_stride = 1 if avgpool_down else stride
        down = nn.AvgPool2d(2) if (avgpool_down and stride != 1) else nn.Identity()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=conv_stride, padding=1, bias=False)
        self.down = down
        self.norm1 = norm2d(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm2d(norm, out_ch)
        if stride != 1 or in_ch != out_ch:
            layers = [nn.Conv2d(in_ch, out_ch, 1, stride=conv_stride, bias=False)]
            if avgpool_down and stride != 1:
                layers.append(nn.AvgPool2d(2))
            layers.append(norm2d(norm, out_ch))
            self.shortcut = nn.Sequential(*layers)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.norm1(self.down(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 adapted to 28-128 pixel inputs; see the module docstring."""

    def __init__(self, channels: int, num_classes: int, image_size=(32, 32), width: int = 64,
                 norm: str = "instancenorm", stem: str = "auto", avgpool_down: bool = False):
        super().__init__()
        name = "ResNet18_AP" if avgpool_down else "ResNet18"
        check_norm(norm, name)
        check_width(width, name)
        if stem not in STEMS:
            raise UsageError(f"unknown stem '{stem}' for {name}; choose one of {', '.join(STEMS)}")
        h, w = image_size
        if stem == "auto":
            stem = "imagenet" if min(h, w) >= 64 else "small"
        if stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
                                      norm2d(norm, width), nn.ReLU(inplace=True))
            reduce = 1
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 7, stride=2, padding=3, bias=False),
                                      norm2d(norm, width), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
            reduce = 4
        if min(h, w) // reduce < 8:
            raise UsageError(f"{name} with the {stem} stem needs inputs of at least {8 * reduce} pixels (got {h}x{w})")
        in_ch = width
        for i, mult in enumerate((1, 2, 4, 8)):   # named layer1..layer4 as in torchvision (Grad-CAM uses layer4)
            out_ch = width * mult
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(in_ch, out_ch, stride, norm, avgpool_down),
                                                         BasicBlock(out_ch, out_ch, 1, norm, avgpool_down)))
            in_ch = out_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.stem_kind = stem

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.classifier(self.pool(x).flatten(1))


@register_model("ResNet18")
def resnet18(channels, num_classes, image_size, width: int = 64, norm: str = "instancenorm", stem: str = "auto"):
    """ResNet18 (strided-convolution downsampling)."""
    return ResNet18(channels, num_classes, image_size, width=width, norm=norm, stem=stem)


@register_model("ResNet18_AP")
def resnet18_ap(channels, num_classes, image_size, width: int = 64, norm: str = "instancenorm", stem: str = "auto"):
    """ResNet18 with average-pooling downsampling (DC/MTT's ResNet18AP)."""
    return ResNet18(channels, num_classes, image_size, width=width, norm=norm, stem=stem, avgpool_down=True)
