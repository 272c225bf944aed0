"""A validated ensemble: the soft vote (mean softmax) of the best fp32 models, chosen on validation only.

Candidates are the top 2, 3, ... models of the validation ranking (at most ``MAX_MEMBERS``); each is scored
by its soft vote's accuracy on the validation split and, where accuracies are exactly level (a hundred-odd
validation images often leave them so), by its log-loss there: a proper scoring rule, which still tells which
candidate is surer of the right answers. The best vote is recommended over the best single model only if it is
better by the same rule. In the main split it is scored on the checkpoints run end to end
(the benchmark stage writes those predictions); its test numbers (single view, and TTA where every member has
it) are then reported beside the best single model's, with McNemar's exact test, and its latency is the sum
of its members' (they all run on every image). Each repeated split (repeats.py) applies the same rule to the
predictions its training wrote.
"""

from __future__ import annotations

import numpy as np

from .claims import interval_columns, mcnemar, validation_ranking, wilson_interval
from .evaluation import Predictions
from .rundir import RunDir, read_json

MAX_MEMBERS = 3
VAL_VARIANT = "fp32-val"  # predictions-fp32-val.npz: the checkpoint end to end on the validation split


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def _score(members: list[str], probs: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "members": members,
        "val_accuracy": float((probs.argmax(1) == labels).mean()),
        "val_log_loss": log_loss(probs, labels),
    }


def better(a: dict, b: dict) -> bool:
    """Whether candidate ``a`` beats ``b`` on validation: higher accuracy or, equal, lower log-loss."""
    if a["val_accuracy"] != b["val_accuracy"]:
        return a["val_accuracy"] > b["val_accuracy"]
    return _finite(a["val_log_loss"]) < _finite(b["val_log_loss"])


def _finite(loss: float) -> float:
    return loss if np.isfinite(loss) else np.inf  # a NaN (a diverged model) never wins


def select(
    val_probs: dict[str, np.ndarray], labels: np.ndarray, ranked: list[str]
) -> tuple[dict, list[dict]]:
    """The best single model's validation score and every soft vote's (the top 2..MAX_MEMBERS of ``ranked``,
    best first by validation), from each model's validation softmax [N, C]."""
    single = _score(ranked[:1], val_probs[ranked[0]], labels)
    votes = [
        _score(ranked[:k], np.mean([val_probs[m] for m in ranked[:k]], axis=0), labels)
        for k in range(2, min(MAX_MEMBERS, len(ranked)) + 1)
    ]
    return single, votes


def best(candidates: list[dict]) -> dict:
    """The best candidate by ``better``; of equals, the first (the fewer members)."""
    kept = candidates[0]
    for c in candidates[1:]:
        kept = c if better(c, kept) else kept
    return kept


def choose(run: RunDir, latency_ms: dict[str, float]) -> dict | None:
    """The best soft vote (recommended or not) and every candidate tried, or None with fewer than two scored
    models."""
    ranked = [
        r["model"] for r in validation_ranking(run) if run.predictions(r["model"], VAL_VARIANT).exists()
    ]
    if len(ranked) < 2:
        return None
    val = {m: Predictions.load(run.predictions(m, VAL_VARIANT)) for m in ranked}
    single, candidates = select({m: p.single for m, p in val.items()}, val[ranked[0]].labels, ranked)
    kept = best(candidates)
    members = kept["members"]
    test = Predictions.load(run.predictions(members[0], "fp32"))
    single_view = _vote(run, members, "fp32-e2e")
    record = {
        "members": members,
        "val_accuracy": kept["val_accuracy"],
        "val_log_loss": kept["val_log_loss"],
        "best_single": ranked[0],
        "best_single_val_accuracy_e2e": single["val_accuracy"],
        "best_single_val_log_loss": single["val_log_loss"],
        "beats_best_single_on_validation": better(kept, single),
        "candidates": candidates,
        "latency_ms_b1": float(sum(latency_ms[m] for m in members)),
        **interval_columns(Predictions(single_view[None], test.labels, test.paths, test.classes)),
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
    record["vs_best_single"] = mcnemar(test.labels, single_view.argmax(1), best_guess)
    return record


def _vote(run: RunDir, members: list[str], variant: str) -> np.ndarray:
    return np.mean([Predictions.load(run.predictions(m, variant)).single for m in members], axis=0)


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
