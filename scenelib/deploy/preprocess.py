"""How an image file becomes a model input: the one code path of the pipeline and of a deployment bundle.

This module needs only NumPy and Pillow and imports nothing from scenelib, so the bundle writer copies this
file, unchanged, into every bundle (``bundle.py``), and the pipeline decodes its images with the same
functions (``scenelib.transforms`` imports them from here). Steps, in order:

1. decode with Pillow and apply the EXIF orientation (``ImageOps.exif_transpose``);
2. convert to 8-bit RGB (``to_rgb``): 16- and 32-bit grey images are scaled by their bit depth, palette,
   grey and RGBA images converted as Pillow does (alpha dropped);
3. centre-crop to a square (the shorter side), then resize to ``size`` x ``size`` with bilinear resampling
   (``load_square``);
4. scale to [0, 1] and normalise by the model's per-channel mean and std, as float32 NCHW (``normalize``).

Test-time augmentation views (``tta_views``) are exact array transforms of the uint8 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Version of the steps above; a change to any of them must bump it (decoded-image caches are keyed by it).
PREPROCESS_VERSION = 2
RESAMPLING = "bilinear"
HIGH_BIT_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel. 16-bit and 32-bit grey images (common in remote sensing) are scaled by
    their bit depth (32-bit integer and float ones by their own maximum), not clipped to white as Pillow's
    plain ``convert`` does."""
    if img.mode in HIGH_BIT_MODES or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = HIGH_BIT_MODES.get(img.mode) or max(float(arr.max()), 1.0)
        if img.mode in ("I", "F") and top <= 255.0:
            top = 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def load_square(path: str | Path, size: int) -> np.ndarray:
    """Decode to RGB upright (EXIF orientation applied), centre-crop to a square, resize to ``size`` with
    bilinear resampling: HWC uint8."""
    with Image.open(path) as img:
        rgb = to_rgb(ImageOps.exif_transpose(img))
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb)  # a writable copy, so torch.from_numpy can share it


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NCHW -> float32 NCHW: ``(x / 255 - mean) / std`` per channel."""
    x = images.astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 dihedral transforms of NCHW images (k % 4 quarter turns, then a flip if k >= 4)."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if k >= 4 else y)


#: The augmentation presets whose TTA views are exact array transforms (the seeded random one is not).
TTA_PRESETS = ("light", "aerial")


def tta_views(preset: str, n_views: int, x: np.ndarray) -> list[np.ndarray]:
    """The first ``n_views`` test views of uint8 NCHW images ``x`` under an augmentation preset."""
    if preset == "aerial":
        views = [dihedral(x, k) for k in range(8)]
    elif preset == "light":
        views = [x, np.ascontiguousarray(x[..., ::-1])]
    else:
        raise ValueError(
            f"no array TTA views for the {preset!r} preset; available for {', '.join(TTA_PRESETS)}"
        )
    return views[:n_views]


def describe(size: int, mean: Sequence[float], std: Sequence[float]) -> dict:
    """The steps above as data (a bundle's ``preprocess.json``)."""
    return {
        "version": PREPROCESS_VERSION,
        "exif_transpose": True,
        "color": "RGB, 8 bits per channel (16-bit grey scaled by its bit depth, alpha dropped)",
        "crop": "centre square (side = the shorter side)",
        "size": int(size),
        "resample": RESAMPLING,
        "scale": 1 / 255,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "layout": "NCHW float32",
    }
