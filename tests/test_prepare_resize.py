"""``ddtool data prepare --resize squash|crop``: what each does, that it is recorded, and that mixes are refused."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.data import clear_cache, load_dataset
from ddtoolbox.data.imagenet_subsets import get_subset
from ddtoolbox.data.prepare import transform_image
from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors, save_tensors

GREEN = (0, 255, 0)


def _wide(path, height=30, width=60, stripe=12):
    """A wide image: grey, with a green stripe along its left edge (the part a centre crop cuts off)."""
    arr = np.full((height, width, 3), 128, dtype=np.uint8)
    arr[:, :stripe] = GREEN
    Image.fromarray(arr).save(path, quality=95)


def _tree(root, wnids, n=1):
    for split in ("train", "val"):
        for w in wnids:
            (root / split / w).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                _wide(root / split / w / f"{w}_{k}.JPEG")
    return root


def _green(img):   # (3, H, W) uint8 -> share of clearly green pixels in each column
    r, g, b = (img[c].astype(int) for c in range(3))
    return ((g > 200) & (r < 80) & (b < 80)).mean(0)


def test_squash_keeps_the_whole_image_crop_cuts_the_sides(tmp_path):
    _wide(tmp_path / "w.jpg")
    squashed = transform_image(tmp_path / "w.jpg")                 # default: squash
    cropped = transform_image(tmp_path / "w.jpg", resize="crop")
    assert squashed.shape == cropped.shape == (3, 128, 128)
    # squash: the stripe is 12 of 60 columns -> about 0.2 * 128 = 25.6 columns, all rows
    columns = _green(squashed)
    assert 23 <= (columns > 0.9).sum() <= 27 and columns[:20].min() > 0.9
    # crop: 30 x 60 -> 128 x 256, centre 128 columns start at 64 > the stripe's 51: no green at all
    assert _green(cropped).max() == 0
    with pytest.raises(UsageError, match="--resize"):
        transform_image(tmp_path / "w.jpg", resize="stretch")


def test_prepare_records_the_choice_and_the_dataset_carries_it(tmp_path):
    s = get_subset("imagenette")
    root = _tree(tmp_path / "in", s.wnids)
    for mode in ("squash", "crop"):
        args = ["data", "prepare", "--imagenet-root", root, "--subset", "imagenette", "--out", tmp_path / mode, "--quiet"]
        r = run_cli(*args, *(["--resize", mode] if mode == "crop" else []))
        assert r.code == 0, r.err
        assert json.loads((tmp_path / mode / "meta.json").read_text())["resize"] == mode
        for split in ("train", "test"):
            clear_cache()
            ds = load_dataset("imagenette", split, tmp_path / mode)
            assert ds.info.resize == mode
        green = (ds.images[0, 1] > 1.5) & (ds.images[0, 0] < 0)      # normalised: G high, R low
        assert green.any() == (mode == "squash")
    r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "imagenette", "--out", tmp_path / "x",
                "--resize", "pad")
    assert r.code == 2 and "--resize" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_cache_without_the_record_is_refused(tmp_path):
    s = get_subset("imagenette")
    root = _tree(tmp_path / "in", s.wnids)
    r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "imagenette", "--out", tmp_path / "old", "--quiet")
    assert r.code == 0, r.err
    path = tmp_path / "old" / "train.pt"
    data = load_tensors(path, "", "")
    del data["meta"]["resize"]                       # what an older ddtoolbox wrote
    save_tensors(path, data)
    clear_cache()
    with pytest.raises(UsageError, match="does not record how its images were resized.*--resize squash"):
        load_dataset("imagenette", "train", tmp_path / "old")
    r = run_cli("eval", "--random-ipc", "1", "--dataset", "imagenette", "--data-root", tmp_path / "old",
                "--device", "cpu", "--runs", "1", "--epochs", "1", "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "--resize" in r.err, r.err


def test_buffers_and_synthetic_sets_refuse_the_other_resize(tmp_path):
    s = get_subset("imagenette")
    root = _tree(tmp_path / "in", s.wnids, n=2)
    for mode in ("squash", "crop"):
        r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "imagenette", "--out",
                    tmp_path / mode / "imagenette", "--resize", mode, "--quiet")
        assert r.code == 0, r.err
    clear_cache()
    net = ("--model", "ConvNetD5", "--width", "4")
    r = run_cli("buffer", "--dataset", "imagenette", "--data-root", tmp_path / "squash", "--out", tmp_path / "buf",
                *net, "--num-experts", "1", "--epochs", "2", "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "buf" / "buffer.json").read_text())["resize"] == "squash"
    distill = ("distill", "--dataset", "imagenette", "--buffer", tmp_path / "buf", "--ipc", "1", "--iterations", "1",
               "--syn-steps", "1", "--expert-epochs", "1", "--max-start-epoch", "1", "--device", "cpu", "--quiet")
    r = run_cli(*distill, "--data-root", tmp_path / "crop", "--out", tmp_path / "bad")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "--resize squash" in r.err and "--resize crop" in r.err
    r = run_cli(*distill, "--data-root", tmp_path / "squash", "--out", tmp_path / "run")
    assert r.code == 0, r.err
    meta = load_tensors(tmp_path / "run" / "synthetic.pt", "", "")["meta"]
    assert meta["resize"] == "squash"
    evaluate = ("eval", "--synthetic", tmp_path / "run" / "synthetic.pt", "--runs", "1", "--epochs", "1",
                "--device", "cpu", "--quiet")
    r = run_cli(*evaluate, "--data-root", tmp_path / "crop")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "--resize squash" in r.err, r.err
    r = run_cli(*evaluate, "--data-root", tmp_path / "squash", "--json", tmp_path / "e.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "e.json").read_text())["resize"] == "squash"
