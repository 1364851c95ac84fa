"""DAE's pieces on hand-made maps, a toy network and a 1000-way model (no distillation run)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddtoolbox.errors import UsageError
from ddtoolbox.models import create_model
from ddtoolbox.testing import TOY_CLASSES, TOY_SIZE, toy_images
from ddtoolbox_edf import dae
from ddtoolbox_edf import maps as M


def _map(values):
    """A (1, 1, 2, 2) map from four values."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


# ---------------------------------------------------------------------------- normalisation


def test_min_max_normalisation_by_hand():
    m = torch.cat([_map([0.0, 2.0, 4.0, 8.0]), _map([-1.0, 1.0, 1.0, 3.0])])
    assert M.normalise_maps(m).flatten(1).tolist() == [[0.0, 0.25, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0]]


@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_constant_map_becomes_zeros(value):
    m = torch.cat([_map([value] * 4), _map([0.0, 1.0, 2.0, 3.0])])
    out = M.normalise_maps(m)
    assert out[0].flatten().tolist() == [0.0] * 4
    assert out[1].flatten().tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    # rounding noise on a constant map is still constant
    noisy = _map([5.0, 5.0 + 1e-9, 5.0, 5.0])
    assert M.normalise_maps(noisy).flatten().tolist() == [0.0] * 4


# ---------------------------------------------------------------------------- Eq. 4 weights


def test_weights_below_and_above_mean_by_hand():
    m = _map([0.0, 0.25, 0.5, 1.0])          # mean 0.4375
    assert M.dae_weights(m, beta=1.0).flatten().tolist() == [1.0, 1.0, 1.5, 2.0]
    assert M.dae_weights(m, beta=2.0).flatten().tolist() == [1.0, 1.0, 2.5, 3.0]
    assert M.dae_weights(m, beta=0.0).flatten().tolist() == [1.0, 1.0, 0.5, 1.0]


def test_pixel_exactly_at_the_mean_is_enhanced():
    m = _map([0.0, 0.5, 0.5, 1.0])           # mean 0.5: the two 0.5 pixels are "at" it
    assert M.dae_weights(m, beta=1.0).flatten().tolist() == [1.0, 1.5, 1.5, 2.0]


def test_constant_map_leaves_gradient_alone():
    m = torch.zeros(1, 1, 2, 2)
    assert M.dae_weights(m, beta=2.0).flatten().tolist() == [1.0] * 4
    assert M.discriminative_area(m).tolist() == [0.0]


def test_fixed_threshold():
    m = _map([0.0, 0.25, 0.5, 1.0])
    assert M.dae_weights(m, beta=1.0, threshold=0.3).flatten().tolist() == [1.0, 1.0, 1.5, 2.0]
    assert M.dae_weights(m, beta=1.0, threshold=0.2).flatten().tolist() == [1.0, 1.25, 1.5, 2.0]
    assert M.dae_weights(m, beta=1.0, threshold=1.0).flatten().tolist() == [1.0, 1.0, 1.0, 2.0]


def test_discriminative_area_by_hand():
    m = torch.cat([_map([0.0, 0.25, 0.5, 1.0]), _map([0.0, 0.0, 0.0, 1.0]), torch.zeros(1, 1, 2, 2)])
    assert M.discriminative_area(m).tolist() == [0.5, 0.25, 0.0]
    assert M.discriminative_area(m, 0.2).tolist() == [0.75, 0.25, 0.0]


def _fake_state(maps, beta):
    """DAE's saved state after a refresh at iteration 0 (the next one is due at 100)."""
    return {"maps": maps, "weights": M.dae_weights(maps, beta), "maps_iteration": 0}


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 10.0])
def test_hook_keeps_signs_and_below_mean_pixels(beta):
    g = torch.Generator().manual_seed(0)
    maps = M.normalise_maps(torch.rand(4, 1, 6, 6, generator=g))
    grad = torch.randn(4, 3, 6, 6, generator=g)
    before = grad.clone()
    run = SimpleNamespace(iteration=1, log=lambda **kw: None)
    options = dae.DAEOptions(dae_beta=beta)
    dae.on_pixel_grad(run, grad, torch.zeros(4, 3, 6, 6), options, _fake_state(maps, beta), cache={})
    below = (maps < maps.flatten(1).mean(1).view(-1, 1, 1, 1)).expand_as(grad)
    assert torch.equal(grad[below], before[below])                        # unchanged, bit for bit
    assert torch.equal(torch.sign(grad), torch.sign(before))              # never flips (or zeroes) a sign
    expected = before * torch.where(~below[:, :1], beta + maps, torch.ones_like(maps))  # same on every channel
    assert torch.allclose(grad, expected)


# ---------------------------------------------------------------------------- Grad-CAM on a toy network


def _quadrant_means(maps):
    h = maps.shape[-1] // 2
    q = [maps[..., :h, :h], maps[..., :h, h:], maps[..., h:, :h], maps[..., h:, h:]]
    return torch.stack([x.flatten(1).mean(1) for x in q], 1)  # (N, 4), quadrant c = class c


class QuadrantNet(nn.Module):
    """A hand-built convolutional classifier for the toy data (class c = bright square in quadrant c).

    ``conv`` has a brightness detector (channel 0) and a darkness detector (channel 1); after
    ``relu`` and 2x2 average ``pool`` (8 x 8), the logit of class c is the sum of the squared
    brightness over quadrant c minus the darkness there. So only class c's logit depends on the
    square, and Grad-CAM for class c must light up the square; for any other class the
    brightness channel gets weight 0 and the darkness channel a negative one, so the map is empty.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.stack([torch.full((1, 3, 3), 1 / 9), torch.full((1, 3, 3), -1 / 9)]))
            self.conv.bias.copy_(torch.tensor([-1.0, -0.5]))

    def forward(self, x):
        a = self.pool(self.relu(self.conv(x)))
        h = a.shape[-1] // 2
        quads = [a[..., :h, :h], a[..., :h, h:], a[..., h:, :h], a[..., h:, h:]]
        return torch.stack([(q[:, 0] ** 2).flatten(1).sum(1) - q[:, 1].flatten(1).sum(1) for q in quads], 1)


@pytest.fixture(scope="module")
def quadrant_net():
    x, y = toy_images(10, seed=5)
    x = (x - 0.3) / 0.3                     # the toy dataset's normalisation
    net = QuadrantNet()
    with torch.no_grad():
        assert torch.equal(net(x).argmax(1), y)
    return net, x, y


def test_default_layer_of_convnet_is_last_relu():
    net = create_model("ConvNet", 1, 4, (16, 16), width=4, depth=3)
    assert M.default_layers(net) == ["features.10"]
    assert isinstance(dict(net.named_modules())["features.10"], nn.ReLU)


def test_gradcam_peaks_in_the_class_quadrant(quadrant_net):
    net, x, y = quadrant_net
    model = M.prepare_model(net)
    names, layers = M.resolve_layers(model, ["pool"])     # 8 x 8, resized to 16 x 16
    maps = M.gradcam_maps(model, x, y, layers)
    assert maps.shape == (len(x), 1, TOY_SIZE, TOY_SIZE)
    assert maps.min() >= 0 and maps.max() <= 1
    q = _quadrant_means(maps)
    assert torch.equal(q.argmax(1), y), q
    assert torch.equal(maps.flatten(1).argmax(1) // TOY_SIZE // (TOY_SIZE // 2) * 2
                       + maps.flatten(1).argmax(1) % TOY_SIZE // (TOY_SIZE // 2), y)   # the peak pixel too
    assert (q.gather(1, y[:, None]).squeeze(1) > 3 * q.sum(1) / 4).all()          # most of the mass is there
    # for another class's target there is no evidence: an empty (all-zero) map
    wrong = M.gradcam_maps(model, x, (y + 1) % TOY_CLASSES, layers)
    assert wrong.abs().max() == 0
    # and the discriminative area is the share of pixels at or above each map's mean
    area = M.discriminative_area(maps)
    assert torch.allclose(area, (maps >= maps.flatten(1).mean(1).view(-1, 1, 1, 1)).flatten(1).float().mean(1))
    # the original network is untouched (prepare_model works on a copy)
    assert all(p.requires_grad for p in net.parameters()) and net.relu.inplace
    assert M.default_layers(net) == ["relu"]


def test_several_layers_are_summed(quadrant_net):
    net, x, y = quadrant_net
    model = M.prepare_model(net)
    _, (l1, l2) = M.resolve_layers(model, ["relu", "pool"])
    from captum.attr import LayerGradCam

    def raw(layer):
        a = LayerGradCam(model, layer).attribute(x.clone().requires_grad_(True), target=y, relu_attributions=True)
        return F.interpolate(a, size=(TOY_SIZE, TOY_SIZE), mode="bilinear", align_corners=False)

    expected = M.normalise_maps(raw(l1) + raw(l2))
    assert torch.allclose(M.gradcam_maps(model, x, y, [l1, l2]), expected, atol=1e-6)
    # chunking does not change the result
    assert torch.allclose(M.gradcam_maps(model, x, y, [l1, l2], chunk=3), expected, atol=1e-6)


def test_unknown_layer_names_the_option(quadrant_net):
    with pytest.raises(UsageError, match="--dae-layer 'nope'"):
        M.resolve_layers(quadrant_net[0], ["nope"])


# ---------------------------------------------------------------------------- class mapping to a 1000-way model


class Tiny1000(nn.Module):
    """A torchvision-like classifier with 1000 outputs whose rows look at different places."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 8 * 8, 1000)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.relu(self.conv(x)), 8).flatten(1))


def test_class_map_parsing(tmp_path):
    assert M.parse_class_map("5, 17,300 ,999", 4, 1000).tolist() == [5, 17, 300, 999]
    f = tmp_path / "map.txt"
    f.write_text("# ImageNet ids\n5\n17 300\n999  # last\n")
    assert M.parse_class_map(str(f), 4, 1000).tolist() == [5, 17, 300, 999]
    assert M.parse_class_map("imagenette", 10, 1000).tolist() == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
    with pytest.raises(UsageError, match="--dae-class-map has 3 entries"):
        M.parse_class_map("1,2,3", 4, 1000)
    with pytest.raises(UsageError, match="outside the model's 1000 outputs"):
        M.parse_class_map("1,2,3,1000", 4, 1000)
    with pytest.raises(UsageError, match="--dae-class-map"):
        M.parse_class_map("cats", 4, 1000)


def test_mapped_targets_reach_captum(monkeypatch):
    """The map of synthetic class c is Grad-CAM for output class_map[c], not for output c."""
    model = M.prepare_model(Tiny1000())
    _, layers = M.resolve_layers(model, ["relu"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    class_map = M.parse_class_map("5,17,300,999", 4, 1000)
    from captum.attr import LayerGradCam

    seen = []
    original = LayerGradCam.attribute

    def spy(self, inputs, target=None, **kw):
        seen.append(target.tolist())
        return original(self, inputs, target=target, **kw)

    monkeypatch.setattr(LayerGradCam, "attribute", spy)
    mapped = M.gradcam_maps(model, x, class_map[labels], layers)
    assert seen == [[5, 17, 300, 999]]
    for i, out in enumerate([5, 17, 300, 999]):
        alone = M.gradcam_maps(model, x[i:i + 1], torch.tensor([out]), layers)
        assert torch.allclose(mapped[i], alone[0], atol=1e-6)
    # the reference's mistake (asking for outputs 0..3) gives different maps
    wrong = M.gradcam_maps(model, x, labels, layers)
    assert not torch.allclose(mapped, wrong, atol=1e-3)


def test_input_adapter_converts_normalisation():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.flatten(1)[:, :2]

    pixels = torch.rand(2, 1, 4, 4)
    mean, std = (0.2861,), (0.3530,)
    adapter = M.InputAdapter(Probe(), mean, std)
    adapter((pixels - mean[0]) / std[0])
    imagenet = (pixels.expand(-1, 3, -1, -1) - torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        M.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(seen["x"], imagenet, atol=1e-5)
    assert M.needs_adapter(mean, std, 1)
    assert not M.needs_adapter(M.IMAGENET_MEAN, M.IMAGENET_STD, 3)


def test_torchvision_loading_errors(tmp_path):
    with pytest.raises(UsageError, match="--dae-model 'notanet'"):
        M.load_torchvision_model("notanet", None)
    with pytest.raises(UsageError, match="--dae-weights"):
        M.load_torchvision_model("resnet18", None)
    with pytest.raises(UsageError, match="does not exist"):
        M.load_torchvision_model("resnet18", tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UsageError, match="corrupt"):
        M.load_torchvision_model("resnet18", bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(UsageError, match="does not fit a torchvision resnet18"):
        M.load_torchvision_model("resnet18", wrong)


@pytest.mark.parametrize("bad, option", [(-1.0, "--dae-beta"), (float("nan"), "--dae-beta")])
def test_bad_beta(bad, option):
    with pytest.raises(UsageError, match=option):
        dae.DAEOptions(dae_beta=bad)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "x"])
def test_bad_every_names_the_option(bad):
    with pytest.raises(UsageError, match="--dae-every"):
        dae.DAEOptions(dae_every=bad)


def test_large_beta_warns_in_one_line(capsys):
    from ddtoolbox.errors import forget_warnings

    forget_warnings()
    dae.DAEOptions(dae_beta=5.0)
    assert capsys.readouterr().err == ""
    dae.DAEOptions(dae_beta=10.0)
    err = capsys.readouterr().err
    assert err.startswith("ddtool: warning: --dae-beta 10 is above 5") and err.count("\n") == 1


@pytest.mark.parametrize("value, ok", [("mean", "mean"), ("MEAN", "mean"), ("0.5", 0.5), ("1", 1.0),
                                       ("0", None), ("1.5", None), ("high", None)])
def test_threshold_parsing(value, ok):
    if ok is None:
        with pytest.raises(UsageError, match="--dae-threshold"):
            dae.parse_threshold(value)
    else:
        assert dae.parse_threshold(value) == ok
