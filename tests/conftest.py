"""Shared fixtures: small real image trees on disk and one real end-to-end run of the pipeline."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenelib.datasets import DATA_DIR_ENV
from scenelib.handrun import TOLERANCE_ENV
from scenelib.progress import EVERY_ENV as PROGRESS_EVERY_ENV

# A stage run outside the pipeline refuses to time on a machine much slower than the run's reference; a
# shared test machine's speed swings several-fold within minutes, so tests accept any speed, except those
# of tests/test_by_hand.py that test the rule itself (they remove this).
os.environ.setdefault(TOLERANCE_ENV, "1000")


def write_image_tree(root: Path, classes: list[str], per_class: int, size: int = 48, seed: int = 0) -> Path:
    """``root/<class>/<class>NN.png``: noise images whose dominant colour channel encodes the class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            arr[..., c % 3] += 140
            Image.fromarray(arr).save(folder / f"{name}{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_image_tree(tmp_path_factory.mktemp("tiny") / "images", ["alpha", "beta", "gamma"], 10)


def tiny_args(data: Path, out: Path) -> list[str]:
    """The tiny end-to-end run's command line: two real models, one epoch, quick INT8 calibration."""
    return [
        *("--dataset", "folder", "--data-dir", str(data), "--models", "simple_cnn,mobilenet_v2"),
        *("--epochs", "1", "--output", str(out), "--threads", "2", "--calibration-images", "16", "--quick"),
    ]


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """run_all.py on the tiny tree: two real models, one epoch, all five notebooks through papermill."""
    from scenelib.pipeline import main
    from scenelib.rundir import RunDir

    out = tmp_path_factory.mktemp("run") / "tiny"
    log = io.StringIO()
    os.environ[PROGRESS_EVERY_ENV] = "0"  # every progress change printed: the test reads them
    try:
        with contextlib.redirect_stdout(log):
            code = main(tiny_args(tiny_dataset, out))
    finally:
        os.environ.pop(PROGRESS_EVERY_ENV)
    print(log.getvalue())
    (out.parent / "stdout.txt").write_text(log.getvalue())  # beside the run directory, not in it
    return code, RunDir(out)


@pytest.fixture
def ucmerced_dir() -> Path:
    """The real UC Merced copy when SCENELIB_DATA_DIR points at it (CI: ../shared/data)."""
    data = os.environ.get(DATA_DIR_ENV)
    if not data or not (Path(data) / "UCMerced_LandUse" / "Images").is_dir():
        pytest.skip("set SCENELIB_DATA_DIR to the folder holding UCMerced_LandUse/")
    return Path(data)
