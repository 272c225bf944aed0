"""Stage 03: metrics from the saved predictions, and the CPU cost of every trained fp32 model."""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import ensemble, journal, progress
from ..benchmark import (
    count_macs,
    gpu_latency_ms,
    machine_info,
    peak_activation_mb,
    state_dict_mb,
    time_interleaved,
    torch_infer,
)
from ..claims import interval_columns
from ..decoded import split_images
from ..evaluation import Predictions, classification_metrics, fp32_reference
from ..handrun import check_timing_session
from ..hardware import machine_of
from ..models import load_checkpoint
from ..rundir import RunDir, read_json, write_json
from ..splits import read_manifest
from ..training import count_params
from ..transforms import views
from .variants import EAGER_BATCH, bulk_eager_runner, predict

THROUGHPUT_BATCH = 32


def evaluate_predictions(pred: Predictions) -> dict:
    """Single-view and (where there are several views) TTA metrics."""
    out = {"single": classification_metrics(pred.single, pred.labels, pred.classes)}
    if pred.tta is not None:
        out["tta"] = classification_metrics(pred.tta, pred.labels, pred.classes)
    return out


def end_to_end(run: RunDir, name: str, model, meta: dict) -> dict:
    """The saved checkpoint on the plain view, end to end in PyTorch: test (predictions-fp32-e2e, and its
    agreement with training's predictions, from cached prefix features for linear / partial) and validation
    (predictions-fp32-val, for the ensemble)."""
    size = meta["input_size"]
    manifest = read_manifest(run.splits_csv)
    plain, runner = views("none", size), bulk_eager_runner(model)
    cached = Predictions.load(run.predictions(name, "fp32"))
    val_rows, val_images = split_images(manifest, "val", size)
    Predictions(
        predict(runner, val_images, meta["mean"], meta["std"], plain, EAGER_BATCH),
        np.array([r.label for r in val_rows]),
        np.array([r.path for r in val_rows]),
        cached.classes,
    ).save(run.predictions(name, ensemble.VAL_VARIANT))
    probs = predict(
        runner, split_images(manifest, "test", size)[1], meta["mean"], meta["std"], plain, EAGER_BATCH
    )
    Predictions(probs, cached.labels, cached.paths, cached.classes).save(run.predictions(name, "fp32-e2e"))
    same = probs[0].argmax(1) == cached.single.argmax(1)
    return {
        "agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "max_abs_prob_diff": float(np.abs(probs[0] - cached.single).max()),
        "cached_accuracy": float((cached.single.argmax(1) == cached.labels).mean()),
        "e2e_accuracy": float((probs[0].argmax(1) == cached.labels).mean()),
    }


def benchmark_stage(run: RunDir, threads: int, quick: bool = False) -> dict:
    """Write benchmark.json and the fp32 rows' cost columns; returns the benchmark record. Run by hand, it
    writes nothing when the machine's speed differs from the run's (``handrun.check_timing_session``)."""
    torch.set_num_threads(threads)
    check_timing_session(run, "03_benchmark", threads)
    rounds = 3 if quick else 10
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    models, cost, metrics, calls, tta_calls, e2e = {}, {}, {}, {}, {}, {}
    names = run.trained_models()
    steps = progress.bar(total=len(names) + 3, desc="03_benchmark", unit="step")
    for name in names:
        steps.set_description_str(f"{name}: predictions end to end and cost")
        model, meta = load_checkpoint(run.checkpoint(name))
        size = meta["input_size"]
        models[name] = (model, size)
        e2e[name] = end_to_end(run, name, model, meta)
        metrics[name] = evaluate_predictions(fp32_reference(run, name))
        x1 = torch.randn(1, 3, size, size)
        calls[name] = torch_infer(model, x1)
        n_views = read_json(run.train_json(name)).get("tta_views", 1)
        if n_views > 1:  # TTA as it runs: the views of one image as one batch
            tta_calls[name] = torch_infer(model, torch.randn(n_views, 3, size, size))
        cost[name] = {
            "input_size": size,
            "params": count_params(model),
            "trainable_params": read_json(run.train_json(name)).get("trainable_params"),
            "macs": count_macs(model, size),
            "size_mb": state_dict_mb(model),
            "peak_activation_mb": peak_activation_mb(model, x1),
        }
        steps.update()
    latency: dict[str, dict] = {}
    for n_threads in [threads] if quick else sorted({threads, 1}, reverse=True):
        steps.set_description_str(f"timing batch 1 at {n_threads} thread(s)")
        torch.set_num_threads(n_threads)
        timings = time_interleaved(calls, warmup=3, rounds=rounds, runs_per_round=3)
        for name, t in timings.items():
            latency.setdefault(name, {})[f"threads_{n_threads}"] = t.summary()
    torch.set_num_threads(threads)
    steps.update()
    steps.set_description_str("timing TTA")
    for name, t in time_interleaved(tta_calls, warmup=1, rounds=rounds, runs_per_round=1).items():
        latency[name]["tta_batch"] = t.summary()
    batch_calls = {
        name: torch_infer(m, torch.randn(THROUGHPUT_BATCH, 3, size, size))
        for name, (m, size) in models.items()
    }
    steps.update()
    steps.set_description_str(f"timing throughput at batch {THROUGHPUT_BATCH}")
    for name, t in time_interleaved(
        batch_calls, warmup=1, rounds=2 if quick else 4, runs_per_round=1
    ).items():
        cost[name]["throughput_ips"] = THROUGHPUT_BATCH / (t.median / 1000.0)
    steps.update()
    steps.close()
    check_timing_session(run, "03_benchmark", threads, "after timing")
    device_info = read_json(run.run_json).get("device", {"device": "cpu"})
    device = torch.device(device_info["device"])
    if device.type == "cuda":  # the training GPU's own latencies, beside the CPU's
        for name, (m, size) in models.items():
            latency[name]["gpu"] = [gpu_latency_ms(m, size, device, b) for b in (1, THROUGHPUT_BATCH)]
    record = {
        "machine": {**machine_info(), **machine_of(run, threads)},
        "device": device_info,
        "load_average_before_after": [load_before, os.getloadavg() if hasattr(os, "getloadavg") else None],
        "threads": threads,
        "protocol": f"batch 1, 3 warm-up calls, {rounds} interleaved rounds x 3 timed calls, median and p90; "
        f"TTA: the views of one image as one batch; throughput at batch {THROUGHPUT_BATCH}; "
        "torch.inference_mode, eager fp32. Metrics: single view end to end in PyTorch, TTA from the "
        "training stage's predictions",
        "models": {
            name: {
                **cost[name],
                "latency": latency[name],
                "metrics": metrics[name],
                "end_to_end": e2e[name],
            }
            for name in models
        },
    }
    ens = ensemble.choose(
        run, {n: r["latency"][f"threads_{threads}"]["median_ms"] for n, r in record["models"].items()}
    )
    record["ensemble"] = ens
    write_json(run.benchmark_json, record)
    rows = []
    for name, r in record["models"].items():
        main = r["latency"][f"threads_{threads}"]
        auc = r["metrics"]["single"]["roc_auc_macro"]
        rows.append(
            {
                "model": name,
                "variant": "fp32",
                **interval_columns(fp32_reference(run, name)),
                "val_accuracy": read_json(run.train_json(name))["val_accuracy"],
                "latency_ms_b1": main["median_ms"],
                "latency_p90_ms_b1": main["p90_ms"],
                "latency_noisy": main["noisy"],
                "latency_ms_tta": r["latency"].get("tta_batch", {}).get("median_ms"),
                "latency_ms_gpu_b1": next(
                    (g["median_ms"] for g in r["latency"].get("gpu", []) if g["batch"] == 1), None
                ),
                "throughput_ips": r["throughput_ips"],
                "params": r["params"],
                "macs": r["macs"],
                "size_mb": r["size_mb"],
                "peak_mem_mb": r["size_mb"] + (r["peak_activation_mb"] or 0.0),
                "roc_auc": auc,
            }
        )
    if ens:
        rows.append(ensemble.results_row(ens))
    run.upsert_results(rows)
    journal.record(run, "03_benchmark")
    return record
