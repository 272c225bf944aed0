"""Metrics from saved test-set predictions (scikit-learn does the counting).

Predictions are stored per model and variant as ``predictions-<variant>.npz`` with the softmax of every
test view (``probs``: [V, N, C], view 0 = the plain image), the labels and the image paths. Single-view and
TTA (mean softmax over the views) metrics are always reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from .rundir import RunDir


@dataclass
class Predictions:
    probs: np.ndarray  # [V, N, C]
    labels: np.ndarray  # [N]
    paths: np.ndarray  # [N] str
    classes: list[str]

    @property
    def single(self) -> np.ndarray:
        return self.probs[0]

    @property
    def tta(self) -> np.ndarray | None:
        return self.probs.mean(0) if len(self.probs) > 1 else None

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            probs=self.probs.astype(np.float32),
            labels=self.labels,
            paths=np.asarray(self.paths, dtype=str),
            classes=np.asarray(self.classes, dtype=str),
        )
        return path

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["probs"], f["labels"], f["paths"], [str(c) for c in f["classes"]])


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict]]:
    """ECE of the top-1 confidence, with the per-bin table for a reliability diagram."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            acc, conf = correct[inside].mean(), confidence[inside].mean()
            ece += inside.mean() * abs(acc - conf)
            bins.append({"lo": lo, "hi": hi, "count": int(inside.sum()), "accuracy": acc, "confidence": conf})
    return float(ece), bins


def most_confused(cm: np.ndarray, classes: list[str], top: int = 5) -> list[dict]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [
        {"true": classes[t], "predicted": classes[p], "count": int(off[t, p])}
        for t, p in pairs
        if off[t, p] > 0
    ]


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Everything the report shows for one set of class probabilities."""
    pred = probs.argmax(1)
    all_labels = list(range(len(classes)))
    p_macro, r_macro, f_macro, _ = precision_recall_fscore_support(
        labels, pred, labels=all_labels, average="macro", zero_division=0
    )
    p_w, r_w, f_w, _ = precision_recall_fscore_support(
        labels, pred, labels=all_labels, average="weighted", zero_division=0
    )
    try:
        if len(classes) == 2:  # scikit-learn wants the positive class's score alone
            auc = float(roc_auc_score(labels, probs[:, 1]))
        else:
            auc = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=all_labels))
    except ValueError:  # a class absent from this test set (tiny or quick runs)
        auc = None
    cm = confusion_matrix(labels, pred, labels=all_labels)
    ece, bins = expected_calibration_error(probs, labels)
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "top5_accuracy": (  # meaningless (always 1) with 5 classes or fewer
            float(top_k_accuracy_score(labels, probs, k=5, labels=all_labels)) if len(classes) > 5 else None
        ),
        "macro_precision": float(p_macro),
        "macro_recall": float(r_macro),
        "macro_f1": float(f_macro),
        "weighted_precision": float(p_w),
        "weighted_recall": float(r_w),
        "weighted_f1": float(f_w),
        "roc_auc_macro": auc,
        "ece": ece,
        "reliability": bins,
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm, classes),
        "per_class": classification_report(
            labels, pred, labels=all_labels, target_names=classes, output_dict=True, zero_division=0
        ),
        "n": int(len(labels)),
    }


def accuracy_and_f1(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    pred = probs.argmax(1)
    return float(accuracy_score(labels, pred)), float(
        f1_score(labels, pred, average="macro", zero_division=0)
    )


def misclassified(pred: Predictions, use_tta: bool = False, limit: int = 12) -> list[dict]:
    """The wrong predictions with the highest confidence first, for the gallery."""
    probs = pred.tta if use_tta and pred.tta is not None else pred.single
    guess = probs.argmax(1)
    wrong = np.flatnonzero(guess != pred.labels)
    wrong = wrong[np.argsort(-probs[wrong, guess[wrong]])][:limit]
    return [
        {
            "path": str(pred.paths[i]),
            "true": pred.classes[pred.labels[i]],
            "predicted": pred.classes[guess[i]],
            "confidence": float(probs[i, guess[i]]),
        }
        for i in wrong
    ]


def fp32_reference(run: RunDir, name: str) -> Predictions:
    """The fp32 model's test predictions: single view end to end in PyTorch (the benchmark stage), TTA
    views from training's cached prefix features where the model uses TTA (recorded as such)."""
    cached = Predictions.load(run.predictions(name, "fp32"))
    e2e_path = run.predictions(name, "fp32-e2e")
    if not e2e_path.exists():
        return cached
    probs = cached.probs.copy()
    probs[0] = Predictions.load(e2e_path).single
    return Predictions(probs, cached.labels, cached.paths, cached.classes)
