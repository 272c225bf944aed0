# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Quantize and deploy
#
# Every trained model in four forms: eager PyTorch fp32, PyTorch INT8 (static post-training quantization,
# FX graph mode), ONNX Runtime fp32 and ONNX Runtime INT8 (static QDQ, per-channel weights).
#
# INT8 accuracy depends on the CPU: without VNNI, the u8 x s8 kernels sum pairs of products in 16 bits and
# can saturate. So the recipes are chosen for the detected instruction set, and each INT8 variant is
# **guarded on the validation split**, measured on every view of every validation image: a recipe that loses
# more than 0.5 points against its own fp32 source is replaced by the next of a documented sequence (7-bit
# weights, uint8 weights, first/last layers in fp32, percentile calibration). A candidate is timed before it
# is validated (PyTorch INT8 after 16 calibration images): one slower than its fp32 runtime can never be
# recommended, so it ends the search, is not validated on every view, and is not evaluated on test.
# Calibration uses training images, the guard validation images; test images are only read to report the
# kept variants (TTA only for variants that could be recommended). All four variants are timed interleaved
# in one session.
#
# A kept recipe is a candidate, not a recommendation: the report recommends an INT8 model only if the share
# of validation images whose single-view answer it changes is at most 0.5% at 95% confidence (a one-sided
# Clopper-Pearson bound; a changed answer is the only way to lose accuracy). With no change at all that takes
# 598 validation images, so a small validation split shows INT8's speed but cannot recommend it.

# %% tags=["parameters"]
threads = 2
quick = False
calibration_images = 256
seed = 0
run_dir = ""  # empty: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest

# %%
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import report as rp
from scenelib import summary as sm
from scenelib.rundir import open_run
from scenelib.stages.quantize import quantize_stage

run = open_run(run_dir)
record = quantize_stage(run, threads, calibration_images, quick, seed)
variants = rp.variants_frame(record)
display(Markdown(f"{sm.machine_line(run)} {record['protocol']}."))

# %% [markdown]
# ## The variants
# Change in points against the variant's own fp32 source (negative = lost accuracy): on validation (what
# chose the recipe) and on test, single view and with TTA where the model uses it. Speed-ups: over the same
# runtime's fp32 (the INT8 effect) and over eager PyTorch fp32 (the deployment effect). "val. answers
# changed": validation images whose plain-view answer differs from the fp32 source's, and its 95% upper bound
# in percent of images, the number a recommendation needs within 0.5.

# %%
rp.variants_table(variants)

# %% [markdown]
# ## Every recipe the guard tried
# On the validation split, in the order of this CPU's sequence; the search stops at the first recipe that
# holds. A validation split too small to show any INT8 variant holds (under 598 images) gets only the first
# recipe: no fallback could be recommended, and they cost minutes. "Views": validation views measured (1 for
# a candidate slower than its fp32). "Agreement" is the share of validation images on which the variant
# predicts what its fp32 predicts; the fp32 reference is the ONNX export where it exists (its logits are
# checked against PyTorch's).

# %%
rp.variants_table(rp.attempts_frame(record))

# %% [markdown]
# ## Before and after

# %%
plots.quantization_before_after(variants[variants.latency_ms.notna()])

# %%
plots.accuracy_vs_latency(rp.pareto_points(run))

# %% [markdown]
# ## What was quantized
# Modules of each PyTorch INT8 attempt by kind (what stayed fp32 shows here: `fp32 Conv2d` between `int8`
# modules means a dequantize/quantize pair around it, which costs time), and the warnings PyTorch raised
# while quantizing (kept for the record).

# %%
for name, info in record["models"].items():
    for recipe, layers in (info.get("torch_int8_layers") or {}).items():
        listing = ", ".join(f"{k} × {v}" for k, v in layers.items())
        display(Markdown(f"**{rp.esc(name)}**, recipe {recipe}: {listing}"))
    if info.get("onnx_max_abs_diff") is not None:
        display(Markdown(f"ONNX fp32 vs PyTorch: max |logit difference| {info['onnx_max_abs_diff']:.2e}"))
    for note in info["notes"]:
        display(Markdown(f"- {rp.esc(note)}"))
    for variant, entry in info["variants"].items():
        guard = entry.get("guard") or {}
        stopped = guard.get("stopped", "")
        notes = (entry.get("search", ""), entry.get("note", ""), stopped)
        extra = ". ".join(x for x in notes if x and x not in entry["status"])
        if entry["status"] != "ok" or extra:
            display(Markdown(f"- {variant}: {rp.esc(entry['status'])}. {rp.esc(extra)}"))

# %% [markdown]
# ## Running the deployed model
# The report stage writes the recommended deployment as a self-contained bundle, `deploy/<model>/` (ONNX
# model, class names, the pipeline's preprocessing, a model card), and `scenelib predict` classifies images
# with it; see the report's "Deploying the best model".
