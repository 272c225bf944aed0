# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Explore the data
#
# Before training anything: what is in the dataset, is every file readable, are the images the size the
# dataset promises, are there duplicates, and how balanced are the classes? The integrity scan always
# covers the whole dataset; the split it writes (`splits.csv`) is the one every later notebook uses.

# %% tags=["parameters"]
dataset = "ucmerced"
data_dir = "../data"
split = "70/30"
seed = 0
max_per_class = 0  # > 0: keep that many images per class (quick smoke runs)
threads = 2
run_dir = ""  # empty: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest

# %%
import pandas as pd
from IPython.display import Markdown, display

from scenelib import plots
from scenelib import summary as sm
from scenelib.report import esc
from scenelib.rundir import open_run
from scenelib.stages.explore import explore, read_channel_stats

run = open_run(run_dir)
exploration = explore(run, dataset, data_dir, split, seed, max_per_class)
summary = exploration.summary
display(
    Markdown(
        f"**{esc(summary['description'])}** at `{esc(summary['root'])}`: {summary['n_images']} readable images "
        f"in {summary['n_classes']} classes ({summary['n_files']} files)."
    )
)

# %% [markdown]
# ## Classes
# Class counts and the imbalance ratio (largest class / smallest class).

# %%
plots.class_counts(summary["class_counts"])

# %%
display(Markdown(f"Imbalance ratio: **{summary['imbalance_ratio']:.2f}**"))

# %% [markdown]
# ## Sample images, three per class

# %%
plots.sample_grid(exploration.examples(3))

# %% [markdown]
# ## Image sizes and pixel statistics
# Off-size images are resized to the model's input size like every other image; the list is in the
# integrity table below.

# %%
plots.size_histogram(summary["sizes"], summary["nominal_size"])

# %%
means, stds = read_channel_stats(run)
plots.channel_statistics(means, stds)

# %%
display(
    Markdown(
        f"Dataset channel mean (RGB): {summary['channel_mean']}, std: {summary['channel_std']} "
        "(ImageNet: [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225])."
    )
)

# %% [markdown]
# ## Integrity
# Unreadable files are excluded from the split. Exact duplicates are found by hashing decoded pixels, so a
# re-encoded copy of the same image is still caught.

# %%
integrity = pd.DataFrame(
    [
        {"check": "unreadable / corrupt files", "found": len(summary["corrupt"])},
        {"check": "non-RGB images (converted)", "found": len(summary["non_rgb"])},
        {"check": f"not {summary['nominal_size']} px square", "found": len(summary["odd_size"])},
        {"check": "groups of identical images", "found": len(summary["duplicate_groups"])},
        {"check": "oversized (above Pillow's decompression-bomb limit)", "found": len(summary["oversized"])},
        {
            "check": "16/32-bit images (scaled to 8 bits by bit depth)",
            "found": len(summary["high_bit_depth"]),
        },
        {"check": "links and repeated files left out", "found": len(summary["skipped_files"])},
    ]
)
display(integrity.style.hide(axis="index"))


# %%
def table(frame: pd.DataFrame):
    """File names, class names and error messages come from the data: shown escaped, never as HTML."""
    return frame.style.format(escape="html").hide(axis="index")


if summary["odd_size"]:
    display(
        table(pd.DataFrame(summary["odd_size"]).assign(path=lambda t: t.path.map(lambda p: p.split("/")[-1])))
    )
if summary["duplicate_groups"]:
    names = [", ".join(p.split("/")[-1] for p in g) for g in summary["duplicate_groups"]]
    display(table(pd.DataFrame({"identical images": names})))
    display(Markdown(sm.duplicates_note(summary).lstrip("; ").capitalize() + "."))
if summary["corrupt"]:
    display(table(pd.DataFrame(summary["corrupt_errors"].items(), columns=["path", "error"])))
if summary["skipped_files"]:
    display(table(pd.DataFrame({"left out": summary["skipped_files"]})))

# %% [markdown]
# ## The split
# Stratified and seeded; the same seed gives a byte-identical `splits.csv`.

# %%
split_table = pd.DataFrame(summary["split_counts"]).T
split_table.loc["total"] = split_table.sum()
display(Markdown(f"Preset **{split}**, seed {seed}: {summary['split_totals']}"))
split_table
