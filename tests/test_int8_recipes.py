"""INT8 recipes chosen from the CPU's features, and the validation guard that falls back between them."""

from __future__ import annotations

import numpy as np
import pytest

from scenelib.hardware import cpu_features, describe, int8_class
from scenelib.recipes import ORT_RECIPES, guarded_search, ort_recipes, torch_recipes

AVX2_ONLY = "fpu sse sse2 avx avx2 fma bmi2"
AVX512_NO_VNNI = AVX2_ONLY + " avx512f avx512bw avx512vl"
VNNI = AVX512_NO_VNNI + " avx512_vnni"
ALDER_LAKE = AVX2_ONLY + " avx_vnni"
SAPPHIRE = VNNI + " amx_tile amx_int8 amx_bf16"


@pytest.mark.parametrize(
    ("flags", "machine", "kind"),
    [
        (AVX2_ONLY, "x86_64", "avx2"),
        (AVX512_NO_VNNI, "x86_64", "avx512"),
        (VNNI, "x86_64", "vnni"),
        (ALDER_LAKE, "x86_64", "vnni"),
        (SAPPHIRE, "x86_64", "vnni"),
        ("fpu sse sse2", "x86_64", "x86-other"),
        ("fp asimd asimddp", "aarch64", "arm"),
    ],
)
def test_int8_class_from_faked_flags(flags, machine, kind):
    assert int8_class(cpu_features(flags.split()), machine) == kind


def test_the_first_onnx_recipe_is_safe_for_the_cpu():
    """U8S8 with full-range weights only where VNNI accumulates in 32 bits; 7-bit weights or U8U8 elsewhere."""
    first = {kind: ort_recipes(kind)[0] for kind in ("vnni", "avx512", "avx2", "x86-other")}
    assert first["vnni"].weight_type == "QInt8" and not first["vnni"].reduce_range
    for kind in ("avx512", "avx2"):
        assert first[kind].weight_type == "QInt8" and first[kind].reduce_range, kind
    assert first["x86-other"].weight_type == "QUInt8"
    # Without VNNI, no recipe in the sequence uses full-range int8 weights.
    for kind in ("avx512", "avx2", "x86-other"):
        assert all(r.reduce_range or r.weight_type == "QUInt8" for r in ort_recipes(kind)), kind
    assert [r.name for r in torch_recipes("avx2")][0] == "default"


def test_describe_says_what_is_missing():
    assert describe(cpu_features(AVX2_ONLY.split()), "avx2") == "AVX2 (no AVX-512, no VNNI); INT8 class avx2"
    assert "no" not in describe(cpu_features(SAPPHIRE.split()), "vnni").split(";")[0]


def _probs(guess, n_classes=3):
    out = np.full((len(guess), n_classes), 0.1)
    out[np.arange(len(guess)), guess] = 0.8
    return out


LABELS = np.array([0, 1, 2] * 10)


def _validate(outputs):
    """validate(artifact, n): the artifact's stacked probabilities, cut to the first n of TWO_VIEWS views."""
    return lambda artifact, n: outputs[artifact][: n * len(LABELS) // 2]


def test_guard_falls_back_from_a_bad_recipe_and_records_both():
    """A deliberately bad first recipe (a third of the images wrong) is rejected; the next one is kept."""
    bad = LABELS.copy()
    bad[::3] = (bad[::3] + 1) % 3
    outputs = {"u8s8": _probs(bad), "u8u8": _probs(LABELS)}
    recipes = [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"], ORT_RECIPES["u8u8-percentile"]]
    built = []

    def build(recipe):
        built.append(recipe.name)
        return recipe.name

    result = guarded_search(recipes, build, _validate(outputs), LABELS, _probs(LABELS), n_views=2)
    assert built == ["u8s8", "u8u8"]  # stops at the first recipe that holds
    assert result.recipe == "u8u8" and result.built == "u8u8" and result.accepted
    assert result.status == "ok"
    first, second = result.attempts
    assert first.change_pt == pytest.approx(-100 / 3) and first.agreement == pytest.approx(2 / 3)
    assert second.change_pt == 0 and second.val_accuracy == 1 and second.views == 2
    # Changed answers are counted per image on the plain view (the first 15 of the 30 stacked rows).
    assert (first.changed, first.images) == (5, 15) and (second.changed, second.images) == (0, 15)


def test_guard_keeps_the_best_when_none_holds_and_marks_it_rejected():
    one_off, two_off = LABELS.copy(), LABELS.copy()
    one_off[0] = 1
    two_off[:2] = [1, 2]
    outputs = {"u8s8": _probs(two_off), "u8u8": _probs(one_off)}
    result = guarded_search(
        [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"]],
        lambda r: r.name,
        _validate(outputs),
        LABELS,
        _probs(LABELS),
        n_views=2,
    )
    assert not result.accepted and result.recipe == "u8u8"
    assert result.status.startswith("rejected:") and "best u8u8 at -3.33 pt" in result.status


def test_guard_records_a_recipe_that_fails_to_build():
    def build(recipe):
        if recipe.name == "u8s8":
            raise RuntimeError("unsupported op")
        return recipe.name

    outputs = {"u8u8": _probs(LABELS)}
    result = guarded_search(
        [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"]], build, _validate(outputs), LABELS, _probs(LABELS), 2
    )
    assert [a.recipe for a in result.attempts] == ["u8s8", "u8u8"]
    assert result.attempts[0].status == "failed: RuntimeError: unsupported op"
    assert result.recipe == "u8u8" and result.accepted


def test_a_recipe_slower_than_fp32_is_validated_on_the_plain_view_only_and_ends_the_search():
    """Slow artifacts cannot be recommended: one plain-view pass for the record instead of every view, and
    the recipes after it (more fp32 layers, other calibration) are not built."""
    wrong_second_view = LABELS.copy()
    wrong_second_view[len(LABELS) // 2 :] = (wrong_second_view[len(LABELS) // 2 :] + 1) % 3
    asked = []

    def validate(artifact, n):
        asked.append((artifact, n))
        return _probs(wrong_second_view)[: n * len(LABELS) // 2]

    def build(recipe):
        return recipe.name

    result = guarded_search(
        [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"], ORT_RECIPES["u8u8-percentile"]],
        build,
        validate,
        LABELS,
        _probs(LABELS),
        n_views=2,
        too_slow=lambda artifact: "slower than ONNX fp32 (9.0 vs 4.0 ms)" if artifact == "u8u8" else "",
    )
    # u8s8: fast, every view, half wrong -> rejected; u8u8: slow -> plain view only (all right), stop.
    assert asked == [("u8s8", 2), ("u8u8", 1)]
    assert result.attempts[1].views == 1 and result.attempts[1].change_pt == 0
    assert result.recipe == "u8s8" and not result.slow and result.status.startswith("rejected:")
    assert result.stopped == "slower than ONNX fp32 (9.0 vs 4.0 ms)"
    # The first recipe already slow: it is what there is, kept and marked, never accepted.
    only = guarded_search(
        [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"]],
        build,
        validate,
        LABELS,
        _probs(LABELS),
        n_views=2,
        too_slow=lambda artifact: "slower than eager fp32 (9.0 vs 4.0 ms)",
    )
    assert [a.recipe for a in only.attempts] == ["u8s8"] and only.slow and not only.accepted
    assert only.status == (
        "not recommended: slower than eager fp32 (9.0 vs 4.0 ms); validated on the plain view only"
    )


def test_a_speed_check_before_the_build_saves_calibration_and_validation():
    """PyTorch INT8 is timed on a quickly calibrated build first: a slow one is never fully built."""
    built, checked = [], []

    def speed_check(recipe):
        checked.append(recipe.name)
        return "slower than eager fp32 (9.0 vs 4.0 ms, quick check)" if recipe.name == "u8u8" else ""

    def build(recipe):
        built.append(recipe.name)
        return recipe.name

    def validate(artifact, n):  # every view of u8s8 half wrong: rejected, so the search goes on
        wrong = LABELS.copy()
        wrong[: len(LABELS) // 2] = (wrong[: len(LABELS) // 2] + 1) % 3
        return _probs(wrong)[: n * len(LABELS) // 2]

    kept = guarded_search(
        [ORT_RECIPES["u8s8"], ORT_RECIPES["u8u8"], ORT_RECIPES["u8u8-percentile"]],
        build,
        validate,
        LABELS,
        _probs(LABELS),
        n_views=2,
        speed_check=speed_check,
    )
    assert checked == ["u8s8", "u8u8"] and built == ["u8s8"]
    assert kept.recipe == "u8s8" and kept.status.startswith("rejected:")
    assert kept.attempts[1].status == "not built: slower than eager fp32 (9.0 vs 4.0 ms, quick check)"
    # The first recipe already slow: nothing is built, and the status says why it is not recommended.
    built.clear()
    none = guarded_search(
        [ORT_RECIPES["u8u8"]], build, validate, LABELS, _probs(LABELS), n_views=2, speed_check=speed_check
    )
    assert built == [] and none.recipe is None and none.built is None and none.slow
    assert none.status == (
        "not recommended: slower than eager fp32 (9.0 vs 4.0 ms, quick check); "
        "neither calibrated in full nor validated"
    )


def _timing(ms: float, p90_factor: float = 1.1):
    from scenelib.benchmark import Timing

    return Timing(times_ms=[ms] * 8 + [ms * p90_factor] * 2, round_medians=[ms, ms])


def test_a_variant_slower_than_its_fp32_is_not_evaluated_on_test():
    from scenelib.stages.quantize import slower_than_source

    fast, slow, fp32 = _timing(5.0), _timing(140.0), _timing(50.0)
    assert slower_than_source("ok", fast, fp32) == ""
    assert slower_than_source("ok", slow, fp32).startswith(
        "not recommended: slower than its fp32 (140.0 vs 50.0"
    )
    # A noisy timing decides nothing: the variant is evaluated as usual.
    assert slower_than_source("ok", _timing(140.0, p90_factor=3.0), fp32) == ""
    # The guard's quick check already found it slower: not evaluated, whatever the later timing says.
    status = "not recommended: slower than eager fp32 (9.0 vs 4.0 ms); validated on the plain view only"
    assert "not evaluated on test" in slower_than_source(status, fast, fp32)


def test_tta_is_evaluated_only_for_a_variant_that_could_be_recommended():
    from scenelib.stages.quantize import tta_plan

    assert tta_plan(single_seconds=3.0, n_views=8, budget_s=60) == (True, "")
    tta, note = tta_plan(single_seconds=30.0, n_views=8, budget_s=60)
    assert not tta and "budget 60 s" in note
    assert tta_plan(3.0, 1, 60) == (False, "")
    # Rejected on validation: never recommended, so its test TTA is not worth the time either.
    tta, note = tta_plan(3.0, 8, 60, status="rejected: every recipe lost more than 0.5 pt")
    assert not tta and note.startswith("never recommended")
    # Held on validation, but too few validation images to show it: never recommended either.
    tta, note = tta_plan(3.0, 8, 60, unshown="is not shown within 0.5 pt (1 of 147 ...)")
    assert (
        not tta
        and note == "never recommended (it is not shown within 0.5 pt): single view evaluated, TTA not"
    )


def test_the_quick_speed_check_times_the_candidate_and_its_baselines_in_turn():
    import time

    from scenelib.stages.variants import Baseline, slower

    order = []

    def named(name: str, ms: float):
        def call():
            order.append(name)
            time.sleep(ms / 1000)

        return call

    candidate, source = named("candidate", 4), named("fp32", 0)
    assert slower(candidate, [Baseline("eager fp32", source)]).startswith("slower than eager fp32 (")
    assert order[2:6] == ["candidate", "fp32", "candidate", "fp32"]  # in turn: a load burst hits both
    assert slower(source, [Baseline("eager fp32", candidate)]) == ""
    # Faster than one baseline, short of the speed-up over the other: one session times all three in turn.
    order.clear()
    baselines = [Baseline("eager fp32", named("fp32", 8)), Baseline("ONNX fp32", named("onnx", 4), 1.1)]
    why = slower(named("candidate", 4), baselines)
    assert why.startswith("not 1.1x faster than ONNX fp32 (") and why.endswith(", quick check)"), why
    assert order[3:9] == ["candidate", "fp32", "onnx"] * 2
    # A candidate timed while the machine was busy (one call in two 30x slower) is not judged slower.
    calls = []

    def bursty():
        calls.append(1)
        time.sleep(0.03 if len(calls) % 2 else 0.001)

    assert slower(bursty, [Baseline("eager fp32", named("fp32", 2))]) == ""


def test_a_validation_split_too_small_to_certify_int8_still_tries_the_fallbacks():
    from scenelib.claims import images_to_show
    from scenelib.recipes import search_plan

    sequence, needed = ort_recipes("avx2"), images_to_show(0.5)
    assert search_plan(sequence, needed, needed) == (sequence, "")  # enough images to certify
    every, note = search_plan(sequence, 147, needed)
    assert every == sequence  # a variant that holds is still "held on validation": worth the fallbacks
    assert "147 validation images cannot certify" in note and "598 needed" in note
    # The status of a lone rejected recipe does not speak of "every recipe".
    only = guarded_search(
        sequence[:1], lambda r: r.name, lambda a, n: _probs((LABELS + 1) % 3), LABELS, _probs(LABELS)
    )
    assert only.status.startswith("rejected: u8s8-reduce-range, the only recipe tried, lost more than 0.5 pt")
