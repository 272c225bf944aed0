"""One pass over every image: unreadable files, odd modes and sizes, exact duplicates, class balance.

The scan decodes each file once, so it also gathers the per-image channel statistics the exploration
notebook plots. Results are cached per dataset (keyed by file names, sizes and modification times), so a
second run over the same files costs a directory listing.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .datasets import SceneDataset
from .rundir import read_json, write_json
from .transforms import HIGH_BIT_MODES, to_rgb

CACHE_ENV = "SCENELIB_CACHE_DIR"


def cache_dir() -> Path:
    """Where per-dataset caches live: ``$SCENELIB_CACHE_DIR``, else ``~/.cache/scenelib``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scenelib")


@dataclass
class ImageRecord:
    path: str
    label: int
    ok: bool
    error: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    pixel_hash: str = ""
    channel_mean: list[float] = field(default_factory=list)  # RGB, in [0, 1]
    channel_std: list[float] = field(default_factory=list)


STATS_SIDE = 256  # channel statistics are computed on a copy at most this many pixels on a side


def inspect_image(path: Path, label: int) -> ImageRecord:
    """Decode one file fully; any failure makes it 'corrupt' with the reason kept.

    Memory stays bounded: images above Pillow's decompression-bomb limit are reported as oversized instead
    of decoded, the pixel hash reads the decoded bytes in place, and channel statistics come from a copy at
    most ``STATS_SIDE`` px on a side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                mode = img.mode
                rgb_img = to_rgb(ImageOps.exif_transpose(img))  # upright, as every stage reads it
                width, height = rgb_img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageRecord(str(path), label, ok=False, error=f"oversized: {exc}")
    except Exception as exc:  # Pillow raises many types for broken files
        return ImageRecord(str(path), label, ok=False, error=f"{type(exc).__name__}: {exc}")
    digest = hashlib.sha256(f"{width}x{height}".encode())
    digest.update(memoryview(np.ascontiguousarray(np.asarray(rgb_img))).cast("B"))
    digest = digest.hexdigest()
    rgb_img.thumbnail((STATS_SIDE, STATS_SIDE))
    pixels = np.asarray(rgb_img, dtype=np.float32).reshape(-1, 3) / 255.0
    return ImageRecord(
        str(path),
        label,
        ok=True,
        mode=mode,
        width=width,
        height=height,
        pixel_hash=digest,
        channel_mean=[round(float(v), 5) for v in pixels.mean(0)],
        channel_std=[round(float(v), 5) for v in pixels.std(0)],
    )


def _fingerprint(dataset: SceneDataset) -> str:
    h = hashlib.sha256()
    for s in dataset.samples:
        st = s.path.stat()
        h.update(os.fsencode(s.path) + f"|{s.label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def data_fingerprint(dataset: SceneDataset) -> str:
    """A short hash of every image's path, label, size and modification time: it changes when a file is
    added, removed, replaced or edited (what a stage reading the images must be redone for)."""
    return _fingerprint(dataset)


def _cached(cache: Path) -> list[ImageRecord] | None:
    """The cached scan, or None (with a warning) when the cache file does not load: it is then rebuilt."""
    try:
        return [ImageRecord(**r) for r in read_json(cache)]
    except (ValueError, TypeError) as exc:
        warnings.warn(
            f"integrity cache {cache} does not load ({exc}); scanning the images again", stacklevel=3
        )
        return None


def scan_records(dataset: SceneDataset, workers: int = 2, use_cache: bool = True) -> list[ImageRecord]:
    """Inspect every image of the dataset (Pillow releases the GIL while decoding, so threads help)."""
    cache = cache_dir() / "integrity" / f"{dataset.name}-{_fingerprint(dataset)}.json"
    if use_cache and cache.exists() and (records := _cached(cache)) is not None:
        return records
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(lambda s: inspect_image(s.path, s.label), dataset.samples))
    if use_cache:
        write_json(cache, [asdict(r) for r in records])
    return records


def summarize(dataset: SceneDataset, records: list[ImageRecord]) -> dict:
    """The findings, as saved to ``data_summary.json`` (paths as strings, counts per class name)."""
    ok = [r for r in records if r.ok]
    counts = Counter(dataset.classes[r.label] for r in ok)
    class_counts = {name: counts.get(name, 0) for name in dataset.classes}
    nominal = dataset.nominal_size
    odd = [
        {"path": r.path, "width": r.width, "height": r.height}
        for r in ok
        if nominal is not None and (r.width, r.height) != (nominal, nominal)
    ]
    by_hash: dict[str, list[str]] = {}
    for r in ok:
        by_hash.setdefault(r.pixel_hash, []).append(r.path)
    duplicates = sorted(sorted(group) for group in by_hash.values() if len(group) > 1)
    nonzero = [c for c in class_counts.values() if c]
    means = np.array([r.channel_mean for r in ok]) if ok else np.zeros((0, 3))
    stds = np.array([r.channel_std for r in ok]) if ok else np.zeros((0, 3))
    return {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "n_images": len(ok),
        "n_files": len(records),
        "n_classes": len(dataset.classes),
        "classes": list(dataset.classes),
        "class_counts": class_counts,
        "imbalance_ratio": (max(nonzero) / min(nonzero)) if nonzero else None,
        "corrupt": [r.path for r in records if not r.ok],
        "corrupt_errors": {r.path: r.error for r in records if not r.ok},
        "modes": dict(Counter(r.mode for r in ok)),
        "non_rgb": [{"path": r.path, "mode": r.mode} for r in ok if r.mode != "RGB"],
        "nominal_size": nominal,
        "sizes": dict(Counter(f"{r.width}x{r.height}" for r in ok).most_common()),
        "odd_size": odd,
        "oversized": [r.path for r in records if r.error.startswith("oversized")],
        "high_bit_depth": [
            {"path": r.path, "mode": r.mode} for r in ok if r.mode in HIGH_BIT_MODES or r.mode in ("I", "F")
        ],
        "high_bit_depth_note": "16-bit images are scaled by their bit depth (32-bit ones by their maximum) to 8 bits",
        "skipped_files": list(getattr(dataset, "skipped", [])),
        "duplicate_groups": duplicates,
        "channel_mean": [round(float(v), 4) for v in means.mean(0)] if len(means) else None,
        "channel_std": [round(float(v), 4) for v in np.sqrt((stds**2).mean(0))] if len(stds) else None,
    }


def scan_dataset(
    dataset: SceneDataset, workers: int = 2, use_cache: bool = True
) -> tuple[dict, list[ImageRecord]]:
    records = scan_records(dataset, workers=workers, use_cache=use_cache)
    return summarize(dataset, records), records
