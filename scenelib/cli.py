"""The command line of ``run_all.py``: argparse -> a validated ``RunConfig``, before anything is written.

Every option is checked here, so a typo costs a one-line message and exit code 2, never a half-written run
directory or a run that silently does something else than what was asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import check_dataset_name, resolve_data_dir
from .devices import DEVICE_CHOICES, DeviceError, resolve_device
from .models import MODEL_PRESETS, QUICK_MODELS, STRATEGIES, check_model_name
from .plan import DEFAULT_BUDGET_MIN
from .splits import SPLIT_PRESETS
from .training import DEFAULT_EPOCHS, MAX_EPOCHS, MIN_STEPS
from .transforms import AUGMENTATIONS
from .weights import WEIGHT_MODES

REPO = Path(__file__).resolve().parent.parent
QUICK_EPOCHS = 1
MAX_INPUT_SIZE = 1024


class UsageError(ValueError):
    """Bad command-line input: reported in one line, exit code 2, nothing written."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_all.py",
        description="Explore, train, benchmark, quantize and report, as executed notebooks in one run directory.",
    )
    p.add_argument(
        "--dataset",
        help="dataset name (ucmerced, intel, eurosat, cifar10, folder); with --only report, the run's own",
    )
    p.add_argument("--data-dir", help="data folder (default: $SCENELIB_DATA_DIR, else ./data)")
    p.add_argument(
        "--models",
        default="auto",
        help="comma-separated model names, or a preset: auto (the default set), accurate (the strongest "
        "offline backbones: mobilenet_v2, efficientnet_lite0/1/2)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help=f"training epochs (default: enough for {MIN_STEPS} optimiser steps, at least "
        f"{DEFAULT_EPOCHS['partial']} for partial fine-tuning on cached features and {DEFAULT_EPOCHS['full']} "
        f"for full and scratch training, at most {MAX_EPOCHS}; {QUICK_EPOCHS} with --quick)",
    )
    p.add_argument("--output", help="run directory (default reports/<dataset>/<timestamp>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime (default: all cores)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 small models, 1 epoch, a few images per class"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start an existing run directory over (only one this tool created; anything else is refused)",
    )
    p.add_argument("--resume", action="store_true", help="continue an existing --output directory")
    p.add_argument(
        "--only",
        choices=["report"],
        help="report: re-render report.html of an existing --output run from its files (trains nothing)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train every model on N seeded splits and report mean ± std (default 1; random splits only)",
    )
    p.add_argument("--split", help=f"split preset: {', '.join(SPLIT_PRESETS)} (default: the dataset's)")
    p.add_argument("--strategy", default="auto", help=f"{', '.join(STRATEGIES)}, or auto (per model)")
    p.add_argument("--weights", default="auto", help="auto, torchvision, offline, none, or a state-dict file")
    p.add_argument("--augmentation", default="auto", help=f"{', '.join(AUGMENTATIONS)}, or auto")
    p.add_argument(
        "--device",
        default="auto",
        help=f"where to train: {DEVICE_CHOICES} (auto: a CUDA GPU if PyTorch sees one, else the CPU); "
        "INT8 is always built and timed on the CPU",
    )
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="local: one training after another here; ray: every model's training as a Ray task, at once "
        "(needs pip install -e '.[ray]')",
    )
    p.add_argument(
        "--ray-address",
        default="",
        help="host:port of a running Ray cluster (`ray start --head`); default: a local Ray instance",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=0,
        help="input size in px for the models with pretrained weights (default: each model's native size, "
        "e.g. 224); simple_cnn, which has none, keeps its 64 px",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-tta", action="store_true", help="no test-time augmentation")
    p.add_argument(
        "--calibration-images", type=int, default=256, help="training images used to calibrate INT8"
    )
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs internet)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=0,
        metavar="MINUTES",
        help="how long the run may take: the plan printed before training keeps the models that fit, most "
        "informative first (the first is always kept), and skips the others with the command that includes "
        f"them (default: {DEFAULT_BUDGET_MIN['cpu']:g} on a CPU, {DEFAULT_BUDGET_MIN['gpu']:g} on a GPU; models "
        "named in --models are skipped only when this is given)",
    )
    return p


@dataclass
class RunConfig:
    dataset: str
    data_dir: str
    models: list[str]
    explicit_models: bool
    epochs: int  # 0: each strategy's default (training.DEFAULT_EPOCHS)
    seed: int
    threads: int
    quick: bool
    split: str
    repeats: int
    device: str
    strategy: str
    weights: str
    augmentation: str
    lr: float
    batch_size: int
    tta: bool
    calibration_images: int
    download: bool
    output: Path
    resume: bool
    force: bool
    output_given: bool = True
    only: str = ""
    executor: str = "local"
    ray_address: str = ""
    input_size: int = 0  # 0: each model's native size
    time_budget: float = 0.0  # minutes; 0: plan.DEFAULT_BUDGET_MIN for the device
    argv: list[str] = field(default_factory=list)


def _device(spec: str) -> str:
    try:
        return str(resolve_device(spec))
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def _positive(name: str, value: int | float | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value}")


def _models(spec: str, quick: bool) -> tuple[list[str], bool]:
    if spec == "auto" and quick:
        return list(QUICK_MODELS), False
    if spec in MODEL_PRESETS:  # a preset's model without weights is skipped, as the default set's
        return list(MODEL_PRESETS[spec]), False
    models = [m.strip() for m in spec.split(",") if m.strip()]
    if not models:
        raise UsageError(f"--models {spec!r} names no model; give names separated by commas, or 'auto'")
    if len(set(models)) != len(models):
        raise UsageError(f"--models {spec!r} names a model twice")
    for m in models:
        try:
            check_model_name(m)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return models, True


def _check_choices(args: argparse.Namespace) -> None:
    if args.strategy not in (*STRATEGIES, "auto"):
        raise UsageError(f"unknown strategy {args.strategy!r}; valid: auto, {', '.join(STRATEGIES)}")
    if args.augmentation not in (*AUGMENTATIONS, "auto"):
        raise UsageError(
            f"unknown augmentation {args.augmentation!r}; valid: auto, {', '.join(AUGMENTATIONS)}"
        )
    if args.split and args.split not in SPLIT_PRESETS:
        raise UsageError(f"unknown split preset {args.split!r}; valid: {', '.join(SPLIT_PRESETS)}")
    if args.weights not in WEIGHT_MODES and not Path(args.weights).expanduser().is_file():
        raise UsageError(
            f"--weights {args.weights!r} is neither {', '.join(WEIGHT_MODES)} nor an existing file; "
            "give the path of a PyTorch state dict (.pth / .pt)"
        )
    for name in ("epochs", "threads", "batch_size", "calibration_images", "lr", "repeats"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.time_budget < 0:
        raise UsageError(f"--time-budget must be 0 (the default) or more minutes, got {args.time_budget}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    if args.resume and args.force:
        raise UsageError("--resume and --force exclude each other")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output pointing at the run directory to continue")
    if args.only and not args.output:
        raise UsageError("--only report needs --output pointing at a finished run directory")
    if args.ray_address and args.executor != "ray":
        raise UsageError("--ray-address is for --executor ray; add --executor ray")
    if args.only and args.force:
        raise UsageError("--only report re-renders a run; it cannot be combined with --force")


def _check_input_size(size: int, models: list[str]) -> None:
    """0 means native sizes; otherwise every pretrained model must accept ``size`` (``min_input_size``)."""
    if not size:
        return
    specs = [check_model_name(m) for m in models]
    floor = max([s.min_input_size for s in specs if s.pretrained] or [1])
    if not floor <= size <= MAX_INPUT_SIZE:
        raise UsageError(
            f"--input-size must be between {floor} and {MAX_INPUT_SIZE} px for these models, got {size} "
            "(0 or no option: each model's native size)"
        )


def _threads(requested: int | None) -> int:
    """``--threads``, at most one per core: more only make every thread wait for a core, and the latencies
    timed so would measure the waiting. Capped with a warning."""
    cores = os.cpu_count() or 1
    if requested and requested > cores:
        print(
            f"warning: --threads {requested} is more than this machine's {cores} cores; using {cores}",
            file=sys.stderr,
        )
        return cores
    return requested or cores


def _check_paths(data_dir: Path, output: Path) -> None:
    """A data folder that is a file, an output below a file, or an output and a data folder nested in
    each other (a run inside the data would become a class of the next run): refused before anything is
    written."""
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(
            f"--data-dir {data_dir} is a file, not a folder: give the folder that holds the images"
        )
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--output {output}: {parent} is a file, not a folder; choose another path")
            break
    out = output.resolve()
    if out == data_dir or data_dir in out.parents:
        raise UsageError(
            f"--output {output} is inside the data folder {data_dir}: choose an --output outside it"
        )
    if out in data_dir.parents:
        raise UsageError(
            f"--output {output} holds the data folder {data_dir}: choose an --output that does not contain it"
        )


def _dataset_of_run(args: argparse.Namespace) -> None:
    """--only report without --dataset / --data-dir: the run's own, from its run.json (re-rendering reads
    the run directory alone; the images need not be there)."""
    if args.dataset and (args.data_dir or not args.only):
        return
    if not args.only:
        raise UsageError("the following argument is required: --dataset")
    if not args.output:
        raise UsageError("--only report needs --output pointing at a finished run directory")
    from .atomic import DamagedFileError, read_json

    try:
        params = read_json(Path(args.output).expanduser() / "run.json").get("parameters") or {}
    except (OSError, DamagedFileError) as exc:
        raise UsageError(f"--only report: {args.output} has no readable run.json ({exc})") from None
    args.dataset = args.dataset or params.get("dataset")
    args.data_dir = args.data_dir or params.get("data_dir")
    if not args.dataset:
        raise UsageError(f"--only report: {args.output}/run.json does not name its dataset; add --dataset")


def parse_config(argv: list[str]) -> RunConfig:
    """Validate everything before anything is written."""
    from datetime import datetime

    args = build_parser().parse_args(argv)
    _dataset_of_run(args)
    try:
        check_dataset_name(args.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    models, explicit = _models(args.models, args.quick)
    _check_choices(args)
    _check_input_size(args.input_size, models)
    output = (
        Path(args.output).expanduser()
        if args.output
        else REPO / "reports" / args.dataset / datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    data_dir = resolve_data_dir(args.data_dir).resolve()
    _check_paths(data_dir, output.absolute())
    weights = args.weights
    if weights not in WEIGHT_MODES:
        weights = str(Path(weights).expanduser().resolve())
    return RunConfig(
        dataset=args.dataset,
        data_dir=str(data_dir),
        models=models,
        explicit_models=explicit,
        epochs=args.epochs or (QUICK_EPOCHS if args.quick else 0),  # 0: each strategy's default
        seed=args.seed,
        threads=_threads(args.threads),
        quick=args.quick,
        split=args.split or "",
        repeats=args.repeats,
        device=_device(args.device),
        strategy=args.strategy,
        weights=weights,
        augmentation=args.augmentation,
        lr=args.lr,
        batch_size=args.batch_size,
        tta=not args.no_tta,
        calibration_images=args.calibration_images,
        download=args.download,
        output=output.absolute(),
        resume=args.resume or bool(args.only),
        force=args.force,
        output_given=bool(args.output),
        only=args.only or "",
        executor=args.executor,
        ray_address=args.ray_address,
        input_size=args.input_size,
        time_budget=args.time_budget,
        argv=list(argv),
    )
