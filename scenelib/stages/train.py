"""Stage 02: train one model on the manifest's splits and save everything the later stages read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import journal
from ..decoded import split_images
from ..evaluation import Predictions, accuracy_and_f1
from ..models import check_model_name, save_checkpoint, to_scene_classifier
from ..rundir import TRAIN_VAL, RunDir, write_json
from ..splits import class_names, read_manifest
from ..training import (
    SplitData,
    TrainConfig,
    TrainResult,
    count_params,
    default_epochs,
    seed_everything,
    train_model,
)
from ..weights import WeightsInfo, load_pretrained


@dataclass
class TrainingOutcome:
    model_name: str
    result: TrainResult
    weights: WeightsInfo
    predictions: Predictions
    summary: dict  # what train.json holds


def load_split(run: RunDir, split: str, size: int) -> tuple[SplitData, list[str]]:
    """One split of the manifest at ``size`` px (decoded once per image set and size: ``decoded.py``);
    returns the data and the image paths."""
    rows, images = split_images(read_manifest(run.splits_csv), split, size)
    return SplitData(images, torch.tensor([r.label for r in rows], dtype=torch.long)), [r.path for r in rows]


def resolve_strategy(strategy: str, weights: str, default: str, device: str = "cpu") -> str:
    """'auto': the model's CPU default (``partial`` mostly), ``full`` fine-tuning on a GPU (the usual
    protocol, affordable there), ``scratch`` without pretrained weights."""
    if strategy != "auto":
        return strategy
    if weights == "none":
        return "scratch"
    return "full" if device.startswith("cuda") and default in ("partial", "linear") else default


def train_stage(
    run: RunDir,
    model_name: str,
    strategy: str = "auto",
    weights: str = "auto",
    epochs: int = 0,
    lr: float = 1e-3,
    batch_size: int = 32,
    augmentation: str = "aerial",
    tta: bool = True,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    input_size: int = 0,
    **options,
) -> TrainingOutcome:
    """Train ``model_name``; ``options`` are further ``TrainConfig`` fields (label_smoothing, scheduler,
    trainable_blocks, class_weights, patience, weight_decay) and ``head`` (a ``HeadConfig``).
    ``input_size`` (px) replaces the native size of a model that has pretrained weights (even when it is
    trained from scratch here); a model that has none keeps its own (sized for its role: simple_cnn's 64 px).
    ``epochs`` 0: the strategy's step budget for this training set (``training.default_epochs``)."""
    if threads:
        torch.set_num_threads(threads)
    spec = check_model_name(model_name)
    strategy = resolve_strategy(strategy, weights, spec.default_strategy, device)
    classes = class_names(read_manifest(run.splits_csv))
    size = input_size if input_size and spec.pretrained else spec.input_size
    splits = {s: load_split(run, s, size) for s in ("train", "val", "test")}
    cfg = TrainConfig(
        strategy=strategy,
        epochs=epochs or default_epochs(strategy, len(splits["train"][0].labels), batch_size),
        lr=lr,
        batch_size=batch_size,
        augmentation=augmentation,
        tta=tta,
        seed=seed,
        device=device,
        **options,
    )
    cfg.check()
    seed_everything(seed)  # the new head's initial weights, too
    arch, info = load_pretrained(spec, "none" if strategy == "scratch" else weights)
    model = to_scene_classifier(spec, arch, len(classes), cfg.head)
    result = train_model(
        model,
        spec,
        info.mean,
        info.std,
        splits["train"][0],
        splits["val"][0],
        splits["test"][0],
        len(classes),
        cfg,
    )
    test_data, test_paths = splits["test"]
    predictions = Predictions(result.test_probs, test_data.labels.numpy(), np.asarray(test_paths), classes)
    predictions.save(run.predictions(model_name, "fp32"))
    val_data, val_paths = splits["val"]
    val_labels = val_data.labels.numpy()
    val_predictions = Predictions(result.val_probs, val_labels, np.asarray(val_paths), classes)
    val_predictions.save(run.predictions(model_name, TRAIN_VAL))
    save_checkpoint(
        run.checkpoint(model_name),
        result.model,
        model_name,
        classes,
        cfg.head,
        size,
        info.mean,
        info.std,
    )
    write_json(run.history_json(model_name), result.history)
    journal.record(run, "02_train_model", model_name)
    return TrainingOutcome(
        model_name,
        result,
        info,
        predictions,
        _summarize(run, model_name, cfg, info, result, predictions, val_predictions, size, spec.input_size),
    )


def _summarize(
    run: RunDir,
    name: str,
    cfg: TrainConfig,
    info: WeightsInfo,
    result: TrainResult,
    pred: Predictions,
    val_pred: Predictions,
    size: int,
    native_size: int,
) -> dict:
    acc, f1 = accuracy_and_f1(pred.single, pred.labels)
    acc_tta, f1_tta = accuracy_and_f1(pred.tta, pred.labels) if pred.tta is not None else (None, None)
    val_single = accuracy_and_f1(val_pred.single, val_pred.labels)[0]
    val_tta = accuracy_and_f1(val_pred.tta, val_pred.labels)[0] if val_pred.tta is not None else None
    best = result.history[result.best_epoch - 1]
    summary = {
        "model": name,
        "status": "ok",
        "strategy": cfg.strategy,
        "weights": info.label,
        "weights_source": info.source,
        "weights_file": info.file,
        "weights_sha256": info.sha256,
        "weights_claimed_top1": info.claimed_top1,
        "weights_top1_note": info.top1_note,
        "mean": list(info.mean),
        "std": list(info.std),
        "input_size": size,
        "native_input_size": native_size,
        "frozen_blocks": result.cut,
        "total_blocks": len(result.model.blocks),
        "cache_engine": result.cache_engine,
        "train_layout": result.layout,
        "cache_seconds": round(result.cache_seconds, 1),
        "train_seconds": round(result.train_seconds, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "kept_epoch_rule": cfg.keep,
        "val_accuracy": best["val_accuracy"],
        "val_accuracy_tta": val_tta,
        # TTA is recommended only where validation shows it strictly more accurate than the single view
        "tta_helps_on_val": val_tta is not None and val_tta > val_single,
        "train_accuracy": best["train_accuracy"],
        "test_accuracy": acc,
        "test_macro_f1": f1,
        "test_accuracy_tta": acc_tta,
        "test_macro_f1_tta": f1_tta,
        "tta_views": len(pred.probs),
        "params": count_params(result.model),
        "trainable_params": result.trainable_params,
        "linear_probe": result.probe,
        "config": cfg.as_dict(),
    }
    write_json(run.train_json(name), summary)
    run.upsert_results(
        [
            {
                "model": name,
                "variant": "fp32",
                "status": "ok",
                "weights": info.label,
                "strategy": cfg.strategy,
                "accuracy": acc,
                "accuracy_tta": acc_tta,
                "macro_f1": f1,
                "macro_f1_tta": f1_tta,
                "params": summary["params"],
                "trainable_params": result.trainable_params,
                "train_seconds": summary["train_seconds"],
            }
        ]
    )
    return summary
