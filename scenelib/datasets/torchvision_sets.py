"""CIFAR-10 and EuroSAT fetched by torchvision's own dataset classes (its URLs, its checksums).

Everything downstream (integrity scan, splits, feature cache) works on image files, so CIFAR-10's pickled
arrays are exported once to PNGs; EuroSAT already is a folder of JPEGs and is read in place. torchvision
is imported only when a download or export is needed, so the registry stays cheap to import.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from .base import DatasetNotFoundError, Sample, SceneDataset, scan_class_folders

log = logging.getLogger(__name__)

# What torchvision raises when the files are missing, corrupt, or the network is unreachable
# (urllib.error.URLError and socket timeouts are OSErrors; checksum failures are RuntimeErrors).
FETCH_ERRORS = (RuntimeError, OSError, tarfile.TarError, zipfile.BadZipFile)
OFFICIAL_SPLITS = ("train", "test")
EXPORT_DONE = ".export-complete"


class CIFAR10Images(SceneDataset):
    name = "cifar10"
    description = "CIFAR-10 (10 object classes, 50k train + 10k test, 32 px, official split)"
    aerial = False
    nominal_size = 32
    default_split = "official"
    has_official_split = True
    n_classes = 10

    @property
    def torchvision_root(self) -> Path:
        """Where torchvision keeps ``cifar-10-batches-py`` (and the downloaded tar.gz)."""
        return self.data_dir / "cifar10"

    @property
    def root(self) -> Path:
        return self.torchvision_root / "images"

    def missing_hint(self) -> str:
        return (
            f"Pass --download when online (torchvision fetches and checks cifar-10-python.tar.gz), or put "
            f"the extracted cifar-10-batches-py/ folder in {self.torchvision_root}."
        )

    def _load(self) -> tuple[list[str], list[Sample]]:
        if not (self.root / EXPORT_DONE).is_file():
            self._export()
        classes, samples = scan_class_folders(
            self.root / "train", official_split="train", skipped=self.skipped
        )
        _, test_samples = scan_class_folders(self.root / "test", official_split="test", skipped=self.skipped)
        return classes, samples + test_samples

    def _open_split(self, split: str) -> Any:
        from torchvision import datasets

        try:
            return datasets.CIFAR10(
                root=str(self.torchvision_root), train=split == "train", download=self.download
            )
        except FETCH_ERRORS as err:
            raise DatasetNotFoundError(
                f"{self.name}: could not load the {split} batches from {self.torchvision_root} "
                f"({type(err).__name__}: {err}). {self.missing_hint()}"
            ) from None

    def _export(self) -> None:
        """Write ``images/<split>/<class>/<index>.png``; the marker is written last so a partial export reruns."""
        opened = {split: self._open_split(split) for split in OFFICIAL_SPLITS}
        for split, arrays in opened.items():
            log.info("%s: exporting %d %s images to %s", self.name, len(arrays.data), split, self.root)
            for class_name in arrays.classes:
                (self.root / split / class_name).mkdir(parents=True, exist_ok=True)
            for index, (pixels, target) in enumerate(zip(arrays.data, arrays.targets, strict=True)):
                path = self.root / split / arrays.classes[target] / f"{index:05d}.png"
                Image.fromarray(pixels).save(path)
        (self.root / EXPORT_DONE).write_text("exported from torchvision.datasets.CIFAR10\n")


class EuroSATRGB(SceneDataset):
    name = "eurosat"
    description = "EuroSAT RGB (10 Sentinel-2 land-cover classes, 27k aerial images, 64 px)"
    aerial = True
    nominal_size = 64
    default_split = "70/30"
    has_official_split = False
    n_classes = 10

    @property
    def root(self) -> Path:
        """torchvision's layout: ``<data_dir>/eurosat/2750/<class>/<class>_<n>.jpg``."""
        return self.data_dir / "eurosat" / "2750"

    def missing_hint(self) -> str:
        return (
            f"Pass --download when online (torchvision fetches and checks EuroSAT.zip), or unzip "
            f"EuroSAT.zip into {self.root.parent} so that {self.root}/<class>/ exists."
        )

    def _load(self) -> tuple[list[str], list[Sample]]:
        if not self.root.is_dir():
            self._fetch()
        return scan_class_folders(self.root, skipped=self.skipped)

    def _fetch(self) -> None:
        if not self.download:
            raise DatasetNotFoundError(f"{self.name}: {self.root} does not exist. {self.missing_hint()}")
        from torchvision import datasets

        try:
            datasets.EuroSAT(root=str(self.data_dir), download=True)
        except FETCH_ERRORS as err:
            raise DatasetNotFoundError(
                f"{self.name}: could not download to {self.root} ({type(err).__name__}: {err}). "
                f"{self.missing_hint()}"
            ) from None
