"""Cross-architecture networks (ResNet18, ResNet18_AP, VGG11, AlexNet) adapted to small inputs."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddtoolbox.errors import UsageError
from ddtoolbox.models import canonical_model_name, create_model

CROSS = ("ResNet18", "ResNet18_AP", "VGG11", "AlexNet")


@pytest.mark.parametrize("name", CROSS)
@pytest.mark.parametrize("size", (28, 32, 64, 128))
@pytest.mark.parametrize("channels", (1, 3))
def test_each_model_trains_one_step(name, size, channels):
    torch.manual_seed(0)
    net = create_model(name, channels, 10, size, width=4)
    x, y = torch.randn(2, channels, size, size), torch.tensor([3, 7])
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = F.cross_entropy(net(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
    assert all(changed), f"{sum(not c for c in changed)} parameter tensors did not move"
    with torch.no_grad():
        after = F.cross_entropy(net(x), y)
    assert after.item() != loss.item()


def test_parameter_counts_match_hand_computation():
    count = lambda m: sum(p.numel() for p in m.parameters())
    # the CIFAR ResNet18 (3x3 stem, no max-pool, bias-free convs, 2 norm params per channel)
    assert count(create_model("ResNet18", 3, 10, 32)) == 11_173_962
    assert count(create_model("ResNet18_AP", 3, 10, 32)) == 11_173_962  # same weights, other downsampling
    # VGG11: convs 1792 + 73856 + 295168 + 590080 + 1180160 + 3 * 2359808, norms 2 * 2752, linear 512 * 10 + 10
    assert count(create_model("VGG11", 3, 10, 32)) == 9_231_114
    # AlexNet (DC): 9728 + 614592 + 442624 + 442560 + 331968 convs, linear 192 * 4 * 4 * 10 + 10
    assert count(create_model("AlexNet", 3, 10, 32)) == 1_872_202


@pytest.mark.parametrize("size,vgg,alex", [(28, (1, 1), (4, 4)), (32, (1, 1), (4, 4)), (64, (2, 2), (8, 8)),
                                           (128, (4, 4), (16, 16))])
def test_classifier_sized_from_the_input(size, vgg, alex):
    assert create_model("VGG11", 1, 10, size).feature_shape == (512, *vgg)   # 28 px padded to 32
    assert create_model("AlexNet", 1, 10, size).feature_shape == (192, *alex)


def test_resnet_stems_and_avgpool_downsampling():
    assert create_model("ResNet18", 3, 10, 32, width=4).stem_kind == "small"
    assert create_model("ResNet18", 3, 10, 64, width=4).stem_kind == "imagenet"
    assert create_model("ResNet18", 3, 10, 64, width=4, stem="small").stem_kind == "small"
    ap = create_model("ResNet18_AP", 3, 10, 32, width=4)
    strided = [m for m in ap.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert not strided and any(isinstance(m, nn.AvgPool2d) for m in ap.modules())
    plain = create_model("ResNet18", 3, 10, 32, width=4)
    assert [m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    out = ap(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_norm_option():
    bn = create_model("VGG11", 3, 10, 32, width=4, norm="batchnorm")
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    inn = create_model("ResNet18", 3, 10, 32, width=4)
    assert any(isinstance(m, nn.GroupNorm) for m in inn.modules())
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in create_model("AlexNet", 3, 10, 32).modules())
    with pytest.raises(UsageError, match="unknown norm 'layernorm' for VGG11"):
        create_model("VGG11", 3, 10, 32, norm="layernorm")


def test_names_are_case_insensitive_and_bad_options_are_usage_errors():
    assert canonical_model_name("vgg11") == "VGG11"
    assert canonical_model_name("resnet18ap") == "ResNet18_AP"
    assert canonical_model_name("RESNET18-AP") == "ResNet18_AP"
    assert canonical_model_name("convnetd5") == "ConvNetD5"
    assert create_model("alexnet", 1, 10, 28, width=4)(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(UsageError, match="unknown model 'vgg99'.*VGG11"):
        create_model("vgg99", 3, 10, 32)
    with pytest.raises(UsageError, match="bad options for model 'VGG11'.*pooling"):
        create_model("VGG11", 3, 10, 32, pooling="maxpool")
    with pytest.raises(UsageError, match="at least"):
        create_model("VGG11", 3, 10, 16)


def test_resnet_stages_are_named_like_torchvision():
    net = create_model("ResNet18", 3, 10, 32, width=4)
    names = dict(net.named_modules())
    assert all(f"layer{i}" in names for i in (1, 2, 3, 4))   # Grad-CAM's default layer is layer4
    assert names["layer4"][1].conv2.out_channels == 32
