"""How many epochs the default recipe needs: accuracy per epoch budget, over training seeds, on one split.

The default (``partial``) recipe trains the last blocks of a pretrained model on cached prefix features, one
random aerial view per image per epoch, with a one-cycle schedule over the whole budget. The budget sets both
the training time and the size of the feature cache (the views some epoch draws), so it is the main lever on
a slow CPU. This script computes each model's cache once (every view), then trains the recipe for every
budget and seed from it with ``training.fit``, as ``training.train_model`` does, and writes validation,
single-view test and TTA test accuracy with the training seconds to a CSV named after the CPU. Seeds, not
one run, carry the comparison: a seed changes the new head, the views drawn and the batch order, and on
UC Merced's 147 validation and 630 test images that alone moves accuracy by one to two points. Budgets are
compared on validation; test is recorded to show what the choice costs, never to make it.

A model without pretrained weights (``simple_cnn``) is trained whole from random initialisation, as the
pipeline's ``scratch`` strategy, at its own input size. A rerun replaces the CSV's rows of the budgets and
seeds it runs and keeps the others; every row carries the reference latency measured around its model.

    python benchmarks/epoch_budget.py --data-dir ../shared/data --epochs 8,12 --seeds 0,1,2
    python benchmarks/epoch_budget.py --data-dir ../shared/data --models simple_cnn --epochs 8,12
    python benchmarks/epoch_budget.py --data-dir ../shared/data --models mobilenet_v2 --epochs 8 --trainable-blocks 4
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from time_to_accuracy import RESULTS, load_splits, slug, train_like_pipeline

from scenelib.features import make_runner
from scenelib.hardware import machine_record, reference_latency_ms
from scenelib.models import HeadConfig, check_model_name, to_scene_classifier
from scenelib.training import (
    TrainConfig,
    cut_point,
    feature_cache,
    fit,
    frozen_prefix,
    seed_everything,
    trainable_part,
    training_layout,
)
from scenelib.transforms import views
from scenelib.weights import load_pretrained


def train_budgets(
    name: str,
    splits: dict,
    n_classes: int,
    budgets: list[int],
    seeds: list[int],
    trainable_blocks: int | None = None,
) -> list[dict]:
    """The partial recipe of a pretrained model at every budget and seed, from one cache of every view;
    ``trainable_blocks`` None: the registry's default."""
    spec = check_model_name(name)
    arch, info = load_pretrained(spec, "auto")
    size = splits["train"].images.shape[-1]
    tv = views("aerial", size, 0)
    base = to_scene_classifier(spec, arch, n_classes, HeadConfig())  # the prefix for the cache only
    cut = cut_point(base, spec, TrainConfig(trainable_blocks=trainable_blocks))
    runner, _ = make_runner(frozen_prefix(base.eval(), cut), size)
    start = time.perf_counter()
    cache = feature_cache(runner, splits, info.mean, info.std, tv, tv)  # every training view: any budget
    cache_seconds = time.perf_counter() - start
    labels = {k: v.labels for k, v in splits.items()}
    rows = []
    for epochs in budgets:
        for seed in seeds:
            cfg = TrainConfig(epochs=epochs, seed=seed, trainable_blocks=trainable_blocks)
            seed_everything(seed)  # as the training stage: building the architecture, then the new head
            model = to_scene_classifier(spec, load_pretrained(spec, "auto")[0], n_classes, cfg.head)
            for p in model.blocks[:cut].parameters():
                p.requires_grad_(False)
            seed_everything(seed)
            drawn = torch.randint(
                0, len(tv), (epochs, len(labels["train"])), generator=torch.Generator().manual_seed(seed)
            )
            net = trainable_part(model, cut)
            layout = training_layout(cut, len(model.blocks), torch.device("cpu"))  # as train_model's
            net.to(memory_format=layout)

            def batches(split: str, view: int = 0):
                feats = cache[split][view]
                return [
                    (feats[i : i + 32].float(), labels[split][i : i + 32]) for i in range(0, len(feats), 32)
                ]

            t0 = time.perf_counter()
            history, best_epoch = fit(
                net,
                lambda idx, e, drawn=drawn: cache["train"][drawn[e, idx], idx].float(),
                labels["train"],
                lambda: batches("val"),
                cfg,
                n_classes,
                desc=f"{name} {epochs} epochs seed {seed}",
                layout=layout,
            )
            seconds = time.perf_counter() - t0
            net.eval()
            with torch.inference_mode():
                probs = torch.stack(
                    [
                        torch.cat([net(x.to(memory_format=layout)).softmax(1) for x, _ in batches("test", v)])
                        for v in range(len(tv))
                    ]
                )
            rows.append(
                budget_row(
                    name,
                    len(model.blocks) - cut,
                    epochs,
                    seed,
                    history,
                    best_epoch,
                    probs,
                    labels["test"],
                    seconds,
                )
            )
            rows[-1]["cache_seconds_all_views"] = round(cache_seconds, 1)
            print(rows[-1], flush=True)
    return rows


def train_scratch_budgets(
    name: str, splits: dict, n_classes: int, budgets: list[int], seeds: list[int]
) -> list[dict]:
    """A model without pretrained weights (simple_cnn, the no-transfer baseline): trained whole from random
    initialisation by ``training.train_model``, as the pipeline's ``scratch`` strategy, at its own input
    size. There is no cache: the budget sets the training time alone."""
    rows = []
    for epochs in budgets:
        for seed in seeds:
            cfg = TrainConfig(strategy="scratch", epochs=epochs, seed=seed)
            result = train_like_pipeline(name, splits, n_classes, cfg)
            probs = torch.from_numpy(result.test_probs)
            rows.append(
                budget_row(
                    name,
                    len(result.model.blocks) - result.cut,
                    epochs,
                    seed,
                    result.history,
                    result.best_epoch,
                    probs,
                    splits["test"].labels,
                    result.train_seconds,
                )
            )
            print(rows[-1], flush=True)
    return rows


def budget_row(name, trainable_blocks, epochs, seed, history, best_epoch, probs, y, seconds) -> dict:
    """One CSV row: validation at the kept epoch, single-view and TTA test accuracy (probs: [V, N, C])."""
    return {
        "model": name,
        "trainable_blocks": trainable_blocks,
        "epochs": epochs,
        "seed": seed,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "val_accuracy": history[best_epoch - 1]["val_accuracy"],
        "val_loss": history[best_epoch - 1]["val_loss"],
        "test_accuracy": (probs[0].argmax(1) == y).float().mean().item(),
        "test_accuracy_tta": (probs.mean(0).argmax(1) == y).float().mean().item(),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    ap.add_argument("--epochs", default="8,12", help="comma-separated epoch budgets")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (the split is seed 0's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--trainable-blocks",
        type=int,
        default=None,
        help="pretrained models: blocks trained (default: the registry's)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_record(args.threads)
    splits, n_classes = load_splits(args.data_dir, 0)
    budgets = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.models.split(","):
        spec = check_model_name(name)
        before = reference_latency_ms(args.threads)
        if spec.pretrained:
            part = train_budgets(name, splits, n_classes, budgets, seeds, args.trainable_blocks)
        else:
            own = load_splits(args.data_dir, 0, spec.input_size)[0]
            part = train_scratch_budgets(name, own, n_classes, budgets, seeds)
        after = reference_latency_ms(args.threads)
        rows += [{**r, "reference_ms_before": before, "reference_ms_after": after} for r in part]
    table = pd.DataFrame(rows)
    table["cpu"] = machine["cpu"]
    table["cpu_features"] = machine["summary"]
    table["threads"] = args.threads
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"epoch_budget-{slug(machine)}.csv"
    if path.exists():  # rows of budgets and seeds not run now stay (each row carries its reference latency)
        old = pd.read_csv(path)
        if "trainable_blocks" not in old:  # files written before the option: the registry's defaults
            old["trainable_blocks"] = [check_model_name(m).trainable_blocks for m in old["model"]]
        keys = ["model", "trainable_blocks", "epochs", "seed"]
        kept = old.merge(table[keys], on=keys, how="left", indicator=True)["_merge"] == "left_only"
        table = pd.concat([old[kept.to_numpy()], table], ignore_index=True)
    table = table.sort_values(
        ["model", "trainable_blocks", "epochs", "seed"], ascending=[False, True, True, True]
    )
    first = ["model", "trainable_blocks"]
    table = table[first + [c for c in table.columns if c not in first]]
    table.to_csv(path, index=False)
    summary = table.groupby(["model", "trainable_blocks", "epochs"])[
        ["val_accuracy", "val_loss", "test_accuracy", "test_accuracy_tta", "train_seconds"]
    ]
    print(summary.agg(["mean", "std"]).round(4).to_string())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
