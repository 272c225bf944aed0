"""A validated ensemble: the soft vote (mean softmax) of the best fp32 models, chosen on validation only.

Members are the models that validation cannot tell from the best one (McNemar's exact test on the
validation images, ``claims.mcnemar``): a model validation shows to be worse only dilutes a vote. Candidates
are the top 2, 3, ... of those (at most ``MAX_MEMBERS``), each scored by its soft vote's accuracy on the
validation split. A vote costs the sum of its members' latencies, so it is recommended over the best single
model only if its validation accuracy is strictly higher; of level candidates the one with fewer members
wins. Validation log-loss is reported, never decides: a vote's averaged softmax lowers it by construction.
In the main split the vote is scored on the checkpoints run end to end (the benchmark stage writes those
predictions); its test numbers (single view, and TTA where every member has it) are reported beside the best
single model's, with McNemar's exact test, whether or not it was recommended. Each repeated split
(repeats.py) applies the same rule to the predictions its training wrote.
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
    """Whether candidate ``a`` beats ``b`` on validation: strictly higher accuracy."""
    return a["val_accuracy"] > b["val_accuracy"]


def eligible(val_probs: dict[str, np.ndarray], labels: np.ndarray, ranked: list[str]) -> list[str]:
    """The best model and those of ``ranked`` that validation cannot tell from it (McNemar, ALPHA)."""
    guess = {m: val_probs[m].argmax(1) for m in ranked}
    top = ranked[0]
    return [top] + [m for m in ranked[1:] if not mcnemar(labels, guess[top], guess[m])["distinguishable"]]


def select(
    val_probs: dict[str, np.ndarray], labels: np.ndarray, ranked: list[str]
) -> tuple[dict, list[dict]]:
    """The best single model's validation score and every soft vote's (the top 2..MAX_MEMBERS of the
    ``eligible`` models of ``ranked``, best first by validation), from each model's validation softmax
    [N, C]."""
    members = eligible(val_probs, labels, ranked)
    single = _score(members[:1], val_probs[members[0]], labels)
    votes = [
        _score(members[:k], np.mean([val_probs[m] for m in members[:k]], axis=0), labels)
        for k in range(2, min(MAX_MEMBERS, len(members)) + 1)
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
    models or when validation shows every other model worse than the best (no vote to try)."""
    ranked = [
        r["model"] for r in validation_ranking(run) if run.predictions(r["model"], VAL_VARIANT).exists()
    ]
    if len(ranked) < 2:
        return None
    val = {m: Predictions.load(run.predictions(m, VAL_VARIANT)) for m in ranked}
    single, candidates = select({m: p.single for m, p in val.items()}, val[ranked[0]].labels, ranked)
    if not candidates:
        return None
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
