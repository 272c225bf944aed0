"""Every figure of scenelib.plots on small real inputs: the right axes, savable as PNG, honest numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from scenelib import plots  # noqa: E402

CLASSES = ["agricultural", "beach", "forest"]


def check(fig: Figure, n_axes: int, tmp_path: Path, name: str = "figure") -> None:
    """The figure has the expected axes, fits the report width and renders to a non-empty PNG."""
    assert isinstance(fig, Figure)
    assert not plt.get_fignums()  # built without pyplot: a notebook shows it once, scripts leak nothing
    assert len(fig.axes) == n_axes
    assert fig.get_figwidth() <= plots.MAX_WIDTH
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000
    plt.close(fig)


def write_images(folder: Path, n: int, size: tuple[int, int] = (40, 30)) -> list[Path]:
    """Tiny real images in different colours, not all square, so the thumbnail crop is exercised."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.new("RGB" if i % 2 else "L", size, (40 * i % 255, 90, 160) if i % 2 else 30 * i).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def benchmark() -> pd.DataFrame:
    rows = [
        ("resnet50", "fp32", 0.931, 60.0, 66.0),
        ("resnet50", "int8-torch", 0.925, 22.0, 25.0),
        ("resnet50", "onnx-fp32", 0.931, 45.0, 50.0),
        ("resnet50", "onnx-int8", np.nan, 15.0, 17.0),
        ("mobilenet_v2", "fp32", 0.902, 9.0, 10.5),
        ("mobilenet_v2", "onnx-int8", 0.880, 2.5, 3.0),
    ]
    return pd.DataFrame(rows, columns=["model", "variant", "accuracy", "latency_ms", "p90_ms"])


def test_class_counts(tmp_path: Path) -> None:
    fig = plots.class_counts({"forest": 100, "beach": 98, "agricultural": 101})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert ax.get_xlabel() and ax.get_title()
    check(fig, 1, tmp_path)


def test_sample_grid_has_one_axes_per_class(tmp_path: Path) -> None:
    examples = {c: write_images(tmp_path / c, 3 if c != "beach" else 2) for c in CLASSES}
    check(plots.sample_grid(examples, per_class=3, thumb=32), len(CLASSES), tmp_path)


def test_size_histogram_highlights_nominal(tmp_path: Path) -> None:
    fig = plots.size_histogram({"256x256": 2056, "247x256": 3, "256x252": 1}, nominal=256)
    ax = fig.axes[0]
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert len(colours) == 2  # the nominal bar stands out
    assert ax.get_xscale() == "log"  # 2056 vs 1 spans more than 20x
    check(fig, 1, tmp_path)
    check(plots.size_histogram({"32x32": 10}, nominal=None), 1, tmp_path)


def test_channel_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fig = plots.channel_statistics(rng.uniform(0.2, 0.6, (50, 3)), rng.uniform(0.1, 0.3, (50, 3)))
    check(fig, 2, tmp_path)
    with pytest.raises(ValueError):
        plots.channel_statistics(np.zeros((5, 4)), np.zeros((5, 4)))


def test_training_curves_marks_best_epoch(tmp_path: Path) -> None:
    def history(offset: float) -> list[dict]:
        return [
            {"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e, "val_loss": offset + 1 / e,
             "val_accuracy": 0.9 - 0.5 / e, "lr": 1e-3, "seconds": 2.0}
            for e in range(1, 6)
        ]  # fmt: skip

    fig = plots.training_curves({"resnet50": history(0.1), "mobilenet_v2": history(0.2)}, {"resnet50": 4})
    loss_ax, acc_ax = fig.axes
    dots = [line for line in loss_ax.get_lines() if line.get_marker() == "o"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [4]
    assert len(acc_ax.get_lines()) == 2 * 2 + 1  # train and val per model, one best-epoch dot
    check(fig, 2, tmp_path)


def row_percentages(fig: Figure, row: int) -> list[float]:
    """The numbers annotated in one row of a seaborn heatmap (cell centres are at row + 0.5)."""
    texts = [t for t in fig.axes[0].texts if int(t.get_position()[1]) == row and t.get_text()]
    return [float(t.get_text().lstrip("<")) for t in texts]


def test_confusion_matrix_rows_are_percentages(tmp_path: Path) -> None:
    cm = np.array([[45, 3, 2], [0, 50, 0], [10, 0, 30]])
    fig = plots.confusion_matrix(cm, CLASSES, normalize=True, title="resnet50")
    assert row_percentages(fig, 0) == [90.0, 6.0, 4.0]
    assert sum(row_percentages(fig, 2)) == pytest.approx(100, abs=1)
    assert row_percentages(fig, 1) == [100.0]  # zeros are hidden
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == CLASSES
    assert fig.axes[0].get_title() == "resnet50 — confusion matrix (row-normalised, % of true class)"
    check(fig, 2, tmp_path, "normalised")  # heatmap and colour bar
    counts = plots.confusion_matrix(cm.tolist(), CLASSES, normalize=False, title="x: confusion matrix")
    assert counts.axes[0].get_title() == "x: confusion matrix"  # the caller's title is not repeated
    assert row_percentages(counts, 2) == [10.0, 30.0]
    check(counts, 2, tmp_path, "counts")


def test_per_class_f1(tmp_path: Path) -> None:
    f1 = {"resnet50": {c: 0.9 for c in CLASSES}, "mobilenet_v2": {c: 0.85 for c in CLASSES}}
    fig = plots.per_class_f1(f1)
    assert {t.get_text() for t in fig.axes[0].texts} == {"0.90", "0.85"}
    check(fig, 2, tmp_path)


def test_reliability_diagram(tmp_path: Path) -> None:
    bins = [
        {"lo": 0.4, "hi": 0.6, "count": 5, "accuracy": 0.4, "confidence": 0.5},
        {"lo": 0.8, "hi": 1.0, "count": 200, "accuracy": 0.95, "confidence": 0.97},
    ]
    fig = plots.reliability_diagram(bins, ece=0.0312, title="resnet50")
    assert "3.12%" in fig.axes[0].get_title()
    check(fig, 2, tmp_path)
    assert plots.reliability_diagram([], 0.0).axes[0].get_title() == "Reliability (ECE 0.00%)"


def test_misclassified_gallery(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "wrong", 7)
    items = [{"path": p, "true": "beach", "predicted": "forest", "confidence": 0.87} for p in paths]
    items.append({"path": tmp_path / "gone.png", "true": "beach", "predicted": "forest", "confidence": 0.5})
    fig = plots.misclassified_gallery(items, columns=4, thumb=32)
    assert "beach →" in fig.axes[0].get_title() and "forest (87%)" in fig.axes[0].get_title()
    check(fig, 8, tmp_path, "gallery")
    empty = plots.misclassified_gallery([])
    assert "No misclassified test images" in [t.get_text() for t in empty.axes[0].texts]
    check(empty, 1, tmp_path, "empty")


def test_latency(tmp_path: Path, benchmark: pd.DataFrame) -> None:
    df = benchmark.rename(columns={"latency_ms": "median_ms"}).assign(threads=1)
    fig = plots.latency(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "latency per image, batch 1 (ms)"
    assert ax.get_xscale() == "log"  # 2.5 ms to 66 ms
    assert len(ax.patches) == len(df)
    check(fig, 1, tmp_path)
    narrow = df[df["model"] == "resnet50"].assign(threads=[1, 1, 4, 4])
    assert plots.latency(narrow).axes[0].get_xscale() == "linear"


def test_accuracy_vs_latency(tmp_path: Path, benchmark: pd.DataFrame) -> None:
    chosen = ("mobilenet_v2", "fp32")
    fig = plots.accuracy_vs_latency(benchmark, references={"seed 000 ResNet-50": 0.9206}, chosen=chosen)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in ax.texts]
    assert "seed 000 ResNet-50 (92.1%)" in texts and {"resnet50", "mobilenet_v2"} <= set(texts)
    # no front ranked by the test accuracy on the y axis; one ring, on the validation choice
    assert not [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert ax.get_ylim()[1] <= 1.005  # no axis past 100%
    rings = [c for c in ax.collections if len(c.get_offsets()) and c.get_facecolors().size == 0]
    assert len(rings) == 1
    pick = benchmark[(benchmark["model"] == chosen[0]) & (benchmark["variant"] == chosen[1])]
    assert rings[0].get_offsets().tolist() == pick[["latency_ms", "accuracy"]].to_numpy().tolist()
    check(fig, 1, tmp_path)
    check(plots.accuracy_vs_latency(benchmark.assign(accuracy=np.nan)), 1, tmp_path, "empty")


def test_quantization_before_after(tmp_path: Path, benchmark: pd.DataFrame) -> None:
    fig = plots.quantization_before_after(benchmark)
    lat_ax, acc_ax = fig.axes
    assert len(lat_ax.patches) == len(benchmark)
    texts = [t.get_text() for t in lat_ax.texts]
    # PyTorch INT8 against eager fp32 and against ONNX fp32, the faster baseline it must beat; each names it
    assert " ×2.73 vs fp32, ×2.05 vs onnx-fp32" in texts  # 60 / 22 ms, 45 / 22 ms
    assert " ×1.33 vs fp32" in texts  # onnx-fp32 against eager: 60 / 45 ms
    assert any("(-2.20 pt)" in t.get_text() for t in acc_ax.texts)  # 88.0 % vs 90.2 %
    check(fig, 2, tmp_path)
    # Frames built from JSON carry None for a failed variant, which makes the column object-typed.
    from_json = benchmark.astype({"accuracy": object})
    from_json.loc[3, "accuracy"] = None
    check(plots.quantization_before_after(from_json), 2, tmp_path, "from_json")
    check(plots.quantization_before_after(benchmark.iloc[:0]), 1, tmp_path, "empty")


def test_a_model_keeps_its_colour_in_every_figure() -> None:
    from scenelib.models import MODELS

    alone = plots.model_colors(["mobilenet_v2", "simple_cnn"])
    many = plots.model_colors([*MODELS, "ensemble(mobilenet_v2+simple_cnn)"])
    assert alone["mobilenet_v2"] == many["mobilenet_v2"] and alone["simple_cnn"] == many["simple_cnn"]
    assert len(set(many.values())) == len(many)  # every registered model and the vote differ
