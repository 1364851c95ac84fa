"""Registrations of the datasets that ship with the toolbox: all of them, in this one module.

Fashion-MNIST, MNIST, CIFAR-10/100, cluttered Fashion-MNIST and the ImageNet subsets (prepared
caches, see :mod:`.prepare`).

Each one is just an info record, a loader and a :class:`DataLocation`; adding a dataset
elsewhere follows the same three steps through :func:`register_dataset`.

MNIST and Fashion-MNIST ship under identical file names, so a folder holding the files
directly is accepted for either; keep them in ``ROOT/mnist/`` and ``ROOT/fashion-mnist/``
(subfolders are tried first) when one root holds both.
"""

from __future__ import annotations

from pathlib import Path

from ddtoolbox.errors import UsageError
from ddtoolbox.io import user_cache_dir

from . import cluttered
from . import info as I
from .cifar import CIFAR10_DIR, CIFAR100_DIR, is_cifar10_dir, is_cifar100_dir, load_cifar_split
from .idx import has_idx_files, load_idx_split
from .imagenet_subsets import SUBSETS, subset_info
from .locate import DataLocation
from .store import is_store_dir, load_prepared
from .registry import register_dataset

# Where the Debian package dataset-fashion-mnist installs the files. Read at lookup time (see
# DataLocation.default_dirs), so tests and unusual installs can point it elsewhere.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = "holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or a parent with a {sub} subfolder)"


def _idx_loader(name: str, info: I.DatasetInfo, fix: str):
    def load(folder: Path, split: str):
        images, labels = load_idx_split(folder, split, info.num_classes, fix)
        if images.ndim != 3 or tuple(images.shape[1:]) != info.image_size:
            raise UsageError(
                f"the {split} images in {folder} are {list(images.shape[1:])}, not the "
                f"{info.image_size[0]}x{info.image_size[1]} of {name}; point --data-root at the {name} files"
            )
        return images[:, None], labels

    return load


def _cifar_loader(info: I.DatasetInfo, hundred: bool, fix: str):
    """torchvision's batch files, or a store that 'ddtool data prepare' made from a class-folder tree."""
    def load(folder: Path, split: str):
        if is_store_dir(folder) and not (is_cifar100_dir(folder) if hundred else is_cifar10_dir(folder)):
            return load_prepared(folder, split, info.name)
        return load_cifar_split(folder, split, hundred=hundred, class_names=info.class_names, fix=fix)

    return load


def _cifar_dir(is_batches_dir):
    def is_data_dir(folder: Path) -> bool:
        return is_batches_dir(folder) or is_store_dir(folder)

    return is_data_dir


def _register_all() -> None:
    fmnist = I.DatasetInfo("fashion-mnist", 1, (28, 28), 10, I.FASHION_MNIST_MEAN, I.FASHION_MNIST_STD,
                           I.FASHION_MNIST_CLASSES)
    register_dataset(
        "fashion-mnist", fmnist,
        _idx_loader("fashion-mnist", fmnist,
                    "re-download it, or for the system copy run apt-get install --reinstall dataset-fashion-mnist"),
        location=DataLocation(
            is_data_dir=has_idx_files,
            folder_names=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
            default_dirs=lambda: (FASHION_MNIST_SYSTEM_DIR,),
            files_hint=_IDX_FILES.format(sub="fashion-mnist/"),
            install_hint="install the Debian package: apt-get install dataset-fashion-mnist",
        ),
        aliases=("fashion_mnist", "fashionmnist", "fmnist"),
    )

    mnist = I.DatasetInfo("mnist", 1, (28, 28), 10, I.MNIST_MEAN, I.MNIST_STD, I.MNIST_CLASSES)
    register_dataset(
        "mnist", mnist, _idx_loader("mnist", mnist, "re-download it"),
        location=DataLocation(
            is_data_dir=has_idx_files,
            folder_names=("mnist", "MNIST/raw", "MNIST"),
            files_hint=_IDX_FILES.format(sub="mnist/"),
        ),
    )

    cifar10 = I.DatasetInfo("cifar10", 3, (32, 32), 10, I.CIFAR10_MEAN, I.CIFAR10_STD, I.CIFAR10_CLASSES)
    register_dataset(
        "cifar10", cifar10,
        _cifar_loader(cifar10, False, f"re-extract cifar-10-python.tar.gz so {CIFAR10_DIR}/ is complete"),
        location=DataLocation(
            is_data_dir=_cifar_dir(is_cifar10_dir),
            folder_names=(CIFAR10_DIR, f"cifar10/{CIFAR10_DIR}", "cifar10", "cifar-10"),
            files_hint=f"holds {CIFAR10_DIR}/ (extracted from cifar-10-python.tar.gz, torchvision's layout) or a "
                       f"cifar10/ store from 'ddtool data prepare --dataset cifar10 --source TREE'",
        ),
        aliases=("cifar-10",),
    )

    cifar100 = I.DatasetInfo("cifar100", 3, (32, 32), 100, I.CIFAR100_MEAN, I.CIFAR100_STD, I.CIFAR100_CLASSES)
    register_dataset(
        "cifar100", cifar100,
        _cifar_loader(cifar100, True, f"re-extract cifar-100-python.tar.gz so {CIFAR100_DIR}/ is complete"),
        location=DataLocation(
            is_data_dir=_cifar_dir(is_cifar100_dir),
            folder_names=(CIFAR100_DIR, f"cifar100/{CIFAR100_DIR}", "cifar100", "cifar-100"),
            files_hint=f"holds {CIFAR100_DIR}/ (extracted from cifar-100-python.tar.gz, torchvision's layout) or a "
                       f"cifar100/ store from 'ddtool data prepare --dataset cifar100 --source TREE'",
        ),
        aliases=("cifar-100",),
    )

    # no DataLocation of its own: --data-root (or $DDTOOL_DATA, or the system copy) is where the
    # Fashion-MNIST files are looked up, exactly as for fashion-mnist
    register_dataset(cluttered.NAME, cluttered.info(), cluttered.load,
                     aliases=("cluttered-fmnist", "cluttered_fashion_mnist"))
    _register_imagenet_subsets()


def _register_imagenet_subsets() -> None:
    def loader(subset):
        def load(folder, split):
            return load_prepared(folder, split, subset)

        return load

    def default_dirs(name):
        def dirs():
            return (user_cache_dir() / name,)

        return dirs

    for name, subset in SUBSETS.items():
        aliases = (name.replace("cdd-", "compdd-"),) if name.startswith("cdd-") else ()
        register_dataset(
            name, subset_info(subset), loader(subset),
            location=DataLocation(
                is_data_dir=is_store_dir,
                folder_names=(name,),
                default_dirs=default_dirs(name),
                files_hint=f"holds {name}/train.pt and {name}/test.pt written by 'ddtool data prepare'",
                install_hint=f"prepare it: ddtool data prepare --imagenet-root IMAGENET --subset {name} (or "
                             f"--source TREE --dataset {name} for a tree of its ten classes)",
            ),
            aliases=aliases,
        )


_register_all()
