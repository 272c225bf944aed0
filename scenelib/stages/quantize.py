"""Stage 04: INT8 and ONNX variants of every trained model, evaluated and timed side by side."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from ..benchmark import file_mb, onnx_infer, time_interleaved, torch_infer
from ..evaluation import Predictions, accuracy_and_f1
from ..features import extract_views, ort_session
from ..models import load_checkpoint
from ..quantization import export_onnx, quantize_onnx, quantize_torch, quantized_layers, save_torchscript
from ..rundir import VARIANTS, RunDir, read_json, write_json
from ..splits import read_manifest, split_rows
from ..transforms import decode_images, normalize, views

Runner = Callable[[np.ndarray], np.ndarray]


def calibration_batch(run: RunDir, n: int, size: int, mean, std, seed: int = 0) -> torch.Tensor:
    """``n`` training images (never validation or test), seeded, normalised like the model's input."""
    rows = split_rows(read_manifest(run.splits_csv), "train")
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return normalize(decode_images([r.path for r in rows], size), mean, std)


def predict(runner: Runner, images: torch.Tensor, mean, std, test_views) -> np.ndarray:
    """Softmax of every view: [V, N, C]."""
    logits = extract_views(runner, images, mean, std, test_views, batch_size=32, desc="evaluate").float()
    return logits.softmax(-1).numpy()


def _torch_runner(model: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def _ort_runner(session) -> Runner:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


TTA_BUDGET_S = 60.0  # a variant slower than this over all test views is evaluated on the plain view only


def quantize_model(
    run: RunDir,
    name: str,
    threads: int,
    n_calibration: int,
    quick: bool,
    seed: int,
    tta_budget_s: float = TTA_BUDGET_S,
) -> dict:
    """Build, evaluate and time the variants of one model; a variant that fails is recorded, not fatal."""
    model, meta = load_checkpoint(run.checkpoint(name))
    train = read_json(run.train_json(name))
    size, mean, std = meta["input_size"], meta["mean"], meta["std"]
    test_rows = split_rows(read_manifest(run.splits_csv), "test")
    test_images = decode_images([r.path for r in test_rows], size)
    aug = train["config"]["augmentation"]
    test_views = views(aug, size, seed)[: train.get("tta_views", 1)]
    calibration = calibration_batch(run, n_calibration, size, mean, std, seed)
    reference = Predictions.load(run.predictions(name, "fp32"))
    info: dict = {
        "model": name,
        "calibration_images": len(calibration),
        "calibration_source": "train split",
        "variants": {},
        "notes": [],
    }
    runners: dict[str, Runner] = {}
    calls: dict[str, Callable] = {"fp32": torch_infer(model, torch.randn(1, 3, size, size))}
    sizes = {"fp32": file_mb(run.checkpoint(name))}
    x1 = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)

    def attempt(variant: str, build: Callable[[], tuple[Runner, Callable, float]]) -> None:
        start = time.perf_counter()
        try:
            runners[variant], calls[variant], sizes[variant] = build()
            info["variants"][variant] = {"status": "ok", "build_seconds": time.perf_counter() - start}
        except Exception as exc:  # an unsupported op, a failed check: report it and go on
            msg = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            info["variants"][variant] = {"status": msg}

    def build_onnx_fp32():
        info["onnx_max_abs_diff"] = export_onnx(
            model, size, run.onnx_fp32(name), calibration[:8].numpy(), threads
        )
        session = ort_session(str(run.onnx_fp32(name)), threads)
        return _ort_runner(session), onnx_infer(session, x1), file_mb(run.onnx_fp32(name))

    def build_onnx_int8():
        if not run.onnx_fp32(name).exists() or info["variants"]["onnx-fp32"]["status"] != "ok":
            raise RuntimeError("needs the fp32 ONNX export, which failed")
        quantize_onnx(run.onnx_fp32(name), run.onnx_int8(name), calibration.numpy())
        session = ort_session(str(run.onnx_int8(name)), threads)
        return _ort_runner(session), onnx_infer(session, x1), file_mb(run.onnx_int8(name))

    def build_torch_int8():
        with warnings.catch_warnings(record=True) as caught:  # deprecations are recorded for the notebook
            warnings.simplefilter("always")
            qmodel = quantize_torch(model, size, calibration)
            info["torch_int8_layers"] = quantized_layers(qmodel)
            save_torchscript(qmodel, torch.from_numpy(x1), run.torch_int8(name))
            loaded = torch.jit.load(str(run.torch_int8(name)))  # time and evaluate what a user would deploy
        info["notes"] += sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
        return _torch_runner(loaded), torch_infer(loaded, torch.from_numpy(x1)), file_mb(run.torch_int8(name))

    attempt("onnx-fp32", build_onnx_fp32)
    attempt("onnx-int8", build_onnx_int8)
    attempt("int8-torch", build_torch_int8)

    info["variants"]["fp32"] = {"status": "ok"}
    for variant, runner in runners.items():
        start = time.perf_counter()
        probs = predict(runner, test_images, mean, std, test_views[:1])
        single_seconds = time.perf_counter() - start
        if len(test_views) > 1 and single_seconds * (len(test_views) - 1) <= tta_budget_s:
            probs = np.concatenate([probs, predict(runner, test_images, mean, std, test_views[1:])])
        elif len(test_views) > 1:
            info["variants"][variant]["note"] = (
                f"TTA not evaluated: {len(test_views)} views would take about "
                f"{single_seconds * len(test_views):.0f} s (budget {tta_budget_s:.0f} s)"
            )
        Predictions(probs, reference.labels, reference.paths, reference.classes).save(
            run.predictions(name, variant)
        )
        info["variants"][variant]["eval_seconds"] = time.perf_counter() - start
    timings = time_interleaved(calls, warmup=3, rounds=3 if quick else 10, runs_per_round=3)
    base = timings["fp32"].median
    rows = []
    for variant in VARIANTS:
        entry = info["variants"].setdefault(variant, {"status": "failed: not built"})
        row = {
            "model": name,
            "variant": variant,
            "status": entry["status"],
            "weights": train["weights"],
            "strategy": train["strategy"],
        }
        if entry["status"] == "ok":
            pred = Predictions.load(run.predictions(name, variant))
            acc, f1 = accuracy_and_f1(pred.single, pred.labels)
            acc_tta, f1_tta = accuracy_and_f1(pred.tta, pred.labels) if pred.tta is not None else (None, None)
            t = timings[variant]
            entry.update(
                {
                    "accuracy": acc,
                    "macro_f1": f1,
                    "accuracy_tta": acc_tta,
                    "macro_f1_tta": f1_tta,
                    "latency": t.summary(),
                    "size_mb": sizes[variant],
                    "speedup_vs_fp32": base / t.median,
                }
            )
            row.update(
                {
                    "accuracy": acc,
                    "accuracy_tta": acc_tta,
                    "macro_f1": f1,
                    "macro_f1_tta": f1_tta,
                    "size_mb": sizes[variant],
                    "params": train["params"],
                    "train_seconds": train["train_seconds"],
                }
            )
            if variant != "fp32":  # the fp32 row's latency comes from the benchmark stage
                row.update({"latency_ms_b1": t.median, "latency_p90_ms_b1": t.p90})
        rows.append(row)
    ref = info["variants"]["fp32"]
    for entry in info["variants"].values():
        if entry["status"] == "ok":
            entry["drop_pt"] = 100 * (ref["accuracy"] - entry["accuracy"])
            if entry.get("accuracy_tta") is not None and ref.get("accuracy_tta") is not None:
                entry["drop_tta_pt"] = 100 * (ref["accuracy_tta"] - entry["accuracy_tta"])
    run.upsert_results(rows)
    return info


def variants_frame(record: dict) -> pd.DataFrame:
    """One row per model x variant from quantization.json, for tables and plots."""
    rows = []
    for name, info in record["models"].items():
        for variant in VARIANTS:
            e = info["variants"].get(variant, {})
            lat = e.get("latency", {})
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "status": e.get("status"),
                    "accuracy": e.get("accuracy"),
                    "accuracy_tta": e.get("accuracy_tta"),
                    "drop_pt": e.get("drop_pt"),
                    "drop_tta_pt": e.get("drop_tta_pt"),
                    "latency_ms": lat.get("median_ms"),
                    "p90_ms": lat.get("p90_ms"),
                    "speedup": e.get("speedup_vs_fp32"),
                    "size_mb": e.get("size_mb"),
                }
            )
    return pd.DataFrame(rows)


def quantize_stage(
    run: RunDir, threads: int, calibration_images: int = 256, quick: bool = False, seed: int = 0
) -> dict:
    torch.set_num_threads(threads)
    record = {
        "threads": threads,
        "protocol": "batch 1, interleaved with fp32 in the same run; speed-up = fp32 median / variant median",
        "models": {},
    }
    for name in run.trained_models():
        record["models"][name] = quantize_model(run, name, threads, calibration_images, quick, seed)
    write_json(run.quantization_json, record)
    return record
