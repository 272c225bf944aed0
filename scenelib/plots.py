"""Every figure of the notebooks and the report: one module, one style, plain data in, a Figure out.

Figures are built with ``matplotlib.figure.Figure``, not pyplot: nothing is registered in pyplot's figure
list, so a notebook cell that ends with ``plots.class_counts(...)`` shows the figure exactly once (with
pyplot the inline backend would show it a second time) and scripts leak nothing. Assign the result and end
the cell with it, or call ``display(fig)``. Nothing here shows or saves a figure.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter
from PIL import Image, ImageOps

from .models import MODELS
from .rundir import FP32_SOURCE

MAX_WIDTH = 10.0  # inches: the report's text width
VARIANT_ORDER = ["fp32", "int8-torch", "onnx-fp32", "onnx-int8"]
VARIANT_MARKERS = {"fp32": "o", "int8-torch": "s", "onnx-fp32": "^", "onnx-int8": "D"}
LATENCY_LABEL = "latency per image, batch 1 (ms)"
_EXTRA_MARKERS = ["v", "P", "X", "*", "h", "<", ">"]
_GRID = {"linewidths": 0.3, "linecolor": "white"}
_styled = False


def set_style() -> None:
    """Apply the one theme of the project (idempotent), so notebook and report figures match."""
    global _styled
    if _styled:
        return
    _styled = True
    in_ipython = "IPython" in sys.modules and sys.modules["IPython"].get_ipython() is not None
    chosen = getattr(mpl.rcParams, "_get_backend_or_none", lambda: "unknown")()
    if chosen is None and not in_ipython and not os.environ.get("MPLBACKEND"):
        mpl.use("Agg")  # headless scripts and tests; never overrides the notebook's inline backend
    if in_ipython and "inline" in str(chosen):
        # Importing the inline backend registers the PNG formatter for Figure objects; pyplot would
        # otherwise do it on its first figure, which these pyplot-free figures never create.
        import matplotlib_inline.backend_inline  # noqa: F401
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)
    # Class and model names come from folder names: '$' or '_' must print as typed, never as math text.
    mpl.rcParams.update(
        {"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight", "text.parse_math": False}
    )


set_style()


def _figure(width: float, height: float) -> Figure:
    """A constrained-layout figure no wider than the report."""
    return Figure(figsize=(min(width, MAX_WIDTH), height), layout="constrained")


def _message(text: str, title: str) -> Figure:
    """A small figure that says why there is nothing to plot, so a report cell never fails on empty data."""
    fig = _figure(MAX_WIDTH, 1.5)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _title(title: str, what: str, detail: str) -> str:
    """The caller's title, naming the kind of figure once: "resnet50: reliability" is not repeated."""
    if not title:
        return f"{what.capitalize()} ({detail})"
    return f"{title} ({detail})" if what in title.lower() else f"{title} — {what} ({detail})"


def _numeric(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Numbers, NaN where missing: frames built from JSON carry None (object columns) for failed variants."""
    return df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in columns if c in df})


def model_colors(models: Iterable[str]) -> dict[str, tuple]:
    """One colour per model, the same in every figure whatever other models it shows: a registered model
    by its place in the registry, a soft vote in grey, any other name by a stable hash of it."""
    palette = sns.color_palette("colorblind", 10) + sns.color_palette("dark", 10)  # 20: one per registered model
    order = {name: i for i, name in enumerate(MODELS)}

    def color(name: str) -> tuple:
        if name.startswith("ensemble("):
            return (0.45, 0.45, 0.45)
        index = order.get(name, sum(name.encode()) + len(name))
        return palette[index % len(palette)]

    return {name: color(name) for name in sorted(set(models))}


def _variants(values: Iterable[str]) -> list[str]:
    """Known variants in pipeline order, then any others in order of appearance."""
    seen = list(dict.fromkeys(values))
    return [v for v in VARIANT_ORDER if v in seen] + [v for v in seen if v not in VARIANT_ORDER]


def _marker(variant: str, variants: list[str]) -> str:
    extra = [v for v in variants if v not in VARIANT_MARKERS]
    return VARIANT_MARKERS.get(variant) or _EXTRA_MARKERS[extra.index(variant) % len(_EXTRA_MARKERS)]


def _thumbnail(path: str | Path, size: int) -> np.ndarray:
    """RGB, upright (EXIF orientation), centre-cropped to a square so nothing is distorted; a grey tile if
    the file cannot be read."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (size, size)))
    except OSError:
        return np.full((size, size, 3), 200, dtype=np.uint8)


def _set_log(ax, axis: str = "x") -> None:
    """Log scale with ticks written 2, 5, 10, 20 rather than 2×10⁰: readers want plain numbers."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _mantissa(v) in (2, 5) else ""))


def _mantissa(value: float) -> int:
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def _log_if_wide(ax, values: np.ndarray, axis: str = "x", ratio: float = 20.0) -> None:
    """Log scale when the values span more than ``ratio``: int8 and fp32 latencies differ by orders."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size and positive.max() / positive.min() > ratio:
        _set_log(ax, axis)


def _percent(axis, values: Iterable[float]) -> None:
    """Fractions shown as %, whole percents unless the values sit within a few points of each other."""
    finite = [v for v in values if np.isfinite(v)]
    wide = not finite or max(finite) - min(finite) > 0.03
    axis.set_major_formatter(PercentFormatter(xmax=1, decimals=0 if wide else 1))


def class_counts(counts: dict[str, int]) -> Figure:
    """Images per class, to show (im)balance before any model is trained."""
    names = sorted(counts)
    values = [counts[n] for n in names]
    fig = _figure(8, 1.0 + 0.28 * len(names))
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color=sns.color_palette()[0])
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set(xlabel="images (count)", ylabel="class", title=f"Images per class ({sum(values):,} in total)")
    return fig


def sample_grid(examples: dict[str, list[str | Path]], per_class: int = 3, thumb: int = 96) -> Figure:
    """A few images of every class: one axes per class holding a strip of thumbnails, 4 strips a row."""
    if not examples:
        return _message("No images", "Example images per class")
    gap = np.full((thumb, max(thumb // 24, 2), 3), 255, dtype=np.uint8)
    strips = []
    for name in sorted(examples):
        tiles = [_thumbnail(p, thumb) for p in list(examples[name])[:per_class]]
        tiles += [np.full((thumb, thumb, 3), 255, dtype=np.uint8)] * (per_class - len(tiles))
        strips.append(np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1))
    ncols = min(len(strips), max(1, 12 // per_class))
    titles = sorted(examples)
    return _image_grid(strips, titles, ncols, per_class, 1.6, f"Example images, {per_class} per class")


def _image_grid(images: list, titles: list[str], ncols: int, wide: int, most: float, title: str) -> Figure:
    """One axes per image (``wide`` thumbnails across), in rows of ``ncols``, as wide as the report allows."""
    nrows = math.ceil(len(images) / ncols)
    tile = min(MAX_WIDTH / (ncols * wide), most)
    lines = max(t.count("\n") + 1 for t in titles)
    fig = _figure(tile * ncols * wide, nrows * (tile + 0.2 + 0.15 * lines) + 0.4)
    for i, (image, name) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(name, fontsize=9 if lines == 1 else 8)
    fig.suptitle(title)
    return fig


def _parse_size(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", text)
    return (int(match[1]), int(match[2])) if match else None


def size_histogram(sizes: dict[str, int], nominal: int | None, top: int = 20) -> Figure:
    """Image sizes by count, nominal size highlighted: odd sizes are what resizing has to absorb."""
    if not sizes:
        return _message("No images", "Image sizes")
    ordered = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    shown, rest = ordered[:top], ordered[top:]
    if rest:
        shown.append((f"other ({len(rest)} sizes)", sum(c for _, c in rest)))
    labels, values = [k for k, _ in shown], np.array([c for _, c in shown], dtype=float)
    base, accent = sns.color_palette()[0], sns.color_palette()[1]
    colors = [accent if nominal and _parse_size(k) == (nominal, nominal) else base for k in labels]
    fig = _figure(8, 1.2 + 0.28 * len(labels))
    ax = fig.add_subplot()
    bars = ax.barh(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    _log_if_wide(ax, values)
    ax.margins(x=0.15)
    ax.set(xlabel="images (count)", ylabel="width × height (px)")
    ax.set_title(f"Image sizes ({len(sizes)} distinct, {int(sum(sizes.values())):,} images)")
    if nominal:
        ax.legend(handles=[Patch(color=accent, label=f"nominal {nominal}×{nominal} px")], loc="lower right")
    return fig


def channel_statistics(means: np.ndarray, stds: np.ndarray) -> Figure:
    """Per-image RGB means and standard deviations, to compare with the ImageNet normalisation."""
    means, stds = np.asarray(means, dtype=float), np.asarray(stds, dtype=float)
    if means.ndim != 2 or means.shape[1] != 3 or stds.shape != means.shape:
        raise ValueError(f"expected means and stds of shape [N, 3], got {means.shape} and {stds.shape}")
    fig = _figure(MAX_WIDTH, 3.6)
    axes = fig.subplots(1, 2)
    for ax, data, what in zip(axes, (means, stds), ("mean", "standard deviation"), strict=True):
        edges = np.linspace(0.0, max(1.0 if what == "mean" else 0.5, float(data.max())), 41)
        for c, (name, color) in enumerate(zip("RGB", ("tab:red", "tab:green", "tab:blue"), strict=True)):
            values = data[:, c]
            ax.hist(values, bins=edges, color=color, alpha=0.25, histtype="stepfilled")
            ax.hist(values, bins=edges, color=color, histtype="step", label=f"{name} ({values.mean():.3f})")
            ax.axvline(values.mean(), color=color, ls="--", lw=1)
        ax.set(xlabel=f"per-image channel {what} (pixel value, 0–1)", ylabel="images (count)")
        ax.set_title(f"Channel {what}s ({len(data):,} images)")
        ax.legend(title="channel (average)", fontsize=8)
    return fig


def training_curves(histories: dict[str, list[dict]], best_epochs: dict[str, int]) -> Figure:
    """Loss and accuracy per epoch for every model: over-fitting shows as train and validation diverging."""
    colors = model_colors(histories)
    fig = _figure(MAX_WIDTH, 4.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for model, rows in histories.items():
        frame = pd.DataFrame(rows)
        if frame.empty:
            continue
        best = frame[frame["epoch"] == best_epochs.get(model, -1)]
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            for split, style in (("train", "--"), ("val", "-")):
                if f"{split}_{metric}" in frame:
                    ax.plot(frame["epoch"], frame[f"{split}_{metric}"], ls=style, color=colors[model])
            if not best.empty and f"val_{metric}" in best:
                ax.plot(best["epoch"], best[f"val_{metric}"], "o", color=colors[model], ms=7, mec="black")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss (nats)", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=c, lw=2, label=m) for m, c in colors.items()]
    styles = (("--", "", "train"), ("-", "", "validation"), ("", "o", "best epoch"))
    handles += [Line2D([], [], color="grey", ls=ls, marker=m, mec="black", label=t) for ls, m, t in styles]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle("Training curves")
    return fig


def _cell(value: float, percent: bool) -> str:
    return "<1" if percent and value < 0.5 else f"{value:.0f}"


def confusion_matrix(
    cm: np.ndarray | list, classes: list[str], normalize: bool = True, title: str = ""
) -> Figure:
    """Where the errors go: row-normalised so every true class reads as 100 %, zeros left blank."""
    counts = np.asarray(cm, dtype=float)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0)
    else:
        values = counts
    text = np.array([[_cell(v, normalize) for v in row] for row in values], dtype=object)
    text[counts == 0] = ""
    n = len(classes)
    fig = _figure(min(MAX_WIDTH, 3.0 + 0.4 * n), 2.4 + 0.36 * n)
    ax = fig.add_subplot()
    bar = {"label": "% of true class" if normalize else "images (count)", "shrink": 0.7}
    ticks = {"xticklabels": classes, "yticklabels": classes, "vmin": 0, "vmax": 100 if normalize else None}
    sns.heatmap(values, ax=ax, annot=text, fmt="", cmap="Blues", square=True, cbar_kws=bar, **ticks, **_GRID)
    for label in ax.texts:
        label.set_fontsize(9 if n <= 10 else 6)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor")
    ax.tick_params(labelsize=8 if n <= 10 else 7)
    ax.set(xlabel="predicted class", ylabel="true class")
    kind = "row-normalised, % of true class" if normalize else "counts"
    ax.set_title(title if "confusion" in title.lower() else _title(title, "confusion matrix", kind))
    return fig


def per_class_f1(f1: dict[str, dict[str, float]]) -> Figure:
    """F1 per class and model in one table-like heatmap: which classes are hard for every model."""
    frame = pd.DataFrame(f1).sort_index()
    fig = _figure(2.5 + 0.8 * max(len(frame.columns), 4), 1.5 + 0.3 * len(frame))
    ax = fig.add_subplot()
    bar = {"label": "F1 score (0–1)"}
    sns.heatmap(frame, ax=ax, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", cbar_kws=bar, **_GRID)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    ax.set(xlabel="model", ylabel="class", title="Per-class F1 on the test set")
    return fig


def reliability_diagram(bins: list[dict], ece: float, title: str = "") -> Figure:
    """Accuracy per confidence bin against the diagonal, with bin sizes below: is 90 % sure right 90 %?"""
    fig = _figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    lo = np.array([b["lo"] for b in bins], dtype=float)
    width = np.array([b["hi"] for b in bins], dtype=float) - lo
    acc = np.array([b["accuracy"] for b in bins], dtype=float)
    conf = np.array([b["confidence"] for b in bins], dtype=float)
    count = np.array([b["count"] for b in bins], dtype=float)
    top.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    top.bar(lo, acc, width=width, align="edge", edgecolor="black", lw=0.5, label="accuracy")
    gap = {"color": "tab:red", "alpha": 0.3, "hatch": "//", "edgecolor": "tab:red", "lw": 0.5}
    top.bar(lo, conf - acc, bottom=acc, width=width, align="edge", label="gap to mean confidence", **gap)
    top.legend(loc="upper left", title=f"ECE = {ece:.2%}", fontsize=8)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy (%)")
    top.set_title(_title(title, "reliability", f"ECE {ece:.2%}"))
    bottom.bar(lo, count, width=width, align="edge", color="grey", edgecolor="black", lw=0.5)
    _log_if_wide(bottom, count, "y")
    bottom.set(xlabel="confidence, top-1 probability (%)", ylabel="images (count)")
    for ax in (top, bottom):
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    top.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    return fig


def misclassified_gallery(items: list[dict], columns: int = 6, thumb: int = 128) -> Figure:
    """The wrong test predictions with their confidence: errors a person would also make, or not."""
    title = "Misclassified test images (true → predicted, confidence)"
    if not items:
        return _message("No misclassified test images", title)
    images = [_thumbnail(item["path"], thumb) for item in items]
    titles = [f"{i['true']} →\n{i['predicted']} ({i['confidence']:.0%})" for i in items]
    return _image_grid(images, titles, min(columns, len(items)), 1, 1.8, title)


def _dodge(n: int) -> tuple[np.ndarray, float]:
    """Offsets and bar height for n variants inside one model's row."""
    height = 0.8 / max(n, 1)
    return (np.arange(n) - (n - 1) / 2) * height, height


def latency(df: pd.DataFrame) -> Figure:
    """Median latency per model and variant with the 90th percentile as whisker (batch 1, CPU)."""
    data = _numeric(df, ["median_ms", "p90_ms"])
    note = ""
    if "threads" in data:
        threads = data["threads"].dropna().unique()
        if len(threads) == 1:
            note = f", {int(threads[0])} thread{'s' if threads[0] != 1 else ''}"
        else:
            data["variant"] = data["variant"] + ", " + data["threads"].astype("Int64").astype(str) + " thr"
    data = data.groupby(["model", "variant"], sort=False)[["median_ms", "p90_ms"]].mean()
    models = list(dict.fromkeys(data.index.get_level_values("model")))
    variants = _variants(data.index.get_level_values("variant"))
    if not models:
        return _message("No latency measurements", "Latency")
    offsets, height = _dodge(len(variants))
    fig = _figure(MAX_WIDTH, 1.2 + len(models) * (0.22 * len(variants) + 0.3))
    ax = fig.add_subplot()
    for j, variant in enumerate(variants):
        rows = [(i, data.loc[(m, variant)]) for i, m in enumerate(models) if (m, variant) in data.index]
        y = np.array([i for i, _ in rows]) + offsets[j]
        median = np.array([r["median_ms"] for _, r in rows])
        upper = np.clip(np.array([r["p90_ms"] for _, r in rows]) - median, 0, None)
        whisker = {"xerr": [np.zeros_like(upper), upper], "error_kw": {"lw": 1, "capsize": 2}}
        ax.barh(y, median, height=height, label=variant, **whisker)
        for yy, m, u in zip(y, median, upper, strict=True):
            ax.text(m + u, yy, f" {m:.1f}", va="center", fontsize=7)
    _log_if_wide(ax, data[["median_ms", "p90_ms"]].to_numpy().ravel())
    ax.margins(x=0.1)
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set(xlabel=LATENCY_LABEL, ylabel="model", title=f"CPU latency: median, whisker to p90{note}")
    ax.legend(title="variant", fontsize=8, loc="best")
    return fig


def accuracy_vs_latency(
    df: pd.DataFrame, references: dict[str, float] | None = None, chosen: tuple[str, str] | None = None
) -> Figure:
    """The speed/accuracy trade-off: colour = model, marker = variant; the deployment chosen on validation
    (``chosen``: model, variant) ringed. Nothing is ranked by the test accuracy the y axis shows."""
    data = _numeric(df, ["accuracy", "latency_ms"]).dropna(subset=["accuracy", "latency_ms"])
    if data.empty:
        return _message("No rows with both accuracy and latency", "Accuracy vs latency")
    colors = model_colors(data["model"])
    variants = _variants(data["variant"])
    fig = _figure(MAX_WIDTH, 5.5)
    ax = fig.add_subplot()
    noisy = data["noisy"].astype(str).str.lower().isin(["true", "1"]) if "noisy" in data else None
    for (model, variant), group in data.groupby(["model", "variant"], sort=False):
        point = {"color": colors[model], "marker": _marker(variant, variants), "edgecolor": "white"}
        faded = noisy is not None and bool(noisy.loc[group.index].any())
        ax.scatter(
            group["latency_ms"],
            group["accuracy"],
            s=50,
            lw=0.5,
            zorder=3,
            alpha=0.35 if faded else 1,
            **point,
        )
        if {"ci_low", "ci_high"} <= set(group.columns):
            low, high = pd.to_numeric(group["ci_low"]), pd.to_numeric(group["ci_high"])
            err = np.vstack([group["accuracy"] - low, high - group["accuracy"]])
            ax.errorbar(
                group["latency_ms"],
                group["accuracy"],
                yerr=err,
                fmt="none",
                ecolor=colors[model],
                lw=0.8,
                alpha=0.6,
                zorder=2,
            )
    for model, group in data.groupby("model", sort=False):
        best = group.loc[group["accuracy"].idxmax()]  # one label per model keeps the plot readable
        where = {"xytext": (5, 4), "textcoords": "offset points"}
        ax.annotate(model, (best["latency_ms"], best["accuracy"]), fontsize=8, color=colors[model], **where)
    ring = {"s": 160, "facecolors": "none", "edgecolors": "black", "lw": 1.2, "zorder": 4}
    if chosen is not None:
        pick = data[(data["model"] == chosen[0]) & (data["variant"] == chosen[1])]
        ax.scatter(pick["latency_ms"], pick["accuracy"], **ring)
    for name, value in (references or {}).items():
        ax.axhline(value, ls=":", color="grey", lw=1)
        right = {"transform": ax.get_yaxis_transform(), "ha": "right", "va": "bottom", "color": "dimgrey"}
        ax.text(0.995, value, f"{name} ({value:.1%})", fontsize=7, **right)
    _set_log(ax, "x")
    _percent(ax.yaxis, [*data["accuracy"], *(references or {}).values()])
    low, high = ax.get_ylim()
    ax.set_ylim(low, min(high, 1.005))  # an interval's margin never draws an axis past 100%
    ax.set(xlabel=LATENCY_LABEL + ", log scale", ylabel="test accuracy (%)")
    ax.set_title("Test accuracy vs latency (ringed: the deployment chosen on validation)")
    handles = [Line2D([], [], color=c, marker="o", ls="", label=m) for m, c in colors.items()]
    handles += [Line2D([], [], color="grey", marker=_marker(v, variants), ls="", label=v) for v in variants]
    if chosen is not None:
        ring_label = "chosen on validation"
        handles.append(Line2D([], [], color="black", marker="o", mfc="none", ms=10, ls="", label=ring_label))
    if noisy is not None and noisy.any():
        handles.append(
            Line2D([], [], color="grey", marker="o", alpha=0.35, ls="", label="faded: noisy timing")
        )
    if "ci_low" in data:
        handles.append(Line2D([], [], color="grey", lw=0.8, label="bars: 95% interval"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


def quantization_before_after(df: pd.DataFrame) -> Figure:
    """Latency and accuracy of each variant side by side per model: the speed-up and what it costs."""
    data = _numeric(df, ["latency_ms", "accuracy"]).groupby(["model", "variant"], sort=False)
    data = data[["latency_ms", "accuracy"]].mean()
    models = list(dict.fromkeys(data.index.get_level_values("model")))
    if not models:
        return _message("No quantization results", "Quantization before and after")
    variants = _variants(data.index.get_level_values("variant"))
    offsets, height = _dodge(len(variants))
    palette = dict(zip(variants, sns.color_palette("colorblind", len(variants)), strict=True))
    fig = _figure(MAX_WIDTH, 1.4 + len(models) * (0.22 * len(variants) + 0.3))
    lat_ax, acc_ax = fig.subplots(1, 2, sharey=True)
    for i, model in enumerate(models):
        rows = data.loc[model]
        for j, variant in enumerate(variants):
            if variant not in rows.index:
                continue
            row, y = rows.loc[variant], i + offsets[j]
            own = FP32_SOURCE.get(variant, "fp32")
            base = rows.loc[own] if own in rows.index else rows.iloc[0]
            lat_ax.barh(y, row["latency_ms"], height=height, color=palette[variant])
            if variant != base.name and np.isfinite(row["latency_ms"]) and row["latency_ms"] > 0:
                speedup = base["latency_ms"] / row["latency_ms"]
                label = f" ×{speedup:.2f} vs {base.name}"
                if variant == "int8-torch" and "onnx-fp32" in rows.index:  # the faster baseline it must beat
                    label += f", ×{rows.loc['onnx-fp32', 'latency_ms'] / row['latency_ms']:.2f} vs onnx-fp32"
                lat_ax.text(row["latency_ms"], y, label, va="center", fontsize=7)
            if np.isfinite(row["accuracy"]):
                acc_ax.plot(row["accuracy"], y, "o", color=palette[variant], ms=6)
                delta = 100 * (row["accuracy"] - base["accuracy"])
                label = f" {row['accuracy']:.1%}" + (f" ({delta:+.2f} pt)" if variant != base.name else "")
                acc_ax.text(row["accuracy"], y, label, va="center", fontsize=7)
    _log_if_wide(lat_ax, data["latency_ms"].to_numpy())
    lat_ax.margins(x=0.15)
    lat_ax.set_yticks(range(len(models)), models)
    lat_ax.invert_yaxis()
    lat_ax.set(
        xlabel=LATENCY_LABEL, ylabel="model", title="Latency (×: speed-up over the named variant)"
    )
    acc = data["accuracy"].dropna()
    if not acc.empty:
        pad = max(0.005, 0.15 * (acc.max() - acc.min()))
        acc_ax.set_xlim(acc.min() - pad, acc.max() + 3 * pad)  # room for the labels on the right
    _percent(acc_ax.xaxis, acc)
    acc_ax.set(xlabel="test accuracy (%, zoomed)", title="Accuracy (pt: vs its fp32 source)")
    handles = [Patch(color=palette[v], label=v) for v in variants]
    fig.legend(handles=handles, title="variant", loc="outside right upper", fontsize=8)
    fig.suptitle("Quantization and export: before and after")
    return fig
