"""UC Merced Land Use: 21 classes x 100 aerial RGB images, 256x256 at 1 ft/pixel (USGS orthoimagery).

Yang and Newsam, "Bag-of-Visual-Words and Spatial Extensions for Land-Use Classification", ACM SIGSPATIAL
GIS 2010. Layout: ``<data_dir>/UCMerced_LandUse/Images/<class>/<class>NN.<ext>``; any Pillow-readable
extension is accepted (the official zip holds TIFF).

Finding the data follows TorchGeo's order: an extracted ``Images`` folder, else ``UCMerced_LandUse.zip`` in
``data_dir`` (checked against its MD5, then extracted), else a download when asked for (official site
first, then the TorchGeo Hugging Face mirror of the same zip), else ``DatasetNotFoundError`` with the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .archive import download_url, md5sum, safe_extract
from .base import DatasetNotFoundError, Sample, SceneDataset, scan_class_folders

log = logging.getLogger(__name__)

OFFICIAL_URL = "http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"
# Mirror and MD5 as used by TorchGeo (torchgeo/datasets/ucmerced.py), pinned to a dataset revision.
MIRROR_URL = (
    "https://hf.co/datasets/torchgeo/ucmerced/resolve/"
    "7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip"
)
ARCHIVE_MD5 = "5b7ec56793786b6dc8a908e8854ac0e4"


class UCMerced(SceneDataset):
    name = "ucmerced"
    description = "UC Merced Land Use (21 classes x 100 aerial images, 256 px)"
    aerial = True
    nominal_size = 256
    default_split = "70/30"
    n_classes = 21

    archive_name = "UCMerced_LandUse.zip"
    md5 = ARCHIVE_MD5
    urls: tuple[str, ...] = (OFFICIAL_URL, MIRROR_URL)

    @property
    def root(self) -> Path:
        return self.data_dir / "UCMerced_LandUse" / "Images"

    @property
    def archive(self) -> Path:
        return self.data_dir / self.archive_name

    def missing_hint(self) -> str:
        return (
            f"Download {self.archive_name} from http://weegee.vision.ucmerced.edu/datasets/landuse.html "
            f"and put it (or its unzipped UCMerced_LandUse/ folder) in {self.data_dir}, or pass --download "
            f"when online, or point --data-dir / SCENELIB_DATA_DIR at the folder that contains "
            f"UCMerced_LandUse/."
        )

    def _load(self) -> tuple[list[str], list[Sample]]:
        self._verify()
        return scan_class_folders(self.root, skipped=self.skipped)

    def _verify(self) -> None:
        """Make sure ``root`` exists, extracting or downloading the zip when that is possible."""
        if self.root.is_dir():
            return
        if not self.archive.is_file():
            if not self.download:
                raise DatasetNotFoundError(
                    f"{self.name}: {self.root} does not exist and {self.archive} was not found. "
                    f"{self.missing_hint()}"
                )
            self._download()
        self._check_archive()
        self._extract()

    def _check_archive(self) -> None:
        """Refuse a zip that is not the published one (truncated copy, wrong file under the right name)."""
        actual = md5sum(self.archive)
        if actual != self.md5:
            raise DatasetNotFoundError(
                f"{self.name}: {self.archive} has MD5 {actual}, expected {self.md5}; it is incomplete or "
                f"not the official archive. Delete it and download it again. {self.missing_hint()}"
            )

    def _download(self) -> None:
        """Try each URL in turn; offline or all mirrors failing ends in DatasetNotFoundError, not urllib."""
        failures = []
        for url in self.urls:
            try:
                download_url(url, self.archive, self.md5)
                return
            except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
                log.warning("%s: download from %s failed: %s", self.name, url, err)
                failures.append(f"{url}: {err}")
        raise DatasetNotFoundError(
            f"{self.name}: could not download {self.archive_name} to {self.archive} "
            f"(tried {'; '.join(failures)}). {self.missing_hint()}"
        )

    def _extract(self) -> None:
        safe_extract(self.archive, self.data_dir)
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"{self.name}: extracted {self.archive} but {self.root} is still missing; the archive does "
                f"not have the UCMerced_LandUse/Images layout. {self.missing_hint()}"
            )
