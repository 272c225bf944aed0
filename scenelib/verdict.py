"""The run's answer in one block: which model to deploy and how, how accurate it is, how fast it runs on this
machine, and whether INT8 is worth it.

Every figure comes from the run directory and every choice was made on validation (``claims.py``); test
numbers report. The block heads ``report.html`` and ``results.md`` and is printed when a run finishes.
Test-time augmentation is offered only where validation showed it more accurate than the single view, and
always with the latency of its views.
"""

from __future__ import annotations

import html
import math
import shlex
from dataclasses import dataclass

from .claims import claims, int8_verdict
from .evaluation import Predictions
from .report import esc, results_frame
from .rundir import RunDir, read_json
from .splits import read_manifest, split_rows

RUNTIMES = {
    "fp32": "eager PyTorch fp32",
    "onnx-fp32": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime INT8",
    "int8-torch": "PyTorch INT8",
}


@dataclass
class Verdict:
    run_dir: str
    model: str
    variant: str  # the recommended deployment: a key of RUNTIMES
    file: str  # the deployed file, relative to the run directory
    val_accuracy: float
    val_images: int
    test_accuracy: float | None
    ci: tuple[float, float] | None
    test_images: int
    latency_ms: float | None
    noisy: bool  # the chosen runtime's or eager fp32's timing was taken while the machine was busy
    eager_ms: float | None
    threads: int | None
    cpu: str
    int8: dict
    tta: dict  # helps (on validation), val accuracies, test accuracy and latency of the views as a batch


def _row(frame, model: str, variant: str) -> dict:
    hit = frame[(frame["model"] == model) & (frame["variant"] == variant)]
    return {} if hit.empty else {k: (None if _nan(v) else v) for k, v in hit.iloc[0].to_dict().items()}


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def deployed_file(run: RunDir, model: str, variant: str) -> str:
    path = {
        "fp32": run.checkpoint,
        "onnx-fp32": run.onnx_fp32,
        "onnx-int8": run.onnx_int8,
        "int8-torch": run.torch_int8,
    }[variant](model)
    return str(path.relative_to(run.root))


def verdict(run: RunDir, facts: dict | None = None) -> Verdict | None:
    """The answer, or None before any model was trained; ``facts``: the run's ``claims`` if already made."""
    c = claims(run) if facts is None else facts
    if not c:
        return None
    model = c["best"]
    advice = c["advice"].get(model) or {}
    variant = advice.get("variant", "fp32")
    frame = results_frame(run)
    row, fp32 = _row(frame, model, variant), _row(frame, model, "fp32")
    train = read_json(run.train_json(model))
    info = read_json(run.run_json) if run.run_json.exists() else {}
    quant = read_json(run.quantization_json)["models"] if run.quantization_json.exists() else {}
    n_val = int(quant.get(model, {}).get("variants", {}).get("onnx-fp32", {}).get("val_images") or 0)
    ci = (row["accuracy_ci_low"], row["accuracy_ci_high"]) if row.get("accuracy_ci_low") is not None else None
    return Verdict(
        run_dir=str(run.root),
        model=model,
        variant=variant,
        file=deployed_file(run, model, variant),
        val_accuracy=c["ranking"][0]["val_accuracy"],
        val_images=n_val or _val_images(run),
        test_accuracy=row.get("accuracy"),
        ci=ci,
        test_images=_test_images(run, model),
        latency_ms=advice.get("latency_ms") or fp32.get("latency_ms_b1"),
        noisy=any(str(r.get("latency_noisy")).lower() == "true" for r in (row, fp32)),
        eager_ms=fp32.get("latency_ms_b1"),
        threads=info.get("threads"),
        cpu=((info.get("machine") or {}).get("cpu") or "?")
        + f" ({(info.get('machine') or {}).get('summary', 'features not recorded')})",
        int8=int8_verdict(quant.get(model, {}).get("variants", {})),
        tta={
            "helps": bool(train.get("tta_helps_on_val")),
            "val_single": train.get("val_accuracy"),
            "val_tta": train.get("val_accuracy_tta"),
            "views": train.get("tta_views"),
            "accuracy": fp32.get("accuracy_tta"),
            "latency_ms": fp32.get("latency_ms_tta"),
        },
    )


def _val_images(run: RunDir) -> int:
    return len(split_rows(read_manifest(run.splits_csv), "val")) if run.splits_csv.exists() else 0


def _test_images(run: RunDir, model: str) -> int:
    path = run.predictions(model, "fp32")
    return len(Predictions.load(path).labels) if path.exists() else 0


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def lines(v: Verdict) -> list[str]:
    """The block's sentences (Markdown; names escaped)."""
    resolution = f"; one validation image is {100 / v.val_images:.2g} points" if v.val_images else ""
    ci = f" (95% interval {v.ci[0]:.1%}–{v.ci[1]:.1%})" if v.ci else ""
    speed = "not timed"
    if v.latency_ms is not None:
        speed = f"{v.latency_ms:.1f} ms per image at batch 1 with {v.threads} threads"
        if v.eager_ms and v.variant != "fp32":
            speed += f", {v.eager_ms / v.latency_ms:.1f}x faster than eager PyTorch ({v.eager_ms:.1f} ms)"
        if v.noisy:
            speed += " (timed while the machine was busy: the figures are uncertain)"
    t = v.tta
    if t["views"] and t["views"] > 1 and t["helps"] and t["accuracy"] is not None:
        lat = (
            f" at {t['latency_ms']:.1f} ms (its {t['views']} views as one batch, eager)"
            if t["latency_ms"]
            else ""
        )
        tta = (
            f"**Test-time augmentation** helped on validation ({_pct(t['val_tta'])} against "
            f"{_pct(t['val_single'])} single view): {_pct(t['accuracy'])} on test{lat}."
        )
    elif t["views"] and t["views"] > 1:
        tta = (
            f"**Test-time augmentation** is not recommended: on validation its {t['views']} views scored "
            f"{_pct(t['val_tta'])} against {_pct(t['val_single'])} for the single view."
        )
    else:
        tta = ""
    out = [
        f"**Deploy {esc(v.model)} as {RUNTIMES[v.variant]}** (`{esc(v.file)}`), the most accurate model on "
        f"validation ({_pct(v.val_accuracy)} of {v.val_images:,} images{resolution}).",
        f"- **Accuracy**: {_pct(v.test_accuracy)} on {v.test_images:,} test images{ci}, single view.",
        f"- **Speed on this machine**: {speed}; {esc(v.cpu)}.",
        f"- {v.int8['text']}",
    ]
    if tta:
        out.append(f"- {tta}")
    out.append(
        f"- **Use it**: `scenelib predict IMAGES --model {esc(shlex.quote(v.run_dir))}` (the bundle: "
        f"`deploy/{esc(v.model)}/`, see Deploying the best model)."
    )
    return out


def markdown(v: Verdict | None) -> str:
    """The block as Markdown (``verdict``'s answer, or the line saying there is none)."""
    if v is None:
        return "**No model was trained**: see the stages below for the reasons."
    return "\n".join(
        ["### The answer", "", *lines(v), "", "How each choice was made: see the Summary below."]
    )


def plain_text(v: Verdict | None) -> str:
    """The block for a terminal: Markdown emphasis and escapes removed."""
    if v is None:
        return "No model was trained."
    return "\n".join(html.unescape(line.replace("**", "").replace("`", "")) for line in lines(v))
