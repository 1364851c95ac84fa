"""``ddtool export`` in each format, and each read back: by ddtoolbox, by ``datasets`` and by plain torch."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddtoolbox.evaluate import load_synthetic
from ddtoolbox.io import save_tensors
from ddtoolbox.testing import TOY_CLASSES, toy_images

ROOT = Path(__file__).resolve().parents[1]
EVAL = ("--runs", "1", "--epochs", "2", "--device", "cpu", "--quiet", "--threads", "1")


@pytest.fixture
def soft_set(toy_dataset, tmp_path):
    """A published-looking set with learned logits and a learned lr, as DATM writes it."""
    from ddtoolbox.data import load_dataset

    info = load_dataset(toy_dataset, "train").info
    images, labels = toy_images(3, seed=7)
    images = (images - 0.3) / 0.3 * 1.7            # outside [0, 1] in pixel space, as optimised images drift
    run = tmp_path / "run"
    run.mkdir()
    record = {"images": images, "labels": labels, "lr": torch.tensor(0.0123),
              "targets": F.one_hot(labels, TOY_CLASSES).float() * 3 + 0.25,
              "meta": {"dataset": toy_dataset, "model": "ConvNet", "model_options": {"width": 8}, "matcher": "datm",
                       "ipc": 3, "channels": 1, "image_size": [16, 16], "num_classes": TOY_CLASSES,
                       "class_names": list(info.class_names), "mean": [0.3], "std": [0.3], "plugins": ["datm"],
                       "resize": None, "zca": False}}
    save_tensors(run / "synthetic.pt", record)
    (run / "eval.json").write_text(json.dumps({"mean": 0.75, "std": 0.05, "runs": [0.7, 0.8], "protocol": "soft",
                                               "model": "ConvNet", "epochs": 300, "accuracy": "final"}))
    return run, record


def _same(a, b):
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(a["targets"], b["targets"]) and float(a["lr"]) == pytest.approx(float(b["lr"]))
    assert a["meta"]["ipc"] == b["meta"]["ipc"] and a["meta"]["model_options"] == b["meta"]["model_options"]


def test_mtt_triple_round_trip(ddtool, soft_set, tmp_path):
    run, record = soft_set
    r = ddtool("export", run, "--format", "mtt", "--out", tmp_path / "mtt")
    assert r.code == 0, r.err
    # MTT's files are bare tensors: the learned logits as labels, a 0-d lr
    labels = torch.load(tmp_path / "mtt" / "labels_best.pt", weights_only=True)
    assert torch.equal(labels, record["targets"])
    assert torch.load(tmp_path / "mtt" / "lr_best.pt", weights_only=True).dim() == 0
    _same(load_synthetic(tmp_path / "mtt"), record)
    r = ddtool("eval", "--synthetic", tmp_path / "mtt", *EVAL)
    assert r.code == 0 and "(soft protocol)" in r.out, r.err


def test_a_foreign_mtt_triple_needs_the_dataset_and_takes_class_order(ddtool, toy_dataset, tmp_path):
    images, _ = toy_images(2, seed=3)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(torch.randn(len(images), TOY_CLASSES), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.02), tmp_path / "lr_best.pt")
    r = ddtool("eval", "--synthetic", tmp_path, *EVAL)
    assert r.code == 2 and "--dataset" in r.err
    rec = load_synthetic(tmp_path / "images_best.pt", dataset=toy_dataset)
    assert rec["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and rec["meta"]["ipc"] == 2
    r = ddtool("eval", "--synthetic", tmp_path, "--dataset", toy_dataset, "--width", "8", *EVAL)
    assert r.code == 0, r.err


def test_imagefolder_tree(ddtool, soft_set, tmp_path):
    from PIL import Image

    run, record = soft_set
    r = ddtool("export", run / "synthetic.pt", "--format", "imagefolder", "--out", tmp_path / "tree")
    assert r.code == 0, r.err
    folders = sorted(p.name for p in (tmp_path / "tree").iterdir() if p.is_dir())
    assert folders == [f"quadrant-{i}" for i in range(TOY_CLASSES)]
    pngs = sorted((tmp_path / "tree" / "quadrant-2").glob("*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png"]
    # the first image of class 2, back in pixel space: clamped, 8-bit
    first = record["images"][record["labels"] == 2][0, 0] * 0.3 + 0.3
    png = torch.from_numpy(np.asarray(Image.open(pngs[0]), dtype=np.float32)) / 255
    assert (png - first.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
    r = ddtool("export", run, "--format", "imagefolder", "--out", tmp_path / "tree")
    assert r.code == 2 and "--overwrite" in r.err


def test_hf_folder_loads_with_datasets_offline_and_reads_back(ddtool, soft_set, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    run, record = soft_set
    r = ddtool("export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert r.code == 0, r.err
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\n") and "- dataset-distillation\n- ipc-3\n" in card
    assert "75.00 ± 5.00%" in card and "0.0123" in card and "| matcher | `\"datm\"` |" in card
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 3 * TOY_CLASSES and ds.features["label"].names[0] == "quadrant-0"
    assert ds[0]["image"].size == (16, 16)
    t = ds.with_format("torch")[:]
    assert torch.equal(t["pixels"].reshape(-1, 1, 16, 16), record["images"])
    assert torch.equal(t["soft_label"], record["targets"]) and t["label"].tolist() == record["labels"].tolist()
    _same(load_synthetic(tmp_path / "hf"), record)
    r = ddtool("eval", "--synthetic", tmp_path / "hf", *EVAL)
    assert r.code == 0 and "(soft protocol)" in r.out, r.err


def test_a_foreign_hf_folder_is_decoded_from_its_pngs(ddtool, soft_set, toy_dataset, tmp_path):
    pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    run, record = soft_set
    assert ddtool("export", run, "--format", "hf", "--out", tmp_path / "hf").code == 0
    table = pq.read_table(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pq.write_table(table.select(["image", "label"]), foreign / "train.parquet")
    rec = load_synthetic(foreign, dataset=toy_dataset)
    pixels = (record["images"] * 0.3 + 0.3).clamp(0, 1)
    assert ((rec["images"] * 0.3 + 0.3) - pixels).abs().max() <= 0.5 / 255 + 1e-6
    assert "targets" not in rec and float(rec["lr"]) == pytest.approx(0.01)


def test_the_torch_only_example_trains_on_an_exported_triple(ddtool, soft_set, tmp_path, monkeypatch, capsys):
    import runpy

    run, _ = soft_set
    assert ddtool("export", run, "--format", "mtt", "--out", tmp_path / "mtt").code == 0
    script = ROOT / "examples" / "load_mtt_triple.py"
    source = script.read_text()
    assert len(source.splitlines()) <= 25 and "ddtoolbox" not in source.replace("images_best", "")
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "mtt"), "5"])
    runpy.run_path(str(script), run_name="__main__")
    assert "trained on 12 images for 5 epochs at lr 0.0123" in capsys.readouterr().out


def test_a_run_folder_as_the_set_names_its_synthetic_pt(ddtool, soft_set):
    run, _ = soft_set
    r = ddtool("eval", "--synthetic", run, *EVAL)
    assert r.code == 2 and f"{run / 'synthetic.pt'}" in r.err and r.err.count("\n") == 1
