"""Stage 04: INT8 and ONNX variants of every trained model, guarded on validation, evaluated and timed.

Per model: the fp32 ONNX export, ONNX Runtime INT8 and PyTorch INT8, built and guarded on validation data
(``variants.ModelVariants``); then all four variants, eager fp32 included, timed in one interleaved
session, and evaluated once on the test split, except a variant slower than its own fp32 (never
recommended, so its test accuracy would decide nothing). Calibration reads training images and the guard
validation images; test images are read only after every choice is made.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import ensemble, journal, progress
from ..benchmark import time_interleaved
from ..claims import interval_columns, not_shown
from ..decoded import split_images
from ..evaluation import Predictions, accuracy_and_f1, fp32_reference
from ..handrun import check_timing_session
from ..hardware import machine_of
from ..recipes import NOT_RECOMMENDED
from ..rundir import FP32_SOURCE, RESULT_COLUMNS, VARIANTS, RunDir, read_json, write_json
from ..splits import read_manifest
from ..transforms import views
from .variants import ModelVariants, predict

# One evaluation's test columns (not the --repeats summary's _mean / _std)
TEST_COLUMNS = [
    c for c in RESULT_COLUMNS if c.startswith(("accuracy", "macro_f1")) and not c.endswith(("_mean", "_std"))
]
TTA_BUDGET_S = 60.0  # a variant slower than this over all test views is evaluated on the plain view only


def slower_than_source(status: str, timing, own) -> str:
    """Why an INT8 variant is not evaluated on test at all ("" if it is): it runs slower than its own fp32
    source, in the guard's quick check (its status says so) or in the stage's interleaved timing (unless
    either timing is noisy). Such a variant is never recommended, so its test accuracy would decide nothing;
    its latency is still reported."""
    if status.startswith(NOT_RECOMMENDED):  # the guard's quick check: see recipes.GuardResult.status
        return f"{NOT_RECOMMENDED}too slow in the quick check; not evaluated on test"
    if timing.median > own.median and not (timing.noisy or own.noisy):
        return (
            f"{NOT_RECOMMENDED}slower than its fp32 ({timing.median:.1f} vs {own.median:.1f} ms); "
            "not evaluated on test"
        )
    return ""


def is_slower(entry: dict) -> bool:
    """Whether a variant was found too slow to be recommended: in the guard's quick check (slower than its
    fp32 source, or short of the speed-up over ONNX fp32) or slower than its source in the stage's timing.
    It rests on a timing, so it is free to differ between two runs of the same code on the same data."""
    return entry.get("status", "").startswith(NOT_RECOMMENDED) or entry.get("note", "").startswith(
        NOT_RECOMMENDED
    )


def tta_plan(
    single_seconds: float, n_views: int, budget_s: float, status: str = "ok", unshown: str = ""
) -> tuple[bool, str]:
    """Whether to evaluate a variant's TTA views on test, and the note saying why not.

    A variant the guard did not accept, or one whose hold validation cannot show (``unshown``, from
    ``claims.not_shown``), is never recommended: its single view is still measured, but its TTA is not
    worth minutes. Any other variant gets TTA if it fits the budget."""
    if n_views < 2:
        return False, ""
    if status != "ok":
        return False, "never recommended: single view evaluated, TTA not"
    if unshown:
        return False, f"never recommended (it {unshown.split(' (')[0]}): single view evaluated, TTA not"
    if single_seconds * (n_views - 1) > budget_s:
        return False, (
            f"TTA not evaluated: {n_views} views would take about {single_seconds * n_views:.0f} s "
            f"(budget {budget_s:.0f} s)"
        )
    return True, ""


def evaluate_on_test(mv: ModelVariants, rounds: int, tta_budget_s: float) -> dict[str, dict]:
    """Time every built variant interleaved, then evaluate each once on the test split."""
    run, name, info = mv.run, mv.name, mv.info
    train = read_json(run.train_json(name))
    test_rows, test_images = split_images(read_manifest(run.splits_csv), "test", mv.size)
    test_views = views(train["config"]["augmentation"], mv.size, train["config"]["seed"])
    test_views = test_views[: train.get("tta_views", 1)]
    timings = time_interleaved(mv.calls, warmup=3, rounds=rounds, runs_per_round=3)
    reference = fp32_reference(run, name)
    for variant, runner in mv.runners.items():
        if variant == "fp32":  # evaluated end to end by the benchmark stage (predictions-fp32-e2e)
            continue
        entry, start = info["variants"][variant], time.perf_counter()
        path = run.predictions(name, variant)
        if variant in ("onnx-int8", "int8-torch") and (
            why := slower_than_source(entry["status"], timings[variant], timings[FP32_SOURCE[variant]])
        ):
            entry["note"] = why
            path.unlink(missing_ok=True)  # an earlier run's predictions would be read as this one's
            continue
        probs = predict(runner, test_images, mv.mean, mv.std, test_views[:1])
        if variant == "onnx-fp32" and len(reference.probs) > 1:
            # The same graph as fp32 (logits checked against PyTorch at export): its plain view is measured
            # end to end; its other views are fp32's, not evaluated a second time.
            probs = np.concatenate([probs, reference.probs[1:]])
            tta, note = False, "TTA views: fp32's (the same graph; plain view measured on its own)"
        else:
            tta, note = tta_plan(
                time.perf_counter() - start,
                len(test_views),
                tta_budget_s,
                entry["status"],
                not_shown(entry) if variant in ("onnx-int8", "int8-torch") else "",
            )
        if tta:
            probs = np.concatenate([probs, predict(runner, test_images, mv.mean, mv.std, test_views[1:])])
        if note:
            entry["note"] = note
        Predictions(probs, reference.labels, reference.paths, reference.classes).save(path)
        entry["eval_seconds"] = time.perf_counter() - start
    return timings


def quantize_model(
    run: RunDir,
    name: str,
    threads: int,
    n_calibration: int,
    quick: bool,
    seed: int,
    int8_class: str,
    tta_budget_s: float = TTA_BUDGET_S,
) -> dict:
    """Build, guard, time and evaluate the variants of one model; a variant that fails is recorded."""
    steps = progress.bar(total=5, desc=f"{name}: loading", unit="step")
    mv = ModelVariants(run, name, threads, n_calibration, seed, int8_class)
    for desc, build in (
        ("ONNX fp32 export", mv.build_onnx_fp32),
        ("ONNX INT8 recipes on validation", mv.build_onnx_int8),
        ("PyTorch INT8 recipes on validation", mv.build_torch_int8),
    ):
        steps.update()
        steps.set_description_str(f"{name}: {desc}")
        build()
    mv.validation_summary()
    steps.update()
    steps.set_description_str(f"{name}: timing and test evaluation")
    timings = evaluate_on_test(mv, 3 if quick else 10, tta_budget_s)
    steps.update()
    steps.close()
    check_timing_session(run, "04_quantize", threads, f"after timing {name}")
    info = mv.info
    train = read_json(run.train_json(name))
    rows = []
    for variant in VARIANTS:
        entry = info["variants"].setdefault(variant, {"status": "failed: not built"})
        row = {
            "model": name,
            "variant": variant,
            # an accepted variant this run found slower than its fp32 says so where its test columns are blank
            "status": entry["note"] if entry["status"] == "ok" and is_slower(entry) else entry["status"],
            "weights": train["weights"],
            "strategy": train["strategy"],
            "recipe": entry.get("recipe", ""),
        }
        if variant in mv.runners:
            t, own, eager = timings[variant], timings[FP32_SOURCE[variant]], timings["fp32"]
            entry.update(
                latency=t.summary(),
                size_mb=mv.sizes[variant],
                speedup_vs_runtime_fp32=own.median / t.median,
                speedup_vs_eager_fp32=eager.median / t.median,
            )
            row.update(
                size_mb=mv.sizes[variant],
                params=train["params"],
                train_seconds=train["train_seconds"],
                # single view, as training's val_accuracy (the guard's all-views measure: quantization.json)
                val_accuracy=train["val_accuracy"]
                if variant == "fp32"
                else entry.get("val_accuracy_single_view"),
                latency_ms_b1=t.median,
                latency_p90_ms_b1=t.p90,
                latency_noisy=t.noisy,
                speedup_vs_runtime_fp32=entry["speedup_vs_runtime_fp32"],
                speedup_vs_eager_fp32=entry["speedup_vs_eager_fp32"],
            )
            path = run.predictions(name, variant)
            # Blank test columns unless measured now: results.csv merges rows, and an earlier run's test
            # numbers must not stay beside a variant this run did not evaluate (slower than its fp32).
            row.update(dict.fromkeys(TEST_COLUMNS))
            if variant == "fp32" or path.exists():
                pred = fp32_reference(run, name) if variant == "fp32" else Predictions.load(path)
                acc, f1 = accuracy_and_f1(pred.single, pred.labels)
                acc_tta, f1_tta = (
                    accuracy_and_f1(pred.tta, pred.labels) if pred.tta is not None else (None, None)
                )
                entry.update(accuracy=acc, macro_f1=f1, accuracy_tta=acc_tta, macro_f1_tta=f1_tta)
                row.update(**interval_columns(pred, seed))
        rows.append(row)
    for entry in info["variants"].values():  # signed change against the variant's own fp32 source
        src = info["variants"][entry.get("source", "fp32")]
        if entry.get("accuracy") is not None and src.get("accuracy") is not None:
            entry["change_pt"] = 100 * (entry["accuracy"] - src["accuracy"])
            if entry.get("accuracy_tta") is not None and src.get("accuracy_tta") is not None:
                entry["change_tta_pt"] = 100 * (entry["accuracy_tta"] - src["accuracy_tta"])
    run.upsert_results(rows)
    return info


def quantize_stage(
    run: RunDir, threads: int, calibration_images: int = 256, quick: bool = False, seed: int = 0
) -> dict:
    torch.set_num_threads(threads)
    check_timing_session(run, "04_quantize", threads)  # by hand: nothing written on a slower machine
    machine = machine_of(run, threads)
    record = {
        "threads": threads,
        "machine": machine,
        "protocol": "batch 1, all four variants of a model timed interleaved in one session; speed-up = "
        "median of the reference / median of the variant; change = variant - its own fp32 source, in "
        "points (negative = lost accuracy); recipes chosen on the validation split",
        "models": {},
    }
    for name in run.trained_models():
        record["models"][name] = quantize_model(
            run, name, threads, calibration_images, quick, seed, machine["int8_class"]
        )
    write_json(run.quantization_json, record)
    vote = ensemble.read(run)
    if vote:  # its latency: the sum of its members' fp32 latencies as timed here, like their own rows
        fp32 = {
            n: m["variants"]["fp32"].get("latency", {}).get("median_ms") for n, m in record["models"].items()
        }
        if all(fp32.get(m) is not None for m in vote["members"]):
            run.upsert_results(
                [
                    {
                        "model": ensemble.name(vote),
                        "variant": "fp32",
                        "latency_ms_b1": sum(fp32[m] for m in vote["members"]),
                    }
                ]
            )
    journal.record(run, "04_quantize")
    return record
