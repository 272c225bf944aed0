"""Intel Image Classification: 6 natural-scene classes, 150x150 photos, official 14,034/3,000 split.

Published on Kaggle (puneet6060/intel-image-classification) for an Intel/Analytics Vidhya challenge; there
is no public direct-download URL, so the zip has to be fetched by hand. Kaggle's zip unpacks to
``seg_train/seg_train/<class>``, ``seg_test/seg_test/<class>`` (and an unlabeled ``seg_pred`` we ignore);
both that nesting and the flattened ``seg_train/<class>`` form are accepted under ``<data_dir>/intel``.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetNotFoundError, Sample, SceneDataset, scan_class_folders

KAGGLE_SLUG = "puneet6060/intel-image-classification"
SPLITS = ("train", "test")


class IntelImageClassification(SceneDataset):
    name = "intel"
    description = "Intel Image Classification (6 natural-scene classes, 17k photos, 150 px, official split)"
    aerial = False
    nominal_size = 150
    default_split = "official"
    has_official_split = True
    n_classes = 6

    @property
    def root(self) -> Path:
        return self.data_dir / "intel"

    def missing_hint(self) -> str:
        return (
            f"Download the zip from https://www.kaggle.com/datasets/{KAGGLE_SLUG} (or `kaggle datasets "
            f"download -d {KAGGLE_SLUG}`) and unzip it into {self.root}, so that "
            f"{self.root}/seg_train/seg_train/<class>/ and {self.root}/seg_test/seg_test/<class>/ exist."
        )

    def split_folder(self, split: str) -> Path | None:
        """Class-folder parent for one split: Kaggle's doubled ``seg_<split>/seg_<split>`` or the flat form."""
        outer = self.root / f"seg_{split}"
        for candidate in (outer / f"seg_{split}", outer):
            if candidate.is_dir():
                return candidate
        return None

    def _load(self) -> tuple[list[str], list[Sample]]:
        folders = {split: self.split_folder(split) for split in SPLITS}
        missing = [f"{self.root}/seg_{split}" for split, folder in folders.items() if folder is None]
        if missing:
            raise DatasetNotFoundError(
                f"{self.name}: {' and '.join(missing)} not found. {self.missing_hint()}"
            )
        classes, samples = scan_class_folders(folders["train"], official_split="train", skipped=self.skipped)
        test_classes, test_samples = scan_class_folders(
            folders["test"], official_split="test", skipped=self.skipped
        )
        if test_classes != classes:
            raise DatasetNotFoundError(
                f"{self.name}: train classes {classes} and test classes {test_classes} differ under "
                f"{self.root}; the copy is incomplete. {self.missing_hint()}"
            )
        return classes, samples + test_samples
