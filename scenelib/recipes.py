"""INT8 recipes chosen for the CPU, and the accuracy guard that picks one on validation data.

A recipe is one way to quantize a model (weight format, range, calibration, layers kept in fp32). Which
recipe is safe depends on the CPU's INT8 kernels (``hardware.int8_class``): ONNX Runtime's guide recommends
U8S8 on VNNI machines, and on AVX2 / AVX-512 without VNNI either 7-bit weights (``reduce_range``) or U8U8,
since the U8S8 kernels there sum pairs of products in 16 bits and saturate. Each runtime gets a documented
sequence per kernel family; ``guarded_search`` walks it:

1. where the runtime allows it (PyTorch: the observers accumulate), first build the variant calibrated on a
   few images and time it briefly (``speed_check``): calibration changes its accuracy, not its speed, so a
   variant slower than its fp32 source, or not ``claims.MIN_INT8_SPEEDUP`` times faster than ONNX Runtime's
   fp32 (the faster baseline it would have to replace), is known before minutes of calibration. It can
   never be recommended: the search stops, recorded, and the variant is neither calibrated further nor
   validated;
2. otherwise build it with the next recipe (calibrated on training images) and time it briefly
   (``too_slow``, for runtimes that cannot check first): if it is slower than its fp32 source, it is
   validated on the plain view only (for the record) and the search stops. Either way the later recipes
   keep more layers in fp32 or change only the calibration, so none can be faster;
3. otherwise measure its accuracy on the *validation* split (every view of every image) against its own
   fp32 source;
4. stop at the first recipe that loses at most ``tolerance_pt`` points; otherwise keep the recipe with the
   best validation accuracy and mark the variant ``rejected`` (it is still reported, never recommended).

A kept recipe is only a candidate: the report recommends it only if the count of validation images whose
answer it changes bounds the loss within the tolerance at 95 % confidence (``claims.change_bound``). A
validation split too small for that bound even with no change (``search_plan``) gets only the first recipe
of the sequence, the one the CPU's kernels are documented for: no fallback could be recommended, and the
fallbacks cost minutes (percentile calibration alone 50-70 s per model on a 2-core Xeon).

Every attempt (recipe, validation accuracy, change, agreement with fp32, seconds) is returned for the record.
Test images are never read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

TOLERANCE_PT = 0.5  # a variant may lose at most this many points of validation accuracy against its fp32


@dataclass(frozen=True)
class OrtRecipe:
    """ONNX Runtime static QDQ quantization settings."""

    name: str
    weight_type: str = "QInt8"  # QInt8 = U8S8 (uint8 activations, int8 weights); QUInt8 = U8U8
    reduce_range: bool = False  # 7-bit weights: no 16-bit saturation on AVX2 / AVX-512 without VNNI
    calibrate: str = "MinMax"  # or "Percentile"
    edges_fp32: bool = False  # keep the first convolution and the classifier in fp32
    why: str = ""
    max_calibration: int | None = None  # calibrate on at most this many of the calibration images

    def calibration_images(self, available: int) -> int:
        return min(available, self.max_calibration or available)


# Percentile calibration histograms every activation of every image in Python: EfficientNet-Lite0 took 18,
# 38 and ~100 s to calibrate on 64, 128 and 256 images (2-core Xeon, AVX-512 VNNI), changing validation
# accuracy by -0.68, -0.51 and -0.60 pt: the subset's noise, not a trend. 128 halves the cost.
PERCENTILE_IMAGES = 128


@dataclass(frozen=True)
class TorchRecipe:
    """PyTorch FX static quantization settings (x86 / fbgemm backend, or qnnpack on Arm)."""

    name: str
    edges_fp32: bool = False
    depthwise_fp32: bool = False
    why: str = ""


ORT_RECIPES = {
    r.name: r
    for r in (
        OrtRecipe("u8s8", why="int8 weights, uint8 activations: the fast format where VNNI sums in 32 bits"),
        OrtRecipe(
            "u8s8-reduce-range",
            reduce_range=True,
            why="7-bit weights: ONNX Runtime's advice for U8S8 on CPUs without VNNI",
        ),
        OrtRecipe("u8u8", weight_type="QUInt8", why="uint8 weights: no 16-bit saturation on any x86 CPU"),
        OrtRecipe("u8s8-edges-fp32", edges_fp32=True, why="first convolution and classifier kept in fp32"),
        OrtRecipe(
            "u8u8-edges-fp32",
            weight_type="QUInt8",
            edges_fp32=True,
            why="uint8 weights, first convolution and classifier kept in fp32",
        ),
        OrtRecipe(
            "u8s8-percentile",
            calibrate="Percentile",
            max_calibration=PERCENTILE_IMAGES,
            why="int8 weights; activation ranges from the 99.999th percentile instead of min/max (histograms of at "
            "most 128 calibration images)",
        ),
        OrtRecipe(
            "u8u8-percentile",
            weight_type="QUInt8",
            calibrate="Percentile",
            max_calibration=PERCENTILE_IMAGES,
            why="activation ranges from the 99.999th percentile instead of min/max (outliers clipped; histograms of "
            "at most 128 calibration images)",
        ),
    )
}

TORCH_RECIPES = {
    r.name: r
    for r in (
        TorchRecipe("default", why="per-channel int8 weights, 7-bit activations (PyTorch's x86 defaults)"),
        TorchRecipe("edges-fp32", edges_fp32=True, why="first convolution and classifier kept in fp32"),
        TorchRecipe(
            "depthwise-fp32",
            edges_fp32=True,
            depthwise_fp32=True,
            why="depthwise convolutions, first convolution and classifier kept in fp32",
        ),
    )
}

# INT8 kernel family (hardware.int8_class) -> the order recipes are tried in. No U8U8 on VNNI: its kernels
# do not use VNNI there and ran slower than ONNX fp32 (EfficientNet-Lite0 34 vs 8 ms on a Xeon with AMX).
ORT_SEQUENCES = {
    "vnni": ("u8s8", "u8s8-edges-fp32", "u8s8-percentile"),
    "avx512": ("u8s8-reduce-range", "u8u8", "u8u8-edges-fp32", "u8u8-percentile"),
    "avx2": ("u8s8-reduce-range", "u8u8", "u8u8-edges-fp32", "u8u8-percentile"),
    "x86-other": ("u8u8", "u8u8-edges-fp32", "u8u8-percentile"),
    "arm": ("u8s8", "u8s8-edges-fp32", "u8u8"),
    "other": ("u8u8", "u8u8-edges-fp32"),
}
TORCH_SEQUENCES = dict.fromkeys(ORT_SEQUENCES, ("default", "edges-fp32", "depthwise-fp32"))


def ort_recipes(int8_class: str) -> list[OrtRecipe]:
    return [ORT_RECIPES[n] for n in ORT_SEQUENCES.get(int8_class, ORT_SEQUENCES["other"])]


def torch_recipes(int8_class: str) -> list[TorchRecipe]:
    return [TORCH_RECIPES[n] for n in TORCH_SEQUENCES.get(int8_class, TORCH_SEQUENCES["other"])]


def search_plan(recipes: list, val_images: int, needed: int) -> tuple[list, str]:
    """The recipes to try (every one: the search stops at the first that holds validation's point estimate),
    and a note when ``val_images`` is too small to certify any variant (``needed``:
    ``claims.images_to_show``): a variant that holds is then "held on validation", not certified, which is
    still a verdict a user can act on, so a fallback recipe is worth its minutes when the first loses."""
    if val_images >= needed:
        return recipes, ""
    return recipes, (
        f"{val_images:,} validation images cannot certify any INT8 variant within {TOLERANCE_PT:g} pt "
        f"({needed:,} needed even with no changed answer): a variant that holds is reported as held on "
        "validation, not certified"
    )


@dataclass
class Attempt:
    recipe: str
    status: str  # "ok" or "failed: <why>"
    val_accuracy: float | None = None
    change_pt: float | None = None  # signed: negative = the variant lost accuracy
    agreement: float | None = None  # share of validation images where it predicts what fp32 predicts
    seconds: float = 0.0
    views: int = 0  # validation views measured: all of them, or 1 for a variant slower than fp32
    changed: int | None = None  # validation images whose plain-view answer differs from fp32's
    images: int = 0  # validation images


# The mark of a variant found too slow to be recommended, in a guard's status or a stage's note (what
# stages.quantize.is_slower looks for).
NOT_RECOMMENDED = "not recommended: "
# How the status of a variant stopped by the quick check ends: nothing was calibrated in full or kept.
NOT_BUILT = "neither calibrated in full nor validated"


@dataclass
class GuardResult:
    recipe: str | None  # the kept recipe (None if every attempt failed)
    built: object | None  # what the build returned for the kept recipe
    accepted: bool
    attempts: list[Attempt] = field(default_factory=list)
    stopped: str = ""  # why the search stopped before the end of the sequence, if it did
    slow: bool = False  # slower than fp32: validated on the plain view only, or (recipe None) never built

    @property
    def status(self) -> str:
        if self.recipe is None and self.slow:
            return f"{NOT_RECOMMENDED}{self.stopped}; {NOT_BUILT}"
        if self.recipe is None:
            return "failed: " + "; ".join(f"{a.recipe}: {a.status}" for a in self.attempts)
        if self.accepted:
            return "ok"
        if self.slow:
            return f"{NOT_RECOMMENDED}{self.stopped}; validated on the plain view only"
        kept = next(a for a in self.attempts if a.recipe == self.recipe)
        tried = "every recipe tried" if len(self.attempts) > 1 else f"{self.recipe}, the only recipe tried,"
        return (
            f"rejected: {tried} lost more than {TOLERANCE_PT:g} pt of validation accuracy; "
            f"best {self.recipe} at {kept.change_pt:+.2f} pt"
        )

    def record(self) -> dict:
        return {
            "recipe": self.recipe,
            "accepted": self.accepted,
            "tolerance_pt": TOLERANCE_PT,
            "stopped": self.stopped,
            "attempts": [asdict(a) for a in self.attempts],
        }


Build = Callable[[object], object]  # recipe -> artifact
Validate = Callable[[object, int], np.ndarray]  # (artifact, n views) -> probabilities, views stacked


def _attempt(recipe: str, probs: np.ndarray, labels: np.ndarray, reference: np.ndarray, views: int, start):
    """Scores on ``views`` stacked views of the same images; the plain view (the first) gives the count of
    changed answers that ``claims.change_bound`` turns into the recommendation's bound."""
    guess = probs.argmax(1)
    acc = float((guess == labels).mean())
    images = len(labels) // views
    return Attempt(
        recipe,
        "ok",
        acc,
        100.0 * (acc - float((reference == labels).mean())),
        float((guess == reference).mean()),
        time.perf_counter() - start,
        views,
        int((guess[:images] != reference[:images]).sum()),
        images,
    )


def guarded_search(
    recipes: list,
    build: Build,
    validate: Validate,
    labels: np.ndarray,
    reference_probs: np.ndarray,
    n_views: int = 1,
    tolerance_pt: float = TOLERANCE_PT,
    too_slow: Callable[[object], str] | None = None,
    speed_check: Callable[[object], str] | None = None,
) -> GuardResult:
    """Try ``recipes`` in order (see the module docstring). ``build(recipe)`` returns the artifact;
    ``validate(artifact, n)`` its probabilities on the first ``n`` validation views, stacked like ``labels``
    and ``reference_probs`` (``n_views`` views of the same images); ``too_slow(artifact)`` may return why the
    artifact cannot pay (e.g. slower than fp32), which ends the search after a plain-view validation;
    ``speed_check(recipe)``, called before ``build``, may return the same from a quickly calibrated build,
    which ends the search with nothing built or validated."""
    reference = reference_probs.argmax(1)
    n_images = len(labels) // n_views
    result = GuardResult(None, None, False)
    best_acc = -1.0
    for recipe in recipes:
        start = time.perf_counter()
        try:
            if speed_check and (reason := speed_check(recipe)):
                result.attempts.append(
                    Attempt(recipe.name, f"not built: {reason}", seconds=time.perf_counter() - start)
                )
                result.stopped, result.slow = reason, result.recipe is None  # else: an earlier one is kept
                break
            artifact = build(recipe)
            reason = too_slow(artifact) if too_slow else ""
            views = 1 if reason else n_views
            probs = validate(artifact, views)
        except Exception as exc:  # an op this recipe cannot quantize: record it, try the next
            message = str(exc).splitlines()[0][:200] if str(exc) else ""
            result.attempts.append(
                Attempt(
                    recipe.name,
                    f"failed: {type(exc).__name__}: {message}",
                    seconds=time.perf_counter() - start,
                )
            )
            continue
        n = n_images * views
        attempt = _attempt(recipe.name, probs, labels[:n], reference[:n], views, start)
        result.attempts.append(attempt)
        if reason:  # never recommended; kept only when no recipe was validated on every view
            result.stopped = reason
            if result.recipe is None:
                result.recipe, result.built, result.slow = recipe.name, artifact, True
            break
        if attempt.val_accuracy > best_acc:
            best_acc, result.recipe, result.built = attempt.val_accuracy, recipe.name, artifact
        if attempt.change_pt >= -tolerance_pt - 1e-9:
            result.recipe, result.built, result.accepted = recipe.name, artifact, True
            break
    return result
