"""A validated ensemble: the soft vote (mean softmax) of the best fp32 models, chosen on validation only.

Candidates are the top 2, 3, ... models of the validation ranking (at most ``MAX_MEMBERS``); each is scored
by the accuracy of its soft vote on the validation split, from the checkpoints run end to end (the benchmark
stage writes those predictions), and the best candidate is kept, ties going to fewer members. Its test
numbers (single view, and TTA where every member has it) are then reported beside the best single model's,
with McNemar's exact test, and its latency is the sum of its members' (they all run on every image).
"""

from __future__ import annotations

import numpy as np

from .claims import interval_columns, mcnemar, validation_ranking, wilson_interval
from .evaluation import Predictions
from .rundir import RunDir, read_json

MAX_MEMBERS = 3
VAL_VARIANT = "fp32-val"  # predictions-fp32-val.npz: the checkpoint end to end on the validation split


def _vote(run: RunDir, members: list[str], variant: str) -> np.ndarray:
    return np.mean([Predictions.load(run.predictions(m, variant)).single for m in members], axis=0)


def choose(run: RunDir, latency_ms: dict[str, float]) -> dict | None:
    """The kept ensemble and every candidate tried, or None with fewer than two scored models."""
    ranked = [
        r["model"] for r in validation_ranking(run) if run.predictions(r["model"], VAL_VARIANT).exists()
    ]
    if len(ranked) < 2:
        return None
    best_val = Predictions.load(run.predictions(ranked[0], VAL_VARIANT))
    val_labels = best_val.labels
    best_single = float((best_val.single.argmax(1) == val_labels).mean())
    candidates = []
    for k in range(2, min(MAX_MEMBERS, len(ranked)) + 1):
        members = ranked[:k]
        acc = float((_vote(run, members, VAL_VARIANT).argmax(1) == val_labels).mean())
        candidates.append({"members": members, "val_accuracy": acc})
    kept = max(candidates, key=lambda c: (c["val_accuracy"], -len(c["members"])))
    members = kept["members"]
    test = Predictions.load(run.predictions(members[0], "fp32"))
    single = _vote(run, members, "fp32-e2e")
    record = {
        "members": members,
        "val_accuracy": kept["val_accuracy"],
        "best_single": ranked[0],
        "best_single_val_accuracy_e2e": best_single,
        "beats_best_single_on_validation": kept["val_accuracy"] > best_single,
        "candidates": candidates,
        "latency_ms_b1": float(sum(latency_ms[m] for m in members)),
        **interval_columns(Predictions(single[None], test.labels, test.paths, test.classes)),
    }
    member_tta = [Predictions.load(run.predictions(m, "fp32")).tta for m in members]
    if all(t is not None for t in member_tta):
        tta = np.mean(member_tta, axis=0)
        correct = int((tta.argmax(1) == test.labels).sum())
        low, high = wilson_interval(correct, len(test.labels))
        record.update(
            accuracy_tta=correct / len(test.labels), accuracy_tta_ci_low=low, accuracy_tta_ci_high=high
        )
    best_guess = Predictions.load(run.predictions(ranked[0], "fp32-e2e")).single.argmax(1)
    record["vs_best_single"] = mcnemar(test.labels, single.argmax(1), best_guess)
    return record


def results_row(record: dict) -> dict:
    """The ensemble's results.csv row (variant fp32: its members' fp32 checkpoints)."""
    keys = ("val_accuracy", "latency_ms_b1", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "macro_f1")
    keys += (
        "macro_f1_ci_low",
        "macro_f1_ci_high",
        "accuracy_tta",
        "accuracy_tta_ci_low",
        "accuracy_tta_ci_high",
    )
    return {
        "model": name(record),
        "variant": "fp32",
        "status": "ok",
        "weights": "members' own",
        "strategy": "soft vote",
        **{k: record.get(k) for k in keys},
    }


def name(record: dict) -> str:
    return "ensemble(" + "+".join(record["members"]) + ")"


def read(run: RunDir) -> dict | None:
    """The kept ensemble, from benchmark.json (None if none was formed)."""
    return read_json(run.benchmark_json).get("ensemble") if run.benchmark_json.exists() else None
