"""What every dataset provides: class names and a list of image files with labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is not on disk and cannot be fetched; the message says how to fix it."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    official_split: str | None = None  # "train" / "test" where the dataset defines one


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_class_folders(root: Path, official_split: str | None = None) -> tuple[list[str], list[Sample]]:
    """Read a ``<root>/<class>/<image>`` tree: classes are the sub-folder names, sorted."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = [
        Sample(path, label, official_split)
        for label, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if is_image_file(path)
    ]
    return classes, samples


class SceneDataset:
    """Base class. Subclasses set the class attributes and implement ``_load``.

    ``aerial`` marks top-down imagery, for which the 8 dihedral flips/rotations are exact symmetries
    (used for augmentation and test-time augmentation). ``nominal_size`` is the side the dataset promises,
    checked by the integrity scan.
    """

    name: str = ""
    description: str = ""
    aerial: bool = False
    nominal_size: int | None = None
    default_split: str = "70/30"
    has_official_split: bool = False

    def __init__(self, data_dir: Path | str, download: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.download = download
        self.classes, self.samples = self._load()
        if not self.samples:
            raise DatasetNotFoundError(
                f"{self.name}: no images found under {self.root}. {self.missing_hint()}"
            )

    @property
    def root(self) -> Path:
        """Folder holding the class folders."""
        return self.data_dir

    def missing_hint(self) -> str:
        return f"Put the images in {self.root}/<class>/<image> or point --data-dir at them."

    def _load(self) -> tuple[list[str], list[Sample]]:
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"{self.name}: {self.root} does not exist. {self.missing_hint()}")
        return scan_class_folders(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self.classes)} classes, {len(self)} images)"
