"""The four deployable variants of one trained model, built and guarded on validation data (stage 04).

``ModelVariants`` loads a checkpoint and builds its fp32 ONNX export (checked against PyTorch), its ONNX
Runtime INT8 and its PyTorch INT8 variants, each with the recipe sequence for this CPU's INT8 kernels and
kept only if its validation accuracy holds against its own fp32 source (``recipes.guarded_search``). The
runners here turn any variant into "images in, softmax out". Calibration reads training images and the
guard validation images; no test image is read here (``quantize.py`` evaluates on test afterwards).
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..benchmark import file_mb, onnx_infer, time_interleaved, torch_infer
from ..claims import MIN_INT8_SPEEDUP, change_bound, images_to_show
from ..decoded import images_of, split_images
from ..features import BULK_BATCH, extract_views, ort_session
from ..models import load_checkpoint
from ..quantization import (
    calibrate,
    convert,
    export_onnx,
    prepare_torch,
    quantize_onnx,
    quantized_layers,
    save_torchscript,
)
from ..recipes import (
    ORT_RECIPES,
    TOLERANCE_PT,
    TORCH_RECIPES,
    guarded_search,
    ort_recipes,
    search_plan,
    torch_recipes,
)
from ..rundir import FP32_SOURCE, RunDir, read_json
from ..splits import read_manifest, split_rows
from ..transforms import normalize, views

Runner = Callable[[np.ndarray], np.ndarray]
QUICK_CALIBRATION = 16  # images calibrating the PyTorch INT8 build that is timed before full calibration


def calibration_batch(run: RunDir, n: int, size: int, mean, std, seed: int = 0) -> torch.Tensor:
    """``n`` training images (never validation or test), seeded, normalised like the model's input."""
    manifest = read_manifest(run.splits_csv)
    rows = split_rows(manifest, "train")
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return normalize(images_of(manifest, rows, size), mean, std)


def predict(
    runner: Runner, images: torch.Tensor, mean, std, test_views, batch_size: int = BULK_BATCH
) -> np.ndarray:
    """Softmax of every view: [V, N, C], from fp32 logits (a deployment bundle reproduces them to 1e-6)."""
    logits = extract_views(
        runner, images, mean, std, test_views, batch_size=batch_size, desc="evaluate", dtype=torch.float32
    )
    return logits.softmax(-1).numpy()


def torch_runner(model: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


# Eager fp32's bulk batch, in channels_last. On a 2-core AVX2 EPYC, per image and interleaved, MobileNetV2
# took 18.6 ms at batch 4, 26.3 at 8 and 32.9 at 16 (EfficientNet-Lite0: 22.7, 22.1 and 33.4 ms); on the
# AVX-512 CPUs measured before, 8 was as fast as any larger batch.
EAGER_BATCH = 4


def bulk_eager_runner(model: torch.nn.Module) -> Runner:
    """Eager fp32 for many images (feed it batches of ``EAGER_BATCH``): a channels_last copy of ``model``.
    oneDNN's CPU convolutions, the depthwise ones above all, run about twice as fast in that layout at small
    batches as in the default one at batch 32 (MobileNetV2: 9 vs 24 ms an image); logits agree to about
    1e-5. ``model`` itself stays in the default layout, the one its latency is timed and deployed in."""
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return fast(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()

    return run


def ort_runner(session) -> Runner:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


@dataclass(frozen=True)
class Baseline:
    """An fp32 runtime a candidate must beat ``speedup`` times over; ``name`` is how messages call it."""

    name: str
    run: Callable
    speedup: float = 1.0


def slower(
    candidate: Callable, baselines: Sequence[Baseline], how: str = "quick check", calls: int = 7
) -> str:
    """Why a variant cannot pay ("" if it might): slower than an fp32 baseline in a quick check, or not its
    ``speedup`` times faster where that is what a recommendation needs (the first baseline it misses). All are
    called in turn in one session, so a burst of load on a shared machine slows every one rather than
    deciding the outcome, and the candidate's fastest call is compared with the baselines' medians, so a
    burst that slows some of its calls does not stop it. The later recipes of a sequence keep more layers in
    fp32 or change only the calibration: none can make it faster."""
    timings = time_interleaved(
        {"candidate": candidate} | {b.name: b.run for b in baselines},
        warmup=1,
        rounds=calls,
        runs_per_round=1,
    )
    ms = float(min(timings["candidate"].times_ms))  # its fastest call: load bursts do not make it slow
    for b in baselines:
        reference_ms = timings[b.name].median
        if ms * b.speedup <= reference_ms:
            continue
        if b.speedup == 1.0:
            return f"slower than {b.name} ({ms:.1f} vs {reference_ms:.1f} ms, {how})"
        return f"not {b.speedup:g}x faster than {b.name} ({ms:.1f} vs {reference_ms:.1f} ms, {how})"
    return ""


class ModelVariants:
    """The four variants of one trained model, built and guarded on validation data (no test image)."""

    def __init__(self, run: RunDir, name: str, threads: int, n_calibration: int, seed: int, int8_class: str):
        self.run, self.name, self.threads = run, name, threads
        self.model, meta = load_checkpoint(run.checkpoint(name))
        self.size, self.mean, self.std = meta["input_size"], meta["mean"], meta["std"]
        self.calibration = calibration_batch(run, n_calibration, self.size, self.mean, self.std, seed)
        val_rows, self.val_images = split_images(read_manifest(run.splits_csv), "val", self.size)
        # The guard reads every view of every validation image (the model's TTA views): 147 images alone
        # resolve 0.68 pt, too coarse for a 0.5 pt tolerance; 8 views resolve 0.09 pt.
        train = read_json(run.train_json(name))
        self.val_views = views(train["config"]["augmentation"], self.size, train["config"]["seed"])
        self.val_views = self.val_views[: max(1, train.get("tta_views", 1))]
        self.val_labels = np.tile(np.array([r.label for r in val_rows]), len(self.val_views))
        self.int8_class = int8_class
        x1 = np.random.default_rng(0).standard_normal((1, 3, self.size, self.size), dtype=np.float32)
        self.x1 = x1
        self.runners: dict[str, Runner] = {"fp32": torch_runner(self.model)}
        self.calls: dict[str, Callable] = {"fp32": torch_infer(self.model, torch.from_numpy(x1))}
        self.sizes = {"fp32": file_mb(run.checkpoint(name))}
        self.single_val: dict[str, float] = {}
        self.val_probs: dict[str, np.ndarray | None] = {}
        self.info: dict = {
            "model": name,
            "calibration_images": len(self.calibration),
            "calibration_source": "train split",
            "guard_source": f"validation split ({len(val_rows)} images x {len(self.val_views)} views)",
            "int8_class": int8_class,
            "variants": {"fp32": {"status": "ok", "source": "fp32"}},
            "notes": [],
        }

    def validate(self, runner: Runner, key: str | None = None, n_views: int | None = None) -> np.ndarray:
        """Softmax of the first ``n_views`` (default: every) validation view, views stacked: [V * N, C]
        (labels: ``val_labels``). The plain view's accuracy is kept under ``key``: results.csv's
        val_accuracy is single view for every row."""
        probs = predict(runner, self.val_images, self.mean, self.std, self.val_views[:n_views])
        if key is not None:
            n = len(self.val_images)
            self.single_val[key] = float((probs[0].argmax(1) == self.val_labels[:n]).mean())
        return probs.reshape(-1, probs.shape[-1])

    def plan(self, variant: str, recipes: list) -> list:
        """The recipes to try (``recipes.search_plan``), with a note when validation cannot certify INT8."""
        recipes, note = search_plan(recipes, len(self.val_images), images_to_show(TOLERANCE_PT))
        if note:
            self._entry(variant)["search"] = note
        return recipes

    def _entry(self, variant: str) -> dict:
        return self.info["variants"].setdefault(variant, {"source": FP32_SOURCE[variant]})

    def build_onnx_fp32(self) -> None:
        entry, start = self._entry("onnx-fp32"), time.perf_counter()
        try:
            path = self.run.onnx_fp32(self.name)
            self.info["onnx_max_abs_diff"] = export_onnx(
                self.model, self.size, path, self.calibration[:8].numpy(), self.threads
            )
            session = ort_session(str(path), self.threads)
        except Exception as exc:  # an op the exporter or checker rejects: recorded, the rest goes on
            entry["status"] = (
                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            )
            return
        self.runners["onnx-fp32"] = ort_runner(session)
        self.calls["onnx-fp32"] = onnx_infer(session, self.x1)
        self.sizes["onnx-fp32"] = file_mb(path)
        self.val_probs["onnx-fp32"] = self.validate(self.runners["onnx-fp32"], "onnx-fp32")
        entry.update(status="ok", build_seconds=time.perf_counter() - start)

    def fp32_val(self) -> np.ndarray:
        """The fp32 model's validation probabilities, the reference of both guards: the ONNX export's where
        it exists (checked against PyTorch, and 2-3x faster on a CPU), else PyTorch's."""
        if "fp32" in self.val_probs:
            return self.val_probs["fp32"]
        if "onnx-fp32" in self.val_probs:
            self.val_probs["fp32"] = self.val_probs["onnx-fp32"]
            self.single_val["fp32"] = self.single_val["onnx-fp32"]
            diff = self.info.get("onnx_max_abs_diff")
            self.info["guard_reference"] = f"fp32 in ONNX Runtime (logits within {diff:.1g} of PyTorch's)"
        else:
            self.val_probs["fp32"] = self.validate(self.runners["fp32"], "fp32")
            self.info["guard_reference"] = "fp32 in PyTorch"
        return self.val_probs["fp32"]

    def build_onnx_int8(self) -> None:
        entry = self._entry("onnx-int8")
        if "onnx-fp32" not in self.runners:
            entry["status"] = "failed: needs the fp32 ONNX export, which failed"
            return
        final = self.run.onnx_int8(self.name)

        def build(recipe):
            path = final.with_name(f"model.int8.{recipe.name}.onnx")
            quantize_onnx(self.run.onnx_fp32(self.name), path, self.calibration.numpy(), recipe)
            return recipe.name, ort_session(str(path), self.threads)

        guard = guarded_search(
            self.plan(variant="onnx-int8", recipes=ort_recipes(self.int8_class)),
            build,
            lambda built, n: self.validate(ort_runner(built[1]), f"onnx-int8:{built[0]}", n),
            self.val_labels,
            self.val_probs["onnx-fp32"],
            n_views=len(self.val_views),
            too_slow=lambda built: slower(
                onnx_infer(built[1], self.x1), [Baseline("ONNX fp32", self.calls["onnx-fp32"])]
            ),
        )
        for attempt in guard.attempts:  # keep only the chosen recipe's file, under the documented name
            path = final.with_name(f"model.int8.{attempt.recipe}.onnx")
            if attempt.recipe == guard.recipe:
                path.replace(final)
            else:
                path.unlink(missing_ok=True)
        self._finish("onnx-int8", guard, lambda: ort_session(str(final), self.threads), final)

    def build_torch_int8(self) -> None:
        prepared: dict[str, torch.nn.Module] = {}  # per recipe: observers calibrated on the first images

        def script(qmodel):
            with torch.inference_mode():
                return torch.jit.freeze(torch.jit.trace(qmodel, torch.from_numpy(self.x1)).eval())

        def speed_check(recipe) -> str:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                observed = prepare_torch(self.model, self.size, self.calibration, recipe)
                calibrate(observed, self.calibration[:QUICK_CALIBRATION])
                quick = script(convert(observed, keep=True))
            self._note(caught)
            prepared[recipe.name] = observed
            baselines = [Baseline("eager fp32", self.calls["fp32"])]
            if "onnx-fp32" in self.calls:
                # The deployment advice recommends INT8 only MIN_INT8_SPEEDUP times faster than the faster
                # fp32 runtime; short of that against ONNX Runtime's fp32, no calibration can make it so.
                baselines.append(Baseline("ONNX fp32", self.calls["onnx-fp32"], MIN_INT8_SPEEDUP))
            candidate = torch_infer(quick, torch.from_numpy(self.x1))
            return slower(candidate, baselines, f"quick check, calibrated on {QUICK_CALIBRATION} images")

        def build(recipe):
            with warnings.catch_warnings(record=True) as caught:  # deprecations are recorded, not shown
                warnings.simplefilter("always")
                observed = prepared.pop(recipe.name)
                calibrate(observed, self.calibration[QUICK_CALIBRATION:])
                qmodel = convert(observed)
                layers = quantized_layers(qmodel)
                scripted = script(qmodel)
            self._note(caught)
            self.info.setdefault("torch_int8_layers", {})[recipe.name] = layers
            return recipe.name, qmodel, scripted

        guard = guarded_search(
            self.plan(variant="int8-torch", recipes=torch_recipes(self.int8_class)),
            build,
            lambda built, n: self.validate(torch_runner(built[2]), f"int8-torch:{built[0]}", n),
            self.val_labels,
            self.fp32_val(),
            n_views=len(self.val_views),
            speed_check=speed_check,
        )
        path = self.run.torch_int8(self.name)
        if guard.built is not None:
            save_torchscript(guard.built[1], torch.from_numpy(self.x1), path)
        else:  # an earlier run's file would be taken for this run's
            path.unlink(missing_ok=True)
        self._finish("int8-torch", guard, lambda: torch.jit.load(str(path)), path)

    def _note(self, caught) -> None:
        """Record caught warnings (PyTorch's deprecations of its INT8 path) once each in the notes."""
        self.info["notes"] += sorted(
            {f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught}
            - set(self.info["notes"])
        )

    def _finish(self, variant: str, guard, load: Callable, path: Path) -> None:
        """Record the guard's outcome; load what a user would deploy (the saved file) for evaluation."""
        entry = self._entry(variant)
        entry.update(status=guard.status, guard=guard.record())
        if guard.recipe is None:
            return
        recipe = ORT_RECIPES.get(guard.recipe) if variant == "onnx-int8" else None
        entry["recipe"] = guard.recipe
        entry["recipe_why"] = (recipe or TORCH_RECIPES[guard.recipe]).why
        loaded = load()
        if variant == "onnx-int8":
            self.runners[variant], self.calls[variant] = ort_runner(loaded), onnx_infer(loaded, self.x1)
        else:
            self.runners[variant] = torch_runner(loaded)
            self.calls[variant] = torch_infer(loaded, torch.from_numpy(self.x1))
        self.sizes[variant] = file_mb(path)
        kept = next(a for a in guard.attempts if a.recipe == guard.recipe)
        self.val_probs[variant] = None  # measured by the guard: see guard.attempts
        entry["val_accuracy"], entry["val_change_pt"] = kept.val_accuracy, kept.change_pt
        entry["val_views"] = kept.views
        entry["val_changed"], entry["val_images"] = kept.changed, kept.images
        entry["val_change_bound_pt"] = change_bound(kept.changed, kept.images)
        entry["val_accuracy_single_view"] = self.single_val.get(f"{variant}:{guard.recipe}")

    def validation_summary(self) -> None:
        self.fp32_val()
        for variant in ("fp32", "onnx-fp32"):
            probs = self.val_probs.get(variant)
            if probs is not None:
                acc = float((probs.argmax(1) == self.val_labels).mean())
                ref = float((self.fp32_val().argmax(1) == self.val_labels).mean())
                self._entry(variant).update(
                    val_accuracy=acc,
                    val_change_pt=100 * (acc - ref),
                    val_views=len(self.val_views),
                    val_accuracy_single_view=self.single_val.get(variant),
                )
