"""The report's sentences, each computed from the run directory's files: which model and deployment were
chosen (on validation), how sure the numbers are (intervals, paired tests, repeated splits), on which
machine they were measured, and what was run by hand. ``report.py`` holds the tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import journal
from .claims import (
    ALPHA,
    MIN_INT8_SPEEDUP,
    NEAR_BEST_PT,
    change_bound,
    claims,
    images_to_show,
    mcnemar,
    test_guess,
    wilson_interval,
)
from .ensemble import name as ensemble_name
from .ensemble import read as read_ensemble
from .evaluation import Predictions
from .recipes import TOLERANCE_PT
from .repeats_summary import repeats_line, repeats_table  # noqa: F401 (05_report reads the table here)
from .report import esc, results_frame
from .rundir import RunDir, read_json
from .splits import read_manifest, split_rows


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2%}"


def _row(run: RunDir, model: str, variant: str) -> dict:
    df = results_frame(run)
    hit = df[(df["model"] == model) & (df["variant"] == variant)]
    return {} if hit.empty else hit.iloc[0].to_dict()


def _interval(row: dict, key: str = "accuracy") -> str:
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if low is None or pd.isna(low):
        return ""
    return f" (95% CI {low:.1%}–{high:.1%})"


def summary_lines(run: RunDir) -> list[str]:
    """The summary's sentences (Markdown, names escaped): each says how it was chosen and how sure it is."""
    c = claims(run)
    if not c:
        return []
    best = c["best"]
    b = _row(run, best, "fp32")
    val = c["ranking"][0]["val_accuracy"]
    tta = (
        f"; {_pct(b.get('accuracy_tta'))}{_interval(b, 'accuracy_tta')} with test-time augmentation"
        + (
            f" ({b['latency_ms_tta']:.1f} ms for its views as one batch, eager PyTorch)"
            if not pd.isna(b.get("latency_ms_tta"))
            else ""
        )
        + (
            ""
            if read_json(run.train_json(best)).get("tta_helps_on_val")
            else ", which did not beat the single view on validation and is not recommended"
        )
        if not pd.isna(b.get("accuracy_tta"))
        else ""
    )
    lines = [
        f"- **Best model (chosen on validation)**: {esc(best)}, {_pct(val)} validation accuracy. On the test "
        f"split it scores {_pct(b.get('accuracy'))}{_interval(b)} single view{tta}."
    ]
    if len(c["ranking"]) > 1:
        second = c["ranking"][1]["model"]
        t = c["runner_up_test"]
        verdict = (
            "not distinguishable on this test set"
            if not t["distinguishable"]
            else f"a significant difference at the {ALPHA:g} level"
        )
        lines.append(
            f"- **Runner-up**: {esc(second)} ({_pct(c['ranking'][1]['val_accuracy'])} validation, "
            f"{_pct(_row(run, second, 'fp32').get('accuracy'))} test). Against {esc(best)}: McNemar's exact test "
            f"p = {t['p_value']:.2g} ({t['only_a_right']} test images only {esc(best)} got right, "
            f"{t['only_b_right']} only {esc(second)}): {verdict}."
        )
    fastest = c["fastest_near_best"]
    advice = c["advice"].get(fastest) or {}
    if advice:
        lines.append(
            f"- **Fastest within {NEAR_BEST_PT:g} point of the best (validation)**: {esc(fastest)} deployed as "
            f"{advice['variant']}, {advice['latency_ms']:.1f} ms per image at batch 1."
        )
    for name, a in c["advice"].items():
        if not a:
            continue
        acc = f"{_pct(a['test_accuracy'])} test accuracy" if a.get("test_accuracy") is not None else ""
        if a["int8"]:
            test = c["int8_tests"].get(f"{name} {a['variant']}", {})
            change = a.get("test_change_pt")
            lines.append(
                f"- **Deploy {esc(name)} as {a['variant']}** (INT8, chosen on validation: "
                f"{a['val_change_pt']:+.2f} pt against its fp32; it changed {a['val_changed']} of "
                f"{a['val_images']:,} validation answers, at most "
                f"{change_bound(a['val_changed'], a['val_images']):.2f}% at 95% confidence): "
                f"{a['latency_ms']:.1f} ms, "
                f"{a['baseline_latency_ms'] / a['latency_ms']:.1f}x faster than {a['baseline']}; {acc}"
                + (
                    f", {change:+.2f} pt on test (McNemar p = {test['p_value']:.2g})"
                    if change is not None and test
                    else ""
                )
                + "."
            )
        else:
            why = "; ".join(a["why_not_int8"]) or "none was built"
            lines.append(
                f"- **Deploy {esc(name)} as {a['baseline']}** ({a['latency_ms']:.1f} ms, {acc}): no INT8 variant "
                f"is recommended: {esc(why)}."
            )
    if c["advice"]:
        lines.append(int8_rule_line(run))
    if ensemble_line(run):
        lines.append(ensemble_line(run))
    if probe_line(run):
        lines.append(probe_line(run))
    spread_line = repeats_line(run)
    if spread_line:
        lines.append(spread_line)
    return lines


def int8_rule_line(run: RunDir) -> str:
    """The INT8 recommendation rule, once, with what it asks of this run's validation split."""
    images = len(split_rows(read_manifest(run.splits_csv), "val")) if run.splits_csv.exists() else 0
    line = (
        f"- **When INT8 is recommended**: when it runs {MIN_INT8_SPEEDUP:g}x faster than the fastest fp32 runtime "
        f"and validation shows, at 95% confidence, that it changes at most {TOLERANCE_PT:g}% of answers, so "
        f"loses at most {TOLERANCE_PT:g} pt (a one-sided Clopper-Pearson bound on the validation images whose "
        f"answer it changes). With no changed answer that takes {images_to_show(TOLERANCE_PT):,} validation images"
    )
    return line + (f"; this run has {images:,}." if images else ".")


def ensemble_line(run: RunDir) -> str:
    """The validated ensemble's sentence (ensemble.py), or '' when fewer than two models were scored."""
    e = read_ensemble(run)
    if not e:
        return ""
    vote, best = esc(" + ".join(e["members"])), esc(e["best_single"])
    val = (
        f"{_pct(e['val_accuracy'])} validation vs {_pct(e['best_single_val_accuracy_e2e'])} for {best} alone"
    )
    if not e["beats_best_single_on_validation"]:
        t = e["vs_best_single"]
        return (
            f"- **Ensemble**: the best soft vote ({vote}) is not more accurate than {best} alone on validation "
            f"({val}), so it is not recommended (it would cost its members' latencies added). Reported, not "
            f"chosen: on test it scores {_pct(e['accuracy'])} single view; {t['only_a_right']} test images "
            f"only the vote got right, {t['only_b_right']} only {best} (McNemar p = {t['p_value']:.2g})."
        )
    tta = (
        f", {_pct(e['accuracy_tta'])}{_interval(e, 'accuracy_tta')} with TTA"
        if e.get("accuracy_tta") is not None
        else ""
    )
    t = e["vs_best_single"]
    verdict = (
        "not distinguishable on this test set" if not t["distinguishable"] else "a significant difference"
    )
    return (
        f"- **Ensemble (chosen on validation)**: soft vote of {vote}, {val}. On test {_pct(e['accuracy'])}"
        f"{_interval(e)} single view{tta}; against {best} alone McNemar p = {t['p_value']:.2g} ({verdict}); "
        f"{_row(run, ensemble_name(e), 'fp32').get('latency_ms_b1', e['latency_ms_b1']):.1f} ms per image at "
        "batch 1 (its members' eager fp32 latencies added)."
    )


def probe_table(run: RunDir) -> pd.DataFrame:
    """What fine-tuning adds over a linear probe on frozen ImageNet features, per model (train.json), with
    the probe's interval and McNemar's exact test of the two on the same test images."""
    rows = []
    for model in run.trained_models():
        train = read_json(run.train_json(model))
        probe = train.get("linear_probe")
        if not probe:
            continue
        labels = Predictions.load(run.predictions(model, "fp32")).labels
        tuned, guess = test_guess(run, model, "fp32"), np.asarray(probe["test_guess"])
        low, high = wilson_interval(int((guess == labels).sum()), len(guess))
        test = mcnemar(labels, tuned, guess)
        fine = float((tuned == labels).mean())
        rows.append(
            {
                "model": model,
                "probe val.": probe["val_accuracy"],
                "probe test": probe["test_accuracy"],
                "probe 95% CI": f"{low:.1%}–{high:.1%}",
                "fine-tuned val.": train["val_accuracy"],
                "fine-tuned test": fine,
                "fine-tuning adds (pt)": 100 * (fine - probe["test_accuracy"]),
                "McNemar p": test["p_value"],
                "probe seconds": probe["seconds"],
            }
        )
    return pd.DataFrame(rows)


def probe_line(run: RunDir) -> str:
    """One summary sentence on what fine-tuning adds over the frozen-features baseline ('' without one)."""
    table = probe_table(run)
    if table.empty:
        return ""
    items = "; ".join(
        f"{esc(r['model'])} {_pct(r['probe test'])} probe vs {_pct(r['fine-tuned test'])} fine-tuned "
        f"({r['fine-tuning adds (pt)']:+.2f} pt, McNemar p = {r['McNemar p']:.2g})"
        for _, r in table.iterrows()
    )
    unverified = [
        m
        for m in table["model"]
        if "unverified" in (read_json(run.train_json(m)).get("weights_top1_note") or "").lower()
    ]
    caveat = (
        f" The ImageNet accuracy of {esc(', '.join(unverified))}'s weights is unverified (see Weights "
        "provenance): the probe measures these weights' features, whatever their ImageNet training."
        if unverified
        else ""
    )
    return (
        "- **What fine-tuning adds** over a linear probe on the frozen pretrained features (logistic regression, "
        f"its strength chosen on validation), single view on test: {items}.{caveat}"
    )


READING_GUIDE = (
    "**How to read these numbers.** Every choice in this report (best model, kept epoch, INT8 recipe, "
    "recommended deployment) was made on the validation split (INT8 recipes on every view of every validation "
    "image; a candidate slower than its fp32, which is never recommended, at most on the plain view; an INT8 "
    "model is recommended only if the 95% upper bound of the validation answers it changes is within the "
    "tolerance, which a split of a few hundred images cannot show); the test split was only used to report the "
    "chosen models' numbers, so they are unbiased estimates. Test accuracies carry a 95% Wilson interval and "
    "macro-F1 a 95% bootstrap interval: with {n_test} test images one image is {one:.2f} points. Two models "
    "(or a variant and its fp32) are compared with McNemar's exact test on the same test images; where "
    "p ≥ 0.05 the difference is not distinguishable on this test set. Changes are variant minus reference in "
    "points (negative = lost accuracy); speed-ups are reference latency / variant latency, medians of "
    "interleaved batch-1 timings on this machine. Timings marked noisy (p90 above 1.5x the median, or rounds "
    "differing by 1.5x) are shown but never used for a speed claim."
)


def reading_guide(run: RunDir) -> str:
    models = run.trained_models()
    n = len(Predictions.load(run.predictions(models[0], "fp32")).labels) if models else 0
    return READING_GUIDE.format(n_test=n, one=100 / n if n else math.nan)


def machine_line(run: RunDir) -> str:
    """The machine beside every latency table: CPU, instruction set, threads, reference latency."""
    info = read_json(run.run_json)
    m = info.get("machine") or {}
    return (
        f"Machine: {esc(m.get('cpu', info.get('cpu', '?')))}, {m.get('summary', 'features not recorded')}; "
        f"{info.get('threads')} threads"
        + reference_note(m.get("mobilenet_v2_eager_ms"), m.get("mobilenet_v2_eager_ms_end"))
        + device_note(info.get("device") or {})
    )


DRIFT = 1.5  # start/end reference latencies further apart than this: the machine's speed changed


def reference_note(start: float | None, end: float | None) -> str:
    """'; eager MobileNetV2 ... 37.5 ms at the start of the run and 17.8 ms after quantization. ...' with a
    warning when the two samples disagree by more than DRIFT (a shared or throttled machine)."""
    if not start:
        return "."
    text = f"; eager MobileNetV2 (224 px, batch 1) {start:.1f} ms"
    if not end:
        return text + " on it."
    text += f" at the start of the run and {end:.1f} ms after quantization."
    ratio = max(start, end) / min(start, end)
    if ratio > DRIFT:
        text += (
            f" **The machine's speed changed {ratio:.1f}x during the run**: seconds from different stages "
            "are not comparable, and absolute latencies hold only for the moment they were timed; ratios "
            "from one interleaved timing session (speed-ups, the variants of one model) still hold."
        )
    return text


def device_note(device: dict) -> str:
    """' Trained on cuda:0 (NVIDIA ...)...' for a run that trained off the CPU; '' on the CPU."""
    if device.get("type", "cpu") == "cpu":
        return ""
    name = f" ({esc(device['name'])}, {device.get('memory_gb', '?')} GB, {device.get('amp_dtype', 'fp32')} autocast)"
    return (
        f" Trained on {esc(device['device'])}{name if device.get('name') else ''}; latencies are the CPU's "
        "unless marked GPU, and INT8 is built and timed on the CPU."
    )


def journal_note(run: RunDir) -> str:
    """Stages run by hand (a notebook in JupyterLab, papermill) after the pipeline, or '' if none."""
    hand = journal.by_hand(run)
    if not hand:
        return ""
    items = "; ".join(
        f"{esc(e['stage'])}{' ' + esc(e['model']) if e.get('model') else ''} at {esc(e['finished'])} "
        f"by {esc(e.get('who', '?'))}"
        for e in hand
    )
    return (
        f"**Stages run by hand** (not by `run_all.py`): {items}. The files they wrote replace the "
        "pipeline's; everything in this report is read from the files as they are now."
    )


def duplicates_note(data: dict) -> str:
    """How pixel-identical images were handled by the split (data_summary.json)."""
    groups = data.get("duplicate_groups") or []
    if not groups:
        return ""
    if data.get("duplicates_grouped"):
        return f"; the {len(groups)} group(s) of pixel-identical images were kept on one side of the split"
    twins = data.get("twins_of_train") or {}
    return (
        f"; official split kept as published: {twins.get('test', 0)} test and {twins.get('val', 0)} validation "
        "image(s) have a pixel-identical twin in train"
    )
