# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Evaluate and benchmark
#
# Test-set metrics of every trained model and what each costs on this CPU: latency per image at batch 1
# (median and p90, interleaved timing), TTA latency (the views of one image as one batch), throughput,
# parameters, multiply-accumulates (MACs of convolutions and matrix products, counted by ptflops at the
# operator level: 1 GMAC is about 2 GFLOPs), size and memory. The single-view metrics come from the saved
# checkpoint run end to end in PyTorch; for `partial` / `linear` training evaluated on cached prefix features,
# the agreement between the two is shown below.

# %% tags=["parameters"]
threads = 2
quick = False
seed = 0
run_dir = ""  # empty: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import report as rp
from scenelib import summary as sm
from scenelib.evaluation import Predictions, misclassified
from scenelib.rundir import open_run
from scenelib.stages.bench import benchmark_stage

run = open_run(run_dir)
record = benchmark_stage(run, threads, quick)
display(Markdown(sm.machine_line(run) + f" torch {record['machine']['torch']}. {record['protocol']}."))
display(
    pd.DataFrame({n: r["end_to_end"] for n, r in record["models"].items()})
    .T.rename_axis("model")
    .reset_index()
    .style.format({"agreement": "{:.2%}", "cached_accuracy": "{:.2%}", "e2e_accuracy": "{:.2%}"})
    .hide(axis="index")
)

# %% [markdown]
# ## Accuracy and cost

# %%
rp.metrics_table(run)

# %% [markdown]
# ## Train, validation and test accuracy
# Train and validation at the kept epoch (train accuracy is measured on augmented views while training).

# %%
rp.split_accuracy_styled(run)

# %% [markdown]
# ## Latency

# %%
lat = pd.DataFrame(
    [
        {
            "model": name,
            "variant": f"fp32, {k.replace('threads_', '')} thr",
            "median_ms": v["median_ms"],
            "p90_ms": v["p90_ms"],
        }
        for name, r in record["models"].items()
        for k, v in r["latency"].items()
    ]
)
plots.latency(lat)

# %% [markdown]
# ## Accuracy against latency
# Single view, bars: 95% intervals; on UC Merced, dotted lines mark the seed study's accuracies.

# %%
plots.accuracy_vs_latency(rp.pareto_points(run, variants=("fp32",)), rp.references_for(run))

# %% [markdown]
# ## Per model: confusion, calibration, mistakes

# %%
for name, r in record["models"].items():
    view = "tta" if "tta" in r["metrics"] else "single"
    mt = r["metrics"][view]
    pred = Predictions.load(run.predictions(name, "fp32"))
    display(Markdown(f"### {rp.esc(name)} ({'TTA' if view == 'tta' else 'single view'})"))
    display(
        plots.confusion_matrix(
            mt["confusion_matrix"], pred.classes, title=f"{name}: confusion matrix (row %)"
        )
    )
    display(plots.reliability_diagram(mt["reliability"], mt["ece"], title=f"{name}: reliability"))
    if mt["most_confused"]:
        display(pd.DataFrame(mt["most_confused"]).style.format(escape="html").hide(axis="index"))
    display(plots.misclassified_gallery(misclassified(pred, use_tta=view == "tta")))
