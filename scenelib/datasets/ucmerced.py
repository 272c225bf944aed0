"""UC Merced Land Use: 21 classes x 100 aerial RGB images, 256x256 at 1 ft/pixel (USGS orthoimagery).

Yang and Newsam, "Bag-of-Visual-Words and Spatial Extensions for Land-Use Classification", ACM SIGSPATIAL
GIS 2010. Layout: ``<data_dir>/UCMerced_LandUse/Images/<class>/<class>NN.<ext>``; any Pillow-readable
extension is accepted (the official zip holds TIFF).
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetNotFoundError, SceneDataset, scan_class_folders


class UCMerced(SceneDataset):
    name = "ucmerced"
    description = "UC Merced Land Use (21 classes x 100 aerial images, 256 px)"
    aerial = True
    nominal_size = 256
    default_split = "70/30"
    n_classes = 21

    @property
    def root(self) -> Path:
        return self.data_dir / "UCMerced_LandUse" / "Images"

    def missing_hint(self) -> str:
        return (
            f"Download UCMerced_LandUse.zip from http://weegee.vision.ucmerced.edu/datasets/landuse.html, "
            f"unzip it into {self.data_dir} (or pass --download when online), or point --data-dir / "
            f"SCENELIB_DATA_DIR at the folder that contains UCMerced_LandUse/."
        )

    def _load(self):
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"{self.name}: {self.root} does not exist. {self.missing_hint()}")
        return scan_class_folders(self.root)
