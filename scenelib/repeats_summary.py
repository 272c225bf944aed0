"""The report's sentences and table on repeated splits (``--repeats``): the spread per model, and what a user
following the report's own validation rules would get on each split."""

from __future__ import annotations

import math

import pandas as pd

from .repeats import CHOSEN, REPEATS_CSV, VOTE, chosen_rows, mean_interval, spread
from .report import esc
from .rundir import RunDir


def repeats_line(run: RunDir) -> str:
    """--repeats: the spread per model and of the two validation rules' picks ('' without repeats)."""
    spread = repeats_table(run)
    if spread.empty:
        return ""
    n = int(spread["splits"].max())
    items = "; ".join(
        f"{esc(r['model'])} {r['test accuracy']} single view"
        + (f", {r['with TTA']} with TTA" if r["with TTA"] else "")
        for _, r in spread.iterrows()
        if r["model"] not in (CHOSEN, VOTE)
    )
    picks = spread.set_index("model")
    line = (
        f"- **Over {n} seeded splits** (mean ± sample std; each split trains anew, nothing chosen on test): "
        f"{items}. The model each split's validation picks {_pick_scores(picks.loc[CHOSEN])}."
    )
    if VOTE in picks.index:
        line += (
            " Letting a soft vote of the models validation cannot tell from the best compete (the ensemble's "
            "rule, on each split's training predictions: recommended only when strictly more accurate on "
            "validation), the picks are "
            f"{_pick_scores(picks.loc[VOTE])}."
        )
    return line


def _pick_scores(pick: pd.Series) -> str:
    """'(a, b, c): x ± s single view, y ± s with TTA (95% t-interval of the mean with TTA: l–h)'."""
    if pick["95% CI of the mean (TTA)"]:
        ci = f" (95% t-interval of the mean with TTA: {pick['95% CI of the mean (TTA)']})"
    elif pick["95% CI of the mean"]:
        ci = f" (95% t-interval of the mean, single view: {pick['95% CI of the mean']})"
    else:
        ci = ""
    return (
        f"({esc(pick['picked per split'])}): {pick['test accuracy']} single view"
        + (f", {pick['with TTA']} with TTA" if pick["with TTA"] else "")
        + ci
    )


def _mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return ""
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if math.isfinite(std) else "")


def repeats_table(run: RunDir) -> pd.DataFrame:
    """--repeats: mean ± std per model over the seeded splits (from repeats.csv); empty without repeats."""
    path = run.root / REPEATS_CSV
    if not path.exists():
        return pd.DataFrame()
    rows = pd.read_csv(path)
    if rows.empty or rows["split"].nunique() < 2:
        return pd.DataFrame()
    chosen = chosen_rows(rows)
    votes = rows["model"] == VOTE
    picks = {CHOSEN: ", ".join(chosen["picked"])}
    if votes.any():
        picks[VOTE] = ", ".join(rows.loc[votes, "picked"])
    rows = pd.concat([rows[~votes], chosen, rows[votes]], ignore_index=True)
    metric = {m: rows.groupby("model", sort=False)[m] for m in ("accuracy", "accuracy_tta")}
    return pd.DataFrame(
        [
            {
                "model": s.model,
                "splits": s.repeats,
                "validation accuracy": _mean_std(s.val_accuracy_mean, s.val_accuracy_std),
                "test accuracy": _mean_std(s.accuracy_mean, s.accuracy_std),
                "with TTA": _mean_std(s.accuracy_tta_mean, s.accuracy_tta_std),
                "95% CI of the mean": _mean_ci(metric["accuracy"].get_group(s.model)),
                "95% CI of the mean (TTA)": _mean_ci(metric["accuracy_tta"].get_group(s.model)),
                "macro-F1": _mean_std(s.macro_f1_mean, s.macro_f1_std),
                "train seconds (mean)": s.train_seconds_mean,
                "picked per split": picks.get(s.model, ""),
            }
            for s in spread(rows).itertuples()
        ]
    )


def _mean_ci(values) -> str:
    low, high = mean_interval(values)
    return f"{100 * low:.2f}–{100 * high:.2f}%" if math.isfinite(low) else ""
