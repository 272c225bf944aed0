"""The recipe panel: candidate training recipes on several datasets and subset sizes, over seeded splits.

A recipe that is right for one dataset can be wrong for a user's: a smaller training set gets fewer
optimiser steps per epoch, and a smaller validation split cannot tell epochs apart (one image of 39 is 2.6
points). Each cell of the panel is a dataset (UC Merced, its class-balanced subsets of 10, 25 and 50 images
per class, AID150 and its 25-per-class subset), a seeded 70/30 split (the seed also draws the subset), and
a recipe of the ``partial`` strategy for one model:

* ``previous``: 12 epochs, every training image in every aerial view each epoch, the epoch with the best
  validation accuracy kept (early stopping);
* ``epochs8-bestval``: 8 epochs, one random view per image per epoch, the best-validation epoch kept;
* ``steps-last``: the pipeline's default, ``training.default_epochs`` (at least ``MIN_STEPS`` optimiser
  steps, at least 8 epochs), one view per image per epoch, the last epoch kept.

Rows carry validation and test accuracy (single view and TTA over the 8 views) of the kept weights, the
epochs run, the kept epoch and the training seconds; ``panel-epochs-*.csv`` holds every epoch's validation
loss and accuracy and single-view test accuracy, so that other kept-epoch rules can be scored on the same
runs. Where ``epochs8-bestval`` and ``steps-last`` train the same number of epochs, the former is read off
the latter's history (the runs are identical up to the kept epoch; ``derived`` marks it, and it has no TTA
figure). Choices are made on validation; test shows what they cost.

    python benchmarks/panel.py --data-dir ../shared/data --seeds 0,1,2
    python benchmarks/panel.py --data-dir ../shared/data --cells ucm10,ucm25 --recipes previous
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from time_to_accuracy import RESULTS, slug, train_like_pipeline

from scenelib.datasets import load_dataset
from scenelib.hardware import machine_record, reference_latency_ms
from scenelib.integrity import scan_dataset
from scenelib.models import check_model_name
from scenelib.splits import make_splits, split_rows
from scenelib.training import SplitData, TrainConfig, default_epochs
from scenelib.transforms import decode_images

# cell -> (dataset name, folder under --data-dir passed as the dataset's data dir, images per class or None)
CELLS = {
    "ucm10": ("ucmerced", ".", 10),
    "ucm25": ("ucmerced", ".", 25),
    "ucm50": ("ucmerced", ".", 50),
    "ucm": ("ucmerced", ".", None),
    "aid25": ("folder", "AID150", 25),
    "aid": ("folder", "AID150", None),
}
RECIPES = ("previous", "epochs8-bestval", "steps-last")


def recipe_config(recipe: str, n_train: int, seed: int) -> TrainConfig:
    if recipe == "previous":
        return TrainConfig(epochs=12, views_per_epoch=8, keep="best_val", seed=seed, linear_probe=False)
    if recipe == "epochs8-bestval":
        return TrainConfig(epochs=8, keep="best_val", seed=seed, linear_probe=False)
    return TrainConfig(epochs=default_epochs("partial", n_train), keep="last", seed=seed, linear_probe=False)


def accuracy(probs: np.ndarray, labels: torch.Tensor) -> float:
    return float((probs.argmax(-1) == labels.numpy()).mean())


def run_cell(
    cell: str, data_dir: Path, seeds: list[int], recipes: list[str], model: str
) -> tuple[list, list]:
    name, folder, per_class = CELLS[cell]
    dataset = load_dataset(name, data_dir / folder)
    summary, _ = scan_dataset(dataset)
    size = check_model_name(model).input_size
    paths = [str(s.path) for s in dataset.samples]
    images = decode_images(paths, size)
    index = {p: i for i, p in enumerate(paths)}
    rows, epochs_rows = [], []
    for seed in seeds:
        manifest = make_splits(
            dataset,
            "70/30",
            seed,
            exclude=set(summary["corrupt"]),
            max_per_class=per_class,
            groups=summary["duplicate_groups"],
        )
        splits = {}
        for split in ("train", "val", "test"):
            part = split_rows(manifest, split)
            splits[split] = SplitData(
                images[[index[r.path] for r in part]], torch.tensor([r.label for r in part])
            )
        n_train = len(splits["train"].labels)
        for recipe in recipes:
            cfg = recipe_config(recipe, n_train, seed)
            if (
                recipe == "epochs8-bestval"
                and "steps-last" in recipes
                and recipe_config("steps-last", n_train, seed).epochs == cfg.epochs
            ):
                continue  # read off the steps-last run below
            start = time.perf_counter()
            result = train_like_pipeline(model, splits, len(dataset.classes), cfg, test_each_epoch=True)
            seconds = time.perf_counter() - start
            base = {
                "cell": cell,
                "images_per_class": per_class or "all",
                "seed": seed,
                "n_train": n_train,
                "n_val": len(splits["val"].labels),
                "n_test": len(splits["test"].labels),
                "model": model,
            }
            for h in result.history:
                epochs_rows.append({**base, "recipe": recipe, **h})
            rows.append(
                {
                    **base,
                    "recipe": recipe,
                    "derived": False,
                    "epochs": cfg.epochs,
                    "epochs_run": len(result.history),
                    "kept_epoch": result.best_epoch,
                    "steps": len(result.history) * -(-n_train * cfg.views_per_epoch // cfg.batch_size),
                    "val_accuracy": accuracy(result.val_probs[0], splits["val"].labels),
                    "val_accuracy_tta": accuracy(result.val_probs.mean(0), splits["val"].labels),
                    "test_accuracy": accuracy(result.test_probs[0], splits["test"].labels),
                    "test_accuracy_tta": accuracy(result.test_probs.mean(0), splits["test"].labels),
                    "seconds": round(seconds, 1),
                }
            )
            print(rows[-1], flush=True)
            if recipe == "steps-last" and "epochs8-bestval" in recipes and cfg.epochs == 8:
                best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
                rows.append(
                    {
                        **rows[-1],
                        "recipe": "epochs8-bestval",
                        "derived": True,
                        "kept_epoch": best["epoch"],
                        "val_accuracy": best["val_accuracy"],
                        "val_accuracy_tta": np.nan,
                        "test_accuracy": best["test_accuracy"],
                        "test_accuracy_tta": np.nan,
                    }
                )
                print(rows[-1], flush=True)
    return rows, epochs_rows


def merge(path: Path, new: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A rerun replaces the rows of the cells, seeds and recipes it ran and keeps the others."""
    if path.exists():
        old = pd.read_csv(path)
        ran = new[keys].drop_duplicates()
        old = old.merge(ran, on=keys, how="left", indicator=True)
        old = old[old["_merge"] == "left_only"].drop(columns="_merge")
        new = pd.concat([old, new], ignore_index=True)
    return new


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over the seeds per cell and recipe: validation and test (single view, TTA)
    accuracy in percent, epochs, and training seconds."""
    rows = []
    order = {c: i for i, c in enumerate(CELLS)}
    for (cell, recipe), g in table.groupby(["cell", "recipe"], sort=False):
        row = {"cell": cell, "recipe": recipe, "seeds": len(g), "train images": int(g["n_train"].mean())}
        for col, name in (
            ("val_accuracy", "val"),
            ("test_accuracy", "test"),
            ("test_accuracy_tta", "test TTA"),
        ):
            v = 100 * g[col].dropna()
            row[name] = f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else "–"
        row["epochs"] = int(g["epochs_run"].mean())
        row["seconds"] = round(float(g["seconds"].mean()))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_c"] = out["cell"].map(order)
    out["_r"] = out["recipe"].map({r: i for i, r in enumerate(RECIPES)})
    return out.sort_values(["_c", "_r"]).drop(columns=["_c", "_r"])


def kept_epoch_rules(epochs: pd.DataFrame, recipe: str = "steps-last") -> pd.DataFrame:
    """Single-view test accuracy (%, mean ± std over seeds) of the weights each kept-epoch rule would keep,
    read off the same training runs: the last epoch, the best validation accuracy (ties: lower loss), the
    lowest validation loss."""
    rules = {
        "last": lambda g: g.iloc[-1],
        "best val accuracy": lambda g: g.sort_values(
            ["val_accuracy", "val_loss"], ascending=[False, True]
        ).iloc[0],
        "lowest val loss": lambda g: g.sort_values("val_loss").iloc[0],
    }
    rows = []
    runs = epochs[epochs["recipe"] == recipe].groupby(["cell", "seed"], sort=False)
    for cell, cell_runs in pd.DataFrame(
        [
            {"cell": c, **{r: 100 * f(g.sort_values("epoch"))["test_accuracy"] for r, f in rules.items()}}
            for (c, _), g in runs
        ]
    ).groupby("cell", sort=False):
        rows.append(
            {
                "cell": cell,
                **{r: f"{cell_runs[r].mean():.1f} ± {cell_runs[r].std(ddof=1):.1f}" for r in rules},
            }
        )
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot(table: pd.DataFrame, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in CELLS if c in set(table["cell"])]
    fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
    width = 0.8 / len(RECIPES)
    for i, recipe in enumerate(RECIPES):
        g = table[table["recipe"] == recipe].groupby("cell")["test_accuracy"]
        mean, std = g.mean().reindex(cells), g.std(ddof=1).reindex(cells)
        xs = [j + (i - 1) * width for j in range(len(cells))]
        ax.bar(xs, 100 * mean, width, yerr=100 * std, capsize=2, label=recipe)
    ax.set_xticks(range(len(cells)), cells)
    ax.set(ylabel="test accuracy, single view (%)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(max(0, 100 * table["test_accuracy"].min() - 5), 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", type=Path, required=True, help="folder holding UCMerced_LandUse/ and AID150/"
    )
    p.add_argument("--cells", default="ucm10,ucm25,aid25,ucm50,aid,ucm")
    p.add_argument("--recipes", default="epochs8-bestval,steps-last")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_record(args.threads, reference=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipes.split(",")
    args.output.mkdir(parents=True, exist_ok=True)
    stem = slug(machine)
    for cell in args.cells.split(","):
        before = reference_latency_ms(args.threads)
        rows, epochs_rows = run_cell(cell, args.data_dir, seeds, recipes, args.model)
        stamp = {
            "cpu": machine["cpu"],
            "features": machine["summary"],
            "threads": args.threads,
            "torch": torch.__version__,
            "mobilenet_v2_eager_ms": round(before, 2),
            "mobilenet_v2_eager_ms_after": round(reference_latency_ms(args.threads), 2),
        }
        keys = ["cell", "seed", "recipe", "model"]
        for path, frame in (
            (args.output / f"panel-{stem}.csv", pd.DataFrame(rows)),
            (args.output / f"panel-epochs-{stem}.csv", pd.DataFrame(epochs_rows)),
        ):
            merge(path, frame.assign(**stamp), keys).to_csv(path, index=False, float_format="%.4f")
        print(f"{cell}: wrote {args.output}/panel-{stem}.csv", flush=True)
    table = pd.read_csv(args.output / f"panel-{stem}.csv")
    print(markdown(summarize(table)))
    print(markdown(kept_epoch_rules(pd.read_csv(args.output / f"panel-epochs-{stem}.csv"))))
    plot(
        table,
        f"{args.model}, mean ± std over seeds\n{machine['cpu']}: {machine['summary']}",
        args.output / f"panel-{stem}.png",
    )


if __name__ == "__main__":
    main()
