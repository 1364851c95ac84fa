"""cpd and dae through ``ddtool distill`` on the toy dataset and buffer (ddtoolbox.testing fixtures)."""

import json
from pathlib import Path

import pytest
import torch

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.testing import TOY_DISTILL


def _distill(ddtool, toy_dataset, toy_buffer, out, *extra, iterations=3):
    return ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out,
                  "--iterations", iterations, "--matcher", "mtt", *TOY_DISTILL, *extra)


def _history(out):
    return json.loads((Path(out) / "metrics.json").read_text())["history"]


def _images(out):
    return torch.load(Path(out) / "synthetic.pt", weights_only=True)["images"]


@pytest.fixture(scope="module")
def base_run(toy_dataset, toy_buffer, tmp_path_factory):
    """A plain MTT run of 2 iterations, the reference for the bit-for-bit comparisons."""
    out = tmp_path_factory.mktemp("edf-base")
    r = _distill(run_cli, toy_dataset, toy_buffer, out, iterations=2)
    assert r.code == 0, r.err
    return out


def test_cpd_and_dae_together(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--plugin", "cpd", "--plugin", "dae",
                 "--cpd-alpha", "0.25", "--dae-every", "2", "--dae-beta", "2")
    assert r.code == 0, r.err
    assert "cpd" in r.out and "dae" in r.out
    pngs = sorted(p.name for p in (tmp_path / "dae").glob("*.png"))
    assert pngs == ["maps_final.png", "maps_it000000.png", "maps_it000002.png"]
    hist = _history(tmp_path)
    assert [h["iteration"] for h in hist if "dae_area" in h] == [0, 2]
    assert all(0 < h["dae_area"] < 1 for h in hist if "dae_area" in h)
    assert 0 < hist[-1]["dae_area_final"] < 1
    # CPD logs the un-dropped loss; the reduced loss over the kept terms is larger
    assert all(h["loss"] > h["cpd_full_loss"] for h in hist)
    meta = torch.load(tmp_path / "synthetic.pt", weights_only=True)["meta"]
    assert set(meta["plugins"]) == {"cpd", "dae", "mtt"}


def test_cpd_alpha_zero_equals_no_plugin(ddtool, toy_dataset, toy_buffer, tmp_path, base_run):
    cpd0 = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "cpd0", "--plugin", "cpd", iterations=2)
    assert cpd0.code == 0, cpd0.err
    assert torch.equal(_images(base_run), _images(tmp_path / "cpd0"))
    assert [h["loss"] for h in _history(base_run)] == [h["loss"] for h in _history(tmp_path / "cpd0")]


def test_dae_with_unit_weights_changes_nothing(ddtool, toy_dataset, toy_buffer, tmp_path, base_run):
    """beta 0 and threshold 1: only each map's maximum (M = 1) is enhanced, to weight 0 + 1 = 1.

    So the run must equal the plain run bit for bit: DAE draws nothing from the run's random
    streams and touches nothing but the gradient.
    """
    unit = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "unit", "--plugin", "dae", "--dae-beta", "0",
                    "--dae-threshold", "1", "--dae-every", "1", iterations=2)
    assert unit.code == 0, unit.err
    assert torch.equal(_images(base_run), _images(tmp_path / "unit"))
    active = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "dae", "--plugin", "dae", iterations=2)
    assert active.code == 0, active.err
    assert not torch.equal(_images(base_run), _images(tmp_path / "dae"))


def test_dae_measure_only_logs_the_area_and_changes_nothing(ddtool, toy_dataset, toy_buffer, tmp_path, base_run):
    """--dae-measure-only: maps and dae_area at each refresh, the run itself bit for bit the plain one."""
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "measure", "--plugin", "dae", "--dae-measure-only",
                 "--dae-every", "1", "--dae-beta", "2", iterations=2)
    assert r.code == 0, r.err
    base = torch.load(base_run / "synthetic.pt", weights_only=True)
    measured = torch.load(tmp_path / "measure" / "synthetic.pt", weights_only=True)
    for key in ("images", "labels", "lr"):
        assert torch.equal(base[key], measured[key]), key
    assert [h["loss"] for h in _history(base_run)] == [h["loss"] for h in _history(tmp_path / "measure")]
    hist = _history(tmp_path / "measure")
    assert [h["iteration"] for h in hist if "dae_area" in h] == [0, 1]
    assert all(0 < h["dae_area"] < 1 for h in hist if "dae_area" in h) and 0 < hist[-1]["dae_area_final"] < 1
    assert sorted(p.name for p in (tmp_path / "measure" / "dae").glob("*.png")) == \
        ["maps_final.png", "maps_it000000.png", "maps_it000001.png"]
    # the same settings without --dae-measure-only do change the images
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "weighted", "--plugin", "dae", "--dae-every", "1",
                 "--dae-beta", "2", iterations=2)
    assert r.code == 0, r.err
    assert not torch.equal(base["images"], _images(tmp_path / "weighted"))


def test_dae_with_a_torchvision_model_and_class_map(ddtool, toy_dataset, toy_buffer, tmp_path, monkeypatch):
    """A 1000-way torchvision ResNet-18 as G: each toy class is asked for its mapped output."""
    import torchvision
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    seen = []
    original = LayerGradCam.attribute

    def spy(self, inputs, target=None, **kw):
        seen.append(target.tolist())
        return original(self, inputs, target=target, **kw)

    monkeypatch.setattr(LayerGradCam, "attribute", spy)
    common = ("--plugin", "dae", "--dae-model", "resnet18", "--dae-weights", weights, "--dae-every", "5")
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "run", *common, "--dae-class-map", "5,17,300,999",
                 "--dae-layer", "layer3", iterations=1)
    assert r.code == 0, r.err
    # TOY_DISTILL has --ipc 2: labels 0,0,1,1,2,2,3,3
    assert seen[0] == [5, 5, 17, 17, 300, 300, 999, 999]
    # without a class map, a 1000-way model is refused instead of silently using outputs 0..3
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "nomap", *common, iterations=1)
    assert r.code == 2 and "--dae-class-map" in r.err


def test_dae_with_a_network_saved_by_train_full(ddtool, toy_dataset, toy_buffer, tmp_path, monkeypatch):
    """G can be any ddtoolbox network trained on the data ('train-full --save-model'), not only an
    expert: its own architecture and default layer are used, and a file for other data is refused."""
    from captum.attr import LayerGradCam

    saved = tmp_path / "g.pt"
    r = ddtool("train-full", "--dataset", toy_dataset, "--model", "ResNet18", "--width", "4", "--epochs", "1",
               "--device", "cpu", "--quiet", "--save-model", saved, "--full-results", tmp_path / "full.json")
    assert r.code == 0, r.err
    seen = []
    original = LayerGradCam.attribute

    def spy(self, inputs, target=None, **kw):
        seen.append((type(self.forward_func).__name__, self.layer))
        return original(self, inputs, target=target, **kw)

    monkeypatch.setattr(LayerGradCam, "attribute", spy)
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "run", "--plugin", "dae", "--dae-model", saved,
                 "--dae-every", "1", iterations=2)
    assert r.code == 0, r.err
    assert len(seen) == 3 and all(name == "ResNet18" for name, _ in seen)   # iterations 0, 1 and the final maps
    assert {id(layer) for _, layer in seen} == {id(seen[0][1])}     # one G, built once, its last block
    assert not torch.equal(_images(tmp_path / "run"), _images(_distill_expert_g(ddtool, toy_dataset, toy_buffer,
                                                                                  tmp_path / "expert")))
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "w", "--plugin", "dae", "--dae-model", saved,
                 "--dae-weights", saved, iterations=1)
    assert r.code == 2 and "drop --dae-weights" in r.err
    other = tmp_path / "other.pt"
    record = torch.load(saved, weights_only=True)
    torch.save({**record, "dataset": "fashion-mnist"}, other)
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "o", "--plugin", "dae", "--dae-model", other, iterations=1)
    assert r.code == 2 and "DAE activation model" in r.err and "fashion-mnist" in r.err and "--dae-model" in r.err
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "m", "--plugin", "dae", "--dae-model",
                 tmp_path / "missing.pt", iterations=1)
    assert r.code == 2 and "missing.pt" in r.err and "does not exist" in r.err


def _distill_expert_g(ddtool, toy_dataset, toy_buffer, out):
    r = _distill(ddtool, toy_dataset, toy_buffer, out, "--plugin", "dae", "--dae-every", "1", iterations=2)
    assert r.code == 0, r.err
    return out


@pytest.mark.parametrize("flags, option", [
    (("--plugin", "cpd", "--cpd-alpha", "1.0"), "--cpd-alpha"),
    (("--plugin", "cpd", "--cpd-alpha", "-0.5"), "--cpd-alpha"),
    (("--plugin", "dae", "--dae-beta", "-1"), "--dae-beta"),
    (("--plugin", "dae", "--dae-layer", "features.99"), "--dae-layer"),
    (("--plugin", "dae", "--dae-every", "0"), "--dae-every"),
    (("--plugin", "dae", "--dae-threshold", "2"), "--dae-threshold"),
    (("--plugin", "dae", "--dae-model", "notanet"), "--dae-model"),
    (("--plugin", "dae", "--dae-model", "resnet18"), "--dae-weights"),
    (("--plugin", "dae", "--dae-model", "resnet18", "--dae-weights", "/nonexistent/r18.pt"), "--dae-weights"),
    (("--plugin", "dae", "--dae-expert", "7"), "--dae-expert"),
    (("--plugin", "dae", "--dae-class-map", "1,2"), "--dae-class-map"),
])
def test_bad_options_exit_2_with_one_line(ddtool, toy_dataset, toy_buffer, tmp_path, flags, option):
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path, *flags, iterations=1)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], r.err
    assert not (tmp_path / "synthetic.pt").exists()


def test_corrupt_weights_file(ddtool, toy_dataset, toy_buffer, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint")
    r = _distill(ddtool, toy_dataset, toy_buffer, tmp_path / "out", "--plugin", "dae", "--dae-model", "resnet18",
                 "--dae-weights", bad, iterations=1)
    assert r.code == 2 and "corrupt" in r.err and len(r.err.strip().splitlines()) == 1


def test_options_are_listed(ddtool):
    r = ddtool("plugins")
    assert r.code == 0
    assert "--cpd-alpha" in r.out and "--dae-beta" in r.out and "--dae-class-map" in r.out
