"""Comp-DD: the complexity metric on maps we can predict, and score/select/stats end to end."""

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from PIL import Image

from ddtoolbox import gradcam as G
from ddtoolbox.compdd.complexity import high_activation_fraction
from ddtoolbox.compdd.select import load_categories, select
from ddtoolbox.data import DatasetInfo, register_dataset
from ddtoolbox.data.imagenet_subsets import get_subset
from ddtoolbox.errors import UsageError
from ddtoolbox.models import list_models, register_model
from ddtoolbox.cli.testing import run_cli

SIZE = 16


class Probe(nn.Module):
    """A network whose Grad-CAM map is its input: 1x1 identity conv, ReLU, mean pool, positive linear.

    d y_c / d A = w_c / (H W) > 0 everywhere, so the channel weight is positive and the map is
    ReLU(A) = the (non-negative) image; min-max then gives (image - min) / (max - min).
    """

    def __init__(self, channels=1, num_classes=2, image_size=(SIZE, SIZE)):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / channels)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.arange(1, num_classes + 1, dtype=torch.float32).view(-1, 1))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


if "CompddProbe" not in list_models():
    register_model("CompddProbe")(lambda channels, num_classes, image_size, **o: Probe(channels, num_classes, image_size))


def square_images(areas, n_per_class, seed=0):
    """Class c: background noise in [0, 0.3) and a bright (1.0) rectangle covering areas[c] of the image."""
    g = torch.Generator().manual_seed(seed)
    x, y = [], []
    for c, area in enumerate(areas):
        rows = round(area * SIZE)
        for _ in range(n_per_class):
            img = torch.rand(1, SIZE, SIZE, generator=g) * 0.3
            top = int(torch.randint(0, SIZE - rows + 1, (1,), generator=g))
            img[:, top:top + rows, :] = 1.0
            x.append(img)
            y.append(c)
    return torch.stack(x), torch.tensor(y)


AREAS = (0.25, 0.5, 0.75)


@pytest.fixture(scope="module")
def squares():
    info = DatasetInfo("compdd-squares", 1, (SIZE, SIZE), 3, (0.0,), (1.0,), ("quarter", "half", "three-quarters"))
    register_dataset("compdd-squares", info, lambda folder, split: square_images(AREAS, 4, 0 if split == "train" else 1),
                     replace=True)
    return "compdd-squares"


@pytest.fixture(scope="module")
def probe_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "probe.pt"
    torch.save(Probe(1, 3).state_dict(), path)
    return path


def test_fraction_of_a_known_map():
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, :, 0] = torch.tensor([0.5, 0.49, 1.0, 0.7])   # 3 of 16 pixels >= 0.5
    m[1] = 1.0
    assert high_activation_fraction(m).tolist() == [3 / 16, 1.0]
    assert high_activation_fraction(m, 0.75).tolist() == [1 / 16, 1.0]
    with pytest.raises(ValueError):
        high_activation_fraction(torch.zeros(4, 4))


def test_gradcam_of_the_probe_is_the_normalised_image():
    x, y = square_images(AREAS, 2)
    model = G.prepare_model(Probe(1, 3))
    names, layers = G.resolve_layers(model, None)
    assert names == ["relu"]
    maps = G.gradcam_maps(model, x, y, layers)
    lo, hi = x.flatten(1).amin(1).view(-1, 1, 1, 1), x.flatten(1).amax(1).view(-1, 1, 1, 1)
    assert torch.allclose(maps, (x - lo) / (hi - lo), atol=1e-6)
    assert high_activation_fraction(maps).tolist() == [a for a in AREAS for _ in range(2)]


def test_score_cli_gives_the_known_area_per_class(squares, probe_weights, tmp_path):
    out = tmp_path / "scores.csv"
    r = run_cli("compdd", "score", "--dataset", squares, "--model", "CompddProbe", "--weights", probe_weights,
                "--out", out, "--per-image", tmp_path / "img.csv", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["quarter", "half", "three-quarters"]
    assert [float(r["high_activation_fraction"]) for r in rows] == list(AREAS)
    assert [float(r["complexity"]) for r in rows] == [1 - a for a in AREAS]
    assert [int(r["images"]) for r in rows] == [4, 4, 4]
    assert len(list(csv.DictReader((tmp_path / "img.csv").open()))) == 12
    meta = json.loads(out.with_suffix(".json").read_text())
    assert "CompddProbe" in meta["model"] and meta["threshold"] == 0.5
    # select on these scores: easy = largest high-activation share
    cats = tmp_path / "cats.toml"
    cats.write_text('shapes = ["quarter", "half", "three-quarters"]\n')
    r = run_cli("compdd", "select", "--scores", out, "--categories", cats, "--size", "1", "--out", tmp_path / "s.json")
    assert r.code == 0, r.err
    sub = json.loads((tmp_path / "s.json").read_text())["subsets"]["shapes"]
    assert [e["name"] for e in sub["easy"]] == ["three-quarters"] and [e["name"] for e in sub["hard"]] == ["quarter"]


def test_stats_cli_numbers_and_png(squares, probe_weights, tmp_path):
    r = run_cli("compdd", "stats", "--dataset", squares, "--model", "CompddProbe", "--weights", probe_weights,
                "--out", tmp_path / "a.json", "--max-images", "12", "--bins", "4", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["images"] == 12 and a["high_activation_fraction"] == pytest.approx(0.5)
    # bright pixels map to 1, the noise to [0, 0.3): mean = area + noise share
    assert 0.5 < a["mean_activation"] < 0.5 + 0.5 * 0.3
    assert a["pixel_histogram"][2] == 0 and a["pixel_histogram"][3] == pytest.approx(0.5)
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "a-maps.png").is_file()
    r = run_cli("compdd", "stats", "--dataset", squares, "--model", "CompddProbe", "--weights", probe_weights,
                "--out", tmp_path / "b.json", "--compare", tmp_path / "a.json", "--png", tmp_path / "ab.png",
                "--max-images", "3", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    assert r.out.count("mean activation") == 2 and (tmp_path / "ab.png").is_file()


def _tiny_jpegs(root, wnids, n):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for w in wnids:
            (root / split / w).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(root / split / w / f"{k}.JPEG")


def test_prepare_score_select_on_an_imagenet_tree_with_resnet18(tmp_path):
    """The user's path: ImageNet tree -> prepared subset -> ResNet-18 (torchvision layout) scores -> subsets."""
    s = get_subset("imagenette")
    _tiny_jpegs(tmp_path / "in", s.wnids, 1)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tmp_path / "r18.pt")
    r = run_cli("data", "prepare", "--imagenet-root", tmp_path / "in", "--subset", "imagenette",
                "--out", tmp_path / "imagenette", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("compdd", "score", "--dataset", "imagenette", "--data-root", tmp_path, "--model", "resnet18",
                "--weights", tmp_path / "r18.pt", "--out", tmp_path / "sc.csv", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    rows = list(csv.DictReader((tmp_path / "sc.csv").open()))
    assert [r["wnid"] for r in rows] == list(s.wnids)
    assert [int(r["model_output"]) for r in rows] == list(s.indices)     # ImageNet outputs, not 0..9
    assert all(0 <= float(r["complexity"]) <= 1 for r in rows)
    # streaming straight from the tree scores the same images identically
    r = run_cli("compdd", "score", "--imagenet-root", tmp_path / "in", "--subset", "imagenette", "--model", "resnet18",
                "--weights", tmp_path / "r18.pt", "--out", tmp_path / "st.csv", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    streamed = list(csv.DictReader((tmp_path / "st.csv").open()))
    assert [float(a["complexity"]) for a in streamed] == pytest.approx([float(b["complexity"]) for b in rows], abs=1e-5)
    # an ImageFolder tree named by wnid maps its classes to the same ImageNet outputs
    r = run_cli("compdd", "score", "--dataset", f"imagefolder:{tmp_path / 'in'}", "--image-size", "32",
                "--weights", tmp_path / "r18.pt", "--out", tmp_path / "if.csv", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    folder = list(csv.DictReader((tmp_path / "if.csv").open()))
    assert sorted(int(r["model_output"]) for r in folder) == sorted(s.indices)

    cats = tmp_path / "c.toml"
    cats.write_text(f'a = {json.dumps(list(s.wnids[:5]))}\nb = {json.dumps(list(s.indices[5:]))}\n')
    r = run_cli("compdd", "select", "--scores", tmp_path / "sc.csv", "--categories", cats, "--size", "2",
                "--out", tmp_path / "sel.json")
    assert r.code == 0, r.err
    sel = json.loads((tmp_path / "sel.json").read_text())["subsets"]
    by = {r["wnid"]: float(r["complexity"]) for r in rows}
    for cat, members in (("a", s.wnids[:5]), ("b", s.wnids[5:])):
        ranked = sorted(members, key=lambda w: (by[w], w))
        assert [e["wnid"] for e in sel[cat]["easy"]] == ranked[:2]
        assert [e["wnid"] for e in sel[cat]["hard"]] == ranked[::-1][:2]


def test_select_rules_and_errors():
    rows = [{"wnid": f"n0{i}", "name": f"c{i}", "complexity": c, "high_activation_fraction": 1 - c, "images": 3}
            for i, c in enumerate([0.5, 0.2, 0.9, 0.2, 0.7])]
    warnings = []
    out = select(rows, {"k": ["n00", "n01", "n02", "n03", "n04", "n09"]}, size=2, warn=warnings.append)
    assert [e["wnid"] for e in out["k"]["easy"]] == ["n01", "n03"]      # tie broken by wnid
    assert [e["wnid"] for e in out["k"]["hard"]] == ["n02", "n04"]
    assert out["k"]["easy_complexity"] == pytest.approx(0.2) and out["k"]["hard_complexity"] == pytest.approx(0.8)
    assert len(warnings) == 1 and "n09" in warnings[0]
    warnings.clear()
    out = select(rows, {"k": ["n00", "n01", "n02"]}, size=2, warn=warnings.append)
    assert "share" in warnings[0]
    with pytest.raises(UsageError, match="fewer than the 4"):
        select(rows, {"k": ["n00"]}, size=4)


def test_default_categories_are_the_papers_eight():
    cats, where = load_categories()
    assert list(cats) == ["bird", "car", "dog", "fish", "snake", "insect", "round", "music"]
    assert all(len(v) == 20 for k, v in cats.items() if k != "music") and len(cats["music"]) == 19
    assert set(cats["bird"]) == set(get_subset("cdd-bird-hard").wnids) | set(get_subset("cdd-bird-easy").wnids)
    # scores that reproduce the paper's ranking give back the paper's subsets
    rows = []
    for cat in cats:
        hard, easy = get_subset(f"cdd-{cat}-hard"), get_subset(f"cdd-{cat}-easy")
        for rank, w in enumerate(dict.fromkeys(easy.wnids + hard.wnids)):
            rows.append({"wnid": w, "name": w, "complexity": rank / 20, "high_activation_fraction": 1 - rank / 20,
                         "images": 1})
    out = select(rows, cats, warn=lambda m: None)
    for cat, r in out.items():
        if cat != "music":
            assert r["published_overlap"] == {"easy": 10, "hard": 10}, cat


def test_user_errors_are_one_line(squares, probe_weights, tmp_path):
    cases = [
        (("compdd", "score", "--dataset", squares, "--model", "CompddProbe"), "needs --weights"),
        (("compdd", "score", "--dataset", squares, "--model", "resnet18"), "needs --weights"),
        (("compdd", "score", "--dataset", squares, "--model", "CompddProbe", "--weights", tmp_path / "x.pt"),
         "does not exist"),
        (("compdd", "score", "--dataset", squares, "--model", "CompddProbe", "--weights", probe_weights,
          "--layer", "nope"), "--layer 'nope'"),
        (("compdd", "score", "--dataset", squares, "--imagenet-root", tmp_path), "exactly one of"),
        (("compdd", "score", "--dataset", squares, "--subset", "imagenette", "--weights", probe_weights), "only applies"),
        (("compdd", "select", "--scores", tmp_path / "missing.csv"), "does not exist"),
        (("compdd", "stats", "--dataset", squares, "--model", "CompddProbe", "--weights", probe_weights,
          "--out", tmp_path / "s.json", "--compare", tmp_path / "none.json"), "does not exist"),
        (("compdd",), "needs an action"),
    ]
    for argv, message in cases:
        r = run_cli(*argv, "--device", "cpu", "--quiet") if argv[1:] and argv[1] != "select" else run_cli(*argv)
        assert r.code == 2, (argv, r.err)
        assert message in r.err and r.err.strip().count("\n") == 0, (argv, r.err)
    bad = tmp_path / "bad.toml"
    bad.write_text("bird = 3\n")
    with pytest.raises(UsageError, match="non-empty list"):
        load_categories(bad)
    torch.save(Probe(1, 5).state_dict(), tmp_path / "p5.pt")   # 5 outputs for 3 classes
    r = run_cli("compdd", "score", "--dataset", squares, "--model", "CompddProbe", "--weights", tmp_path / "p5.pt",
                "--device", "cpu", "--quiet", "--out", tmp_path / "o.csv")
    assert r.code == 2 and "does not fit" in r.err


def test_stats_with_a_buffer_expert_as_the_model(toy_dataset, toy_buffer, tmp_path):
    """--buffer: the activation model is an expert's final snapshot (the default G of DAE)."""
    r = run_cli("compdd", "stats", "--dataset", toy_dataset, "--buffer", toy_buffer, "--expert", "1",
                "--out", tmp_path / "s.json", "--max-images", "8", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["images"] == 8 and 0 < stats["mean_activation"] < 1 and "expert 1" in json.dumps(stats)
    r = run_cli("compdd", "stats", "--dataset", toy_dataset, "--buffer", toy_buffer, "--expert", "5",
                "--out", tmp_path / "t.json", "--device", "cpu", "--quiet")
    assert r.code == 2 and "--expert must be in [0, 2)" in r.err


# ---------------------------------------------------------------------------- localisation (datasets with boxes)


def test_localisation_of_known_maps():
    from ddtoolbox.compdd.stats import localisation

    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, 0, :2] = 1.0                                   # two hot pixels, both in the box
    maps[1, 0] = torch.arange(4.0).div(3).expand(4, 4)        # columns 0, 1/3, 2/3, 1
    maps[2] = 0.4                                             # constant: says nothing
    boxes = torch.tensor([[0, 0, 2, 1], [0, 0, 2, 4], [0, 0, 4, 4]])
    loc = localisation(maps, boxes)
    # map 1: mass in the left half = (0 + 1/3) / (0 + 1/3 + 2/3 + 1) = 1/6; above-mean (>= 0.5) pixels are
    # columns 2 and 3, none of them in the box
    assert loc["cam_mass_in_box"][:2].tolist() == pytest.approx([1.0, 1 / 6])
    assert loc["above_mean_in_box"][:2].tolist() == pytest.approx([1.0, 0.0])
    assert loc["box_area"].tolist() == pytest.approx([2 / 16, 0.5, 1.0])
    assert loc["constant"].tolist() == [False, False, True]
    assert torch.isnan(loc["cam_mass_in_box"][2]) and torch.isnan(loc["above_mean_in_box"][2])


def _boxed_images(offset, n_per_class=3, seed=0):
    """Black images with one bright rectangle; the box is the rectangle moved by ``offset`` pixels right."""
    g = torch.Generator().manual_seed(seed)
    x, y, boxes = [], [], []
    for c in range(2):
        for _ in range(n_per_class):
            img = torch.zeros(1, SIZE, SIZE)
            top, left = (int(v) for v in torch.randint(0, SIZE - 6, (2,), generator=g))
            img[:, top:top + 4, left:left + 6] = 1.0
            x.append(img)
            y.append(c)
            boxes.append([left + offset, top, left + 6 + offset, top + 4])
    return torch.stack(x), torch.tensor(y), {"boxes": torch.tensor(boxes).clamp(0, SIZE)}


@pytest.mark.parametrize("offset, inside", [(0, 1.0), (6, 0.0)])
def test_stats_cli_reports_the_localisation_of_datasets_with_boxes(tmp_path, toy_dataset, offset, inside):
    name = f"compdd-boxed-{offset}"
    register_dataset(name, DatasetInfo(name, 1, (SIZE, SIZE), 2, (0.0,), (1.0,), ("a", "b")),
                     lambda folder, split: _boxed_images(offset), replace=True)
    torch.save(Probe(1, 2).state_dict(), tmp_path / "probe.pt")
    r = run_cli("compdd", "stats", "--dataset", name, "--model", "CompddProbe", "--weights", tmp_path / "probe.pt",
                "--out", tmp_path / "s.json", "--examples", "0", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    loc = json.loads((tmp_path / "s.json").read_text())["localisation"]
    # the probe's map is the image: all its mass and all above-mean pixels are on the rectangle
    assert loc["images"] == 6 and loc["constant_maps"] == 0
    assert loc["cam_mass_in_box"] == pytest.approx(inside) and loc["above_mean_in_box"] == pytest.approx(inside)
    assert 0 < loc["box_area"] <= 24 / SIZE ** 2
    assert "in the object box" in r.out
    # a dataset without boxes has no localisation
    torch.save(Probe(1, 4).state_dict(), tmp_path / "probe4.pt")
    r = run_cli("compdd", "stats", "--dataset", toy_dataset, "--model", "CompddProbe", "--weights",
                tmp_path / "probe4.pt", "--out", tmp_path / "t.json", "--examples", "0", "--device", "cpu", "--quiet",
                "--max-images", "8")
    assert r.code == 0, r.err
    assert "localisation" not in json.loads((tmp_path / "t.json").read_text())
