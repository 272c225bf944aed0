"""The plan before the work: each model's stage times and the feature cache's memory, estimated on this
machine before anything is trained, and the time budget that decides which models run.

Every estimate is a count of work times a rate. The work: multiply-accumulates (MACs, counted on the meta
device, so nothing is computed) of the model's frozen prefix per cached view, of its trainable suffix per
training step, of the whole model per benchmark and INT8 evaluation, times the number of images, views and
epochs the run will use. The rate: the reference latency measured at the start of the run (eager
MobileNetV2 at batch 1, ``hardware.reference_latency_ms``) per MobileNetV2 MAC, scaled by ``CALIBRATION``:
per model and kind of work, the measured ratio of seconds per MAC to the reference's (dense ResNet
convolutions run several times more MACs a second than MobileNetV2's depthwise ones). The stage constants
(kernel start, benchmark rounds, INT8 exports) come from measured runs (``benchmarks/plan_vs_actual.py``).

``--time-budget MINUTES`` keeps the models that fit, most informative first, and skips the others, each
with its estimate and the command that includes it.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field

import torch

from .models import MODELS, build_classifier

# Seconds per MAC relative to eager MobileNetV2's (the reference latency's), per model and kind of work:
# "prefix": the frozen prefix in ONNX Runtime, 4 images a call (the feature cache); "train": forward,
# backward and AdamW step of the trainable suffix at batch 32; "eager": the whole model in eager PyTorch
# (benchmark and INT8 evaluation). Measured interleaved on a 2-core CPU (benchmarks/plan_calibration.py,
# benchmarks/results/plan_calibration-*.csv), by ratios_for: the model's own, its family's, else the defaults.
CALIBRATION: dict[str, dict[str, float]] = {
    "mobilenet_v2": {"prefix": 0.083, "train": 1.2, "eager": 0.83},
    "efficientnet_lite0": {"prefix": 0.079, "train": 0.41, "eager": 1.03},
    "resnet50": {"prefix": 0.039, "train": 0.24, "eager": 0.28},
    "densenet121": {"prefix": 0.029, "train": 3.1, "eager": 0.39},
    "simple_cnn": {"prefix": 0.08, "train": 0.53, "eager": 0.61},
}
# Unmeasured models take the ratios of the measured one of their family, else DEFAULT_RATIOS.
FAMILY = {
    "resnet": "resnet50",
    "wide_resnet": "resnet50",
    "densenet": "densenet121",
    "efficientnet": "efficientnet_lite0",
    "mobilenet": "mobilenet_v2",
}
DEFAULT_RATIOS = {"prefix": 0.06, "train": 1.0, "eager": 0.5}
STAGE_START_S = 12.0  # a notebook kernel's start, imports and the stage's own file reads
TRAIN_FIXED_S = 6.0  # per training: weights, ONNX export of the prefix, checkpoint and predictions files
BENCH_CALLS = {True: 30, False: 100}  # eager batch-1 calls timed per model (quick, full)
BENCH_BATCHED = 0.3  # an eager test image in batches, in batch-1 calls
QUANT_CALLS = {True: 20, False: 60}  # the same for the four variants' timings and the quick checks
QUANT_EVAL = 0.02  # a validation or test view through ONNX Runtime fp32 or INT8, in eager batch-1 calls
QUANT_MODEL_S = 45.0  # per model: FX preparation and conversion, ONNX export, quantization, recipe guards
QUANT_MB_PER_MPARAM = 150.0  # the INT8 stage's memory beyond its kernel's, per million weights
DRIVER_MB = 1000.0  # run_all.py's own process, counted in every stage's peak
GPU_SPEEDUP = 10.0  # cache and training on a GPU against this CPU: a rough factor, said to be rough
PROCESS_BASE_MB = 900.0  # a training kernel with PyTorch and ONNX Runtime loaded, before any data

# Which models a budget keeps first when it cannot keep all: the deployable fast backbones, then the
# classic reference backbone, the no-transfer baseline, then the other heavy references.
INFORMATIVE = (
    "mobilenet_v2",
    "efficientnet_lite0",
    "resnet50",
    "simple_cnn",
    "densenet121",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_b0",
)
DEFAULT_BUDGET_MIN = {"cpu": 60.0, "gpu": 120.0}


def ratios_for(name: str) -> dict[str, float]:
    """The calibration ratios of ``name``: its own, else its family's, else the defaults."""
    if name in CALIBRATION:
        return CALIBRATION[name]
    family = next((m for prefix, m in FAMILY.items() if name.startswith(prefix)), None)
    return CALIBRATION[family] if family else DEFAULT_RATIOS


@dataclass
class ModelPlan:
    model: str
    strategy: str
    input_size: int
    epochs: int
    cut: int
    blocks: int
    prefix_gmacs: float
    suffix_gmacs: float
    total_gmacs: float
    params_m: float
    cached_views: int  # (image, view) pairs through the frozen prefix
    cache_mb: float  # fp16 feature cache
    seconds: dict[str, float] = field(default_factory=dict)  # train, benchmark, quantize
    status: str = "planned"
    include_command: str = ""

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def block_macs(name: str, size: int, n_classes: int) -> tuple[list[int], list[tuple[int, ...]], int, int]:
    """MACs of each block at ``size`` px, each block's output shape (one image), the head's MACs and the
    parameter count, from the architecture built on the meta device (no memory, no arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_classifier(name, n_classes).eval()
        x = torch.empty(1, 3, size, size)
    macs, shapes = [], []
    with torch.no_grad():
        for block in model.blocks:
            with FlopCounterMode(display=False) as counter:
                x = block(x)
            macs.append(counter.get_total_flops() // 2)
            shapes.append(tuple(x.shape[1:]))
        with FlopCounterMode(display=False) as counter:
            model.head(model.pool(x))
    params = sum(p.numel() for p in model.parameters())
    return macs, shapes, counter.get_total_flops() // 2, params


_REF_GMACS: list[float] = []


def reference_gmacs() -> float:
    """GMACs of the reference model (torchvision MobileNetV2 at 224 px, 1000 classes)."""
    if not _REF_GMACS:
        import torchvision
        from torch.utils.flop_counter import FlopCounterMode

        with torch.device("meta"):
            model = torchvision.models.mobilenet_v2().eval()
            x = torch.empty(1, 3, 224, 224)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        _REF_GMACS.append(counter.get_total_flops() / 2e9)
    return _REF_GMACS[0]


def cached_pairs(n_views: int, epochs: int, per_epoch: int, n_train: int, seed: int) -> int:
    """How many (training image, view) pairs the cache computes (as training.needed_pairs counts them)."""
    from .training import draw_views, needed_pairs

    if n_train == 0:
        return 0
    drawn = draw_views(n_views, epochs, per_epoch, n_train, seed)
    return int(sum(len(p) for p in needed_pairs(drawn, n_views)))


def estimate_model(
    name: str,
    strategy: str,
    size: int,
    epochs: int,
    counts: dict[str, int],
    n_classes: int,
    n_views: int,
    tta: bool,
    ref_ms: float,
    quick: bool = False,
    calibration_images: int = 256,
    gpu: bool = False,
    seed: int = 0,
    trainable_blocks: int | None = None,
) -> ModelPlan:
    """One model's plan: its stage times in seconds on this machine and its feature cache in MB."""
    spec = MODELS[name]
    macs, shapes, head_macs, params = block_macs(name, size, n_classes)
    n = len(macs)
    if strategy == "linear":
        cut = n
    elif strategy == "partial":
        cut = max(0, n - (spec.trainable_blocks if trainable_blocks is None else trainable_blocks))
    else:
        cut = 0
    prefix, suffix = sum(macs[:cut]) / 1e9, (sum(macs[cut:]) + head_macs) / 1e9
    whole = prefix + suffix
    ratios = ratios_for(name)
    per_gmac = ref_ms / 1e3 / reference_gmacs()  # seconds per GMAC at the reference's rate
    test_views = n_views if tta else 1
    n_train, n_val, n_test = counts["train"], counts["val"], counts["test"]
    pairs = 0
    if cut:
        pairs = cached_pairs(n_views, epochs, 1, n_train, seed) + (n_val + n_test) * test_views
    per_view = math.prod(shapes[cut - 1]) if 0 < cut < n else (shapes[-1][0] if cut else 0)
    cache_mb = pairs * per_view * 2 / 2**20
    device_factor = 1.0 / GPU_SPEEDUP if gpu else 1.0
    cache_s = pairs * prefix * per_gmac * ratios["prefix"] * device_factor
    steps_images = epochs * n_train
    # the suffix: trained each epoch, validated each epoch, then val and test predicted in every TTA view
    infer_images = epochs * n_val + (n_val + n_test) * test_views
    if cut == 0:  # full and scratch: whole images through the whole network, augmented on the fly
        suffix = whole
    # forward passes in batches: a third of a training step's forward, backward and update
    train_s = (steps_images + infer_images / 3) * suffix * ratios["train"] * per_gmac
    train_s = STAGE_START_S + TRAIN_FIXED_S + cache_s + train_s * device_factor
    eager_s = whole * per_gmac * ratios["eager"]
    bench_s = (BENCH_BATCHED * n_test + BENCH_CALLS[quick]) * eager_s
    calibration = min(calibration_images, 32) if quick else calibration_images
    # INT8: calibration, then the ONNX and PyTorch variants on validation (guard) and test, in the TTA views
    evals = QUANT_EVAL * 2 * (n_val + n_test) * test_views
    quant_s = QUANT_MODEL_S + (calibration + evals + QUANT_CALLS[quick]) * eager_s
    return ModelPlan(
        name,
        strategy,
        size,
        epochs,
        cut,
        n,
        round(prefix, 3),
        round(suffix, 3),
        round(whole, 3),
        round(params / 1e6, 2),
        pairs,
        round(cache_mb, 1),
        {"train": round(train_s, 1), "benchmark": round(bench_s, 1), "quantize": round(quant_s, 1)},
    )


def image_mb(counts: dict[str, int], size: int) -> float:
    return sum(counts.values()) * 3 * size * size / 2**20


def peak_mb(plans: list[ModelPlan], counts: dict[str, int], ram_budget_mb: float | None = None) -> float:
    """The run's largest moment, driver included: a training (decoded images, weights, optimiser state and
    ONNX session, the feature cache's part in RAM when it spills to disk above ``ram_budget_mb``) or the
    INT8 stage (which grows with the model's weights)."""
    peaks = [0.0]
    for p in plans:
        cache = p.cache_mb if ram_budget_mb is None else min(p.cache_mb, ram_budget_mb)
        peaks.append(PROCESS_BASE_MB + image_mb(counts, p.input_size) + p.params_m * 40 + cache)
        peaks.append(PROCESS_BASE_MB + QUANT_MB_PER_MPARAM * p.params_m)
    return round(DRIVER_MB + max(peaks), 0)


def fixed_seconds() -> float:
    """Stage starts the run pays whatever it trains: benchmark, quantize, report, and the report's render."""
    return 3 * STAGE_START_S + 20.0


def choose(plans: list[ModelPlan], budget_s: float, order: list[str]) -> list[ModelPlan]:
    """Mark models over the budget ``skipped``: in ``order`` (most informative first), each is kept if the
    total with it still fits, else skipped (a cheaper one after it may still fit). The first model is always
    kept, whatever its estimate: a run's answer needs the model the user would deploy, and an estimate made
    on a busy moment can be several times too long. Returns the plans."""
    by_name = {p.model: p for p in plans}
    total = fixed_seconds()
    for i, name in enumerate(order):
        plan = by_name[name]
        if i == 0 or total + plan.total_seconds <= budget_s:
            total += plan.total_seconds
        else:
            plan.status = (
                f"skipped: over the time budget: estimated {plan.total_seconds / 60:.1f} min, "
                f"{(budget_s - total) / 60:.1f} of the {budget_s / 60:.0f} min budget left"
            )
    return plans


def priority(models: list[str], explicit: bool) -> list[str]:
    """The order a budget keeps models in: the user's own for named models, else ``INFORMATIVE``'s."""
    if explicit:
        return list(models)
    rank = {m: i for i, m in enumerate(INFORMATIVE)}
    return sorted(models, key=lambda m: (rank.get(m, len(rank)), models.index(m)))


def include_command(argv: list[str], output: str, minutes: float) -> str:
    """The command that adds a skipped model to this run: its own options, a budget that fits it, --resume."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--time-budget", "--output"):
            skip = True
            continue
        if a.startswith(("--time-budget=", "--output=")) or a in ("--force", "--resume"):
            continue
        args.append(a)
    args += ["--time-budget", str(int(math.ceil(minutes))), "--resume", "--output", output]
    return " ".join(["python", "run_all.py", *map(shlex.quote, args)])


def as_record(plans: list[ModelPlan], budget_min: float, ref_ms: float, counts: dict, peak: float) -> dict:
    kept = [p for p in plans if p.status == "planned"]
    return {
        "budget_minutes": budget_min,
        "reference_ms": ref_ms,
        "counts": counts,
        "fixed_seconds": fixed_seconds(),
        "total_seconds": round(fixed_seconds() + sum(p.total_seconds for p in kept), 1),
        "peak_memory_mb": peak,
        "models": {p.model: {**asdict(p), "total_seconds": round(p.total_seconds, 1)} for p in plans},
    }


def format_plan(plans: list[ModelPlan], record: dict, gpu: bool = False) -> str:
    """The plan as the terminal shows it before training."""
    lines = [
        f"plan (eager MobileNetV2 {record['reference_ms']:.1f} ms on this machine; "
        f"budget {record['budget_minutes']:.0f} min{'; GPU times are rough' if gpu else ''}):",
        f"  {'model':<20}{'strategy':<9}{'px':>4}{'epochs':>7}{'cache MB':>10}"
        f"{'train':>7}{'bench':>7}{'int8':>7}{'total':>8}",
    ]
    for p in plans:
        s = p.seconds
        lines.append(
            f"  {p.model:<20}{p.strategy:<9}{p.input_size:>4}{p.epochs:>7}{p.cache_mb:>10.0f}"
            f"{s['train'] / 60:>7.1f}{s['benchmark'] / 60:>7.1f}{s['quantize'] / 60:>7.1f}"
            f"{p.total_seconds / 60:>6.1f} min" + ("" if p.status == "planned" else "  SKIPPED")
        )
    lines.append(
        f"  estimated total {record['total_seconds'] / 60:.1f} min (with "
        f"{record['fixed_seconds'] / 60:.1f} min of stage starts), peak memory about "
        f"{record['peak_memory_mb'] / 1024:.1f} GB"
    )
    for p in plans:
        if p.status != "planned":
            lines.append(f"  {p.model} {p.status}; include it with:\n    {p.include_command}")
    return "\n".join(lines)


def stage_plan(plans: list[ModelPlan]) -> dict[str, float]:
    """Planned seconds per stage, keyed as run.json's ``stage_seconds`` is."""
    kept = [p for p in plans if p.status == "planned"]
    stages = {f"02_train_model-{p.model}": p.seconds["train"] for p in kept}
    stages["03_benchmark"] = round(STAGE_START_S + sum(p.seconds["benchmark"] for p in kept), 1)
    stages["04_quantize"] = round(STAGE_START_S + sum(p.seconds["quantize"] for p in kept), 1)
    return stages


BUDGET_SKIP = "OverTimeBudget"


def plan_training(cfg, run, runner, calls: list, augmentation: str) -> dict:
    """Plan the trainings of ``calls`` (the pipeline's StageCalls still to decide), print the plan, record it
    in run.json, and skip (as ``runner.skip`` records it) the models over the time budget. Models named in
    --models are skipped only under an explicit --time-budget; trainings --resume keeps cost nothing.
    Returns {model: StageOutcome} of the skipped ones."""
    from dataclasses import replace

    from .memory import cache_ram_budget
    from .rundir import read_json, write_json
    from .splits import class_names, read_manifest
    from .stages.train import resolve_strategy
    from .training import default_epochs
    from .transforms import views

    rows = read_manifest(run.splits_csv)
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "val", "test")}
    info = read_json(run.run_json)
    ref_ms = float(info["machine"]["mobilenet_v2_eager_ms"])
    gpu = cfg.device != "cpu"
    budget_min = cfg.time_budget or DEFAULT_BUDGET_MIN["gpu" if gpu else "cpu"]
    n_views = len(views(augmentation, 224, cfg.seed))
    plans = []
    for call in calls:
        spec = MODELS[call.model]
        strategy = resolve_strategy(cfg.strategy, cfg.weights, spec.default_strategy, cfg.device)
        size = cfg.input_size if cfg.input_size and spec.pretrained else spec.input_size
        epochs = cfg.epochs or default_epochs(strategy, counts["train"], cfg.batch_size)
        plan = estimate_model(
            call.model,
            strategy,
            size,
            epochs,
            counts,
            len(class_names(rows)),
            n_views,
            cfg.tta,
            ref_ms,
            cfg.quick,
            cfg.calibration_images,
            gpu,
            cfg.seed,
        )
        if cfg.resume and run.stage_done(call.key, call.marker):
            plan.seconds["train"] = 0.0
        plans.append(plan)
    if calls and (cfg.time_budget or not cfg.explicit_models):
        choose(plans, budget_min * 60, priority([c.model for c in calls], cfg.explicit_models))
    kept = fixed_seconds() + sum(p.total_seconds for p in plans if p.status == "planned")
    for p in plans:
        if p.status != "planned":
            p.include_command = include_command(cfg.argv, str(run.root), (kept + p.total_seconds) / 60)
    ram_mb = cache_ram_budget() / 2**20
    peak = peak_mb([p for p in plans if p.status == "planned"], counts, ram_mb)
    record = as_record(plans, budget_min, ref_ms, counts, peak)
    record["stages"] = stage_plan(plans)
    record["cache_ram_budget_mb"] = round(ram_mb, 0)
    record.update(n_classes=len(class_names(rows)), views=n_views, tta=cfg.tta, quick=cfg.quick)
    info["plan"] = record
    write_json(run.run_json, info)
    runner.log(format_plan(plans, record, gpu))
    by_model = {c.model: c for c in calls}
    return {
        p.model: runner.skip(
            replace(by_model[p.model], skip_on=BUDGET_SKIP),
            BUDGET_SKIP,
            f"{p.status.removeprefix('skipped: ')}; include it with: {p.include_command}",
        )
        for p in plans
        if p.status != "planned"
    }
