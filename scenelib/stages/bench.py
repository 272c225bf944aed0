"""Stage 03: metrics from the saved predictions, and the CPU cost of every trained fp32 model."""

from __future__ import annotations

import torch

from ..benchmark import (
    count_macs,
    machine_info,
    peak_activation_mb,
    state_dict_mb,
    time_interleaved,
    torch_infer,
)
from ..evaluation import Predictions, classification_metrics
from ..models import load_checkpoint
from ..rundir import RunDir, read_json, write_json
from ..training import count_params

THROUGHPUT_BATCH = 32


def evaluate_predictions(pred: Predictions) -> dict:
    """Single-view and (where there are several views) TTA metrics."""
    out = {"single": classification_metrics(pred.single, pred.labels, pred.classes)}
    if pred.tta is not None:
        out["tta"] = classification_metrics(pred.tta, pred.labels, pred.classes)
    return out


def benchmark_stage(run: RunDir, threads: int, quick: bool = False) -> dict:
    """Write benchmark.json and the fp32 rows' cost columns; returns the benchmark record."""
    torch.set_num_threads(threads)
    rounds = 3 if quick else 10
    models, cost, metrics, calls = {}, {}, {}, {}
    for name in run.trained_models():
        model, meta = load_checkpoint(run.checkpoint(name))
        size = meta["input_size"]
        models[name] = (model, size)
        metrics[name] = evaluate_predictions(Predictions.load(run.predictions(name, "fp32")))
        x1 = torch.randn(1, 3, size, size)
        calls[name] = torch_infer(model, x1)
        cost[name] = {
            "input_size": size,
            "params": count_params(model),
            "trainable_params": read_json(run.train_json(name)).get("trainable_params"),
            "macs": count_macs(model, size),
            "size_mb": state_dict_mb(model),
            "peak_activation_mb": peak_activation_mb(model, x1),
        }
    latency: dict[str, dict] = {}
    for n_threads in [threads] if quick else sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n_threads)
        timings = time_interleaved(calls, warmup=3, rounds=rounds, runs_per_round=3)
        for name, t in timings.items():
            latency.setdefault(name, {})[f"threads_{n_threads}"] = t.summary()
    torch.set_num_threads(threads)
    batch_calls = {
        name: torch_infer(m, torch.randn(THROUGHPUT_BATCH, 3, size, size))
        for name, (m, size) in models.items()
    }
    for name, t in time_interleaved(
        batch_calls, warmup=1, rounds=2 if quick else 4, runs_per_round=1
    ).items():
        cost[name]["throughput_ips"] = THROUGHPUT_BATCH / (t.median / 1000.0)
    record = {
        "machine": machine_info(),
        "threads": threads,
        "protocol": f"batch 1, 3 warm-up calls, {rounds} interleaved rounds x 3 timed calls, median and p90; "
        f"throughput at batch {THROUGHPUT_BATCH}; torch.inference_mode, eager fp32",
        "models": {
            name: {**cost[name], "latency": latency[name], "metrics": metrics[name]} for name in models
        },
    }
    write_json(run.benchmark_json, record)
    rows = []
    for name, r in record["models"].items():
        main = r["latency"][f"threads_{threads}"]
        auc = r["metrics"]["single"]["roc_auc_macro"]
        rows.append(
            {
                "model": name,
                "variant": "fp32",
                "latency_ms_b1": main["median_ms"],
                "latency_p90_ms_b1": main["p90_ms"],
                "throughput_ips": r["throughput_ips"],
                "params": r["params"],
                "macs": r["macs"],
                "size_mb": r["size_mb"],
                "peak_mem_mb": r["size_mb"] + (r["peak_activation_mb"] or 0.0),
                "roc_auc": auc,
            }
        )
    run.upsert_results(rows)
    return record
