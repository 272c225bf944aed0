"""Time to accuracy on UC Merced: the usual fine-tuning recipe against scenelib's default, in one process.

Why not just fine-tune the usual way? This script answers with numbers from one machine, one split and one
process, so that the two recipes are timed alike:

* ``seed-full``: the recipe of the studies this project starts from -- MobileNetV2 with ImageNet weights,
  every layer fine-tuned at 224 px, Adam at lr 1e-4, batch 32, a DataLoader with random flips, N epochs;
* ``scenelib-partial``: the pipeline's default for the same model -- the frozen prefix run once per aerial
  view (8 flips/rotations) and cached, then the last blocks and the head trained for its default 8 epochs
  (AdamW, one-cycle) on one random cached view per image per epoch.

After every epoch both record validation and single-view test accuracy and the wall seconds spent training
so far (decoding the images, which both share, excluded; the feature cache included). Test accuracy is
recorded to draw the curve; nothing is chosen on it. The CSV is named after the CPU, and carries the
machine's features and the eager MobileNetV2 batch-1 latency, so that files from two machines are never
mistaken for one another; the reference latency is measured before and after each recipe, because a
shared machine's speed can change between them.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data --epochs 8
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from scenelib.datasets import load_dataset
from scenelib.hardware import machine_record, reference_latency_ms
from scenelib.integrity import scan_dataset
from scenelib.models import HeadConfig, check_model_name, to_scene_classifier
from scenelib.splits import make_splits, split_rows
from scenelib.training import (
    DEFAULT_EPOCHS,
    SplitData,
    TrainConfig,
    TrainResult,
    seed_everything,
    train_model,
)
from scenelib.transforms import decode_images, normalize
from scenelib.weights import load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v2"


def load_splits(data_dir: str, seed: int, size: int | None = None) -> tuple[dict[str, SplitData], int]:
    """The pipeline's default split of UC Merced, decoded at ``size`` px (default: MobileNetV2's)."""
    dataset = load_dataset("ucmerced", data_dir)
    summary, _ = scan_dataset(dataset)
    rows = make_splits(
        dataset, "70/30", seed, exclude=set(summary["corrupt"]), groups=summary["duplicate_groups"]
    )
    size = size or check_model_name(MODEL).input_size
    out = {}
    for split in ("train", "val", "test"):
        part = split_rows(rows, split)
        out[split] = SplitData(
            decode_images([r.path for r in part], size), torch.tensor([r.label for r in part])
        )
    return out, len(dataset.classes)


def accuracy(model: nn.Module, data: SplitData, mean, std) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data.labels), 64):
            x = normalize(data.images[i : i + 64], mean, std)
            correct += (model(x).argmax(1) == data.labels[i : i + 64]).sum().item()
    return correct / len(data.labels)


def seed_recipe(splits: dict[str, SplitData], n_classes: int, epochs: int, seed: int) -> list[dict]:
    """Full fine-tuning, Adam 1e-4, batch 32, DataLoader with random horizontal and vertical flips."""
    seed_everything(seed)
    spec = check_model_name(MODEL)
    arch, info = load_pretrained(spec, "auto")
    model = to_scene_classifier(spec, arch, n_classes, HeadConfig())
    for p in model.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    train = splits["train"]
    loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=32, shuffle=True)
    rows, spent = [], 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        for images, labels in loader:
            flip = torch.rand(len(images)) < 0.5
            images[flip] = images[flip].flip(-1)
            flip = torch.rand(len(images)) < 0.5
            images[flip] = images[flip].flip(-2)
            out = model(normalize(images, info.mean, info.std))
            loss = loss_fn(out[0] if isinstance(out, tuple) else out, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        spent += time.perf_counter() - start
        rows.append(
            {
                "recipe": "seed-full",
                "epoch": epoch,
                "seconds": spent,
                "val_accuracy": accuracy(model, splits["val"], info.mean, info.std),
                "test_accuracy": accuracy(model, splits["test"], info.mean, info.std),
            }
        )
        print(rows[-1], flush=True)
    return rows


def train_like_pipeline(
    name: str, splits: dict[str, SplitData], n_classes: int, cfg: TrainConfig, test_each_epoch: bool = False
) -> TrainResult:
    """``training.train_model`` on a model built as the training stage builds it: seeded, then the
    architecture with its weights (none for ``scratch``), then the new head."""
    spec = check_model_name(name)
    seed_everything(cfg.seed)
    arch, info = load_pretrained(spec, "none" if cfg.strategy == "scratch" else "auto")
    model = to_scene_classifier(spec, arch, n_classes, cfg.head)
    return train_model(
        model,
        spec,
        info.mean,
        info.std,
        splits["train"],
        splits["val"],
        splits["test"],
        n_classes,
        cfg,
        test_each_epoch=test_each_epoch,
    )


def default_recipe(splits: dict[str, SplitData], n_classes: int, seed: int) -> list[dict]:
    spec = check_model_name(MODEL)
    cfg = TrainConfig(strategy=spec.default_strategy, epochs=DEFAULT_EPOCHS[spec.default_strategy], seed=seed)
    result = train_like_pipeline(MODEL, splits, n_classes, cfg, test_each_epoch=True)
    rows, spent = [], result.cache_seconds
    for h in result.history:
        spent += h["seconds"]
        rows.append(
            {
                "recipe": f"scenelib-{cfg.strategy}",
                "epoch": h["epoch"],
                "seconds": spent,
                "val_accuracy": h["val_accuracy"],
                "test_accuracy": h["test_accuracy"],
            }
        )
        print(rows[-1], flush=True)
    return rows


def slug(machine: dict) -> str:
    """'amd-epyc-7b13-avx512-vnni': the CPU model and its INT8 class, safe for a file name."""
    name = re.sub(r"\(.*?\)|processor|\d+-core", "", machine["cpu"], flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", f"{name} {machine['int8_class']}".lower()).strip("-")


def plot(table: pd.DataFrame, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for recipe, g in table.groupby("recipe", sort=False):
        if "mobilenet_v2_eager_ms_after" in g:  # the reference latency around this recipe
            recipe += f", eager b1 {g.mobilenet_v2_eager_ms.iloc[0]:.0f}->{g.mobilenet_v2_eager_ms_after.iloc[0]:.0f} ms"
        ax.plot(g["seconds"] / 60, 100 * g["val_accuracy"], "o-", label=f"{recipe} (validation)")
        ax.plot(g["seconds"] / 60, 100 * g["test_accuracy"], "x--", alpha=0.6, label=f"{recipe} (test)")
    ax.set(xlabel="training wall time (min)", ylabel="accuracy (%)", title=title)
    ax.set_ylim(max(0, 100 * table[["val_accuracy", "test_accuracy"]].min().min() - 2), 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding UCMerced_LandUse/")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the full fine-tuning recipe")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_record(args.threads, reference=False)  # the reference is sampled around each recipe
    splits, n_classes = load_splits(args.data_dir, args.seed)
    recipes = (
        lambda: default_recipe(splits, n_classes, args.seed),
        lambda: seed_recipe(splits, n_classes, args.epochs, args.seed),
    )
    frames = []
    for recipe in recipes:
        # A shared machine's speed can drift within minutes: each recipe carries the reference latency
        # measured just before and just after it, so a curve run on a slower moment shows as one.
        before = reference_latency_ms(args.threads)
        rows = recipe()
        frames.append(
            pd.DataFrame(rows).assign(
                mobilenet_v2_eager_ms=round(before, 2),
                mobilenet_v2_eager_ms_after=round(reference_latency_ms(args.threads), 2),
            )
        )
    table = pd.concat(frames, ignore_index=True).assign(
        cpu=machine["cpu"], features=machine["summary"], threads=args.threads, torch=torch.__version__
    )
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"time_to_accuracy-{slug(machine)}"
    table.to_csv(args.output / f"{name}.csv", index=False, float_format="%.4f")
    plot(
        table,
        f"MobileNetV2 on UC Merced, {args.threads} threads\n{machine['cpu']}: {machine['summary']}",
        args.output / f"{name}.png",
    )
    print(f"wrote {args.output / name}.csv and .png")


if __name__ == "__main__":
    main()
