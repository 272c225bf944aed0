# %% [markdown]
# # 4. Quantize and deploy
#
# Every trained model in four forms: eager PyTorch fp32, PyTorch INT8 (static post-training quantization,
# FX graph mode, x86 kernels), ONNX Runtime fp32 and ONNX Runtime INT8 (static QDQ, per-channel weights).
# Both INT8 forms are calibrated on the same training images (never the test set). All four are evaluated on
# the same test manifest and timed interleaved in one run, so the speed-ups are like-for-like ratios.

# %% tags=["parameters"]
threads = 2
quick = False
calibration_images = 256
seed = 0
run_dir = "../reports/scratch"

# %%
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import report as rp
from scenelib.rundir import RunDir
from scenelib.stages.quantize import quantize_stage, variants_frame

run = RunDir(run_dir)
record = quantize_stage(run, threads, calibration_images, quick, seed)
variants = variants_frame(record)
display(Markdown(f"{record['protocol']}; {threads} threads."))

# %% [markdown]
# ## The variants
# Accuracy drop in points against fp32 (single view, and with TTA where the model uses it).

# %%
rp.variants_table(variants)

# %% [markdown]
# ## Before and after

# %%
ok = variants[variants.status == "ok"]
plots.quantization_before_after(ok)

# %%
plots.accuracy_vs_latency(ok[["model", "variant", "accuracy", "latency_ms"]])

# %% [markdown]
# ## What was quantized
# Modules of the PyTorch INT8 model by kind (what stayed fp32 shows here), and the warnings PyTorch raised
# while quantizing (kept for the record).

# %%
for name, info in record["models"].items():
    layers = info.get("torch_int8_layers")
    if layers:
        display(Markdown(f"**{name}**: " + ", ".join(f"{k} × {v}" for k, v in layers.items())))
    if info.get("onnx_max_abs_diff") is not None:
        display(Markdown(f"ONNX fp32 vs PyTorch: max |logit difference| {info['onnx_max_abs_diff']:.2e}"))
    for note in info["notes"]:
        display(Markdown(f"- {note}"))
    for variant, entry in info["variants"].items():
        if entry["status"] != "ok" or entry.get("note"):
            display(Markdown(f"- {variant}: {entry['status']}. {entry.get('note', '')}"))

# %% [markdown]
# ## Running the deployed model
# The ONNX file needs only `onnxruntime`, NumPy and Pillow:

# %%
first = next(iter(record["models"]), None)
if first:
    display(Markdown(rp.onnx_snippet(run, first)))
