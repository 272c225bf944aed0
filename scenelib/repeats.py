"""Repeated splits: every trained model trained again on N-1 more seeded splits, reported as mean ± std.

One split is one sample of the data: a 630-image test set moves a model's accuracy by a point from one seeded
split to the next, more than most differences between models. The aerial-scene benchmarks (AID,
NWPU-RESISC45) therefore report mean ± std over repeated random splits; ``--repeats N`` does the same.

Split 1 is the run itself. Split r (2..N) is a small run directory, ``<run>/repeats/r<r>/``, holding its own
``splits.csv`` (the same preset with seed + r - 1, duplicate groups kept on one side, the same corrupt files
left out) and what ``02_train_model``, the same notebook, writes there. Every split is scored the same way:
the test predictions training writes (single view and TTA), so split 1's numbers here can differ from the
end-to-end ones in the main tables by the cached-vs-end-to-end agreement the benchmark stage reports. What a
user following the report gets is shown twice: the single model each split's validation picks (derived from
the rows at report time), and its pick when a soft vote of the top models may compete (ensemble.py's rule on
training's validation predictions; one ``VOTE`` row per split in repeats.csv).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .datasets import SceneDataset
from .ensemble import best, select
from .evaluation import Predictions, accuracy_and_f1
from .rundir import TRAIN_VAL, RunDir, read_json, write_json
from .splits import make_splits, write_manifest

REPEATS_DIR = "repeats"
REPEATS_CSV = "repeats.csv"
RANDOM_ONLY = "official"  # a published split cannot be drawn again


def repeat_run(run: RunDir, r: int) -> RunDir:
    """The run directory of split ``r`` (1 is the run itself)."""
    return run if r == 1 else RunDir(run.root / REPEATS_DIR / f"r{r}")


def prepare_repeat(run: RunDir, dataset: SceneDataset, r: int) -> RunDir:
    """Write split ``r``'s manifest (deterministic: a resumed run writes the same file)."""
    summary = read_json(run.data_summary_json)
    seed = summary["seed"] + r - 1
    manifest = make_splits(
        dataset,
        summary["split"],
        seed,
        exclude=set(summary["corrupt"]),
        max_per_class=summary.get("max_per_class"),
        groups=summary["duplicate_groups"],
    )
    sub = repeat_run(run, r)
    sub.root.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, sub.splits_csv)
    write_json(
        sub.run_json, {"repeat_of": str(run.root), "repeat": r, "seed": seed, "split": summary["split"]}
    )
    return sub


def repeat_rows(run: RunDir, repeats: int, models: list[str]) -> pd.DataFrame:
    """One row per model and split with a finished training: validation and test accuracy, macro-F1."""
    rows = []
    for r in range(1, repeats + 1):
        sub = repeat_run(run, r)
        for model in models:
            if not sub.train_json(model).exists() or not sub.predictions(model, "fp32").exists():
                continue
            train = read_json(sub.train_json(model))
            if "best_epoch" not in train:  # a failed or skipped training
                continue
            history = read_json(sub.history_json(model)) if sub.history_json(model).exists() else []
            kept = history[train["best_epoch"] - 1] if len(history) >= train["best_epoch"] else {}
            pred = Predictions.load(sub.predictions(model, "fp32"))
            acc, f1 = accuracy_and_f1(pred.single, pred.labels)
            acc_tta = accuracy_and_f1(pred.tta, pred.labels)[0] if pred.tta is not None else np.nan
            rows.append(
                {
                    "model": model,
                    "split": r,
                    "seed": read_json(sub.run_json).get("seed") if r > 1 else train["config"]["seed"],
                    "val_accuracy": train["val_accuracy"],
                    "val_loss": kept.get("val_loss", np.nan),
                    "accuracy": acc,
                    "accuracy_tta": acc_tta,
                    "macro_f1": f1,
                    "train_seconds": train["train_seconds"],
                }
            )
    return pd.DataFrame(rows)


CHOSEN = "chosen on validation"
VOTE = "chosen on validation, soft vote allowed"


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """Best first per split: highest validation accuracy, ties: lower validation loss (as
    ``claims.validation_ranking``)."""
    loss = rows["val_loss"] if "val_loss" in rows else pd.Series(np.nan, index=rows.index)
    return (
        rows.assign(_loss=loss.fillna(np.inf))
        .sort_values(["split", "val_accuracy", "_loss"], ascending=[True, False, True], kind="stable")
        .drop(columns="_loss")
    )


def chosen_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Per split, the row of the single model its validation split picks, renamed ``CHOSEN`` with the pick in
    ``picked``: the spread of what a user following the report would get, not of a model fixed in
    hindsight."""
    if rows.empty:
        return rows
    picked = _ranked(rows[rows["model"] != VOTE]).groupby("split", sort=True).head(1)
    return picked.assign(picked=picked["model"], model=CHOSEN)


def vote_rows(run: RunDir, rows: pd.DataFrame) -> pd.DataFrame:
    """Per split, the ``VOTE`` row: what its validation picks when a soft vote of the top models may compete
    with the best one (``ensemble.select`` and ``better``, on training's validation predictions, so its
    validation accuracy is theirs), scored on that split's test images; ``picked`` names the members. A
    split with one model picks it. None at all unless some split has two models and every model of every
    split has its validation predictions (a run resumed from an older release lacks them): a mean over some
    of the splits would not be the mean the report announces."""
    models_of = {r: list(split["model"]) for r, split in _ranked(rows).groupby("split", sort=True)}
    has_file = all(
        repeat_run(run, int(r)).predictions(m, TRAIN_VAL).exists() for r, ms in models_of.items() for m in ms
    )
    if not has_file or max((len(ms) for ms in models_of.values()), default=0) < 2:
        return pd.DataFrame()
    out = []
    for r, ranked in models_of.items():
        sub = repeat_run(run, int(r))
        val = {m: Predictions.load(sub.predictions(m, TRAIN_VAL)) for m in ranked}
        single, votes = select({m: p.single for m, p in val.items()}, val[ranked[0]].labels, ranked)
        kept = best([single, *votes])
        test = [Predictions.load(sub.predictions(m, "fp32")) for m in kept["members"]]
        labels = test[0].labels
        if any(not np.array_equal(p.paths, test[0].paths) for p in test):
            raise ValueError(f"split {r}: the members' test predictions are not on the same images")
        single_view = np.mean([p.single for p in test], axis=0)
        tta = [p.tta for p in test]
        acc, f1 = accuracy_and_f1(single_view, labels)
        split = rows[(rows["split"] == r)].set_index("model")
        out.append(
            {
                "model": VOTE,
                "split": r,
                "seed": split["seed"].iloc[0],
                "val_accuracy": kept["val_accuracy"],
                "val_loss": np.nan,
                "accuracy": acc,
                "accuracy_tta": (
                    accuracy_and_f1(np.mean(tta, axis=0), labels)[0]
                    if all(t is not None for t in tta)
                    else np.nan
                ),
                "macro_f1": f1,
                "train_seconds": split.loc[kept["members"], "train_seconds"].sum(),
                "picked": "+".join(kept["members"]),
            }
        )
    return pd.DataFrame(out)


def mean_interval(values) -> tuple[float, float]:
    """95 % t-interval of the mean of a few split-level accuracies, clipped to [0, 1] (NaN with fewer than
    two). With 3 splits t is 4.3: the interval is wide, as it should be."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (np.nan, np.nan)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return (float(max(0.0, values.mean() - half)), float(min(1.0, values.mean() + half)))


SPREAD_METRICS = ("val_accuracy", "accuracy", "accuracy_tta", "macro_f1", "train_seconds")


def spread(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model (in order of appearance): ``repeats`` (splits scored) and ``<metric>_mean`` /
    ``<metric>_std`` (sample std; NaN with one split) of ``repeat_rows``' metrics."""
    table = rows.groupby("model", sort=False)[list(SPREAD_METRICS)].agg(["mean", "std", "count"])
    return pd.DataFrame(
        {
            "model": table.index,
            "repeats": table[("accuracy", "count")].to_numpy(),
            **{f"{m}_{s}": table[(m, s)].to_numpy() for m in SPREAD_METRICS for s in ("mean", "std")},
        }
    )


def summarize(run: RunDir, repeats: int, models: list[str]) -> pd.DataFrame:
    """Mean, sample std and count per model over the splits; writes ``repeats.csv`` (one row per split)
    and the ``*_mean`` / ``*_std`` / ``repeats`` columns of the fp32 rows of ``results.csv``."""
    rows = repeat_rows(run, repeats, models)
    if rows.empty:
        rows.to_csv(run.root / REPEATS_CSV, index=False)
        return rows
    pd.concat([rows, vote_rows(run, rows)], ignore_index=True).to_csv(run.root / REPEATS_CSV, index=False)
    out = spread(rows)
    run.upsert_results(
        [
            {
                "model": row.model,
                "variant": "fp32",
                "repeats": int(row.repeats),
                "accuracy_mean": row.accuracy_mean,
                "accuracy_std": row.accuracy_std,
                "accuracy_tta_mean": row.accuracy_tta_mean,
                "accuracy_tta_std": row.accuracy_tta_std,
                "macro_f1_std": row.macro_f1_std,
            }
            for row in out.itertuples()
        ]
    )
    return out
