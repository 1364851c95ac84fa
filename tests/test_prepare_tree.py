"""``ddtool data prepare --source TREE --dataset NAME``: class-folder trees become stores that record
where they came from, bad trees get one line each, and a result made on one copy is refused on another."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.data import clear_cache, load_dataset
from ddtoolbox.data.imagenet_subsets import get_subset
from ddtoolbox.data.info import CIFAR10_CLASSES
from ddtoolbox.data.store import content_id
from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors, save_tensors

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _image(path, size=(32, 32), seed=0, grey=False):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    (im.convert("L") if grey else im).save(path)


def cifar_tree(root, n_train=2, n_test=1, classes=CIFAR10_CLASSES, test_dir="test", size=(32, 32)):
    """CIFAR-10's class-folder layout, PNG (lossless, so the stored pixels can be checked)."""
    for split, n in (("train", n_train), (test_dir, n_test)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                _image(d / f"{k:04d}.png", size, seed=hash((split, c, k)) % 2**32, grey=(split == "train" and c == 3 and k == 0))
    return root


def one_line(r):
    return r.code == 2 and len(r.err.strip().splitlines()) == 1


def prepare(*args):
    return run_cli("data", "prepare", "--quiet", "--workers", "2", *args)


def test_a_cifar10_tree_becomes_a_store_that_cifar10_loads(tmp_path):
    tree = cifar_tree(tmp_path / "tree")
    r = prepare("--source", tree, "--dataset", "cifar10", "--data-root", tmp_path / "dd")
    assert r.code == 0, r.err
    assert "20 train and 10 test images" in r.out and "1 greyscale converted" in r.out
    meta = json.loads((tmp_path / "dd" / "cifar10" / "meta.json").read_text())
    assert meta["source"] == {"kind": "class-folder tree", "path": str(tree.resolve())}
    assert meta["images_per_class"] == {"train": [2] * 10, "test": [1] * 10}
    assert meta["greyscale_converted"] == {"train": 1, "test": 0}
    assert meta["image_size"] == [32, 32] and meta["resize"] is None
    ds = load_dataset("cifar10", "train", tmp_path / "dd")
    assert ds.info.source == meta["content_id"] and ds.info.class_names == CIFAR10_CLASSES
    # the pixels are the files' pixels (PNG is lossless), normalised with CIFAR-10's constants
    first = np.array(Image.open(tree / "train" / "airplane" / "0000.png").convert("RGB"))
    back = ds.images[0] * torch.tensor(ds.info.std).view(3, 1, 1) + torch.tensor(ds.info.mean).view(3, 1, 1)
    assert torch.allclose(back * 255, torch.from_numpy(first).permute(2, 0, 1).float(), atol=1e-3)
    # the greyscale image was converted: its three channels are equal
    grey = ds.images[ds.labels == 3][0] * torch.tensor(ds.info.std).view(3, 1, 1) + torch.tensor(ds.info.mean).view(3, 1, 1)
    assert torch.allclose(grey[0], grey[1], atol=1e-5) and torch.allclose(grey[1], grey[2], atol=1e-5)


def test_an_imagenet_subset_tree_with_class_name_folders_at_any_size(tmp_path):
    s = get_subset("imagenette")
    names = list(s.class_names)
    tree = tmp_path / "tree"
    for split in ("train", "val"):
        # folders by class name for half the classes, by wnid for the rest; listed in another order
        for i in reversed(range(10)):
            d = tree / split / (names[i].replace("_", " ") if i % 2 else s.wnids[i])
            d.mkdir(parents=True)
            _image(d / "a.JPEG", size=(40, 24), seed=i)
    r = prepare("--source", tree, "--dataset", "imagenette", "--size", "16", "--out", tmp_path / "in16")
    assert r.code == 0, r.err
    ds = load_dataset("imagenette", "test", tmp_path / "in16")
    assert ds.info.image_size == (16, 16) and ds.images.shape == (10, 3, 16, 16)
    assert ds.labels.tolist() == list(range(10))          # label i is the published class i
    assert ds.info.resize == "squash" and ds.info.source.startswith("sha256:")


@pytest.mark.parametrize("breakage, expected", [
    ("missing", "lacks class folder(s): truck"),
    ("empty", "no images in train/truck"),
    ("stray", "not classes of cifar10: zebra"),
    ("truncated", "unreadable or truncated image(s): "),
    ("odd-size", "not 32x32 like the first"),
    ("no-test", "no val/ or test/ folder"),
])
def test_bad_trees_get_one_line_naming_the_problem(tmp_path, breakage, expected):
    tree = cifar_tree(tmp_path / "tree")
    if breakage == "missing":
        for f in (tree / "train" / "truck").iterdir():
            f.unlink()
        (tree / "train" / "truck").rmdir()
    elif breakage == "empty":
        for f in (tree / "train" / "truck").iterdir():
            f.unlink()
    elif breakage == "stray":
        (tree / "train" / "zebra").mkdir()
    elif breakage == "truncated":
        bad = tree / "train" / "cat" / "0001.png"
        bad.write_bytes(bad.read_bytes()[:60])
        expected += str(bad)
    elif breakage == "odd-size":
        _image(tree / "test" / "dog" / "0000.png", size=(30, 32))
        expected = f"{tree / 'test' / 'dog' / '0000.png'} (30x32)"
    elif breakage == "no-test":
        for f in sorted(tree.joinpath("test").rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        tree.joinpath("test").rmdir()
        expected = "no val/ or test/ folder"
    r = prepare("--source", tree, "--dataset", "cifar10", "--out", tmp_path / "out")
    assert one_line(r), r.err
    assert expected in r.err, r.err
    assert ("--size" in r.err) == (breakage == "odd-size"), r.err     # resizing cures a size mismatch only
    assert not (tmp_path / "out" / "meta.json").exists()


def test_cifar_keeps_its_size_and_options_are_checked(tmp_path):
    tree = cifar_tree(tmp_path / "tree")
    for args, expected in [
        (("--source", tree, "--dataset", "cifar10", "--size", "64"), "stored as they are"),
        (("--source", tree), "needs --dataset NAME"),
        (("--source", tree, "--imagenet-root", tree, "--dataset", "cifar10"), "exactly one of"),
        (("--source", tree, "--dataset", "fashion-mnist"), "not read from a class-folder tree"),
        (("--source", tmp_path / "nowhere", "--dataset", "cifar10"), "does not exist"),
    ]:
        r = prepare(*args, "--out", tmp_path / "o")
        assert one_line(r) and expected in r.err, (args, r.err)


def test_any_other_tree_becomes_a_named_dataset(tmp_path):
    tree = tmp_path / "tree"
    for split in ("train", "val"):
        for c, name in enumerate(("zebra", "aardvark", "yak")):
            d = tree / split / name
            d.mkdir(parents=True)
            for k in range(2):
                _image(d / f"{k}.png", size=(20 + 4 * k, 20), seed=c * 10 + k)
    r = prepare("--source", tree, "--dataset", "my-photos", "--data-root", tmp_path / "dd")
    assert one_line(r) and "pass --size N" in r.err, r.err       # the images differ in size
    r = prepare("--source", tree, "--dataset", "my-photos", "--data-root", tmp_path / "dd", "--size", "8",
                "--resize", "crop")
    assert r.code == 0, r.err
    ds = load_dataset("my-photos", "train", tmp_path / "dd")
    assert ds.info.class_names == ("aardvark", "yak", "zebra") and ds.info.image_size == (8, 8)
    assert ds.info.resize == "crop"
    # normalised with the train split's own statistics: per channel mean 0, std 1
    flat = ds.images.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(3), atol=1e-3)
    r = run_cli("eval", "--random-ipc", "1", "--dataset", "my-photos", "--data-root", tmp_path / "dd", "--runs", "1",
                "--epochs", "1", "--width", "4", "--device", "cpu", "--threads", "1", "--quiet")
    assert r.code == 0, r.err


def test_content_id_tells_copies_and_sizes_apart():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.arange(4)
    base = content_id({"train": (images, labels), "test": (images[:2], labels[:2])})
    changed = images.clone()
    changed[3, 2, 7, 7] = 1
    assert content_id({"train": (changed, labels), "test": (images[:2], labels[:2])}) != base
    relabelled = labels.flip(0)
    assert content_id({"train": (images, relabelled), "test": (images[:2], labels[:2])}) != base
    resized = torch.zeros(4, 3, 16, 4, dtype=torch.uint8)         # the same bytes, another shape
    assert content_id({"train": (resized, labels), "test": (images[:2], labels[:2])}) != base
    assert content_id({"train": (images, labels), "test": (images[:2], labels[:2])}) == base


def test_a_buffer_made_on_one_copy_is_refused_on_another(tmp_path):
    tree = cifar_tree(tmp_path / "tree", n_train=2)
    assert prepare("--source", tree, "--dataset", "cifar10", "--data-root", tmp_path / "a").code == 0
    _image(tree / "train" / "cat" / "0001.png", seed=123)              # one image differs
    assert prepare("--source", tree, "--dataset", "cifar10", "--data-root", tmp_path / "b").code == 0
    ida = json.loads((tmp_path / "a" / "cifar10" / "meta.json").read_text())["content_id"]
    idb = json.loads((tmp_path / "b" / "cifar10" / "meta.json").read_text())["content_id"]
    assert ida != idb
    clear_cache()
    r = run_cli("buffer", "--dataset", "cifar10", "--data-root", tmp_path / "a", "--out", tmp_path / "buf",
                "--num-experts", "1", "--epochs", "2", "--width", "4", "--device", "cpu", "--threads", "1", "--quiet")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "buf" / "buffer.json").read_text())["source"] == ida
    distill = ("distill", "--dataset", "cifar10", "--buffer", tmp_path / "buf", "--ipc", "1", "--iterations", "1",
               "--syn-steps", "1", "--expert-epochs", "1", "--max-start-epoch", "1", "--device", "cpu", "--threads",
               "1", "--quiet")
    r = run_cli(*distill, "--data-root", tmp_path / "b", "--out", tmp_path / "bad")
    assert one_line(r) and ida in r.err and idb in r.err, r.err
    r = run_cli(*distill, "--data-root", tmp_path / "a", "--out", tmp_path / "run")
    assert r.code == 0, r.err
    clear_cache()
    r = run_cli("eval", "--synthetic", tmp_path / "run" / "synthetic.pt", "--data-root", tmp_path / "b", "--runs", "1",
                "--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet")
    assert one_line(r) and ida in r.err, r.err


def test_a_store_whose_splits_come_from_two_preparations_is_refused(tmp_path):
    tree = cifar_tree(tmp_path / "tree")
    assert prepare("--source", tree, "--dataset", "cifar10", "--out", tmp_path / "a").code == 0
    _image(tree / "test" / "cat" / "0000.png", seed=5)
    assert prepare("--source", tree, "--dataset", "cifar10", "--out", tmp_path / "b").code == 0
    (tmp_path / "a" / "test.pt").write_bytes((tmp_path / "b" / "test.pt").read_bytes())
    with pytest.raises(UsageError, match="interrupted or mixed store"):
        load_dataset("cifar10", "test", tmp_path / "a")


@pytest.mark.skipif(not (SHARED / "cifar10-jpg.tar.gz").is_file(), reason="the shared photo sets are not here")
@pytest.mark.slow
def test_the_shared_cifar10_tree(tmp_path):
    import tarfile

    with tarfile.open(SHARED / "cifar10-jpg.tar.gz") as tar:
        tar.extractall(tmp_path / "tree", filter="data")
    r = prepare("--source", tmp_path / "tree", "--dataset", "cifar10", "--out", tmp_path / "c10")
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "c10" / "meta.json").read_text())
    assert meta["images_per_class"] == {"train": [5000] * 10, "test": [1000] * 10}
    mean = load_dataset("cifar10", "train", tmp_path / "c10").images.mean((0, 2, 3))
    assert mean.abs().max() < 0.02     # the JPEG copy's mean is CIFAR-10's (normalised: about 0)


def test_a_cifar100_tree_with_spaces_in_folder_names(tmp_path):
    from ddtoolbox.data.info import CIFAR100_CLASSES

    folders = [n.replace("_", " ") for n in CIFAR100_CLASSES]          # "aquarium fish" for aquarium_fish
    tree = cifar_tree(tmp_path / "tree", n_train=1, n_test=1, classes=folders)
    r = prepare("--source", tree, "--dataset", "cifar-100", "--data-root", tmp_path / "dd")   # an alias
    assert r.code == 0, r.err
    ds = load_dataset("cifar100", "test", tmp_path / "dd")
    assert ds.labels.tolist() == list(range(100)) and ds.info.source.startswith("sha256:")
    assert json.loads((tmp_path / "dd" / "cifar100" / "meta.json").read_text())["class_folders"][1] == "aquarium fish"


def test_an_imagenet_subset_at_another_size_from_the_full_tree(tmp_path):
    s = get_subset("imagewoof")
    for split in ("train", "val"):
        for i, w in enumerate(s.wnids):
            (tmp_path / "in" / split / w).mkdir(parents=True)
            _image(tmp_path / "in" / split / w / "x.JPEG", size=(50, 70), seed=i)
    (tmp_path / "in" / "train" / "n99999999").mkdir()                 # another class of ImageNet: ignored
    r = prepare("--imagenet-root", tmp_path / "in", "--subset", "imagewoof", "--size", "24", "--out", tmp_path / "w")
    assert r.code == 0, r.err
    ds = load_dataset("imagewoof", "train", tmp_path / "w")
    assert ds.images.shape == (10, 3, 24, 24) and ds.info.resize == "squash"


@pytest.mark.parametrize("where", ["--out", "--data-root"])
def test_an_unwritable_store_folder_is_refused_before_decoding(tmp_path, where):
    tree = cifar_tree(tmp_path / "tree")
    (tmp_path / "afile").write_text("in the way")
    r = run_cli("data", "prepare", "--source", tree, "--dataset", "cifar10", where, tmp_path / "afile" / "x")
    assert one_line(r) and where in r.err and "img/s" not in r.err, r.err   # no progress bar: nothing decoded
