# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Train one model
#
# Transfer learning on a CPU. With the `partial` strategy the first blocks of the pretrained network stay
# frozen: they run once per image *view* (for aerial images, the 8 flips/rotations) and their outputs are
# cached, so each epoch only runs the last blocks and the new head. `linear` freezes the whole backbone;
# `full` and `scratch` train every layer on the images themselves (slow on a CPU).

# %% [markdown]
# **Running this notebook retrains `model_name` into the run directory and replaces that model's results**
# (checkpoint, predictions, its rows of `results.csv`); the benchmark and INT8 stages and the report then no
# longer match it until they are run again. To experiment without touching a finished run, copy it first and
# point `run_dir` at the copy.

# %% tags=["parameters"]
dataset = "ucmerced"
# model_name: one of densenet121, efficientnet_b0, efficientnet_b3, efficientnet_lite0, efficientnet_lite1,
# efficientnet_lite2, inception_v3, mobilenet_v2, resnet101, resnet152, resnet50, simple_cnn, squeezenet1_1,
# vgg16, wide_resnet50_2 (scenelib.models.MODELS)
model_name = "mobilenet_v2"
quick = False  # True: one epoch, a smoke test (as run_all.py --quick)
strategy = "auto"  # linear, partial, full, scratch, or auto (the model's default)
weights = "auto"  # auto, torchvision, offline, none, or a state-dict file
epochs = 0  # 0: the strategy's default (8 for partial, 12 for full and scratch)
lr = 1e-3
batch_size = 32
augmentation = "aerial"
tta = True
seed = 0
threads = 2
device = "cpu"  # a resolved torch device: cpu, cuda:0, mps (run_all.py --device)
input_size = 0  # px for a pretrained model; 0: its native size (run_all.py --input-size)
explicit = True  # False for models picked by --models auto: missing weights then mean skipped
run_dir = ""  # empty: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest
# Further knobs (not set by run_all.py): change them here when exploring in JupyterLab.
trainable_blocks = None  # partial: how many last blocks to train (None: the registry's default)
label_smoothing = 0.1
scheduler = "onecycle"  # or "plateau" (ReduceLROnPlateau on the validation loss)
class_weights = False
head_hidden = 0  # > 0: a hidden layer in the new head
head_activation = "relu"  # or "leaky_relu"
head_dropout = 0.2

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import plots
from scenelib.models import HeadConfig
from scenelib.rundir import open_run
from scenelib.stages.train import train_stage

outcome = train_stage(
    open_run(run_dir),
    model_name,
    strategy,
    weights,
    1 if quick else epochs,
    lr,
    batch_size,
    augmentation,
    tta,
    seed,
    threads,
    device=device,
    input_size=input_size,
    trainable_blocks=trainable_blocks,
    label_smoothing=label_smoothing,
    scheduler=scheduler,
    class_weights=class_weights,
    head=HeadConfig(
        dropout=head_dropout, hidden=head_hidden, activation=head_activation, batchnorm=head_hidden > 0
    ),
)
s = outcome.summary

# %% [markdown]
# ## Weights and strategy

# %%
native = "" if s["input_size"] == s["native_input_size"] else f" (native {s['native_input_size']} px)"
display(
    Markdown(
        f"**{model_name}**, weights `{s['weights']}` (SHA-256 `{(s['weights_sha256'] or '-')[:16]}…`), "
        f"strategy **{s['strategy']}**: {s['frozen_blocks']} of {s['total_blocks']} blocks frozen, "
        f"{s['trainable_params']:,} of {s['params']:,} parameters trained, input {s['input_size']} px"
        f"{native}. "
        f"Feature cache built by {s['cache_engine']} in {s['cache_seconds']:.0f} s."
    )
)

# %% [markdown]
# ## Learning curves
# Train (dashed) and validation (solid) loss and accuracy; the dot marks the epoch whose weights were kept
# (best validation accuracy).

# %%
plots.training_curves({model_name: outcome.result.history}, {model_name: outcome.result.best_epoch})

# %%
history = pd.DataFrame(outcome.result.history).set_index("epoch")
history.style.format({"lr": "{:.2e}", "seconds": "{:.1f}"}).format(
    "{:.4f}", subset=["train_loss", "val_loss", "train_accuracy", "val_accuracy"]
)

# %% [markdown]
# ## Test set
# Single view (the plain image) and test-time augmentation (mean softmax over the views) are reported
# separately.

# %%
tta_text = (
    f", with TTA over {s['tta_views']} views **{s['test_accuracy_tta']:.2%}** (macro-F1 {s['test_macro_f1_tta']:.4f})"
    if s["test_accuracy_tta"] is not None
    else ""
)
display(
    Markdown(
        f"Test accuracy single view **{s['test_accuracy']:.2%}** (macro-F1 {s['test_macro_f1']:.4f}){tta_text}; "
        f"best epoch {s['best_epoch']} of {s['epochs_run']}, {s['train_seconds']:.0f} s in all."
    )
)
