"""Real datasets as in-memory, normalised tensors.

Dataset distillation samples real images class by class many thousands of times, and the
datasets involved (MNIST-size, CIFAR, ImageNet subsets at 128 px) fit in memory, so every
split is loaded once into a :class:`TensorDataset` and cached for the rest of the process.
Nothing here downloads: files are found locally (see :func:`find_data_root`) and a missing
or damaged file is a :class:`~ddtoolbox.errors.UsageError` that says how to fix it.

Modules, one job each: ``info`` (what a dataset is), ``dataset`` (the container),
``normalization``, ``locate`` (finding folders), ``idx`` / ``cifar`` / ``imagefolder`` (file
formats), ``registry`` (names, loading, cache) and ``builtin`` (the shipped registrations).
"""

from .dataset import TensorDataset
from .info import DatasetInfo, check_same_images, image_record
from .locate import ENV_VAR, DataLocation
from .normalization import denormalize, normalize
from .registry import (
    Loader,
    clear_cache,
    dataset_info,
    find_data_root,
    list_datasets,
    load_dataset,
    register_dataset,
)
from . import builtin as _builtin  # noqa: F401  (registers every shipped dataset)

__all__ = [
    "DataLocation",
    "DatasetInfo",
    "check_same_images",
    "image_record",
    "ENV_VAR",
    "Loader",
    "TensorDataset",
    "clear_cache",
    "dataset_info",
    "denormalize",
    "find_data_root",
    "list_datasets",
    "load_dataset",
    "normalize",
    "register_dataset",
]
