"""A bundle's model card (its ``README.md``): what the model is, what it was trained and tested on, how
accurate and fast the run measured it, where its weights come from, and how to run it."""

from __future__ import annotations

import html
import shlex

from ..rundir import RunDir, read_json

TORCHVISION_TERMS = (
    "torchvision's code is BSD-3-Clause; its pretrained weights were trained on ImageNet-1k and may carry terms "
    "derived from that dataset (torchvision: it is the user's responsibility to check the use is permitted)"
)


def weights_licence(train: dict) -> str:
    """The licence of the pretrained weights a model was fine-tuned from, as far as the run knows it."""
    source = train.get("weights_source") or str(train.get("weights", "")).split(":")[0]
    if source == "none" or train.get("strategy") == "scratch":
        return "no pretrained weights: trained from scratch on this dataset"
    if source == "torchvision":
        return TORCHVISION_TERMS
    if source == "offline":
        from ..offline_weights import find_offline_weights

        found = find_offline_weights(train["model"])
        return found.licence if found else "offline weights package not installed here; licence not recorded"
    return "weights from a user-supplied file: its licence is the file's owner's to state"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def _ci(pair: list) -> str:
    low, high = pair
    return "" if low is None or high is None else f" (95% CI {low:.1%}–{high:.1%})"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def _tta(tta: dict | None) -> str:
    return "–" if not tta else f"{_pct(tta['test_accuracy'])} ({tta['views']} views)"


def _machine(run: RunDir) -> str:
    record = read_json(run.quantization_json) if run.quantization_json.exists() else {}
    m = record.get("machine") or (read_json(run.run_json).get("machine") or {})
    return f"{m.get('cpu', '?')}, {m.get('summary', 'features not recorded')}; {record.get('threads', '?')} threads"


def _verdict(meta: dict, facts: dict) -> str:
    advice = facts.get("advice", {}).get(meta["model"]) or {}
    if advice.get("int8"):
        return (
            f"INT8 recommended ({advice['variant']}): {advice['latency_ms']:.2f} ms against "
            f"{advice['baseline_latency_ms']:.2f} ms for {advice['baseline']}, {advice['val_change_pt']:+.2f} pt on "
            f"validation ({advice['val_changed']} of {advice['val_images']:,} validation answers changed)."
        )
    why = "; ".join(meta["why_not_int8"]) or "no INT8 variant was built"
    return f"INT8 not recommended: {why}."


def model_card(run: RunDir, meta: dict, train: dict, facts: dict) -> str:
    data = read_json(run.data_summary_json)
    model, default = meta["model"], meta["recommended"]
    classes = data.get("classes") or []
    totals = data.get("split_totals", {})
    rows = []
    for variant, e in meta["variants"].items():
        tta = e["tta"]
        rows.append(
            f"| {variant}{' (default)' if variant == default else ''} | `{e['file']}` | {e['size_mb']:.1f} MB "
            f"| {_pct(e['test_accuracy'])}{_ci(e['test_accuracy_ci95'])} "
            f"| {_ms(e['latency_ms_b1'])}{' (noisy)' if e['latency_noisy'] else ''} "
            f"| {_tta(tta)} | `{e['sha256']}` |"
        )
    weights_file = train.get("weights_file")
    lines = [
        f"# {model}: {data.get('description', 'scene classifier')}",
        "",
        "A scene classifier exported by scenelib, with everything needed to run it: ONNX Runtime, NumPy and "
        "Pillow only.",
        "",
        "```bash",
        "pip install onnxruntime numpy pillow",
        "python predict.py path/to/images/ --output predictions.csv   # files, folders (recursive), --list FILE",
        "```",
        "",
        "`--top-k`, `--batch-size`, `--variant` ("
        + ", ".join(meta["variants"])
        + ")"
        + (", `--tta`" if any(e["tta"] for e in meta["variants"].values()) else "")
        + "; `python predict.py --help` says more. The CSV has one row per file: path, the top classes with "
        "their probabilities, model, variant, tta and an error column (an unreadable file is reported there "
        "and the rest go on).",
        "",
        "## Model and files",
        "",
        f"Default variant: **{default}**"
        + (f" ({meta['recommendation_note']})" if meta["recommendation_note"] else "")
        + ". Test accuracy is single view on the run's test split, with its Wilson 95% interval; latency is "
        f"per image at batch 1, the median of interleaved timings on: {_machine(run)}.",
        "",
        "| variant | file | size | test accuracy | latency | with TTA | SHA-256 |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"**INT8 verdict**: {_verdict(meta, facts)}",
        "",
        "## Data",
        "",
        f"- Dataset: {data.get('description', '?')}; {len(classes)} classes, {data.get('n_images', '?')} images "
        f"read.",
        f"- Split {data.get('split', '?')} (seed {data.get('seed', '?')}): {totals.get('train', '?')} train, "
        f"{totals.get('val', '?')} validation, {totals.get('test', '?')} test images; the model and its "
        "deployment were chosen on validation, the test split was read only to report.",
        f"- Classes, in output order (`labels.json`): {', '.join(classes)}.",
        "",
        "## Preprocessing (`preprocess.json`, code: `preprocess.py`, the pipeline's own)",
        "",
        "EXIF orientation applied; 8-bit RGB (16-bit grey scaled by its bit depth, alpha dropped); centre crop "
        f"to a square; bilinear resize to {train['input_size']} px; scaled to [0, 1], then normalised with mean "
        f"{[round(v, 4) for v in train['mean']]} and std {[round(v, 4) for v in train['std']]}; NCHW float32.",
        "",
        "## Weights and training",
        "",
        f"- Pretrained weights: {train.get('weights', '?')}"
        + (
            f" (file `{weights_file.split('/')[-1]}`, SHA-256 `{train.get('weights_sha256')}`)"
            if weights_file
            else ""
        )
        + ".",
        f"- Licence: {weights_licence(train)}.",
        f"- Training: strategy {train.get('strategy', '?')}, {train.get('frozen_blocks', '?')} of "
        f"{train.get('total_blocks', '?')} blocks frozen, best epoch {train.get('best_epoch', '?')}; "
        f"validation accuracy {_pct(train.get('val_accuracy'))}.",
        "",
        "## Provenance",
        "",
        f"- Command: `{meta['command']}`",
        f"- Run directory: `{meta['run_dir']}`; bundle written {meta['written']} by scenelib "
        f"{meta['scenelib_version']} (bundle format {meta['format']}).",
        "",
    ]
    return "\n".join(lines)


def deploy_note(run: RunDir, bundles: dict, facts: dict) -> str:
    """Markdown: each recommended deployment's bundle (``deploy/bundle.py``) and the one-line command that
    classifies a folder of images with it."""
    if not bundles:
        return "No bundle was written: no trained model has an ONNX export (see the quantization section)."
    lines = []
    for model, path in bundles.items():
        meta = read_json(path / "bundle.json")
        role = (
            "the best model on validation" if model == facts["best"] else "the fastest within a point of it"
        )
        files = ", ".join(f"`{f}`" for f in meta["files"] if f.endswith(".onnx"))
        mb = sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20
        note = f" ({html.escape(meta['recommendation_note'])})" if meta["recommendation_note"] else ""
        lines.append(
            f"- **{html.escape(model)}**, {role}, deployed as **{meta['recommended']}**{note}: "
            f"`{path.relative_to(run.root)}/` ({mb:.1f} MB: {files}, class names, the pipeline's "
            "preprocessing and a model card, `README.md`)."
        )
    best = next(iter(bundles))
    root, rel = shlex.quote(str(run.root)), bundles[best].relative_to(run.root)
    return "\n".join(
        [
            *lines,
            "",
            "Classify a folder of images (recursively) into a CSV of the top classes, with the run's recommended "
            "deployment; `--help` lists `--top-k`, `--batch-size`, `--variant` and `--tta`:",
            "",
            "```bash",
            f"scenelib predict path/to/images/ --model {root} --output predictions.csv",
            "```",
            "",
            "Or with the bundle alone, copied to any machine with `onnxruntime`, NumPy and Pillow:",
            "",
            "```bash",
            f"python {rel}/predict.py path/to/images/ --output predictions.csv",
            "```",
        ]
    )
