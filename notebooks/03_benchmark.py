# %% [markdown]
# # 3. Evaluate and benchmark
#
# Test-set metrics of every trained model (from the predictions saved by the training notebook) and what
# each costs on this CPU: latency per image at batch 1 (median and p90, interleaved timing), throughput,
# parameters, multiply-accumulates (MACs, counted by ptflops: 1 GMac is about 2 GFLOPs), size and memory.

# %% tags=["parameters"]
threads = 2
quick = False
seed = 0
run_dir = "../reports/scratch"

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import report as rp
from scenelib.evaluation import Predictions, misclassified
from scenelib.rundir import RunDir
from scenelib.stages.bench import benchmark_stage

run = RunDir(run_dir)
record = benchmark_stage(run, threads, quick)
m = record["machine"]
display(
    Markdown(
        f"Machine: **{m['cpu']}**, {m['cores']} cores; torch {m['torch']}, {threads} threads. {record['protocol']}."
    )
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
# Dotted lines: the accuracies reported by the seed study (seed 000, UC Merced) for comparison.

# %%
points = pd.DataFrame(
    [
        {
            "model": n,
            "variant": "fp32",
            "accuracy": r["metrics"]["single"]["accuracy"],
            "latency_ms": r["latency"][f"threads_{threads}"]["median_ms"],
        }
        for n, r in record["models"].items()
    ]
)
plots.accuracy_vs_latency(points, rp.REFERENCE_ACCURACY)

# %% [markdown]
# ## Per model: confusion, calibration, mistakes

# %%
for name, r in record["models"].items():
    view = "tta" if "tta" in r["metrics"] else "single"
    mt = r["metrics"][view]
    pred = Predictions.load(run.predictions(name, "fp32"))
    display(Markdown(f"### {name} ({'TTA' if view == 'tta' else 'single view'})"))
    display(
        plots.confusion_matrix(
            mt["confusion_matrix"], pred.classes, title=f"{name}: confusion matrix (row %)"
        )
    )
    display(plots.reliability_diagram(mt["reliability"], mt["ece"], title=f"{name}: reliability"))
    if mt["most_confused"]:
        display(pd.DataFrame(mt["most_confused"]).style.hide(axis="index"))
    display(plots.misclassified_gallery(misclassified(pred, use_tta=view == "tta")))
