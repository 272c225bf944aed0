"""``folder``: any ``<root>/<class>/<images>`` tree given by ``--data-dir`` (the path for your own data)."""

from __future__ import annotations

from pathlib import Path

from .base import SceneDataset


class FolderDataset(SceneDataset):
    name = "folder"
    description = "Your own images, one folder per class"

    def missing_hint(self) -> str:
        return "Pass --data-dir pointing at a folder with one sub-folder of images per class."

    @property
    def root(self) -> Path:
        return self.data_dir
