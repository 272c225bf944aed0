"""Tables and sentences of the final report, computed from the run directory's files only."""

from __future__ import annotations

import math

import pandas as pd

from .rundir import RunDir, read_json

# Test accuracy reported by the seed study (seed 000: UC Merced, 70/30, full fine-tune, single view).
REFERENCE_ACCURACY = {
    "seed 000 ResNet-50": 0.9206,
    "seed 000 DenseNet-121": 0.8873,
    "seed 000 MobileNetV2": 0.9032,
}
REFERENCE_INT8 = "seed 000: MobileNetV2 INT8 at 24.5 ms with a 1.2-point accuracy drop"

DISPLAY_COLUMNS = {
    "model": "model",
    "variant": "variant",
    "accuracy": "accuracy",
    "accuracy_tta": "accuracy (TTA)",
    "macro_f1": "macro-F1",
    "macro_f1_tta": "macro-F1 (TTA)",
    "roc_auc": "ROC AUC",
    "latency_ms_b1": "latency ms (bs1)",
    "latency_p90_ms_b1": "p90 ms",
    "params": "params (M)",
    "macs": "GMac",
    "size_mb": "size MB",
    "train_seconds": "train s",
    "status": "status",
}
HIGHER_IS_BETTER = ("accuracy", "accuracy (TTA)", "macro-F1", "macro-F1 (TTA)", "ROC AUC")
LOWER_IS_BETTER = ("latency ms (bs1)", "p90 ms", "params (M)", "GMac", "size MB", "train s")


def results_frame(run: RunDir) -> pd.DataFrame:
    """results.csv with numbers as numbers (empty cells as NaN)."""
    if not run.results_csv.exists():
        return pd.DataFrame(columns=list(DISPLAY_COLUMNS))
    df = pd.read_csv(run.results_csv, dtype={"status": str, "weights": str, "strategy": str})
    return df


def short_status(status: str) -> str:
    """'failed: ValueError: long message' -> 'failed: ValueError' (the full text is in the run's files)."""
    return ": ".join(status.split(": ")[:2])


def main_table(run: RunDir) -> pd.DataFrame:
    """One row per model x variant with readable units (params in millions, MACs in GMac)."""
    df = results_frame(run).copy()
    df["status"] = df["status"].fillna("").map(short_status)
    df["params"] = df["params"] / 1e6
    df["macs"] = df["macs"] / 1e9
    return df[[c for c in DISPLAY_COLUMNS if c in df.columns]].rename(columns=DISPLAY_COLUMNS)


def metrics_table(run: RunDir):
    """The main table, styled: best value of each column in bold on green, NaN shown as a dash."""
    table = main_table(run)
    ok = table["status"].fillna("") == "ok"

    def best(col: pd.Series) -> list[str]:
        values = col.where(ok)
        if values.notna().sum() == 0:
            return [""] * len(col)
        target = values.max() if col.name in HIGHER_IS_BETTER else values.min()
        return ["font-weight: bold; background-color: #dcefd8" if v == target else "" for v in values]

    fmt = {c: "{:.2%}" for c in ("accuracy", "accuracy (TTA)")}
    fmt.update({c: "{:.4f}" for c in ("macro-F1", "macro-F1 (TTA)", "ROC AUC")})
    fmt.update({c: "{:.1f}" for c in ("latency ms (bs1)", "p90 ms", "size MB", "train s")})
    fmt.update({"params (M)": "{:.2f}", "GMac": "{:.3f}"})
    fmt = {k: v for k, v in fmt.items() if k in table.columns}
    cols = [c for c in (*HIGHER_IS_BETTER, *LOWER_IS_BETTER) if c in table.columns]
    return table.style.format(fmt, na_rep="–").apply(best, subset=cols).hide(axis="index")


def write_results_md(run: RunDir) -> str:
    """results.md: the main table as Markdown (plain numbers, same rounding as the report)."""
    table = main_table(run)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        cells = []
        for col, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                cells.append("–")
            elif col in ("accuracy", "accuracy (TTA)"):
                cells.append(f"{value:.2%}")
            elif isinstance(value, float):
                cells.append(f"{value:.4f}" if col in HIGHER_IS_BETTER else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    run.results_md.write_text(text)
    return text


def headline(run: RunDir) -> dict:
    """The summary sentences' facts: best model, fastest model within 1 point of it, INT8 trade-off."""
    df = results_frame(run)
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return {}
    ok["score"] = ok["accuracy_tta"].fillna(ok["accuracy"])
    fp32 = ok[ok["variant"] == "fp32"]
    best = fp32.loc[fp32["score"].idxmax()] if not fp32.empty else ok.loc[ok["score"].idxmax()]
    near = ok[(ok["score"] >= best["score"] - 0.01) & ok["latency_ms_b1"].notna()]
    fastest = near.loc[near["latency_ms_b1"].idxmin()] if not near.empty else None
    out = {"best": best.to_dict(), "fastest_near_best": fastest.to_dict() if fastest is not None else None}
    int8 = ok[(ok["model"] == best["model"]) & (ok["variant"].isin(["onnx-int8", "int8-torch"]))]
    if not int8.empty and run.quantization_json.exists():
        q = read_json(run.quantization_json)["models"].get(best["model"], {}).get("variants", {})
        fastest_int8 = int8.loc[int8["latency_ms_b1"].idxmin()]
        entry = q.get(fastest_int8["variant"], {})
        out["int8"] = {
            "variant": fastest_int8["variant"],
            "speedup": entry.get("speedup_vs_fp32"),
            "drop_pt": entry.get("drop_tta_pt", entry.get("drop_pt")),
            "latency_ms": fastest_int8["latency_ms_b1"],
        }
    return out


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
    """This run's fp32 accuracies next to the seed study's."""
    df = results_frame(run)
    fp32 = df[(df["variant"] == "fp32") & (df["status"] == "ok")]
    rows = [
        {"source": k, "test accuracy": v, "protocol": "seed 000: single view"}
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
    info = read_json(run.run_json)
    return pd.DataFrame(
        [
            {"stage": k, "seconds": v, "status": info.get("stage_status", {}).get(k, "")}
            for k, v in info.get("stage_seconds", {}).items()
        ]
    )


def split_accuracy_table(run: RunDir) -> pd.DataFrame:
    """Train / validation / test accuracy side by side (train and validation at the kept epoch)."""
    rows = []
    for name, t in trained_summaries(run).items():
        if t.get("status") == "ok":
            rows.append(
                {
                    "model": name,
                    "train": t["train_accuracy"],
                    "validation": t["val_accuracy"],
                    "test": t["test_accuracy"],
                    "test (TTA)": t.get("test_accuracy_tta"),
                    "best epoch": t["best_epoch"],
                    "epochs run": t["epochs_run"],
                }
            )
    return pd.DataFrame(rows)


def onnx_snippet(run: RunDir, model: str) -> str:
    """Markdown: how to run this run's INT8 ONNX model on one image (onnxruntime, NumPy, Pillow only)."""
    t = read_json(run.train_json(model))
    size, mean, std = t["input_size"], [round(v, 4) for v in t["mean"]], [round(v, 4) for v in t["std"]]
    return f"""```python
import numpy as np, onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("models/{model}/model.int8.onnx", providers=["CPUExecutionProvider"])
img = Image.open("some_image.png").convert("RGB").resize(({size}, {size}))
x = (np.asarray(img, dtype=np.float32) / 255 - {mean}) / {std}
logits = session.run(None, {{"input": x.transpose(2, 0, 1)[None].astype(np.float32)}})[0]
print(logits.argmax())  # index into the class names (the 'label' / 'class' columns of splits.csv)
```"""


VARIANT_FORMATS = {"accuracy": "{:.2%}", "accuracy_tta": "{:.2%}", "drop_pt": "{:+.2f}", "drop_tta_pt": "{:+.2f}",
                   "latency_ms": "{:.2f}", "p90_ms": "{:.2f}", "speedup": "{:.2f}x", "size_mb": "{:.1f}"}


def variants_table(variants: pd.DataFrame):
    """The quantization table (from ``stages.quantize.variants_frame``), formatted."""
    return variants.style.format(VARIANT_FORMATS, na_rep="–").hide(axis="index")


def split_accuracy_styled(run: RunDir):
    fmt = {"train": "{:.2%}", "validation": "{:.2%}", "test": "{:.2%}", "test (TTA)": "{:.2%}"}
    return split_accuracy_table(run).style.format(fmt, na_rep="–").hide(axis="index")
