"""Dataset registry: one module per dataset, one entry per name.

Adding a dataset is one class (a ``SceneDataset`` subclass) and one line in ``DATASETS``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DatasetNotFoundError, Sample, SceneDataset
from .folder import FolderDataset
from .intel import IntelImageClassification
from .torchvision_sets import CIFAR10Images, EuroSATRGB
from .ucmerced import UCMerced

DATASETS: dict[str, type[SceneDataset]] = {
    "ucmerced": UCMerced,
    "intel": IntelImageClassification,
    "eurosat": EuroSATRGB,
    "cifar10": CIFAR10Images,
    "folder": FolderDataset,
}

DATA_DIR_ENV = "SCENELIB_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir`` if given, else ``$SCENELIB_DATA_DIR``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser().absolute()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser().absolute()
    return Path("data").absolute()


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = False
) -> SceneDataset:
    """Open a registered dataset; a missing copy raises DatasetNotFoundError with the fix in its message."""
    check_dataset_name(name)
    return DATASETS[name](resolve_data_dir(data_dir), download=download)


__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DatasetNotFoundError",
    "Sample",
    "SceneDataset",
    "check_dataset_name",
    "load_dataset",
    "resolve_data_dir",
]
