"""Bad input is one clear line (exit 2) or is handled, and nothing a user made is lost or overwritten:
threads above the core count, EXIF-rotated photos, a damaged integrity cache, file names that are not
UTF-8, a class without a readable image, two runs started in the same second, an output inside the data,
a data folder that is a file, an output below a file, and a checkpoint write that fails half-way."""

from __future__ import annotations

import dataclasses
import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenelib.cli import parse_config
from scenelib.datasets import load_dataset
from scenelib.integrity import cache_dir, inspect_image, scan_dataset, scan_records
from scenelib.models import HeadConfig, build_classifier, load_checkpoint, save_checkpoint
from scenelib.pipeline import main, prepare_run_dir
from scenelib.rundir import RunDir, create_run_dir
from scenelib.stages.explore import explore
from scenelib.transforms import load_square

from .conftest import write_image_tree


@pytest.fixture
def data(tmp_path):
    return write_image_tree(tmp_path / "data", ["a", "b"], 4, size=8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENELIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_more_threads_than_cores_are_capped_with_a_warning(data, tmp_path, capsys):
    cfg = parse_config(
        ["--dataset", "folder", "--data-dir", str(data), "--output", str(tmp_path / "o")]
        + ["--threads", "999"]
    )
    cores = os.cpu_count()
    assert cfg.threads == cores
    assert (
        f"--threads 999 is more than this machine's {cores} cores; using {cores}" in capsys.readouterr().err
    )
    assert parse_config(["--dataset", "folder", "--data-dir", str(data), "--threads", "1"]).threads == 1


def _sideways_jpeg(path: Path) -> np.ndarray:
    """A 40 x 20 JPEG whose left half is red, stored with EXIF Orientation 6 (turn 90 degrees clockwise to
    view): returns the upright pixels a viewer shows."""
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    return np.rot90(arr, k=-1)  # clockwise


def test_exif_orientation_is_applied_wherever_images_are_read(tmp_path):
    upright = _sideways_jpeg(tmp_path / "photo.jpg")
    record = inspect_image(tmp_path / "photo.jpg", 0)
    assert (record.width, record.height) == (20, 40)
    square = load_square(tmp_path / "photo.jpg", 20)  # the centre 20 x 20 of the upright 20 x 40 image
    assert np.abs(square.astype(int) - upright[10:30].astype(int)).mean() < 8
    assert square[:10, :, 0].mean() > 200 and square[10:, :, 0].mean() < 60  # red on top, as a viewer shows


def test_a_truncated_integrity_cache_is_rebuilt_with_a_warning(data, cache):
    dataset = load_dataset("folder", data)
    first = scan_records(dataset)
    (cached,) = (cache_dir() / "integrity").glob("*.json")
    cached.write_text(cached.read_text()[:50])
    with pytest.warns(UserWarning, match="does not load"):
        again = scan_records(dataset)
    assert again == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scan_records(dataset) == first  # the cache was written again


def test_a_file_name_that_is_not_utf8_is_left_out_and_named(data, cache):
    bad = os.path.join(os.fsencode(data / "a"), b"caf\xe9.png")
    Image.new("RGB", (8, 8)).save(open(bad, "wb"), format="PNG")  # noqa: SIM115 (closed by Pillow)
    dataset = load_dataset("folder", data)
    summary, _ = scan_dataset(dataset)
    assert summary["n_files"] == 8
    assert any("caf\ufffd.png: a file name that is not UTF-8" in s for s in summary["skipped_files"])


def test_a_class_without_a_readable_image_is_named(tmp_path, cache):
    data = write_image_tree(tmp_path / "data", ["a", "b", "c"], 4, size=8)
    for f in (data / "c").iterdir():
        f.write_bytes(b"not an image")
    run = RunDir(create_run_dir(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"too few in: c \(0 readable, 4 unreadable\)"):
        explore(run, "folder", str(data), "70/30", 0)
    assert not run.splits_csv.exists()


def test_runs_started_in_the_same_second_without_output_get_their_own_folders(data, tmp_path):
    cfg = parse_config(["--dataset", "folder", "--data-dir", str(data)])
    assert not cfg.output_given
    taken = create_run_dir(tmp_path / "20260101-000000")
    (taken / "run.json").write_text("{}")
    run, reset = prepare_run_dir(dataclasses.replace(cfg, output=taken))
    assert run.root.name == "20260101-000000-2" and not reset and (taken / "run.json").read_text() == "{}"


@pytest.mark.parametrize("where", ["inside", "holding"])
def test_an_output_nested_with_the_data_folder_is_refused(data, tmp_path, capsys, where):
    out = data / "run1" if where == "inside" else tmp_path
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["--dataset", "folder", "--data-dir", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("is inside the data folder" if where == "inside" else "holds the data folder") in err
    assert (
        len(err.strip().splitlines()) == 1
        and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    )


def test_a_data_dir_that_is_a_file_and_an_output_below_a_file_are_named(data, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["--dataset", "folder", "--data-dir", str(afile), "--output", str(tmp_path / "o")]) == 2
    assert f"--data-dir {afile} is a file, not a folder" in capsys.readouterr().err
    assert main(["--dataset", "folder", "--data-dir", str(data), "--output", str(afile / "sub")]) == 2
    assert f"{afile} is a file, not a folder" in capsys.readouterr().err and afile.read_text() == "mine"


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = build_classifier("simple_cnn", 2, HeadConfig())
    path = tmp_path / "m" / "checkpoint.pt"
    save_checkpoint(path, model, "simple_cnn", ["a", "b"], HeadConfig(), 64, [0.5] * 3, [0.25] * 3)
    good = path.read_bytes()
    real_save = torch.save

    def disk_full(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, "simple_cnn", ["x", "y"], HeadConfig(), 64, [0.5] * 3, [0.25] * 3)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == good and sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)[1]["classes"] == ["a", "b"]
