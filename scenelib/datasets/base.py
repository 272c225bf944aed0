"""What every dataset provides: class names and a list of image files with labels."""

from __future__ import annotations

import os
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


def _utf8(path: Path) -> bool:
    """False for a name the file system holds as bytes that are not UTF-8 (no CSV or JSON can keep it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "replace")


def scan_class_folders(
    root: Path, official_split: str | None = None, skipped: list[str] | None = None
) -> tuple[list[str], list[Sample]]:
    """Read a ``<root>/<class>/<image>`` tree: classes are the sub-folder names, sorted.

    Symbolic links to folders are not followed (a ``loop -> .`` would otherwise become a class holding
    every image), and a file reached twice, or through a link leading out of ``root``, is counted once or
    not at all. What was left out is appended to ``skipped`` ("path: why")."""
    skipped = [] if skipped is None else skipped
    real_root = root.resolve()
    classes = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        if p.is_symlink():
            skipped.append(f"{p}: a link to a folder ({os.readlink(p)}), not followed")
            continue
        if not _utf8(p):
            skipped.append(f"{_printable(p)}: a folder name that is not UTF-8, left out (rename it)")
            continue
        classes.append(p.name)
    seen: set[Path] = set()
    samples = []
    for label, name in enumerate(classes):
        for folder, dirs, files in os.walk(root / name, followlinks=False):
            for d in dirs:
                if (Path(folder) / d).is_symlink():
                    skipped.append(f"{Path(folder) / d}: a link to a folder, not followed")
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                path = Path(folder) / f
                if not is_image_file(path):
                    continue
                if not _utf8(path):
                    skipped.append(f"{_printable(path)}: a file name that is not UTF-8, left out (rename it)")
                    continue
                real = path.resolve()
                if real in seen:
                    skipped.append(f"{path}: the same file as another image, counted once")
                elif real_root not in real.parents:
                    skipped.append(f"{path}: a link leading out of {root}, not followed")
                else:
                    seen.add(real)
                    samples.append(Sample(path, label, official_split))
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
        self.skipped: list[str] = []  # files and links left out while scanning, with the reason
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
        return scan_class_folders(self.root, skipped=self.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self.classes)} classes, {len(self)} images)"
