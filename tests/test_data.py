"""Tests for ddtoolbox.data on small generated files (plus one real Fashion-MNIST check)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddtoolbox.data as data
from ddtoolbox.data import builtin, info as info_mod
from ddtoolbox.errors import UsageError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- helpers

def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = True) -> Path:
    """Write an IDX file of unsigned bytes (the format MNIST-style datasets ship in)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def fake_pixels(n: int, offset: int = 0) -> np.ndarray:
    return ((np.arange(n * 28 * 28).reshape(n, 28, 28) * 7 + offset) % 256).astype(np.uint8)


def make_idx_folder(folder: Path, n_train: int = 20, n_test: int = 10, offset: int = 0, gz: bool = True) -> Path:
    """Train labels are i % 10 (balanced); `offset` makes copies in different folders distinguishable."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", fake_pixels(n, offset), gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=gz)
    return folder


def first_pixel_offset(ds: data.TensorDataset) -> int:
    raw = data.denormalize(ds.images[:1], ds.info) * 255
    return int(round(float(raw[0, 0, 0, 0])))


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Each test sees no DDTOOL_DATA, an empty system folder and an empty cache."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(builtin, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    data.clear_cache()
    yield
    data.clear_cache()


# ---------------------------------------------------------------- IDX (MNIST / Fashion-MNIST)

@pytest.mark.parametrize("gz", [True, False])
def test_idx_shapes_dtype_normalisation_labels(tmp_path, gz):
    root = make_idx_folder(tmp_path / "fm", gz=gz)
    train = data.load_dataset("fashion-mnist", "train", data_root=root)
    test = data.load_dataset("fashion-mnist", "test", data_root=root)
    assert train.images.shape == (20, 1, 28, 28) and len(train) == 20
    assert test.images.shape == (10, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    info = train.info
    assert info.mean == (0.2861,) and info.std == (0.3530,) and info.num_classes == 10
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    recovered = train.images * info.std[0] + info.mean[0]
    expected = torch.from_numpy(fake_pixels(20)).float().div(255).unsqueeze(1)
    assert torch.allclose(recovered, expected, atol=1e-6, rtol=0)


def test_mnist_uses_its_own_constants_and_torchvision_layout(tmp_path):
    make_idx_folder(tmp_path / "MNIST" / "raw")
    ds = data.load_dataset("mnist", "test", data_root=tmp_path)
    assert ds.info.mean == (0.1307,) and ds.info.class_names == tuple("0123456789")
    assert torch.allclose(ds.images * 0.3081 + 0.1307,
                          torch.from_numpy(fake_pixels(10)).float().div(255).unsqueeze(1), atol=1e-6)


def test_lookup_order_data_root_then_env_then_default(tmp_path, monkeypatch):
    explicit = make_idx_folder(tmp_path / "explicit", offset=1)
    make_idx_folder(tmp_path / "env" / "fashion-mnist", offset=2)  # parent-with-subfolder layout
    system = make_idx_folder(tmp_path / "system", offset=3)
    monkeypatch.setattr(builtin, "FASHION_MNIST_SYSTEM_DIR", system)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))

    assert data.find_data_root("fashion-mnist", explicit) == explicit.resolve()
    assert first_pixel_offset(data.load_dataset("fashion-mnist", data_root=explicit)) == 1
    assert data.find_data_root("fashion-mnist", None) == (tmp_path / "env" / "fashion-mnist").resolve()
    assert first_pixel_offset(data.load_dataset("fashion-mnist")) == 2
    monkeypatch.delenv(data.ENV_VAR)
    assert data.find_data_root("fashion-mnist", None) == system.resolve()
    assert first_pixel_offset(data.load_dataset("fashion-mnist")) == 3


def test_env_without_the_dataset_falls_through_but_explicit_root_does_not(tmp_path, monkeypatch):
    system = make_idx_folder(tmp_path / "system")
    monkeypatch.setattr(builtin, "FASHION_MNIST_SYSTEM_DIR", system)
    (tmp_path / "env").mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.find_data_root("fashion-mnist", None) == system.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="under --data-root"):
        data.find_data_root("fashion-mnist", tmp_path / "empty")
    with pytest.raises(UsageError, match="does not exist"):
        data.find_data_root("fashion-mnist", tmp_path / "typo")


def test_missing_everywhere_lists_searched_places_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "envroot"))
    (tmp_path / "envroot").mkdir()
    with pytest.raises(UsageError) as err:
        data.load_dataset("fashion-mnist")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "envroot" / "fashion-mnist") in msg
    assert str(tmp_path / "envroot" / "FashionMNIST" / "raw") in msg
    assert str(tmp_path / "no-system-copy") in msg
    assert "--data-root" in msg and "DDTOOL_DATA" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_truncated_file_names_the_file(tmp_path):
    root = make_idx_folder(tmp_path / "fm")
    bad = root / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(UsageError, match="train-images-idx3-ubyte.gz.*truncated.*re-download"):
        data.load_dataset("fashion-mnist", "train", data_root=root)
    # Uncompressed and cut after the header: the length check catches it.
    raw = make_idx_folder(tmp_path / "raw", gz=False) / "t10k-labels-idx1-ubyte"
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte is truncated"):
        data.load_dataset("mnist", "test", data_root=tmp_path / "raw")


def test_wrong_magic_and_mismatched_counts(tmp_path):
    root = make_idx_folder(tmp_path / "fm")
    write_idx(root / "t10k-images-idx3-ubyte", fake_pixels(10), magic=2049)  # a labels magic
    with pytest.raises(UsageError, match="t10k-images-idx3-ubyte.gz is not an IDX images file.*magic"):
        data.load_dataset("fashion-mnist", "test", data_root=root)
    write_idx(root / "t10k-images-idx3-ubyte", fake_pixels(9))
    with pytest.raises(UsageError, match="9 images.*10 labels"):
        data.load_dataset("fashion-mnist", "test", data_root=root)


def test_missing_split_file(tmp_path):
    root = make_idx_folder(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte.*missing"):
        data.load_dataset("fashion-mnist", "test", data_root=root)


def test_unknown_name_split_and_options():
    with pytest.raises(UsageError) as err:
        data.dataset_info("imagenet")
    for known in ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH"):
        assert known in str(err.value)
    assert data.dataset_info("CIFAR-10").name == "cifar10"  # aliases and case
    with pytest.raises(UsageError, match="'train' or 'test'"):
        data.load_dataset("fashion-mnist", "validation")
    with pytest.raises(UsageError, match="only applies to imagefolder"):
        data.dataset_info("cifar10", image_size=64)
    assert data.dataset_info("cifar10", image_size=32).image_size == (32, 32)


def test_cache_returns_same_tensors(tmp_path):
    root = make_idx_folder(tmp_path / "fm")
    a = data.load_dataset("fashion-mnist", "train", data_root=root)
    b = data.load_dataset("fashion-mnist", "train", data_root=root)
    assert a.images is b.images and a.labels is b.labels
    data.clear_cache()
    assert data.load_dataset("fashion-mnist", "train", data_root=root).images is not a.images


# ---------------------------------------------------------------- container and normalisation

def test_subset_stratified_and_deterministic(tmp_path):
    ds = data.load_dataset("fashion-mnist", "train", data_root=make_idx_folder(tmp_path / "fm", n_train=60))
    s1 = ds.subset(3, generator=torch.Generator().manual_seed(0))
    s2 = ds.subset(3, generator=torch.Generator().manual_seed(0))
    assert s1.class_counts().tolist() == [3] * 10 and len(s1) == 30
    assert torch.equal(s1.images, s2.images) and torch.equal(s1.labels, s2.labels)
    others = [ds.subset(3, generator=seed).images for seed in range(1, 4)]
    assert any(not torch.equal(s1.images, o) for o in others)
    half = ds.subset(fraction=0.5, generator=1)
    assert half.class_counts().tolist() == [3] * 10
    assert ds.class_indices(4).tolist() == [4, 14, 24, 34, 44, 54]
    with pytest.raises(UsageError, match="n_per_class <= 6"):
        ds.subset(7, generator=0)
    with pytest.raises(UsageError, match="exactly one"):
        ds.subset(2, fraction=0.5, generator=0)
    with pytest.raises(UsageError, match="class 10 does not exist"):
        ds.class_indices(10)


def test_normalize_denormalize_roundtrip():
    info = data.dataset_info("cifar10")
    x = torch.rand(2, 3, 4, 4)
    y = data.normalize(x, info)
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.4822) / 0.1994)
    assert torch.allclose(data.denormalize(y, info), x, atol=1e-6)
    assert data.denormalize(y[0], info).shape == (3, 4, 4)
    with pytest.raises(ValueError):
        data.normalize(torch.rand(2, 1, 4, 4), info)


def test_register_custom_dataset(tmp_path):
    info = data.DatasetInfo("toy-test", 1, (2, 2), 2, (0.5,), (0.25,), ("a", "b"))

    def loader(folder, split):
        assert folder is None and split in ("train", "test")
        return torch.full((4, 1, 2, 2), 0.75), torch.tensor([0, 1, 0, 1])

    data.register_dataset("toy-test", info, loader)
    try:
        ds = data.load_dataset("toy-test")
        assert torch.allclose(ds.images, torch.ones(4, 1, 2, 2))
        assert "toy-test" in data.list_datasets()
        with pytest.raises(ValueError, match="already registered"):
            data.register_dataset("toy-test", info, loader)
    finally:
        from ddtoolbox.data import registry
        registry._REGISTRY.pop("toy-test", None)


# ---------------------------------------------------------------- ImageFolder

def make_image_tree(root: Path, sizes=((8, 8),), mode="RGB", jpeg=False) -> dict:
    """train/ with 3 classes x 2 images, val/ with 1 image each; with jpeg=True some are JPEG
    (lossy, so only PNG trees are used for exact pixel checks)."""
    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in (("train", 2), ("val", 1)):
        for c in ("zebra", "ant", "moth"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = sizes[i % len(sizes)]
                shape = (h, w, 3) if mode == "RGB" else (h, w)
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                ext = ".jpg" if jpeg and (i + len(c)) % 2 else ".png"
                Image.fromarray(arr, mode).save(d / f"{i}{ext}")
                pixels[(split, c, i)] = arr
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return pixels


def test_imagefolder_loads_with_train_statistics(tmp_path):
    pixels = make_image_tree(tmp_path / "tree")
    name = f"imagefolder:{tmp_path / 'tree'}"
    train = data.load_dataset(name, "train")
    info = train.info
    assert info.class_names == ("ant", "moth", "zebra") and info.num_classes == 3
    assert info.channels == 3 and info.image_size == (8, 8)
    assert train.images.shape == (6, 3, 8, 8) and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    train_pixels = np.stack([pixels[("train", c, i)] for c in ("ant", "moth", "zebra") for i in range(2)])
    expected_mean = train_pixels.reshape(-1, 3).mean(0) / 255
    assert np.allclose(info.mean, expected_mean, atol=1e-9)
    assert torch.allclose(train.images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train.images.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    back = data.denormalize(train.images, info) * 255
    assert torch.allclose(back[0], torch.from_numpy(train_pixels[0]).permute(2, 0, 1).float(), atol=1e-3)

    test = data.load_dataset(name, "test")
    assert test.info == info and test.images.shape == (3, 3, 8, 8) and test.labels.tolist() == [0, 1, 2]
    assert data.dataset_info(name) == info
    assert data.find_data_root(name, None) == (tmp_path / "tree").resolve()


def test_imagefolder_resize_jpeg_grayscale_and_imagenet_stats(tmp_path):
    root = tmp_path / "mixed"
    make_image_tree(root, sizes=((10, 14), (12, 9)), mode="L", jpeg=True)
    Image.new("L", (9, 11), 128).save(root / "val" / "ant" / "extra.jpeg")
    with pytest.raises(UsageError, match="pass image_size"):
        data.load_dataset(f"imagefolder:{root}", "train")
    ds = data.load_dataset("imagefolder:mixed", "test", data_root=tmp_path, image_size=6)
    assert ds.info.channels == 1 and ds.images.shape == (4, 1, 6, 6)
    with pytest.raises(UsageError, match="grayscale"):
        data.load_dataset(f"imagefolder:{root}", image_size=6, imagenet_stats=True)

    rgb = tmp_path / "rgb"
    make_image_tree(rgb, sizes=((20, 16),), jpeg=True)
    ds = data.load_dataset(f"imagefolder:{rgb}", "train", image_size=8, imagenet_stats=True)
    assert ds.info.mean == (0.485, 0.456, 0.406) and ds.images.shape == (6, 3, 8, 8)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UsageError, match="no train/ folder"):
        data.load_dataset(f"imagefolder:{tmp_path}")
    root = tmp_path / "t"
    make_image_tree(root)
    (root / "val" / "wasp").mkdir()
    with pytest.raises(UsageError, match="wasp is a class that train/ does not have"):
        data.load_dataset(f"imagefolder:{root}", "test")
    (root / "val" / "wasp").rmdir()
    (root / "train" / "moth" / "0.png").write_bytes(b"garbage")
    data.clear_cache()
    with pytest.raises(UsageError, match="cannot read image .*0.png"):
        data.load_dataset(f"imagefolder:{root}", "train")


# ---------------------------------------------------------------- CIFAR

def make_cifar10(parent: Path, per_batch: int = 4, protocol: int = 2) -> tuple[Path, np.ndarray]:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    all_train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        arr = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i * 3) % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": arr, "labels": labels}, f, protocol=protocol)
        if name != "test_batch":
            all_train.append(arr)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(info_mod.CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=protocol)
    return folder, np.concatenate(all_train)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_generated_batches(tmp_path, protocol):
    folder, train_pixels = make_cifar10(tmp_path, protocol=protocol)
    ds = data.load_dataset("cifar10", "train", data_root=tmp_path)  # parent of cifar-10-batches-py
    assert ds.images.shape == (20, 3, 32, 32) and ds.labels[:4].tolist() == [0, 3, 6, 9]
    back = data.denormalize(ds.images, ds.info)
    expected = torch.from_numpy(train_pixels.reshape(-1, 3, 32, 32)).float() / 255
    assert torch.allclose(back, expected, atol=1e-6)
    assert data.load_dataset("cifar10", "test", data_root=folder).images.shape == (4, 3, 32, 32)


def test_cifar_errors(tmp_path):
    folder, _ = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UsageError, match="data_batch_3 missing.*re-extract"):
        data.load_dataset("cifar10", "train", data_root=tmp_path)
    cut = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(cut[: len(cut) // 2])
    with pytest.raises(UsageError, match="test_batch is truncated or corrupt"):
        data.load_dataset("cifar10", "test", data_root=tmp_path)
    # A pickle that would run code is refused before anything executes.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(UsageError, match="not a CIFAR batch file.*refusing"):
        data.load_dataset("cifar10", "test", data_root=tmp_path)
    assert not marker.exists()


def test_cifar100_generated(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 3)):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": [99 - i for i in range(n)], "coarse_labels": [0] * n}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(info_mod.CIFAR100_CLASSES), "coarse_label_names": []}, f, protocol=2)
    ds = data.load_dataset("cifar100", "test", data_root=tmp_path)
    assert ds.info.num_classes == 100 and ds.labels.tolist() == [99, 98, 97]
    assert ds.info.class_names[99] == "worm"
    with pytest.raises(UsageError, match="cifar10 data not found"):
        data.load_dataset("cifar10", data_root=tmp_path)  # CIFAR-100 folder is not CIFAR-10


# ---------------------------------------------------------------- real data

@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    ds = data.load_dataset("fashion-mnist", "test", data_root=REAL_FMNIST)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.class_counts().tolist() == [1000] * 10
    assert abs(float(ds.images.mean())) < 0.05
    assert abs(float(ds.images.std()) - 1) < 0.05
