"""A run's recommended deployments as self-contained bundles, ``<run>/deploy/<model>/``.

Which model and which variant come from ``claims.claims`` (the report's own choice, made on validation):
a bundle for the best model and one for the fastest model within a point of it, when that is another
model. A bundle holds the ONNX files (fp32, and the INT8 one where it was built and held on validation),
the recommended one marked; ``labels.json``; ``preprocess.json``, the preprocessing as data; the
pipeline's own ``preprocess.py`` and ``runtime.py`` (as ``predict.py``), copied unchanged; a model card
(``README.md``); and ``bundle.json``, the manifest ``runtime.Bundle.load`` checks. Where the report
recommends eager PyTorch fp32, the bundle's default is the fp32 ONNX export of the same checkpoint (its
logits checked against PyTorch's at export); where it recommends PyTorch INT8, the bundle falls back to
the best ONNX variant and says so, since a bundle runs without PyTorch.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..claims import claims
from ..evaluation import Predictions
from ..rundir import RunDir, now_iso, read_json, write_json
from . import preprocess, runtime
from .card import model_card

ONNX_VARIANTS = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
INDEX_JSON = "index.json"


def deploy_dir(run: RunDir) -> Path:
    return run.root / "deploy"


def recommended_models(facts: dict) -> list[str]:
    """The models the report recommends deploying: the best (validation), then the fastest near it."""
    if not facts:
        return []
    return list(dict.fromkeys([facts["best"], facts["fastest_near_best"]]))


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _results_row(run: RunDir, model: str, variant: str) -> dict:
    return next((r for r in run.read_results() if r["model"] == model and r["variant"] == variant), {})


def _tta(run: RunDir, model: str, variant: str, row: dict) -> tuple[dict | None, str]:
    """The TTA the run measured for a variant (preset, views, test accuracy, latency) or why there is none."""
    train = read_json(run.train_json(model))
    preset, n_views = train["config"]["augmentation"], int(train.get("tta_views", 1))
    accuracy = _number(row.get("accuracy_tta"))
    if n_views < 2 or accuracy is None:
        return None, f"the run measured no TTA for {variant}"
    if preset not in preprocess.TTA_PRESETS:
        return None, f"the {preset!r} augmentation's TTA views need torchvision"
    fp32 = _results_row(run, model, "fp32")
    return {
        "preset": preset,
        "views": n_views,
        "test_accuracy": accuracy,
        "latency_ms": _number(fp32.get("latency_ms_tta")),
        "latency_of": "PyTorch fp32, the views as one batch at batch 1 (the ONNX variants' TTA was not timed)",
    }, ""


def _variant_entry(run: RunDir, model: str, variant: str, quant: dict) -> dict | None:
    """A variant's manifest entry, or None when it is not deployable (not built, or not held)."""
    source = run.onnx_fp32(model) if variant == "onnx-fp32" else run.onnx_int8(model)
    entry = quant.get("variants", {}).get(variant, {})
    if not source.is_file() or entry.get("status") != "ok":
        return None
    if variant == "onnx-int8" and not run.predictions(model, variant).exists():
        return None  # slower than its fp32 in this run: not evaluated on test, never recommended
    row = _results_row(run, model, variant)
    tta, note = _tta(run, model, variant, row)
    return {
        "file": ONNX_VARIANTS[variant],
        "sha256": runtime.sha256_file(source),
        "size_mb": round(source.stat().st_size / 2**20, 2),
        "test_accuracy": _number(row.get("accuracy")),
        "test_accuracy_ci95": [_number(row.get("accuracy_ci_low")), _number(row.get("accuracy_ci_high"))],
        "latency_ms_b1": _number(row.get("latency_ms_b1")),
        "latency_noisy": row.get("latency_noisy") == "True",
        "val_change_pt": entry.get("val_change_pt"),
        "recipe": entry.get("recipe") or None,
        "tta": tta,
        "tta_note": note,
    }


def bundle_variant(advice: dict, available: list[str]) -> tuple[str, str]:
    """The bundle's default variant for the report's recommendation, and a note where they differ."""
    chosen = advice.get("variant")
    if chosen in available:
        return chosen, ""
    if chosen == "fp32" and "onnx-fp32" in available:
        return "onnx-fp32", "the report recommends eager PyTorch fp32; this is its ONNX export (same logits)"
    fallback = "onnx-int8" if "onnx-int8" in available and advice.get("int8") else "onnx-fp32"
    return fallback, f"the report recommends {chosen}, which needs PyTorch; this is the ONNX {fallback}"


def write_bundle(run: RunDir, model: str, dest: Path, facts: dict | None = None) -> Path | None:
    """Write ``model``'s bundle to ``dest`` (replacing it whole); None if it has no ONNX export."""
    facts = claims(run) if facts is None else facts
    quant = (
        read_json(run.quantization_json)["models"].get(model, {}) if run.quantization_json.exists() else {}
    )
    variants = {v: e for v in ONNX_VARIANTS if (e := _variant_entry(run, model, v, quant)) is not None}
    if "onnx-fp32" not in variants:
        return None
    advice = facts.get("advice", {}).get(model) or {}
    default, note = bundle_variant(advice, list(variants))
    train, info = read_json(run.train_json(model)), read_json(run.run_json)
    classes = Predictions.load(run.predictions(model, "fp32")).classes
    meta = {
        "format": runtime.FORMAT,
        "scenelib_version": __version__,
        "written": now_iso(),
        "model": model,
        "recommended": default,
        "report_recommends": advice.get("variant"),
        "recommendation_note": note,
        "why_not_int8": advice.get("why_not_int8", []),
        "variants": variants,
        "files": [
            *(e["file"] for e in variants.values()),
            "labels.json",
            "preprocess.json",
            "preprocess.py",
            "predict.py",
            "README.md",
        ],
        "n_classes": len(classes),
        "command": info.get("command", ""),
        "run_dir": str(run.root),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        for variant, entry in variants.items():
            source = run.onnx_fp32(model) if variant == "onnx-fp32" else run.onnx_int8(model)
            shutil.copyfile(source, tmp / entry["file"])
        write_json(tmp / "labels.json", classes)
        write_json(
            tmp / "preprocess.json", preprocess.describe(train["input_size"], train["mean"], train["std"])
        )
        shutil.copyfile(preprocess.__file__, tmp / "preprocess.py")
        shutil.copyfile(runtime.__file__, tmp / "predict.py")
        (tmp / "README.md").write_text(model_card(run, meta, train, facts), encoding="utf-8")
        write_json(tmp / runtime.BUNDLE_JSON, meta)
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def write_bundles(run: RunDir, facts: dict | None = None) -> dict[str, Path]:
    """Every recommended deployment's bundle under ``<run>/deploy/``, and ``deploy/index.json`` naming them
    (the first is the best model, what ``scenelib predict --model <run>`` uses by default)."""
    facts = claims(run) if facts is None else facts
    written = {}
    for model in recommended_models(facts):
        path = write_bundle(run, model, deploy_dir(run) / model, facts)
        if path is not None:
            written[model] = path
    for old in deploy_dir(run).glob("*/" + runtime.BUNDLE_JSON):  # bundles of models no longer recommended
        if old.parent.name not in written:
            shutil.rmtree(old.parent)
    if written:
        write_json(
            deploy_dir(run) / INDEX_JSON,
            {
                "default": next(iter(written)),
                "bundles": {m: str(p.relative_to(run.root)) for m, p in written.items()},
            },
        )
    return written


def bundle_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
