"""What the report may claim: winners chosen on validation, intervals and paired tests on test.

Rules every summary sentence follows:

- **Choices use validation data only.** The best model is the one with the highest validation accuracy
  (ties: lower validation loss); a deployment is recommended from validation accuracy and latency. The test
  split is read only to report the chosen model's numbers.
- **Every test number has a 95 % interval**: Wilson for accuracy (scipy), a seeded paired bootstrap over
  test images for macro-F1 (scipy).
- **Paired differences are tested** with McNemar's exact test (the binomial test on the discordant images):
  each model against the chosen best, each INT8 variant against its own fp32 source. Where p >= 0.05 the
  report says "not distinguishable on this test set" instead of ranking.
- **Signs**: a change is variant minus reference, in points; negative means lost accuracy.
- **Speed claims** come only from timings not marked noisy (``benchmark.Timing.noisy``).
- **An INT8 variant is recommended only if validation shows it holds**: the one-sided 95 % upper bound
  (Clopper-Pearson) of the share of validation images whose single-view answer it changes must be within the
  tolerance. A changed answer is the only way to lose accuracy, so the bound caps the loss; it needs no
  labels and no view is counted as an independent image. With 0 changes it takes 598 images to show 0.5 pt:
  a small validation split cannot, and the report says so instead of recommending (on UC Merced a PyTorch
  INT8 model lost 0.34 pt over the views of 147 validation images, then 1.43 pt on test).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score

from .evaluation import Predictions
from .recipes import NOT_RECOMMENDED, TOLERANCE_PT
from .rundir import RunDir, read_json

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 1000
NEAR_BEST_PT = 1.0  # "within 1 point of the best", on validation accuracy
MIN_INT8_SPEEDUP = 1.1  # INT8 is recommended over its fp32 runtime only if at least this much faster


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return float(ci.low), float(ci.high)


def change_bound(changed: int, n: int) -> float:
    """One-sided 95 % upper bound (Clopper-Pearson), in percent, of the rate behind ``changed`` of ``n``."""
    if n <= 0:
        return math.nan
    if changed >= n:
        return 100.0
    return 100.0 * float(stats.beta.ppf(1 - ALPHA, changed + 1, n - changed))


def images_to_show(tolerance_pt: float, changed: int = 0) -> int:
    """The fewest validation images whose bound with ``changed`` changes is within ``tolerance_pt``."""
    low, high = changed, max(changed + 1, 16)
    while change_bound(changed, high) > tolerance_pt:  # the bound falls as n grows
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if change_bound(changed, mid) <= tolerance_pt else (mid, high)
    return high


def macro_f1_batched(
    labels: np.ndarray, guess: np.ndarray, classes: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Macro-F1 over ``classes`` along ``axis`` of label arrays of any batch shape (zero_division=0, as
    scikit-learn's ``f1_score(labels=classes, average="macro")``). F1 = 2 TP / (support + predicted), so
    every bootstrap resample is scored at once instead of one scikit-learn call each (1,000 calls took
    about 2 s per interval)."""
    labels, guess = np.moveaxis(labels, axis, -1), np.moveaxis(guess, axis, -1)
    is_class, said_class = labels[..., None] == classes, guess[..., None] == classes  # (..., n, k)
    tp = (is_class & said_class).sum(-2)
    denominator = is_class.sum(-2) + said_class.sum(-2)
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return f1.mean(-1)


def macro_f1_interval(labels: np.ndarray, guess: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of macro-F1 from a paired bootstrap over test images (seeded)."""
    if len(labels) < 2:
        return (math.nan, math.nan)
    classes = np.unique(labels)
    res = stats.bootstrap(
        (labels, guess),
        lambda y, p, axis=-1: macro_f1_batched(y, p, classes, axis),
        paired=True,
        vectorized=True,
        batch=100,  # bounds memory: 100 resamples x images x classes booleans at a time
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=1 - ALPHA,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval_columns(pred: Predictions, seed: int = 0) -> dict:
    """results.csv's accuracy / macro-F1 columns with their 95 % intervals, single view and TTA."""
    out: dict = {}
    for suffix, probs in (("", pred.single), ("_tta", pred.tta)):
        if probs is None:
            continue
        guess = probs.argmax(1)
        correct = int((guess == pred.labels).sum())
        low, high = wilson_interval(correct, len(pred.labels))
        out.update(
            {
                f"accuracy{suffix}": correct / len(pred.labels),
                f"accuracy{suffix}_ci_low": low,
                f"accuracy{suffix}_ci_high": high,
                f"macro_f1{suffix}": float(
                    f1_score(
                        pred.labels, guess, labels=np.unique(pred.labels), average="macro", zero_division=0
                    )
                ),
            }
        )
        if not suffix:
            out["macro_f1_ci_low"], out["macro_f1_ci_high"] = macro_f1_interval(pred.labels, guess, seed)
    return out


def mcnemar(labels: np.ndarray, guess_a: np.ndarray, guess_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same images: b = only A right, c = only B right."""
    a_right, b_right = guess_a == labels, guess_b == labels
    b, c = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"only_a_right": b, "only_b_right": c, "p_value": p, "distinguishable": p < ALPHA}


# -- choosing on validation ----------------------------------------------------------------------------------
def validation_ranking(run: RunDir) -> list[dict]:
    """Trained models, best first by validation accuracy (ties: lower validation loss at the kept epoch)."""
    rows = []
    for name in run.trained_models():
        t = read_json(run.train_json(name))
        history = read_json(run.history_json(name))
        kept = history[t["best_epoch"] - 1] if history else {}
        rows.append(
            {"model": name, "val_accuracy": t["val_accuracy"], "val_loss": kept.get("val_loss", math.inf)}
        )
    return sorted(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"]))


def not_shown(entry: dict) -> str:
    """Why validation does not show that an INT8 variant holds ("" if it does)."""
    changed, n = entry.get("val_changed"), entry.get("val_images")
    if changed is None or not n:
        return "has no count of changed validation answers (run the quantization stage again)"
    bound = change_bound(changed, n)
    if bound <= TOLERANCE_PT + 1e-9:
        return ""
    return (
        f"is not shown within {TOLERANCE_PT:g} pt ({changed} of {n:,} validation answers changed: at most "
        f"{bound:.1f}% at 95% confidence; {images_to_show(TOLERANCE_PT, changed):,} images with {changed} "
        "changed would show it)"
    )


INT8_VARIANTS = ("onnx-int8", "int8-torch")


def deployment_advice(variants: dict) -> dict:
    """The recommended deployment of one model, from quantization.json's variants (validation + latency).

    The fastest fp32 runtime (eager or ONNX Runtime) is the baseline; an INT8 variant replaces it only if
    the guard accepted it (validation change >= -TOLERANCE_PT), its timing is not noisy, it is at least
    MIN_INT8_SPEEDUP times faster than that baseline, and the 95 % bound of the validation answers it
    changes is within TOLERANCE_PT (see the module docstring)."""

    def latency(v):
        return (variants.get(v, {}).get("latency") or {}).get("median_ms")

    fp32 = [v for v in ("fp32", "onnx-fp32") if variants.get(v, {}).get("status") == "ok" and latency(v)]
    fp32 = [v for v in fp32 if (variants[v].get("val_change_pt") or 0.0) >= -TOLERANCE_PT - 1e-9]
    if not fp32:
        return {}
    base = min(fp32, key=latency)
    int8, why_not = [], []
    for v in INT8_VARIANTS:
        e = variants.get(v, {})
        if not e.get("status"):
            continue
        if e["status"] != "ok":
            why_not.append(f"{v} {e['status'].split(';')[0]}")
        elif latency(v) is None:
            why_not.append(f"{v} was not timed")
        else:  # every reason, so that a quieter machine (no noisy timing) is not mistaken for the fix
            reasons = []
            if e["latency"].get("noisy"):
                reasons.append("has a noisy timing")
            elif latency(v) * MIN_INT8_SPEEDUP > latency(base):
                reasons.append(
                    f"is not {MIN_INT8_SPEEDUP:g}x faster than {base} ({latency(v):.1f} vs {latency(base):.1f} ms)"
                )
            if unshown := not_shown(e):
                reasons.append(unshown)
            if reasons:
                why_not.append(f"{v} {' and '.join(reasons)}")
            else:
                int8.append(v)
    chosen = min(int8, key=latency) if int8 else base
    return {
        "variant": chosen,
        "int8": chosen in ("onnx-int8", "int8-torch"),
        "latency_ms": latency(chosen),
        "baseline": base,
        "baseline_latency_ms": latency(base),
        "val_change_pt": variants[chosen].get("val_change_pt"),
        "val_changed": variants[chosen].get("val_changed"),
        "val_images": variants[chosen].get("val_images"),
        "test_accuracy": variants[chosen].get("accuracy"),
        "test_change_pt": variants[chosen].get("change_pt"),
        "why_not_int8": why_not,
    }


# The INT8 verdict's tiers, best first: what a user can act on.
INT8_TIERS = ("certified", "held", "undecided", "not faster", "rejected", "failed", "not built")


def int8_verdict(variants: dict, tolerance_pt: float = TOLERANCE_PT) -> dict:
    """One model's INT8 verdict: the best tier any INT8 variant reaches, against the fastest fp32 runtime.

    ``certified``: the 95% bound on validation answers changed is within the tolerance (what
    ``deployment_advice`` deploys); ``held``: validation accuracy (over every view) stayed within the
    tolerance, but the split has too few images to bound the answers it changes; ``not faster``: not
    MIN_INT8_SPEEDUP times faster; ``undecided``: the timing was too noisy to tell; ``rejected``: it lost validation accuracy; ``failed``
    or ``not built``. Returns the tier, the variant, its speed-up and a plain-language ``text``."""
    base = deployment_advice(variants)
    if not base:
        return {"tier": "not built", "text": "INT8: not measured (no fp32 runtime was timed)."}
    found = []
    for v in INT8_VARIANTS:
        e = variants.get(v, {})
        if not e.get("status"):
            continue
        lat = (e.get("latency") or {}).get("median_ms")
        speedup = base["baseline_latency_ms"] / lat if lat else None
        changed, n = e.get("val_changed"), e.get("val_images")
        # accuracy first (a variant that loses answers is rejected however fast), then speed
        if e["status"].startswith("rejected") or (e.get("val_change_pt") or 0.0) < -tolerance_pt - 1e-9:
            tier = "rejected"
        elif e["status"].startswith(NOT_RECOMMENDED):  # the quick check found it slower than fp32
            tier = "not faster"
        elif e["status"] != "ok" or lat is None or changed is None or not n:
            tier = "failed"
        elif (e.get("latency") or {}).get("noisy"):
            tier = "undecided"
        elif lat * MIN_INT8_SPEEDUP > base["baseline_latency_ms"]:
            tier = "not faster"
        elif change_bound(changed, n) <= tolerance_pt + 1e-9:
            tier = "certified"
        else:  # validation accuracy kept within the tolerance, too few images to bound the changed answers
            tier = "held"
        found.append({"tier": tier, "variant": v, "latency_ms": lat, "speedup": speedup, "entry": e})
    if not found:
        return {"tier": "not built", "text": "INT8: no INT8 variant was built."}
    best = min(found, key=lambda f: (INT8_TIERS.index(f["tier"]), f["latency_ms"] or math.inf))
    e, v, base_name = best.pop("entry"), best["variant"], base["baseline"]
    changed, n = e.get("val_changed"), e.get("val_images")
    faster = f"{best['speedup']:.2f}x the speed of {base_name}" if best["speedup"] else ""
    counts = f"{changed} of {n:,} validation answers changed" if changed is not None and n else ""
    tier = best["tier"]
    if tier == "certified":
        text = f"INT8 **certified**: {v} ({faster}; {counts}, at most {tolerance_pt:g}% at 95% confidence)."
    elif tier == "held":
        text = (
            f"INT8 **held on validation, not certifiable with {n:,} images**: {v} runs at {faster}, kept "
            f"validation accuracy ({e.get('val_change_pt') or 0.0:+.2f} pt over every view) and {counts}; "
            "certifying a change of at most "
            f"{tolerance_pt:g}% would take {images_to_show(tolerance_pt, changed or 0):,} validation images. "
            "The fp32 model stays the recommendation; INT8 is the faster option to try."
        )
    elif tier == "not faster":
        text = (
            f"INT8 **not worth it here**: {v} is not {MIN_INT8_SPEEDUP:g}x faster than {base_name} on this "
            f"CPU{' (' + faster + ')' if faster else ''}."
        )
    elif tier == "undecided":
        text = (
            f"INT8 **undecided**: {v}'s timing was too noisy to compare with {base_name}; rerun the "
            "quantization stage on a quiet machine."
        )
    elif tier == "rejected":
        text = (
            f"INT8 **rejected**: {v} lost validation accuracy ({e.get('val_change_pt') or 0.0:+.2f} pt"
            f"{'; ' + counts if counts else ''})."
        )
    else:
        text = f"INT8 **failed**: {v} {e.get('status', '')[:120]}."
    return {**best, "baseline": base_name, "text": text}


def test_guess(run: RunDir, name: str, variant: str) -> np.ndarray | None:
    """A variant's single-view test guesses (fp32: the checkpoint end to end where measured)."""
    path = run.predictions(name, "fp32-e2e" if variant == "fp32" else variant)
    if not path.exists():
        path = run.predictions(name, variant)
    return Predictions.load(path).single.argmax(1) if path.exists() else None


def claims(run: RunDir) -> dict:
    """Everything the summary says, decided here: best (validation), its test numbers with intervals, the
    paired tests, the fastest model within NEAR_BEST_PT of the best (validation), and per-model deployment."""
    ranking = validation_ranking(run)
    if not ranking:
        return {}
    best = ranking[0]["model"]
    labels = Predictions.load(run.predictions(best, "fp32")).labels
    best_guess = test_guess(run, best, "fp32")
    tests = {
        r["model"]: mcnemar(labels, best_guess, test_guess(run, r["model"], "fp32")) for r in ranking[1:]
    }
    quant = read_json(run.quantization_json)["models"] if run.quantization_json.exists() else {}
    bench = read_json(run.benchmark_json)["models"] if run.benchmark_json.exists() else {}
    advice, int8_tests = {}, {}
    for name in (r["model"] for r in ranking):
        variants = quant.get(name, {}).get("variants", {})
        advice[name] = deployment_advice(variants)
        for v, src in (("onnx-int8", "onnx-fp32"), ("int8-torch", "fp32")):
            a, b = test_guess(run, name, src), test_guess(run, name, v)
            if a is not None and b is not None and variants.get(v, {}).get("accuracy") is not None:
                int8_tests[f"{name} {v}"] = {"reference": src, **mcnemar(labels, a, b)}
    top = ranking[0]["val_accuracy"]
    near = [r["model"] for r in ranking if 100 * (top - r["val_accuracy"]) <= NEAR_BEST_PT + 1e-9]

    def speed(name):
        a = advice.get(name) or {}
        if a.get("latency_ms") is not None:
            return a["latency_ms"]
        lat = bench.get(name, {}).get("latency", {})
        return min((v["median_ms"] for k, v in lat.items() if k.startswith("threads_")), default=math.inf)

    fastest = min(near, key=speed)
    return {
        "ranking": ranking,
        "best": best,
        "runner_up_test": tests.get(ranking[1]["model"]) if len(ranking) > 1 else None,
        "vs_best": tests,
        "near_best": near,
        "fastest_near_best": fastest,
        "advice": advice,
        "int8_tests": int8_tests,
    }
