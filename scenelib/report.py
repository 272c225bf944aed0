"""Tables of the final report, computed from the run directory's files only (its sentences: ``summary.py``)."""

from __future__ import annotations

import html
import math

import pandas as pd

from .rundir import VARIANTS, RunDir, read_json

# Quoted, not recomputed: test accuracy reported by the seed study this project starts from (seed 000: UC
# Merced, 70/30, full fine-tuning, single view), measured on another machine.
REFERENCE_SOURCE = "quoted from the seed study (seed 000), measured on another machine; not from this run"
REFERENCE_ACCURACY = {
    "seed 000 ResNet-50": 0.9206,
    "seed 000 DenseNet-121": 0.8873,
    "seed 000 MobileNetV2": 0.9032,
}
REFERENCE_INT8 = "seed 000 (quoted, measured on another machine): MobileNetV2 INT8 at 24.5 ms with a 1.2-point accuracy drop"


DISPLAY_COLUMNS = {
    "model": "model",
    "variant": "variant",
    "recipe": "INT8 recipe",
    "val_accuracy": "val. accuracy",
    "accuracy": "accuracy",
    "accuracy_ci": "95% CI",
    "accuracy_tta": "accuracy (TTA)",
    "macro_f1": "macro-F1",
    "macro_f1_ci": "macro-F1 95% CI",
    "roc_auc": "ROC AUC",
    "latency_ms_b1": "latency ms (bs1)",
    "latency_p90_ms_b1": "p90 ms",
    "latency_ms_tta": "TTA ms (views as a batch)",
    "params": "params (M)",
    "macs": "GMACs",
    "size_mb": "size MB",
    "train_seconds": "train s",
    "status": "status",
}


HIGHER_IS_BETTER = ("val. accuracy", "accuracy", "accuracy (TTA)", "macro-F1", "ROC AUC")


LOWER_IS_BETTER = (
    "latency ms (bs1)",
    "p90 ms",
    "TTA ms (views as a batch)",
    "params (M)",
    "GMACs",
    "size MB",
    "train s",
)


def esc(text) -> str:
    """HTML-escape a string that came from a file name, a class name or an error message."""
    return html.escape(str(text), quote=True)


def results_frame(run: RunDir) -> pd.DataFrame:
    """results.csv with numbers as numbers (empty cells as NaN)."""
    if not run.results_csv.exists():
        return pd.DataFrame(columns=list(DISPLAY_COLUMNS))
    df = pd.read_csv(run.results_csv, dtype={"status": str, "weights": str, "strategy": str})
    return df


def short_status(status: str) -> str:
    """'failed: ValueError: long message' -> 'failed: ValueError' (the full text is in the run's files)."""
    return ": ".join(status.split(": ")[:2])


def _ci_text(low: pd.Series, high: pd.Series, percent: bool) -> pd.Series:
    def one(lo, hi):
        if pd.isna(lo) or pd.isna(hi):
            return "–"
        return f"{lo:.1%}–{hi:.1%}" if percent else f"{lo:.3f}–{hi:.3f}"

    return pd.Series([one(lo, hi) for lo, hi in zip(low, high)], index=low.index, dtype=object)


def main_table(run: RunDir) -> pd.DataFrame:
    """One row per model x variant with readable units (params in millions, MACs in billions), intervals as
    text, and noisy latencies flagged in the status."""
    df = results_frame(run).copy()
    if df.empty:
        return df.rename(columns=DISPLAY_COLUMNS)
    df["status"] = df["status"].fillna("").map(short_status)
    noisy = df.get("latency_noisy", pd.Series(index=df.index, dtype=object)).astype(str).str.lower() == "true"
    df.loc[noisy, "status"] = df.loc[noisy, "status"] + " (noisy timing)"
    df["accuracy_ci"] = _ci_text(df["accuracy_ci_low"], df["accuracy_ci_high"], True)
    df["macro_f1_ci"] = _ci_text(df["macro_f1_ci_low"], df["macro_f1_ci_high"], False)
    df["recipe"] = df["recipe"].fillna("")
    df["params"] = df["params"] / 1e6
    df["macs"] = df["macs"] / 1e9
    return df[[c for c in DISPLAY_COLUMNS if c in df.columns]].rename(columns=DISPLAY_COLUMNS)


CHOSEN_STYLE = "font-weight: bold; background-color: #dcefd8"


# The main table is wider than a notebook: it scrolls sideways in its own box, its headings wrap.
WIDE_TABLE = 'style="display: block; max-width: 100%; overflow-x: auto"'
WRAPPED_HEADINGS = [
    {"selector": "th", "props": "white-space: normal; min-width: 4em; vertical-align: bottom"},
    {"selector": "caption", "props": "caption-side: bottom; text-align: left"},
]


def metrics_table(run: RunDir, chosen: tuple[str, str] | None = None):
    """The main table, styled: the deployment chosen on validation (``chosen``: model, variant) in bold on
    green, nothing emphasised by a test column; NaN shown as a dash. Models that were never trained (all
    dashes) are one line of text under it instead of rows."""
    table = main_table(run)
    missing = not_trained(run)
    if len(missing) and "model" in table.columns:
        table = table[~table["model"].isin(set(missing.model))]

    def emphasis(row: pd.Series) -> list[str]:
        hit = chosen is not None and (row["model"], row["variant"]) == chosen
        return [CHOSEN_STYLE if hit else ""] * len(row)

    fmt = {c: "{:.2%}" for c in ("val. accuracy", "accuracy", "accuracy (TTA)")}
    fmt.update({c: "{:.4f}" for c in ("macro-F1", "macro-F1 (TTA)", "ROC AUC")})
    fmt.update(
        {
            c: "{:.1f}"
            for c in ("latency ms (bs1)", "p90 ms", "TTA ms (views as a batch)", "size MB", "train s")
        }
    )
    fmt.update({"params (M)": "{:.2f}", "GMACs": "{:.3f}"})
    fmt = {k: v for k, v in fmt.items() if k in table.columns}
    styled = table.style.format(fmt, na_rep="–").format(
        escape="html", subset=[c for c in ("model", "status", "INT8 recipe") if c in table.columns]
    )
    styled = styled.set_table_attributes(WIDE_TABLE).set_table_styles(WRAPPED_HEADINGS, overwrite=False)
    if len(missing):
        styled = styled.set_caption(
            "Not trained: " + "; ".join(f"{esc(m)} ({esc(st)})" for m, st in zip(missing.model, missing.status))
        )
    return styled.apply(emphasis, axis=1).hide(axis="index")


def write_results_md(run: RunDir, header: str = "") -> str:
    """results.md: ``header`` (the run's answer, ``verdict.markdown``), then the main table as Markdown
    (plain numbers, same rounding as the report)."""
    table = main_table(run)
    lines = [header, ""] if header else []
    lines += ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        cells = []
        for col, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                cells.append("–")
            elif col in ("val. accuracy", "accuracy", "accuracy (TTA)"):
                cells.append(f"{value:.2%}")
            elif isinstance(value, float):
                cells.append(f"{value:.4f}" if col in HIGHER_IS_BETTER else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    run.results_md.write_text(text)
    return text


def pareto_points(run: RunDir, variants: tuple[str, ...] | None = None, tta: bool = False) -> pd.DataFrame:
    """Points for the accuracy-vs-latency plot: single view with batch-1 latency, or (``tta``) TTA accuracy
    with the latency of the views as one batch -- never TTA accuracy beside single-view latency."""
    df = results_frame(run)
    df = df[df["status"] == "ok"]
    if variants:
        df = df[df["variant"].isin(variants)]
    acc, lat = ("accuracy_tta", "latency_ms_tta") if tta else ("accuracy", "latency_ms_b1")
    low, high = (f"{acc}_ci_low", f"{acc}_ci_high")
    out = pd.DataFrame(
        {
            "model": df["model"],
            "variant": df["variant"],
            "accuracy": df[acc],
            "latency_ms": df[lat],
            "ci_low": df.get(low),
            "ci_high": df.get(high),
            "noisy": df.get("latency_noisy"),
        }
    )
    return out.dropna(subset=["accuracy", "latency_ms"])


def references_for(run: RunDir) -> dict[str, float]:
    """The seed study's UC Merced accuracies, for UC Merced runs only."""
    data = read_json(run.data_summary_json) if run.data_summary_json.exists() else {}
    return REFERENCE_ACCURACY if data.get("dataset") == "ucmerced" else {}


def trained_summaries(run: RunDir) -> dict[str, dict]:
    """train.json of every model that has one (ok, skipped or failed)."""
    return {p.parent.name: read_json(p) for p in sorted((run.root / "models").glob("*/train.json"))}


def histories(run: RunDir) -> tuple[dict[str, list[dict]], dict[str, int]]:
    hist, best = {}, {}
    for name in run.trained_models():
        hist[name] = read_json(run.history_json(name))
        best[name] = read_json(run.train_json(name))["best_epoch"]
    return hist, best


def provenance_table(run: RunDir) -> pd.DataFrame:
    rows = []
    for name, t in trained_summaries(run).items():
        if t.get("status") != "ok":
            continue
        top1 = t.get("weights_claimed_top1")
        rows.append(
            {
                "model": name,
                "weights": t["weights"],
                "file": (t.get("weights_file") or "–").split("/")[-1],
                "SHA-256": (t.get("weights_sha256") or "–")[:16],
                "claimed ImageNet top-1": f"{top1:.1f}% ({t.get('weights_top1_note')})" if top1 else "–",
                "strategy": t["strategy"],
                "frozen blocks": f"{t['frozen_blocks']} / {t['total_blocks']}",
            }
        )
    return pd.DataFrame(rows)


def not_trained(run: RunDir) -> pd.DataFrame:
    """Models that were skipped or failed, with the reason."""
    rows = [
        {"model": n, "status": t["status"]}
        for n, t in trained_summaries(run).items()
        if t.get("status") != "ok"
    ]
    return pd.DataFrame(rows, columns=["model", "status"])


def per_class_f1(run: RunDir, use_tta: bool = True) -> dict[str, dict[str, float]]:
    bench = read_json(run.benchmark_json)["models"]
    out = {}
    for name, r in bench.items():
        m = r["metrics"]["tta" if use_tta and "tta" in r["metrics"] else "single"]["per_class"]
        out[name] = {c: v["f1-score"] for c, v in m.items() if isinstance(v, dict) and "avg" not in c}
    return out


def reference_comparison(run: RunDir) -> pd.DataFrame:
    """This run's fp32 accuracies next to the seed study's (UC Merced runs only; empty otherwise)."""
    if not references_for(run):
        return pd.DataFrame(columns=["source", "test accuracy", "protocol"])
    df = results_frame(run)
    fp32 = df[(df["variant"] == "fp32") & (df["status"] == "ok")]
    rows = [
        {"source": k, "test accuracy": v, "protocol": f"single view; {REFERENCE_SOURCE}"}
        for k, v in REFERENCE_ACCURACY.items()
    ]
    for _, r in fp32.iterrows():
        rows.append(
            {"source": f"this run {r['model']}", "test accuracy": r["accuracy"], "protocol": "single view"}
        )
        if not pd.isna(r.get("accuracy_tta")):
            rows.append(
                {
                    "source": f"this run {r['model']}",
                    "test accuracy": r["accuracy_tta"],
                    "protocol": "TTA (mean of views)",
                }
            )
    return pd.DataFrame(rows)


def stage_times(run: RunDir) -> pd.DataFrame:
    """Seconds per stage from run.json, beside the plan's estimate made before training and the peak
    resident memory of the run's processes while the stage ran, with their total (the report renders before
    run.json's last write, so the report stage itself is not in it)."""
    info = read_json(run.run_json)
    planned = (info.get("plan") or {}).get("stages", {})
    rss = info.get("stage_peak_rss_mb", {})
    rows = [
        {
            "stage": k,
            "seconds": v,
            "planned seconds": planned.get(k),
            "peak RSS MB": rss.get(k),
            "status": info.get("stage_status", {}).get(k, ""),
        }
        for k, v in info.get("stage_seconds", {}).items()
    ]
    if rows:
        rows.append(
            {
                "stage": "total of the stages above",
                "seconds": sum(r["seconds"] for r in rows),
                "planned seconds": sum(r["planned seconds"] or 0 for r in rows) if planned else None,
                "peak RSS MB": max((r["peak RSS MB"] or 0 for r in rows), default=None) or None,
                "status": "",
            }
        )
    return pd.DataFrame(rows, columns=["stage", "seconds", "planned seconds", "peak RSS MB", "status"])


def split_accuracy_table(run: RunDir) -> pd.DataFrame:
    """Train / validation / test accuracy side by side (train and validation at the kept epoch)."""
    rows = []
    for name, t in trained_summaries(run).items():
        if t.get("status") == "ok":
            rows.append(
                {
                    "model": name,
                    "input px": t.get("input_size"),
                    "train": t["train_accuracy"],
                    "validation": t["val_accuracy"],
                    "test": t["test_accuracy"],
                    "test (TTA)": t.get("test_accuracy_tta"),
                    "best epoch": t["best_epoch"],
                    "epochs run": t["epochs_run"],
                }
            )
    return pd.DataFrame(rows)


VARIANT_FORMATS = {
    "val. change pt": "{:+.2f}",
    "val. views": "{:.0f}",
    "val. answers changed": "{:.0f}",
    "changed ≤ % (95%)": "{:.2f}",
    "accuracy": "{:.2%}",
    "change pt": "{:+.2f}",
    "accuracy_tta": "{:.2%}",
    "change_tta_pt": "{:+.2f}",
    "latency_ms": "{:.2f}",
    "p90_ms": "{:.2f}",
    "x vs own fp32": "{:.2f}x",
    "x vs eager fp32": "{:.2f}x",
    "size_mb": "{:.1f}",
    "val. accuracy (all views)": "{:.2%}",
    "view agreement with fp32": "{:.1%}",
    "val. answers changed (plain view)": "{:.0f}",
    "seconds": "{:.0f}",
}


TEXT_COLUMNS = ("model", "status", "recipe")


def variants_table(variants: pd.DataFrame):
    """The quantization table (from ``variants_frame``) or the guard's attempts table
    (``attempts_frame``), formatted; text from files and errors is HTML-escaped."""
    fmt = {k: v for k, v in VARIANT_FORMATS.items() if k in variants.columns}
    text = [c for c in TEXT_COLUMNS if c in variants.columns]
    return variants.style.format(fmt, na_rep="–").format(escape="html", subset=text).hide(axis="index")


def split_accuracy_styled(run: RunDir):
    fmt = {"train": "{:.2%}", "validation": "{:.2%}", "test": "{:.2%}", "test (TTA)": "{:.2%}"}
    return split_accuracy_table(run).style.format(fmt, na_rep="–").hide(axis="index")


def variants_frame(record: dict) -> pd.DataFrame:
    """One row per model x variant from quantization.json, for tables and plots."""
    rows = []
    for name, info in record["models"].items():
        for variant in VARIANTS:
            e = info["variants"].get(variant, {})
            lat = e.get("latency", {})
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "recipe": e.get("recipe", "–" if variant in ("fp32", "onnx-fp32") else None),
                    "status": e.get("status"),
                    "val. change pt": e.get("val_change_pt"),
                    "val. views": e.get("val_views"),
                    "val. answers changed": e.get("val_changed"),
                    "changed ≤ % (95%)": e.get("val_change_bound_pt"),
                    "accuracy": e.get("accuracy"),
                    "change pt": e.get("change_pt"),
                    "accuracy_tta": e.get("accuracy_tta"),
                    "change_tta_pt": e.get("change_tta_pt"),
                    "latency_ms": lat.get("median_ms"),
                    "p90_ms": lat.get("p90_ms"),
                    "noisy": lat.get("noisy"),
                    "x vs own fp32": e.get("speedup_vs_runtime_fp32"),
                    "x vs eager fp32": e.get("speedup_vs_eager_fp32"),
                    "size_mb": e.get("size_mb"),
                }
            )
    return pd.DataFrame(rows)


def attempts_frame(record: dict) -> pd.DataFrame:
    """Every recipe the guard tried, per model and INT8 variant (quantization.json -> table)."""
    rows = []
    for name, info in record["models"].items():
        for variant in ("onnx-int8", "int8-torch"):
            guard = info["variants"].get(variant, {}).get("guard") or {}
            for a in guard.get("attempts", []):
                rows.append(
                    {
                        "model": name,
                        "variant": variant,
                        "recipe": a["recipe"],
                        "status": a["status"],
                        "val. views": a.get("views"),
                        "val. accuracy (all views)": a["val_accuracy"],
                        "change pt": a["change_pt"],
                        "view agreement with fp32": a["agreement"],
                        "val. answers changed (plain view)": a.get("changed"),
                        "seconds": a["seconds"],
                        "kept": a["recipe"] == guard.get("recipe"),
                    }
                )
    return pd.DataFrame(rows)
