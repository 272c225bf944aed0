"""The integrity scan on small trees with known defects, and the split manifest."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from scenelib.datasets import load_dataset
from scenelib.integrity import scan_dataset
from scenelib.splits import make_splits, read_manifest, split_counts, twins_across, write_manifest

from .conftest import write_image_tree


@pytest.fixture
def flawed_tree(tmp_path):
    """3 classes; one corrupt file, one grayscale image, one odd size, one pixel duplicate in another format."""
    root = write_image_tree(tmp_path / "data", ["a", "b", "c"], 6, size=32)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.full((32, 32), 128, np.uint8), mode="L").save(root / "b" / "gray.png")
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(root / "c" / "odd.png")
    pixels = np.asarray(Image.open(root / "a" / "a00.png"))
    Image.fromarray(pixels).save(root / "b" / "copy.webp", lossless=True)
    return root


def test_scan_finds_every_known_defect(flawed_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SCENELIB_CACHE_DIR", str(tmp_path / "cache"))
    ds = load_dataset("folder", flawed_tree)
    ds.nominal_size = 32
    summary, records = scan_dataset(ds)
    assert [p.split("/")[-1] for p in summary["corrupt"]] == ["broken.png"]
    assert [r["path"].split("/")[-1] for r in summary["non_rgb"]] == ["gray.png"]
    assert [(o["path"].split("/")[-1], o["width"], o["height"]) for o in summary["odd_size"]] == [
        ("odd.png", 32, 30)
    ]
    assert [[p.split("/")[-1] for p in g] for g in summary["duplicate_groups"]] == [["a00.png", "copy.webp"]]
    assert summary["n_images"] == 21 and summary["class_counts"] == {"a": 6, "b": 8, "c": 7}
    assert summary["imbalance_ratio"] == pytest.approx(8 / 6)
    # The second scan comes from the cache: same answer, and the cache file exists.
    assert scan_dataset(ds)[0] == summary
    assert list((tmp_path / "cache" / "integrity").glob("folder-*.json"))


def test_corrupt_files_are_left_out_of_the_split(flawed_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SCENELIB_CACHE_DIR", str(tmp_path / "cache"))
    ds = load_dataset("folder", flawed_tree)
    summary, _ = scan_dataset(ds)
    rows = make_splits(ds, "70/30", seed=0, exclude=set(summary["corrupt"]))
    assert len(rows) == 21 and not any(r.path.endswith("broken.png") for r in rows)


def test_manifest_is_byte_identical_for_a_seed(tmp_path):
    ds = load_dataset("folder", write_image_tree(tmp_path / "d", ["x", "y", "z"], 20, size=8))
    a = write_manifest(make_splits(ds, "70/30", seed=3), tmp_path / "a.csv").read_bytes()
    b = write_manifest(make_splits(ds, "70/30", seed=3), tmp_path / "b.csv").read_bytes()
    c = write_manifest(make_splits(ds, "70/30", seed=4), tmp_path / "c.csv").read_bytes()
    assert a == b and a != c
    rows = read_manifest(tmp_path / "a.csv")
    assert Counter(r.split for r in rows) == {"train": 38, "val": 4, "test": 18}
    assert all(v["test"] == 6 for v in split_counts(rows).values())


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("70/30", (0.63, 0.07, 0.30)), ("80/20", (0.72, 0.08, 0.20)), ("80/10/10", (0.8, 0.1, 0.1))],
)
def test_presets_are_stratified(tmp_path, preset, expected):
    ds = load_dataset("folder", write_image_tree(tmp_path / "d", ["x", "y"], 50, size=8))
    counts = Counter(r.split for r in make_splits(ds, preset, seed=0))
    assert [counts[s] / 100 for s in ("train", "val", "test")] == pytest.approx(expected, abs=0.011)


def test_quick_subset_and_errors(tmp_path):
    ds = load_dataset("folder", write_image_tree(tmp_path / "d", ["x", "y", "z"], 20, size=8))
    rows = make_splits(ds, "70/30", seed=0, max_per_class=10)
    assert Counter(r.class_name for r in rows) == {"x": 10, "y": 10, "z": 10}
    assert {r.split for r in rows} == {"train", "val", "test"}
    with pytest.raises(ValueError, match="no official split"):
        make_splits(ds, "official")
    with pytest.raises(ValueError, match="valid"):
        make_splits(ds, "50/50")


def test_duplicate_groups_stay_on_one_side(tmp_path):
    """Ungrouped, some seed puts twins on two sides; grouped, no seed does."""
    ds = load_dataset("folder", write_image_tree(tmp_path / "d", ["x", "y", "z"], 20, size=8))
    paths = [str(s.path) for s in ds.samples]
    groups = [paths[i : i + 3] for i in range(0, 60, 10)]  # six triples, each inside one class
    straddled = 0
    for seed in range(6):
        plain = make_splits(ds, "70/30", seed=seed)
        straddled += sum(twins_across(plain, groups).values())
        rows = make_splits(ds, "70/30", seed=seed, groups=groups)
        side = {r.path: r.split for r in rows}
        assert all(len({side[p] for p in g}) == 1 for g in groups), seed
        assert twins_across(rows, groups) == {"val": 0, "test": 0}
        assert {r.class_name for r in rows if r.split == "test"} == {"x", "y", "z"}
    assert straddled > 0


@pytest.mark.slow
def test_shared_ucmerced_has_exactly_the_known_quirks(ucmerced_dir):
    summary, _ = scan_dataset(load_dataset("ucmerced", ucmerced_dir))
    assert summary["n_images"] == 2100 and summary["n_classes"] == 21 and not summary["corrupt"]
    ds = load_dataset("ucmerced", ucmerced_dir)
    rows = make_splits(ds, "70/30", seed=0, groups=summary["duplicate_groups"])
    assert twins_across(rows, summary["duplicate_groups"]) == {"val": 0, "test": 0}
    assert len(summary["odd_size"]) == 44
    assert {o["path"].split("/")[-1].split(".")[0] for o in summary["odd_size"]} >= {
        f"overpass{i}" for i in range(64, 72)
    }
    assert [[p.split("/")[-1].split(".")[0] for p in g] for g in summary["duplicate_groups"]] == [
        ["airplane01", "airplane02"]
    ]
