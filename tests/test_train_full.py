"""Full-data training, the stored full-data accuracies, and recovery ratios."""

import json
import re

import pytest
import torch

from ddtoolbox.errors import UsageError
from ddtoolbox.evaluate import format_recovery, recovery_ratio
from ddtoolbox.full_results import default_store_path, lookup_full, read_store, result_key, store_full


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DDTOOL_HOME", str(tmp_path / "home"))


def test_recovery_ratio_arithmetic():
    assert recovery_ratio(0.72, 0.9) == pytest.approx(0.8)
    assert recovery_ratio(0.8538, 0.935) == pytest.approx(0.913155, rel=1e-5)
    assert recovery_ratio(0.5, None) is None
    assert format_recovery(recovery_ratio(0.72, 0.9)) == "recovery 80.0%"
    assert format_recovery(2 / 3) == "recovery 66.7%"
    assert format_recovery(None) == ""
    with pytest.raises(UsageError, match="train-full"):
        recovery_ratio(0.5, 0.0)


def test_store_keys_fill_in_defaults_and_spellings(tmp_path):
    path = tmp_path / "full.json"
    result = {"mean": 0.9, "std": 0.01, "runs": [0.89, 0.91]}
    store_full(path, "fashion-mnist", "ConvNetD3", {"width": 128}, result, {"epochs": 50})
    for model, options in [("ConvNet", {}), ("convnet", {"norm": "instancenorm"}), ("ConvNetD3", {"depth": 3})]:
        assert lookup_full(path, "fashion-mnist", model, options)["mean"] == 0.9
    assert lookup_full(path, "fashion-mnist", "ConvNet", {"width": 64}) is None
    assert lookup_full(path, "fashion-mnist", "ConvNetD4", {}) is None
    assert lookup_full(path, "mnist", "ConvNet", {}) is None
    assert result_key("d", "vgg11", {}) == result_key("d", "VGG11", {"width": 64, "norm": "instancenorm"})
    store_full(path, "fashion-mnist", "VGG11", {}, {"mean": 0.8, "std": 0, "runs": [0.8]}, {})
    assert len(read_store(path)["results"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["full.json"]   # atomic: no temporary files left
    # images made another way are another entry; plain images keep the keys stored before they were recorded
    assert lookup_full(path, "fashion-mnist", "ConvNet", {}, {"resize": None, "zca": False})["mean"] == 0.9
    for images in ({"zca": True}, {"resize": "squash"}, {"resize": "crop", "zca": True}):
        assert lookup_full(path, "fashion-mnist", "ConvNet", {}, images) is None
    keys = {result_key("d", "ConvNet", {}, {"resize": r, "zca": z}) for r in (None, "squash", "crop") for z in (False, True)}
    assert len(keys) == 6


def test_store_location_and_bad_store(tmp_path, monkeypatch):
    assert default_store_path() == tmp_path / "home" / "full-data.json"
    monkeypatch.delenv("DDTOOL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "ddtoolbox" / "full-data.json"
    assert lookup_full(tmp_path / "missing.json", "x", "ConvNet", {}) is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        lookup_full(tmp_path / "bad.json", "x", "ConvNet", {})
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(UsageError, match="not a ddtoolbox full-data"):
        lookup_full(tmp_path / "other.json", "x", "ConvNet", {})


def test_train_full_stores_accuracy_saves_teacher_and_eval_prints_recovery(ddtool, toy_dataset, tmp_path):
    from ddtoolbox.data import load_dataset
    from ddtoolbox.teacher import load_teacher
    from ddtoolbox.losses import accuracy

    r = ddtool("train-full", "--dataset", toy_dataset, "--model", "convnet", "--width", "8", "--epochs", "4",
               "--lr", "0.05", "--device", "cpu", "--quiet", "--save-model", tmp_path / "t.pt",
               "--json", tmp_path / "full.json")
    assert r.code == 0, r.err
    store = tmp_path / "home" / "full-data.json"
    assert str(store) in r.out
    entry = json.loads((tmp_path / "full.json").read_text())
    assert entry["model"] == "ConvNet" and entry["model_options"]["width"] == 8 and entry["epochs"] == 4
    assert lookup_full(store, toy_dataset, "ConvNet", {"width": 8})["mean"] == entry["mean"] > 0.5

    test_set = load_dataset(toy_dataset, "test")
    teacher, meta = load_teacher(tmp_path / "t.pt", test_set.info, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert accuracy(teacher, test_set.images, test_set.labels) == pytest.approx(entry["mean"])
    assert meta["test_accuracy"] == pytest.approx(entry["mean"]) and meta["dataset"] == toy_dataset

    r = ddtool("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--model", "ConvNet", "AlexNet",
               "--width", "8", "--runs", "2", "--epochs", "10", "--lr", "0.05", "--device", "cpu", "--quiet",
               "--json", tmp_path / "e.json")
    assert r.code == 0, r.err
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["full_accuracy"] == entry["mean"]
    assert out["recovery"] == pytest.approx(out["mean"] / entry["mean"])
    printed = re.search(r"recovery (\d+\.\d)%", r.out.splitlines()[0])
    assert printed and float(printed.group(1)) == pytest.approx(out["recovery"] * 100, abs=0.051)
    assert out["results"][1]["full_accuracy"] is None and out["results"][1]["recovery"] is None
    assert "recovery" not in r.out.splitlines()[1]   # no AlexNet full-data accuracy stored

    # --full-results points elsewhere: nothing there, so no recovery
    r = ddtool("eval", "--random-ipc", "2", "--dataset", toy_dataset, "--width", "8", "--runs", "1",
               "--epochs", "2", "--device", "cpu", "--quiet", "--full-results", tmp_path / "empty.json")
    assert r.code == 0 and "recovery" not in r.out


def test_train_full_bad_input(ddtool, toy_dataset, tmp_path):
    r = ddtool("train-full", "--dataset", toy_dataset, "--model", "ResNet99", "--device", "cpu")
    assert r.code == 2 and "unknown model 'ResNet99'" in r.err
    r = ddtool("train-full", "--dataset", toy_dataset, "--model", "AlexNet", "--pooling", "maxpool", "--device", "cpu")
    assert r.code == 2 and "ConvNet family only" in r.err
    r = ddtool("train-full", "--dataset", toy_dataset, "--model", "VGG11", "--device", "cpu")
    assert r.code == 2 and "at least 28 pixels" in r.err   # the toy images are 16 px
