"""Stage 01: integrity scan of the whole dataset, the split manifest and ``data_summary.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import journal
from ..datasets import SceneDataset, load_dataset
from ..integrity import ImageRecord, scan_dataset
from ..rundir import RunDir, write_json
from ..splits import (
    ManifestRow,
    check_split_feasible,
    make_splits,
    split_counts,
    twins_across,
    write_manifest,
)


@dataclass
class Exploration:
    dataset: SceneDataset
    summary: dict
    records: list[ImageRecord]
    manifest: list[ManifestRow]

    def examples(self, per_class: int = 3) -> dict[str, list[str]]:
        return examples_per_class(self.manifest, per_class)


def examples_per_class(manifest: list[ManifestRow], per_class: int = 3) -> dict[str, list[str]]:
    """The first images of each class in the manifest, for the sample grid."""
    out: dict[str, list[str]] = {}
    for r in manifest:
        group = out.setdefault(r.class_name, [])
        if len(group) < per_class:
            group.append(r.path)
    return dict(sorted(out.items()))


def write_records(records: list[ImageRecord], run: RunDir) -> None:
    table = pd.DataFrame([asdict(r) for r in records])
    for i, channel in enumerate("rgb"):
        table[f"mean_{channel}"] = [m[i] if m else None for m in table["channel_mean"]]
        table[f"std_{channel}"] = [s[i] if s else None for s in table["channel_std"]]
    table.drop(columns=["channel_mean", "channel_std"]).to_csv(run.integrity_csv, index=False)


def read_channel_stats(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """Per-image channel means and stds [N, 3] of the readable images, from ``integrity.csv``."""
    table = pd.read_csv(run.integrity_csv)
    table = table[table["ok"]]
    return table[["mean_r", "mean_g", "mean_b"]].to_numpy(), table[["std_r", "std_g", "std_b"]].to_numpy()


def explore(
    run: RunDir, dataset_name: str, data_dir: str, split: str, seed: int, max_per_class: int = 0
) -> Exploration:
    """Scan every image (always the whole dataset), split the readable ones, write the two files."""
    dataset = load_dataset(dataset_name, data_dir)
    summary, records = scan_dataset(dataset)
    check_split_feasible(dataset, split, max_per_class or None, unreadable=set(summary["corrupt"]))
    manifest = make_splits(
        dataset,
        split,
        seed,
        exclude=set(summary["corrupt"]),
        max_per_class=max_per_class or None,
        groups=summary["duplicate_groups"],
    )
    write_manifest(manifest, run.splits_csv)
    write_records(records, run)
    summary.update(
        {
            "split": split,
            "seed": seed,
            "max_per_class": max_per_class or None,
            "split_counts": split_counts(manifest),
            "split_totals": {s: sum(1 for r in manifest if r.split == s) for s in ("train", "val", "test")},
            "duplicates_grouped": split != "official",
            "twins_of_train": twins_across(manifest, summary["duplicate_groups"]),
            "aerial": dataset.aerial,
            "description": dataset.description,
        }
    )
    write_json(run.data_summary_json, summary)
    journal.record(run, "01_explore_data")
    return Exploration(dataset, summary, records, manifest)
