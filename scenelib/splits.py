"""Seeded, stratified splits saved as a manifest (``splits.csv``: path, label, class, split).

Every later stage reads the manifest and never re-splits, so all models see the same test images.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

from .datasets import SceneDataset

# name -> (train, validation, test) fractions. "70/30" carves the validation part out of the 70 % train.
SPLIT_PRESETS: dict[str, tuple[float, float, float]] = {
    "70/30": (0.63, 0.07, 0.30),
    "80/20": (0.72, 0.08, 0.20),  # the other split of the UC Merced literature; validation from the 80
    "80/10/10": (0.80, 0.10, 0.10),
    "official": (0.0, 0.0, 0.0),  # the dataset's own train/test; validation = 10 % of train
}
OFFICIAL_VAL_FRACTION = 0.10
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    path: str
    label: int
    class_name: str
    split: str


def check_split_preset(preset: str, dataset: SceneDataset | None = None) -> None:
    if preset not in SPLIT_PRESETS:
        raise ValueError(f"unknown split preset {preset!r}; valid: {', '.join(SPLIT_PRESETS)}")
    if preset == "official" and dataset is not None and not dataset.has_official_split:
        raise ValueError(f"dataset {dataset.name!r} has no official split; use 70/30 or 80/10/10")


MIN_PER_CLASS = 3  # one image each for train, validation and test


def check_split_feasible(
    dataset: SceneDataset,
    preset: str,
    max_per_class: int | None = None,
    unreadable: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Refuse, before anything is written, a dataset the split cannot serve: fewer than two classes, or a
    class with too few images for train, validation and test. The message names the classes. Files in
    ``unreadable`` (the integrity scan's corrupt ones) are not counted."""
    check_split_preset(preset, dataset)
    if len(dataset.classes) < 2:
        raise ValueError(
            f"{dataset.name}: found {len(dataset.classes)} class folder(s) under {dataset.root}; a classifier "
            "needs at least two (one sub-folder of images per class)"
        )
    counts, lost = [0] * len(dataset.classes), [0] * len(dataset.classes)
    for s in dataset.samples:
        if str(s.path) in unreadable:
            lost[s.label] += 1
        elif preset != "official" or s.official_split == "train":
            counts[s.label] += 1
    need = 2 if preset == "official" else MIN_PER_CLASS
    if max_per_class:
        counts = [min(c, max_per_class) for c in counts]
    small = [
        f"{dataset.classes[i]} ({c}" + (f" readable, {lost[i]} unreadable)" if lost[i] else ")")
        for i, c in enumerate(counts)
        if c < need
    ]
    if small:
        raise ValueError(
            f"{dataset.name}: split {preset} needs at least {need} readable images in every class "
            f"{'(train part) ' if preset == 'official' else ''}for train, validation and test; too few in: "
            f"{', '.join(small)}. Add images or remove those class folders"
        )


def _stratified(
    items: list[int], labels: list[int], test_size: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratified split; on small data every class still gets at least one item on each side."""
    if test_size <= 0 or not items:
        return list(items), []
    n_classes = len(set(labels))
    n_second = min(max(round(test_size * len(items)), n_classes), len(items) - n_classes)
    if n_second <= 0 or min(labels.count(c) for c in set(labels)) < 2:
        raise ValueError(f"too few images to split: {len(items)} images in {n_classes} classes")
    first, second = train_test_split(items, test_size=n_second, stratify=labels, random_state=seed)
    return sorted(first), sorted(second)


def make_splits(
    dataset: SceneDataset,
    preset: str = "70/30",
    seed: int = 0,
    exclude: set[str] | frozenset[str] = frozenset(),
    max_per_class: int | None = None,
    groups: list[list[str]] | None = None,
) -> list[ManifestRow]:
    """Split the dataset's readable images; ``exclude`` holds paths the integrity scan found unreadable.

    ``groups`` are sets of paths that must land on the same side (the integrity scan's pixel-identical
    images): a model evaluated on the twin of a training image is not evaluated on unseen data. Each group is
    split as one unit, stratified by its first member's class. ``max_per_class`` keeps a seeded random
    subset of each class first (for quick smoke runs). Official splits are kept as published; see
    ``twins_across``.
    """
    check_split_preset(preset, dataset)
    samples = [s for s in dataset.samples if str(s.path) not in exclude]
    if max_per_class is not None:
        rng = random.Random(seed)
        by_class: dict[int, list] = {}
        for s in samples:
            by_class.setdefault(s.label, []).append(s)
        keep = {
            id(s) for group in by_class.values() for s in rng.sample(group, min(max_per_class, len(group)))
        }
        samples = [s for s in samples if id(s) in keep]
    # Units: one per duplicate group, one per other image; a unit's index is its first member's.
    position = {str(s.path): i for i, s in enumerate(samples)}
    members: dict[int, list[int]] = {i: [i] for i in range(len(samples))}
    for group in groups or []:
        found = sorted(position[p] for p in group if p in position)
        for i in found[1:]:
            members[found[0]].extend(members.pop(i))
    index = sorted(members)
    labels = {i: samples[i].label for i in index}
    assignment: dict[int, str] = {}
    if preset == "official":  # the published split decides; twins within its train part stay together
        for i in range(len(samples)):
            if samples[i].official_split != "train":
                assignment[i] = "test"
        members = {u: [i for i in m if samples[i].official_split == "train"] for u, m in members.items()}
        members = {m[0]: m for m in members.values() if m}
        train_pool = sorted(members)
        labels = {i: samples[i].label for i in train_pool}
        val_fraction = OFFICIAL_VAL_FRACTION
    else:
        train_f, val_f, test_f = SPLIT_PRESETS[preset]
        train_pool, test = _stratified(index, [labels[i] for i in index], test_f, seed)
        for i in test:
            assignment.update(dict.fromkeys(members[i], "test"))
        val_fraction = val_f / (train_f + val_f)
    train, val = _stratified(train_pool, [labels[i] for i in train_pool], val_fraction, seed)
    for side, units in (("train", train), ("val", val)):
        for i in units:
            assignment.update(dict.fromkeys(members[i], side))
    return [
        ManifestRow(str(samples[i].path), samples[i].label, dataset.classes[samples[i].label], assignment[i])
        for i in range(len(samples))
    ]


def twins_across(rows: list[ManifestRow], groups: list[list[str]]) -> dict[str, int]:
    """How many validation and test images have a pixel-identical twin in train (0 for grouped splits)."""
    side = {r.path: r.split for r in rows}
    out = {"val": 0, "test": 0}
    for group in groups:
        sides = [side[p] for p in group if p in side]
        if "train" in sides:
            for s in sides:
                if s in out:
                    out[s] += 1
    return out


def write_manifest(rows: list[ManifestRow], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "class", "split"])
        for r in rows:
            writer.writerow([r.path, r.label, r.class_name, r.split])
    return path


class ManifestError(ValueError):
    """``splits.csv`` exists but is not a manifest this version wrote; the message names the fix."""


def _manifest_row(r: dict, line: int, path: Path) -> ManifestRow:
    def bad(why: str) -> ManifestError:
        return _damaged(path, f"line {line}: {why}")

    if None in r or any(r.get(k) is None for k in ("path", "label", "class", "split")):
        raise bad("wrong number of columns")
    try:
        label = int(r["label"])
    except ValueError:
        raise bad(f"label {r['label']!r} is not a number") from None
    if label < 0 or r["split"] not in SPLIT_NAMES or not r["path"] or not r["class"]:
        raise bad("unexpected label, split, path or class")
    return ManifestRow(r["path"], label, r["class"], r["split"])


def read_manifest(path: Path) -> list[ManifestRow]:
    """The manifest, checked: every row complete, labels 0..n-1 each with one class name, train and test
    present. A damaged file raises ``ManifestError`` naming it and the fix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the data-exploration stage (01_explore_data) first")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != ["path", "label", "class", "split"]:
                raise _damaged(path, f"header {reader.fieldnames}")
            rows = [_manifest_row(r, i, path) for i, r in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _damaged(path, str(exc)) from None
    names = {}
    for r in rows:
        if names.setdefault(r.label, r.class_name) != r.class_name:
            raise _damaged(path, f"label {r.label} names two classes")
    if sorted(names) != list(range(len(names))) or not {"train", "test"} <= {r.split for r in rows}:
        raise _damaged(path, "labels or splits missing")
    return rows


def _damaged(path: Path, why: str) -> ManifestError:
    return ManifestError(
        f"{path} is damaged ({why}): rerun stage 01 with --resume, which rebuilds it, "
        "or start the run over with --force"
    )


def class_names(rows: list[ManifestRow]) -> list[str]:
    """Class names in label order, recovered from the manifest."""
    names = {r.label: r.class_name for r in rows}
    return [names[i] for i in range(len(names))]


def split_rows(rows: list[ManifestRow], split: str) -> list[ManifestRow]:
    return [r for r in rows if r.split == split]


def split_counts(rows: list[ManifestRow]) -> dict[str, dict[str, int]]:
    """{class: {split: count}} for the split table."""
    table: dict[str, dict[str, int]] = {}
    for r in rows:
        table.setdefault(r.class_name, dict.fromkeys(SPLIT_NAMES, 0))[r.split] += 1
    return dict(sorted(table.items()))
