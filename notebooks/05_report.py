# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scene classification: transfer learning report

# %% tags=["parameters"]
run_dir = ""  # empty: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import journal, plots
from scenelib import report as rp
from scenelib import summary as sm
from scenelib import verdict as vd
from scenelib.claims import claims
from scenelib.deploy.bundle import write_bundles
from scenelib.deploy.card import deploy_note
from scenelib.repeats import VOTE
from scenelib.rundir import open_run, read_json
from scenelib.splits import read_manifest
from scenelib.stages.explore import examples_per_class

run = open_run(run_dir)
info = read_json(run.run_json)
data = read_json(run.data_summary_json)
facts = claims(run)
answer = vd.verdict(run, facts)
rp.write_results_md(run, vd.markdown(answer))
figure_no = 0


def caption(text: str) -> None:
    global figure_no
    figure_no += 1
    display(Markdown(f"<p class='caption'><b>Figure {figure_no}.</b> {text}</p>"))


# %%
chosen = (answer.model, answer.variant) if answer else None
display(Markdown(vd.markdown(answer)))

# %% [markdown]
# ## Summary

# %%
lines = [
    f"- **Dataset**: {rp.esc(data['description'])}; {data['n_images']} images read, in {data['n_classes']} "
    "classes; "
    f"split {data['split']} (seed {data['seed']}): {data['split_totals']['train']} train, "
    f"{data['split_totals']['val']} validation, {data['split_totals']['test']} test images"
    + sm.duplicates_note(data)
    + ".",
    f"- **Models trained**: {rp.esc(', '.join(run.trained_models()) or 'none')}.",
    *sm.summary_lines(run),
]
skipped = rp.not_trained(run)
if len(skipped):
    lines.append(f"- **Not trained**: {rp.esc(', '.join(skipped.model))} (reasons below).")
display(Markdown("\n".join(lines)))
display(Markdown(sm.reading_guide(run)))
display(Markdown(sm.machine_line(run)))
if sm.journal_note(run):  # stages re-run by hand after the pipeline: said up front, and again below
    display(Markdown(sm.journal_note(run)))

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
        ": " + "; ".join(", ".join(rp.esc(p.split("/")[-1]) for p in g) for g in data["duplicate_groups"][:5])
        if data["duplicate_groups"]
        else ""
    ),
]
display(Markdown("**Integrity scan** (whole dataset): " + ", ".join(x for x in findings if x) + "."))

# %% [markdown]
# ## Results: every model and variant
# Validation accuracy chose; test accuracy (with its 95% interval) reports. "TTA" is the mean softmax over
# the image's flips/rotations, and its latency is that of the views run as one batch. Latency is per image
# at batch 1 on this CPU; the deployment chosen on validation is in bold. `results.csv` and `results.md` hold
# the same table.

# %%
rp.metrics_table(run, chosen)

# %%
display(Markdown(sm.machine_line(run)))
plots.accuracy_vs_latency(rp.pareto_points(run), rp.references_for(run), chosen)

# %%
caption(
    "Single-view test accuracy (bars: 95% interval) against batch-1 latency (log scale), every model and "
    "variant; the ring marks the deployment chosen on validation; faded points were timed while the machine "
    "was busy."
    + (
        " Dotted lines: the seed study's accuracies on UC Merced, quoted (measured on another machine)."
        if rp.references_for(run)
        else ""
    )
)

# %%
tta_points = rp.pareto_points(run, tta=True)
if len(tta_points):
    display(plots.accuracy_vs_latency(tta_points, rp.references_for(run)))
    caption(
        "The same with test-time augmentation: TTA accuracy against the latency of the views as one batch."
    )

# %%
spread = sm.repeats_table(run)
if len(spread):
    display(
        Markdown(
            "### Repeated splits\n"
            f"Every trained model was trained again on {spread['splits'].max() - 1} more seeded splits "
            "(`--repeats`): mean ± sample standard deviation over the splits, scored on each split's own "
            "test images from training's predictions (`repeats.csv` has one row per model and split). This "
            "spread is what one split cannot show. "
            + (
                "The last two rows follow the report's own rules in every split: the model its validation "
                "split ranks first, and its pick when a soft vote may compete (the ensemble's rule: models "
                "validation cannot tell from the best, a vote only when strictly more accurate on validation), "
                "each scored on that split's test images"
                if VOTE in set(spread["model"])
                else "The last row follows the report's own rule in every split: the model its validation "
                "split ranks first, scored on that split's test images"
            )
            + "; the 95% CI of the mean is a t-interval over the splits."
        )
    )
    display(
        spread.style.format({"train seconds (mean)": "{:.0f}"})
        .format(escape="html", subset=["model", "picked per split"])
        .hide(axis="index")
    )

# %%
probes = sm.probe_table(run)
if len(probes):
    display(
        Markdown(
            "### What fine-tuning adds over frozen features\n"
            "A linear probe (logistic regression on the pretrained backbone's pooled features of the plain "
            "image, its regularisation chosen on validation) against the fine-tuned model, single view; "
            "McNemar's exact test on the same test images."
        )
    )
    display(
        probes.style.format(
            {
                "probe val.": "{:.2%}",
                "probe test": "{:.2%}",
                "fine-tuned val.": "{:.2%}",
                "fine-tuned test": "{:.2%}",
                "fine-tuning adds (pt)": "{:+.2f}",
                "McNemar p": "{:.2g}",
                "probe seconds": "{:.0f}",
            }
        )
        .format(escape="html", subset=["model"])
        .hide(axis="index")
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
    best_name = facts["best"]
    m = bench[best_name]["metrics"]
    # the view the answer recommends: TTA only where validation showed it better than the single view
    view = "tta" if "tta" in m and read_json(run.train_json(best_name)).get("tta_helps_on_val") else "single"
    display(
        plots.confusion_matrix(
            m[view]["confusion_matrix"],
            data["classes"],
            title=f"{best_name} ({'TTA' if view == 'tta' else 'single view'})",
        )
    )
    caption(
        f"Confusion matrix of {rp.esc(best_name)} on the test split, "
        f"{'with test-time augmentation' if view == 'tta' else 'single view'} (the view the answer recommends), "
        "row-normalised (% of each true class)."
    )
    if m[view]["most_confused"]:
        display(pd.DataFrame(m[view]["most_confused"]).style.format(escape="html").hide(axis="index"))

# %%
plots.per_class_f1(rp.per_class_f1(run))

# %%
caption("F1 per class and model (TTA where used).")

# %% [markdown]
# ## Quantization: before and after

# %%
if run.quantization_json.exists():
    qrecord = read_json(run.quantization_json)
    qv = rp.variants_frame(qrecord)
    display(Markdown(sm.machine_line(run)))
    display(plots.quantization_before_after(qv[qv.latency_ms.notna()]))
    caption(
        "Latency (batch 1, the four variants of a model timed interleaved in one session) and test accuracy of "
        "each variant; × names the variant it compares with (ONNX INT8 with ONNX fp32, the others with eager "
        "fp32, and PyTorch INT8 also with ONNX fp32, the faster baseline it must beat); pt compares with the "
        "same fp32 source (negative = lost accuracy)."
    )
    display(rp.variants_table(qv))
    cut = [e["search"] for m in qrecord["models"].values() for e in m["variants"].values() if e.get("search")]
    cut = f" {rp.esc(cut[0][:1].upper() + cut[0][1:])}." if cut else ""
    display(Markdown(f"INT8 recipes tried on the validation split (the first that held was kept).{cut}"))
    display(rp.variants_table(rp.attempts_frame(qrecord)))
if rp.references_for(run):
    display(Markdown(f"For reference, {rp.REFERENCE_INT8}."))

# %% [markdown]
# ## Deploying the best model
# Each recommended deployment is a self-contained bundle in `deploy/<model>/`: the ONNX model the summary
# recommends, the pipeline's own preprocessing and a model card; it needs only `onnxruntime`, NumPy and Pillow.

# %%
if facts:
    display(Markdown(deploy_note(run, write_bundles(run, facts), facts)))

# %% [markdown]
# ## This run next to the seed study
# The seed study measured UC Merced only; on other datasets this table is left out.

# %%
rp.reference_comparison(run).style.format({"test accuracy": "{:.2%}"}).format(
    escape="html", subset=["source"]
).hide(axis="index")

# %% [markdown]
# ## Weights provenance

# %%
rp.provenance_table(run).style.format(escape="html").hide(axis="index")

# %%
if len(skipped):
    display(
        Markdown(
            "**Models not trained** (a default model whose pretrained weights are not available "
            "offline is skipped; put its weights file where the message says, or pass `--weights FILE`):"
        )
    )
    display(skipped.style.format(escape="html").hide(axis="index"))

# %% [markdown]
# ## Words used in this report
# - **onnx-fp32**: the trained model exported to ONNX and run by ONNX Runtime in 32-bit floats;
#   **onnx-int8**: its 8-bit quantization (ONNX Runtime); **int8-torch**: PyTorch's 8-bit quantization;
#   **fp32** alone: eager PyTorch. **U8S8 / U8U8**: unsigned 8-bit activations with signed / unsigned weights.
# - **pt**: percentage point. **TTA** (test-time augmentation): the mean softmax over the image's flips and
#   rotations. **Linear probe**: logistic regression on the frozen pretrained features, the baseline that
#   shows what fine-tuning adds.
# - **Wilson interval**: a 95% confidence interval for an accuracy measured on n images. **McNemar's test**:
#   compares two models on the same images by the images only one of them gets right; p < 0.05 means the
#   difference is unlikely to be chance. **Clopper-Pearson bound**: the largest share of changed answers
#   consistent, at 95% confidence, with the changes counted on validation.
# - **Log-loss**: the mean negative log-probability of the true class (lower is surer and right).
#   **Macro-F1**: the F1 score averaged over classes with equal weight. **ROC AUC**: how well the scores rank
#   the true class above the others (1 = perfectly).
# - **GMACs**: billions of multiply-accumulate operations per image. **p90**: the 90th percentile of the
#   timings. **INT8 class** (vnni, avx2, ...): the CPU's instruction set for 8-bit arithmetic, which decides
#   the INT8 recipes.

# %% [markdown]
# ## Reproducibility

# %%
machine = read_json(run.benchmark_json)["machine"] if run.benchmark_json.exists() else {}
display(
    Markdown(
        f"`{info['command']}`  \n"
        f"Seed {info['seed']}, {info['threads']} threads; Python {info['python']}, torch {info['torch']}, "
        f"torchvision {info['torchvision']}, onnxruntime {machine.get('onnxruntime', '?')}.  \n"
        f"{sm.machine_line(run)}  \n"
        f"Started {info['start']}. Every number above is recomputed from the files of this run directory."
    )
)
if sm.journal_note(run):
    display(Markdown(sm.journal_note(run)))
journal.record_by_hand(run, "05_report")  # the pipeline records its own render
rp.stage_times(run).style.format(
    {"seconds": "{:.0f}", "planned seconds": "{:.0f}", "peak RSS MB": "{:.0f}"}, na_rep="–"
).hide(axis="index")
