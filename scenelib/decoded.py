"""Every image of a run decoded and resized once per input size, on disk, for every stage and later runs.

Each stage reads images at its models' input size: training (once per model), the benchmark's end-to-end
check, and quantization's calibration, validation and test passes. Decoding and resizing UC Merced's 2,100
images at 224 px takes about 9 s on a slow 2-core CPU, and a default run used to pay it in five processes.
Now the first stage to ask for a size decodes all the manifest's images at that size into one uint8 array
(``N x 3 x size x size``, 316 MB for UC Merced at 224 px) in the per-dataset cache folder
(``$SCENELIB_CACHE_DIR``, else ``~/.cache/scenelib``, under ``decoded/``); later stages and later runs read
the rows they need from it, memory-mapped. The file is keyed, like the integrity scan's cache, by the
images' paths, sizes and modification times, so an edited image is decoded again (and the array from
before the edit removed). Deleting the folder is always safe. Arrays larger than ``MAX_CACHED_BYTES`` are
not kept: they are decoded in each stage as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .deploy.preprocess import PREPROCESS_VERSION
from .integrity import cache_dir
from .rundir import atomic_writer
from .splits import ManifestRow, split_rows
from .transforms import decode_images

MAX_CACHED_BYTES = 4 * 2**30


def _digest(lines) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()[:16]


def cache_file(paths: Sequence[str], size: int) -> Path:
    """Where the array of ``paths`` (in this order) at ``size`` px lives: named by the paths, the size, the
    files' sizes and modification times and the preprocessing's version, so that an edited image or a changed
    decoding gets a new file."""
    files = _digest(paths)
    stats = _digest(
        [
            f"preprocess {PREPROCESS_VERSION}",
            *(f"{st.st_size}|{st.st_mtime_ns}" for st in map(os.stat, paths)),
        ]
    )
    return cache_dir() / "decoded" / f"{files}-{size}px-{stats}.npy"


STALE_TEMP_S = 3600  # a temp file this old was left by a writer that was killed


def _drop_older(path: Path) -> None:
    """Remove the arrays of the same images and size from before an edit, and temp files of killed writers
    (only this module's own files)."""
    files, size, _ = path.stem.split("-")
    for old in path.parent.glob(f"{files}-{size}-*.npy"):
        if old != path:
            old.unlink(missing_ok=True)
    for tmp in path.parent.glob(".*.npy.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, memory-mapped; None if it is missing or not the expected array (then it is rebuilt)."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def all_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Every image of ``paths`` at ``size`` px as uint8 ``[N, 3, size, size]``: from the cache, or decoded
    and cached for the next caller (not cached when larger than ``MAX_CACHED_BYTES``, nor, with a warning,
    when the folder is not writable)."""
    shape = (len(paths), 3, size, size)
    path = cache_file(paths, size)
    if (cached := _load(path, shape)) is not None:
        return cached
    images = decode_images(paths, size).numpy()
    if images.nbytes > MAX_CACHED_BYTES:
        return images
    try:
        with atomic_writer(path, "wb") as fh:
            np.save(fh, images)
        _drop_older(path)
    except OSError as exc:
        warnings.warn(
            f"decoded images not cached in {path.parent} ({exc}); each stage decodes them again", stacklevel=2
        )
    return images


def images_of(manifest: list[ManifestRow], rows: Sequence[ManifestRow], size: int) -> torch.Tensor:
    """The images of ``rows`` (rows of ``manifest``), in their order, as a uint8 tensor ``[n, 3, size, size]``.

    The cache holds the whole manifest in sorted path order, so every split, subset and seeded re-split of the
    same images shares one file."""
    paths = sorted({r.path for r in manifest})
    index = {p: i for i, p in enumerate(paths)}
    arr = all_images(paths, size)
    return torch.from_numpy(np.ascontiguousarray(arr[[index[r.path] for r in rows]]))


def split_images(
    manifest: list[ManifestRow], split: str, size: int
) -> tuple[list[ManifestRow], torch.Tensor]:
    """A split's rows of the manifest and their images at ``size`` px."""
    rows = split_rows(manifest, split)
    return rows, images_of(manifest, rows, size)
