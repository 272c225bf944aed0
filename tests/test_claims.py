"""What the report claims: intervals, paired tests, validation-only choices, signed changes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from scenelib import summary as sm
from scenelib.claims import (
    MIN_INT8_SPEEDUP,
    change_bound,
    deployment_advice,
    images_to_show,
    macro_f1_batched,
    macro_f1_interval,
    mcnemar,
    validation_ranking,
    wilson_interval,
)
from scenelib.evaluation import Predictions
from scenelib.rundir import RunDir, read_json, write_json
from scenelib.splits import read_manifest, split_rows


def test_the_batched_macro_f1_is_scikit_learns_and_so_is_its_bootstrap_interval():
    from scipy import stats
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 90)
    guess = np.where(rng.random(90) < 0.7, labels, rng.integers(0, 7, 90))  # 7: a class never in labels
    classes = np.unique(labels)

    def sk(y, p):
        return f1_score(y, p, labels=classes, average="macro", zero_division=0)

    batch = rng.integers(0, 90, (5, 90))  # resamples where some classes vanish entirely
    batch[0, :] = 0
    expected = [sk(labels[i], guess[i]) for i in batch]
    assert macro_f1_batched(labels[batch], guess[batch], classes) == pytest.approx(expected, abs=1e-12)
    assert macro_f1_batched(labels[batch].T, guess[batch].T, classes, axis=0) == pytest.approx(expected)

    reference = stats.bootstrap(
        (labels, guess), sk, paired=True, vectorized=False, n_resamples=1000,
        method="percentile", rng=np.random.default_rng(0),
    ).confidence_interval  # fmt: skip
    assert macro_f1_interval(labels, guess, seed=0) == pytest.approx((reference.low, reference.high))


def test_wilson_interval_matches_the_textbook_values():
    # 622 of 630 correct: the Wilson interval is asymmetric and stays below 1.
    low, high = wilson_interval(622, 630)
    assert low == pytest.approx(0.97514, abs=1e-4) and high == pytest.approx(0.99355, abs=1e-4)
    assert wilson_interval(630, 630)[1] == pytest.approx(1.0) and wilson_interval(630, 630)[0] < 0.995


def test_mcnemar_counts_only_discordant_images():
    labels = np.zeros(100, dtype=int)
    a = np.zeros(100, dtype=int)
    b = np.zeros(100, dtype=int)
    b[:10] = 1  # ten images only A gets right
    t = mcnemar(labels, a, b)
    assert (t["only_a_right"], t["only_b_right"]) == (10, 0)
    assert t["p_value"] == pytest.approx(2 * 0.5**10) and t["distinguishable"]
    b[:10], b[10:12] = 0, 1
    b[20] = 0
    a[30] = 1  # one each way: indistinguishable
    t = mcnemar(labels, a, b)
    assert (t["only_a_right"], t["only_b_right"]) == (2, 1) and not t["distinguishable"]


def _variant(status="ok", ms=10.0, val=0.0, acc=0.98, noisy=False, changed=0, images=2000):
    return {
        "status": status,
        "latency": {"median_ms": ms, "noisy": noisy},
        "val_change_pt": val,
        "val_changed": changed,
        "val_images": images,
        "accuracy": acc,
    }


def test_the_change_bound_is_clopper_pearson_one_sided():
    # No change in n images: the exact bound is 1 - 0.05 ** (1 / n); 147 images bound it to 2.0% only.
    for n in (147, 598, 2000):
        assert change_bound(0, n) == pytest.approx(100 * (1 - 0.05 ** (1 / n)))
    assert change_bound(1, 147) == pytest.approx(3.19, abs=0.01) and change_bound(147, 147) == 100
    assert images_to_show(0.5) == 598 and change_bound(0, 597) > 0.5 >= change_bound(0, 598)
    n = images_to_show(0.5, changed=3)
    assert change_bound(3, n) <= 0.5 < change_bound(3, n - 1)


def test_int8_is_recommended_only_when_it_holds_and_pays():
    base = {"fp32": _variant(ms=40), "onnx-fp32": _variant(ms=13)}
    # AVX2-like: INT8 held accuracy but is no faster than ONNX fp32 -> ONNX fp32, with the reason.
    a = deployment_advice({**base, "onnx-int8": _variant(ms=12.7), "int8-torch": _variant(ms=15.5)})
    assert a["variant"] == "onnx-fp32" and not a["int8"]
    assert any("onnx-int8 is not 1.1x faster" in w for w in a["why_not_int8"])
    # VNNI-like: 4x faster and within tolerance -> INT8.
    a = deployment_advice({**base, "onnx-int8": _variant(ms=3.1, val=-0.0)})
    assert a["variant"] == "onnx-int8" and a["int8"]
    # Fast but rejected by the guard, or timed on a busy machine -> never recommended.
    rejected = _variant(status="rejected: every recipe ...; best u8s8 at -10.60 pt", ms=3.0)
    a = deployment_advice({**base, "onnx-int8": rejected, "int8-torch": _variant(ms=2.0, noisy=True)})
    assert a["variant"] == "onnx-fp32" and len(a["why_not_int8"]) == 2


def test_int8_that_held_on_a_small_validation_split_is_not_recommended():
    """UC Merced's case: -0.34 pt over the views of 147 images, 1 plain-view answer changed, 1.2x faster,
    then -1.43 pt on test. 147 images bound the change only to 3.2%: not recommended, and the reason says
    how many images would show it."""
    base = {"fp32": _variant(ms=17), "onnx-fp32": _variant(ms=4.8)}
    held = _variant(ms=4.1, val=-0.34, changed=1, images=147)
    a = deployment_advice({**base, "int8-torch": held})
    assert a["variant"] == "onnx-fp32" and not a["int8"]
    (why,) = a["why_not_int8"]
    assert "int8-torch is not shown within 0.5 pt" in why and "1 of 147" in why and "3.2%" in why
    assert "947 images with 1 changed" in why
    # The same change rate on enough images is shown: recommended.
    a = deployment_advice({**base, "int8-torch": _variant(ms=4.1, val=-0.05, changed=1, images=2000)})
    assert a["variant"] == "int8-torch" and (a["val_changed"], a["val_images"]) == (1, 2000)
    # A quantization.json without the count cannot show it either.
    old = {k: v for k, v in held.items() if k != "val_changed"}
    a = deployment_advice({**base, "int8-torch": old})
    assert not a["int8"] and "no count of changed validation answers" in a["why_not_int8"][0]


def test_every_reason_against_int8_is_given():
    """MobileNetV2's PyTorch INT8 on an AVX2-only EPYC: 3.3x faster but timed noisy, and 2 of 147 validation
    answers changed. A quieter machine would fix the timing, not the validation: the advice names both."""
    base = {"fp32": _variant(ms=19.8), "onnx-fp32": _variant(ms=7.1)}
    a = deployment_advice(
        {**base, "int8-torch": _variant(ms=6.0, noisy=True, val=-0.17, changed=2, images=147)}
    )
    (why,) = a["why_not_int8"]
    assert a["variant"] == "onnx-fp32"
    assert why.startswith("int8-torch has a noisy timing and is not shown within 0.5 pt (2 of 147")
    # Slow and unshown: both; fast enough but unshown: the validation reason alone.
    a = deployment_advice({**base, "onnx-int8": _variant(ms=7.0, changed=2, images=147)})
    assert "is not 1.1x faster than onnx-fp32 (7.0 vs 7.1 ms) and is not shown within" in a["why_not_int8"][0]
    a = deployment_advice({**base, "onnx-int8": _variant(ms=3.0, changed=2, images=147)})
    assert a["why_not_int8"][0].startswith("onnx-int8 is not shown within")


@pytest.fixture
def finished_run(tiny_run, tmp_path):
    code, run = tiny_run
    assert code == 0
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, symlinks=True)
    return RunDir(copy)


def test_the_best_model_is_chosen_on_validation_not_test(finished_run):
    run = finished_run
    for name, val, test in (("simple_cnn", 0.9, 0.5), ("mobilenet_v2", 0.5, 0.99)):
        t = read_json(run.train_json(name))
        write_json(run.train_json(name), {**t, "val_accuracy": val, "test_accuracy": test})
    assert [r["model"] for r in validation_ranking(run)] == ["simple_cnn", "mobilenet_v2"]
    lines = sm.summary_lines(run)
    assert lines[0].startswith("- **Best model (chosen on validation)**: simple_cnn, 90.00% validation")
    assert "95% CI" in lines[0] and "McNemar" in lines[1]


def test_a_lost_point_is_a_negative_change_in_the_sentence(finished_run):
    """An INT8 variant that held validation accuracy but lost test accuracy: the summary says minus."""
    run = finished_run
    record = read_json(run.quantization_json)
    variants = record["models"]["simple_cnn"]["variants"]
    onnx_fp32 = variants["onnx-fp32"]
    variants["onnx-int8"].update(
        status="ok",
        recipe="u8u8",
        val_change_pt=0.0,
        val_changed=0,
        val_images=5000,
        accuracy=onnx_fp32["accuracy"] - 0.0222,
        change_pt=-2.22,
        latency={**onnx_fp32["latency"], "median_ms": onnx_fp32["latency"]["median_ms"] / 3, "noisy": False},
    )
    onnx_fp32["latency"]["noisy"] = False
    variants["fp32"]["latency"] = {**variants["fp32"]["latency"], "noisy": False}
    write_json(run.quantization_json, record)
    # Test predictions of the variant: a CPU on which the tiny model's INT8 ran slower than fp32 left none.
    if not run.predictions("simple_cnn", "onnx-int8").exists():
        shutil.copy(run.predictions("simple_cnn", "onnx-fp32"), run.predictions("simple_cnn", "onnx-int8"))
    line = next(x for x in sm.summary_lines(run) if x.startswith("- **Deploy simple_cnn"))
    assert "as onnx-int8" in line and "-2.22 pt on test" in line and "+2.22" not in line
    assert "changed 0 of 5,000 validation answers, at most 0.06% at 95% confidence" in line
    # The same variant with this run's own few validation images and no change: not shown, not recommended.
    n_val = len(split_rows(read_manifest(run.splits_csv), "val"))
    variants["onnx-int8"]["val_images"] = n_val
    write_json(run.quantization_json, record)
    lines = sm.summary_lines(run)
    line = next(x for x in lines if x.startswith("- **Deploy simple_cnn"))
    assert "as onnx-fp32" in line and f"onnx-int8 is not shown within 0.5 pt (0 of {n_val} validation" in line
    rule = next(x for x in lines if x.startswith("- **When INT8 is recommended**"))
    assert f"that takes 598 validation images; this run has {n_val}." in rule


def test_calibration_and_the_guard_read_no_test_image(finished_run, monkeypatch):
    from scenelib.stages import variants

    run = finished_run
    test_paths = {r.path for r in split_rows(read_manifest(run.splits_csv), "test")}
    read: list[str] = []
    real_images_of, real_split_images = variants.images_of, variants.split_images

    def images_of(manifest, rows, size):
        read.extend(r.path for r in rows)
        return real_images_of(manifest, rows, size)

    def split_images(manifest, split, size):
        rows, images = real_split_images(manifest, split, size)
        read.extend(r.path for r in rows)
        return rows, images

    monkeypatch.setattr(variants, "images_of", images_of)
    monkeypatch.setattr(variants, "split_images", split_images)
    mv = variants.ModelVariants(run, "simple_cnn", 2, 8, 0, "avx2")
    mv.build_onnx_fp32()
    mv.build_onnx_int8()
    mv.build_torch_int8()
    assert read and not test_paths.intersection(read)
    assert mv.info["variants"]["onnx-int8"]["guard"]["attempts"]
    # What the recommendation needs is recorded per kept variant: changed answers of the validation images.
    n_val = len(split_rows(read_manifest(run.splits_csv), "val"))
    for variant in ("onnx-int8", "int8-torch"):
        entry = mv.info["variants"][variant]
        # A few validation images cannot certify any INT8 variant: the note says so; the search still stops
        # at the first recipe that holds (the guard's point estimate), here the first.
        assert "validation images cannot certify" in entry["search"]
        attempts = entry["guard"]["attempts"]
        assert attempts and all(  # a later recipe was tried only after an earlier one lost or failed
            a["status"] != "ok" or a["change_pt"] < -0.5 for a in attempts[:-1]
        )
        if entry.get("recipe"):
            assert entry["val_images"] == n_val and 0 <= entry["val_changed"] <= n_val
            assert entry["val_change_bound_pt"] == change_bound(entry["val_changed"], n_val)


def test_a_variant_slower_than_its_fp32_keeps_its_latency_but_no_test_numbers(finished_run, monkeypatch):
    """Never recommended, so not evaluated on test: its row keeps the latency, an earlier evaluation's
    numbers are dropped, and the summary and the variants table still read."""
    from scenelib.benchmark import Timing
    from scenelib.report import variants_frame, variants_table
    from scenelib.stages import quantize, variants

    run = finished_run
    stale = run.predictions("simple_cnn", "int8-torch")
    if not stale.exists():  # the tiny run's own quick check may have stopped it: an earlier run's file
        shutil.copy(run.predictions("simple_cnn", "fp32"), stale)
    assert run.read_results()
    real_time = quantize.time_interleaved

    def int8_torch_100x_slower(calls, **kwargs):  # as PyTorch INT8 runs on CPUs without its kernels
        out = real_time(calls, **kwargs)
        if "int8-torch" in out:  # steady timings: a noisy one would decide nothing
            ms = out["fp32"].median
            out["fp32"], out["int8-torch"] = (
                Timing([ms] * 9, [ms] * 3),
                Timing([100 * ms] * 9, [100 * ms] * 3),
            )
        return out

    monkeypatch.setattr(quantize, "time_interleaved", int8_torch_100x_slower)
    monkeypatch.setattr(variants, "slower", lambda *args, **kwargs: "")  # built: slow in the stage's timing
    info = quantize.quantize_model(run, "simple_cnn", 2, 16, True, 0, "avx2")
    entry = info["variants"]["int8-torch"]
    assert entry["note"].endswith("not evaluated on test") and entry.get("accuracy") is None
    assert entry["latency"]["median_ms"] > 0 and not stale.exists()
    assert info["variants"]["onnx-int8"].get("accuracy") is not None  # the others are evaluated as before
    row = next(r for r in run.read_results() if (r["model"], r["variant"]) == ("simple_cnn", "int8-torch"))
    assert row["latency_ms_b1"] and row["accuracy"] == "" and row["accuracy_ci_low"] == ""
    assert row["status"] == (entry["note"] if entry["status"] == "ok" else entry["status"])  # why it is blank
    record = read_json(run.quantization_json)
    record["models"]["simple_cnn"] = info
    write_json(run.quantization_json, record)
    line = next(x for x in sm.summary_lines(run) if x.startswith("- **Deploy simple_cnn"))
    assert "int8-torch" in line
    frame = variants_frame(record).set_index(["model", "variant"])
    assert frame.loc[("simple_cnn", "int8-torch"), "latency_ms"] > 0
    assert np.isnan(frame.loc[("simple_cnn", "int8-torch"), "accuracy"])
    assert "simple_cnn" in variants_table(frame.reset_index()).to_html()


def test_a_pytorch_int8_model_found_slow_after_a_few_calibration_images_is_not_built(
    finished_run, monkeypatch
):
    from scenelib.stages import variants

    run = finished_run
    stale = run.torch_int8("simple_cnn")
    stale.touch()  # an earlier run's file, which must not be taken for this run's
    checked = []

    def slow(candidate, baselines, how="quick check"):
        checked.append(how)
        return f"slower than {baselines[0].name} (9.0 vs 4.0 ms, {how})"

    monkeypatch.setattr(variants, "slower", slow)
    mv = variants.ModelVariants(run, "simple_cnn", 2, 64, 0, "vnni")
    mv.build_torch_int8()
    entry = mv.info["variants"]["int8-torch"]
    assert checked == [f"quick check, calibrated on {variants.QUICK_CALIBRATION} images"]
    assert entry["status"] == (
        f"not recommended: slower than eager fp32 (9.0 vs 4.0 ms, quick check, calibrated on "
        f"{variants.QUICK_CALIBRATION} images); neither calibrated in full nor validated"
    )
    assert "int8-torch" not in mv.runners and not stale.exists()


def test_a_pytorch_int8_model_short_of_the_speedup_over_onnx_fp32_is_not_calibrated(
    finished_run, monkeypatch
):
    """Not MIN_INT8_SPEEDUP x faster than ONNX Runtime's fp32, it could never replace that faster baseline."""
    from scenelib.stages import variants

    run = finished_run
    checked = []

    def slower_than_onnx(candidate, baselines, how="quick check"):
        checked.extend((b.name, b.speedup) for b in baselines)
        return f"not {baselines[-1].speedup:g}x faster than {baselines[-1].name} (9.0 vs 4.0 ms, {how})"

    mv = variants.ModelVariants(run, "simple_cnn", 2, 64, 0, "vnni")
    mv.build_onnx_fp32()
    monkeypatch.setattr(variants, "slower", slower_than_onnx)
    mv.build_torch_int8()
    entry = mv.info["variants"]["int8-torch"]
    assert checked == [("eager fp32", 1.0), ("ONNX fp32", MIN_INT8_SPEEDUP)]
    assert entry["status"].startswith(
        f"not recommended: not {MIN_INT8_SPEEDUP:g}x faster than ONNX fp32 (9.0 vs"
    )
    assert entry["guard"]["attempts"][0]["val_accuracy"] is None and "int8-torch" not in mv.runners


def test_the_linear_probe_row_compares_like_with_like(finished_run):
    """The probe's guesses against the fine-tuned checkpoint's, on the same test images."""
    run = finished_run
    table = sm.probe_table(run).set_index("model")
    assert list(table.index) == ["mobilenet_v2"]  # simple_cnn trains from scratch: no probe
    probe = read_json(run.train_json("mobilenet_v2"))["linear_probe"]
    row = table.loc["mobilenet_v2"]
    assert row["probe test"] == probe["test_accuracy"]
    assert row["fine-tuning adds (pt)"] == pytest.approx(
        100 * (row["fine-tuned test"] - probe["test_accuracy"])
    )
    # Make the probe perfect: fine-tuning can then only lose, and the sentence says so with a minus.
    labels = Predictions.load(run.predictions("mobilenet_v2", "fp32")).labels
    write_json(
        run.train_json("mobilenet_v2"),
        {
            **read_json(run.train_json("mobilenet_v2")),
            "linear_probe": {**probe, "test_accuracy": 1.0, "test_guess": labels.tolist()},
        },
    )
    row = sm.probe_table(run).set_index("model").loc["mobilenet_v2"]
    assert row["fine-tuning adds (pt)"] == pytest.approx(100 * (row["fine-tuned test"] - 1.0))
    line = next(x for x in sm.summary_lines(run) if x.startswith("- **What fine-tuning adds**"))
    assert "100.00% probe" in line and f"({row['fine-tuning adds (pt)']:+.2f} pt" in line


def test_each_repeated_split_picks_its_model_on_validation():
    """The 'chosen on validation' row: per split the validation winner (ties: lower validation loss), scored
    on that split's test images; never the model with the best test accuracy in hindsight."""
    import pandas as pd

    from scenelib.repeats import CHOSEN, chosen_rows, mean_interval

    rows = pd.DataFrame(
        {
            "model": ["a", "b"] * 3,
            "split": [1, 1, 2, 2, 3, 3],
            "val_accuracy": [0.99, 0.98, 0.97, 0.97, 0.95, 0.99],
            "val_loss": [0.10, 0.05, 0.20, 0.10, 0.30, 0.20],
            "accuracy": [0.90, 0.99, 0.91, 0.98, 0.92, 0.97],
            "accuracy_tta": [0.91, 0.995, 0.92, 0.985, 0.93, 0.975],
        }
    )
    picked = chosen_rows(rows)
    assert picked["picked"].tolist() == ["a", "b", "b"] and set(picked["model"]) == {CHOSEN}
    assert picked["accuracy"].tolist() == [0.90, 0.98, 0.97]  # split 1 picks a, though b is better on test
    low, high = mean_interval(picked["accuracy"])
    mean, sem = np.mean([0.90, 0.98, 0.97]), np.std([0.90, 0.98, 0.97], ddof=1) / np.sqrt(3)
    assert (low, high) == pytest.approx((mean - 4.3027 * sem, min(1.0, mean + 4.3027 * sem)), abs=1e-4)
    assert np.isnan(mean_interval([0.9])).all()


def test_the_machine_line_warns_when_the_machine_changed_speed_during_the_run():
    steady = sm.reference_note(17.0, 18.0)
    assert "17.0 ms at the start of the run and 18.0 ms after quantization." in steady
    assert "changed" not in steady
    assert "changed" not in sm.reference_note(17.9, 13.4)  # under the 1.5x that flags a change
    assert "changed 2.1x during the run" in sm.reference_note(37.5, 17.8)
    assert "changed 2.1x during the run" in sm.reference_note(17.8, 37.5)
    assert sm.reference_note(17.0, None) == "; eager MobileNetV2 (224 px, batch 1) 17.0 ms on it."
    assert sm.reference_note(None, None) == "."
