# %% [markdown]
# # Scene classification: transfer learning report

# %% tags=["parameters"]
run_dir = "../reports/scratch"

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import report as rp
from scenelib.rundir import RunDir, read_json
from scenelib.splits import read_manifest
from scenelib.stages.explore import examples_per_class

run = RunDir(run_dir)
info = read_json(run.run_json)
data = read_json(run.data_summary_json)
facts = rp.headline(run)
rp.write_results_md(run)
figure_no = 0


def caption(text: str) -> None:
    global figure_no
    figure_no += 1
    display(Markdown(f"<p class='caption'><b>Figure {figure_no}.</b> {text}</p>"))


# %% [markdown]
# ## Summary

# %%
lines = [
    f"- **Dataset**: {data['description']}, {data['n_images']} images, {data['n_classes']} classes; split "
    f"{data['split']} (seed {data['seed']}): {data['split_totals']['train']} train, {data['split_totals']['val']} "
    f"validation, {data['split_totals']['test']} test images.",
    f"- **Models trained**: {', '.join(run.trained_models()) or 'none'}.",
]
if facts:
    b = facts["best"]
    tta = (
        f" ({b['accuracy_tta']:.2%} with test-time augmentation)"
        if not pd.isna(b.get("accuracy_tta"))
        else ""
    )
    lines.append(
        f"- **Best model**: {b['model']} ({b['variant']}), {b['accuracy']:.2%} single-view test accuracy{tta}."
    )
    f = facts.get("fastest_near_best")
    if f is not None:
        lines.append(
            f"- **Fastest within 1 point of the best**: {f['model']} {f['variant']}, "
            f"{f['latency_ms_b1']:.1f} ms per image at batch 1 on {info['threads']} CPU threads."
        )
    q = facts.get("int8")
    if q and q.get("speedup"):
        lines.append(
            f"- **INT8**: {q['variant']} runs {b['model']} {q['speedup']:.1f}x faster than eager fp32 "
            f"({q['latency_ms']:.1f} ms) for {q['drop_pt']:+.2f} points of accuracy."
        )
skipped = rp.not_trained(run)
if len(skipped):
    lines.append(f"- **Not trained**: {', '.join(skipped.model)} (reasons below).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Data

# %%
plots.class_counts(data["class_counts"])

# %%
caption("Images per class (readable files only).")
plots.sample_grid(examples_per_class(read_manifest(run.splits_csv), 3))

# %%
caption("Three images of each class.")
findings = [
    f"{len(data['corrupt'])} unreadable files",
    f"{len(data['non_rgb'])} non-RGB images",
    f"{len(data['odd_size'])} images not {data['nominal_size']} px square" if data["nominal_size"] else None,
    f"{len(data['duplicate_groups'])} group(s) of pixel-identical images"
    + (
        ": " + "; ".join(", ".join(p.split("/")[-1] for p in g) for g in data["duplicate_groups"][:5])
        if data["duplicate_groups"]
        else ""
    ),
]
display(Markdown("**Integrity scan** (whole dataset): " + ", ".join(x for x in findings if x) + "."))

# %% [markdown]
# ## Results: every model and variant
# Accuracy is on the test split; "TTA" is the mean softmax over the image's flips/rotations. Latency is per
# image at batch 1 on this CPU; best values in bold. `results.csv` and `results.md` hold the same table.

# %%
rp.metrics_table(run)

# %%
results = rp.results_frame(run)
ok = results[results.status == "ok"].rename(columns={"latency_ms_b1": "latency_ms"})
plots.accuracy_vs_latency(ok[["model", "variant", "accuracy", "latency_ms"]], rp.REFERENCE_ACCURACY)

# %%
caption(
    "Single-view test accuracy against latency (log scale), every model and variant; the line joins the "
    "Pareto front (no other point is both faster and more accurate). Dotted lines: the seed study's accuracies."
)

# %% [markdown]
# ## Training

# %%
hist, best_epochs = rp.histories(run)
plots.training_curves(hist, best_epochs)

# %%
caption("Loss and accuracy per epoch, train (dashed) and validation (solid); dots mark the kept epoch.")

# %%
display(Markdown("Train, validation (at the kept epoch) and test accuracy:"))
rp.split_accuracy_styled(run)

# %% [markdown]
# ## Errors of the best model, and per-class F1 of all

# %%
bench = read_json(run.benchmark_json)["models"]
if facts:
    best_name = facts["best"]["model"]
    m = bench[best_name]["metrics"]
    view = "tta" if "tta" in m else "single"
    display(
        plots.confusion_matrix(
            m[view]["confusion_matrix"],
            data["classes"],
            title=f"{best_name} ({'TTA' if view == 'tta' else 'single view'})",
        )
    )
    caption(f"Confusion matrix of {best_name} on the test split, row-normalised (% of each true class).")
    if m[view]["most_confused"]:
        display(pd.DataFrame(m[view]["most_confused"]).style.hide(axis="index"))

# %%
plots.per_class_f1(rp.per_class_f1(run))

# %%
caption("F1 per class and model (TTA where used).")

# %% [markdown]
# ## Quantization: before and after

# %%
if run.quantization_json.exists():
    from scenelib.stages.quantize import variants_frame

    qv = variants_frame(read_json(run.quantization_json))
    display(plots.quantization_before_after(qv[qv.status == "ok"]))
    caption("Latency (batch 1, timed interleaved in one run) and test accuracy of each variant.")
    display(rp.variants_table(qv))
display(Markdown(f"For reference, {rp.REFERENCE_INT8}."))

# %% [markdown]
# ## Deploying the INT8 model
# The ONNX files in `models/<model>/` need only `onnxruntime`, NumPy and Pillow:

# %%
if facts:
    display(Markdown(rp.onnx_snippet(run, facts["best"]["model"])))

# %% [markdown]
# ## This run next to the seed study

# %%
rp.reference_comparison(run).style.format({"test accuracy": "{:.2%}"}).hide(axis="index")

# %% [markdown]
# ## Weights provenance

# %%
rp.provenance_table(run).style.hide(axis="index")

# %%
if len(skipped):
    display(
        Markdown(
            "**Models not trained** (a default model whose pretrained weights are not available "
            "offline is skipped; put its weights file where the message says, or pass `--weights FILE`):"
        )
    )
    display(skipped.style.hide(axis="index"))

# %% [markdown]
# ## Reproducibility

# %%
machine = read_json(run.benchmark_json)["machine"] if run.benchmark_json.exists() else {}
display(
    Markdown(
        f"`{info['command']}`  \n"
        f"Seed {info['seed']}, {info['threads']} threads; Python {info['python']}, torch {info['torch']}, "
        f"torchvision {info['torchvision']}, onnxruntime {machine.get('onnxruntime', '?')}; CPU: {info['cpu']}.  \n"
        f"Started {info['start']}. Every number above is recomputed from the files of this run directory."
    )
)
rp.stage_times(run).style.format({"seconds": "{:.0f}"}).hide(axis="index")
