"""What ``run_all.py`` drives: the notebooks in order, with papermill, then nbconvert for ``report.html``.

01_explore_data -> 02_train_model (once per model) -> 03_benchmark -> 04_quantize -> 05_report.
Stages share nothing in memory: each reads and writes the run directory (``rundir.py``). Each stage (and
each model's training) records completion with a hash of its parameters and inputs, so ``--resume`` redoes
only what changed or failed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .datasets import DatasetNotFoundError, check_dataset_name, load_dataset, resolve_data_dir
from .models import DEFAULT_MODELS, QUICK_MODELS, STRATEGIES, check_model_name
from .rundir import RunDir, now_iso, read_json, write_json
from .splits import SPLIT_PRESETS
from .transforms import AUGMENTATIONS

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
TEMPLATES = Path(__file__).resolve().parent / "templates"
STAGES = ("01_explore_data", "02_train_model", "03_benchmark", "04_quantize", "05_report")
QUICK_IMAGES_PER_CLASS = 10


class UsageError(ValueError):
    """Bad command-line input: reported in one line, exit code 2, nothing written."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_all.py",
        description="Explore, train, benchmark, quantize and report, as executed notebooks in one run directory.",
    )
    p.add_argument(
        "--dataset", required=True, help="dataset name (ucmerced, intel, eurosat, cifar10, folder)"
    )
    p.add_argument("--data-dir", help="data folder (default: $SCENELIB_DATA_DIR, else ./data)")
    p.add_argument("--models", default="auto", help="comma-separated model names, or 'auto'")
    p.add_argument("--epochs", type=int, help="training epochs (default 12; 1 with --quick)")
    p.add_argument("--output", help="run directory (default reports/<dataset>/<timestamp>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime (default: all cores)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 small models, 1 epoch, a few images per class"
    )
    p.add_argument("--force", action="store_true", help="start an existing --output directory over")
    p.add_argument("--resume", action="store_true", help="continue an existing --output directory")
    p.add_argument("--split", help=f"split preset: {', '.join(SPLIT_PRESETS)} (default: the dataset's)")
    p.add_argument("--strategy", default="auto", help=f"{', '.join(STRATEGIES)}, or auto (per model)")
    p.add_argument("--weights", default="auto", help="auto, torchvision, offline, none, or a state-dict file")
    p.add_argument("--augmentation", default="auto", help=f"{', '.join(AUGMENTATIONS)}, or auto")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-tta", action="store_true", help="no test-time augmentation")
    p.add_argument(
        "--calibration-images", type=int, default=256, help="training images used to calibrate INT8"
    )
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs internet)")
    return p


@dataclass
class RunConfig:
    dataset: str
    data_dir: str
    models: list[str]
    explicit_models: bool
    epochs: int
    seed: int
    threads: int
    quick: bool
    split: str
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
    argv: list[str] = field(default_factory=list)


def parse_config(argv: list[str]) -> RunConfig:
    """Validate everything before anything is written."""
    args = build_parser().parse_args(argv)
    try:
        check_dataset_name(args.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.models == "auto":
        models, explicit = list(QUICK_MODELS if args.quick else DEFAULT_MODELS), False
    else:
        models, explicit = [m.strip() for m in args.models.split(",") if m.strip()], True
    for m in models:
        try:
            check_model_name(m)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.strategy not in (*STRATEGIES, "auto"):
        raise UsageError(f"unknown strategy {args.strategy!r}; valid: auto, {', '.join(STRATEGIES)}")
    if args.augmentation not in (*AUGMENTATIONS, "auto"):
        raise UsageError(
            f"unknown augmentation {args.augmentation!r}; valid: auto, {', '.join(AUGMENTATIONS)}"
        )
    if args.split and args.split not in SPLIT_PRESETS:
        raise UsageError(f"unknown split preset {args.split!r}; valid: {', '.join(SPLIT_PRESETS)}")
    if args.resume and args.force:
        raise UsageError("--resume and --force exclude each other")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output pointing at the run directory to continue")
    data_dir = resolve_data_dir(args.data_dir)
    output = (
        Path(args.output)
        if args.output
        else REPO / "reports" / args.dataset / datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    return RunConfig(
        dataset=args.dataset,
        data_dir=str(data_dir),
        models=models,
        explicit_models=explicit,
        epochs=args.epochs or (1 if args.quick else 12),
        seed=args.seed,
        threads=args.threads or os.cpu_count() or 1,
        quick=args.quick,
        split=args.split or "",
        strategy=args.strategy,
        weights=args.weights,
        augmentation=args.augmentation,
        lr=args.lr,
        batch_size=args.batch_size,
        tta=not args.no_tta,
        calibration_images=args.calibration_images,
        download=args.download,
        output=output.absolute(),
        resume=args.resume,
        force=args.force,
        argv=list(argv),
    )


def prepare_run_dir(cfg: RunConfig) -> RunDir:
    """Create the run directory; an existing one is only reused with --resume or wiped with --force."""
    out = cfg.output
    if out.exists() and any(out.iterdir()):
        if cfg.force:
            shutil.rmtree(out)
        elif not cfg.resume:
            raise UsageError(
                f"{out} already exists: pass --resume to continue it or --force to start it over"
            )
    elif cfg.resume:
        raise UsageError(f"--resume: {out} does not exist or is empty")
    out.mkdir(parents=True, exist_ok=True)
    if out.parent.parent == REPO / "reports":
        latest = out.parent / "latest"
        if latest.is_symlink() or not latest.exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(out.name)
    return RunDir(out)


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class StageOutcome:
    name: str
    status: str  # "ok", "skipped: ...", "failed: ...", "cached"
    seconds: float


def execute_notebook(stage: str, params: dict, output: Path) -> None:
    """Run one Jupytext notebook through papermill; the executed copy (with any traceback) is kept."""
    import jupytext
    import papermill

    nb = jupytext.read(NOTEBOOKS / f"{stage}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        nb,
        str(output),
        parameters=params,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        log_output=False,
        start_timeout=180,
        # ipykernel warns on every start that its local TCP socket is unencrypted; errors still show.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )


def describe_failure(exc: Exception) -> tuple[str, str]:
    """(exception name, one-line message) of a papermill execution error or any other exception."""
    name = getattr(exc, "ename", type(exc).__name__)
    value = str(getattr(exc, "evalue", exc)).strip().splitlines()
    cell = getattr(exc, "exec_count", None)
    where = f" (cell {cell})" if cell is not None else ""
    return name, (value[0] if value else "")[:300] + where


class Runner:
    """Runs the stages, logs one line per stage, records times and failures in run.json."""

    def __init__(self, cfg: RunConfig, run: RunDir, start: str) -> None:
        self.cfg, self.run, self.start = cfg, run, start
        self.outcomes: list[StageOutcome] = []
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        elapsed = time.perf_counter() - self.t0
        print(f"[{elapsed / 60:5.1f} min] {msg}", flush=True)

    def stage(
        self, stage: str, params: dict, inputs: str, model: str | None = None, skip_on: str | None = None
    ) -> StageOutcome:
        """Run (or, on --resume, skip) one notebook. An error named ``skip_on`` counts as 'skipped'."""
        key = f"{stage}-{model}" if model else stage
        marker = {**params, "_inputs": inputs}
        label = f"{stage} {model}" if model else stage
        if self.cfg.resume and self.run.stage_done(key, marker):
            self.log(f"{label}: done in an earlier run, skipped")
            outcome = StageOutcome(key, "cached", 0.0)
            self.outcomes.append(outcome)
            return outcome
        self.run.clear_stage(key)
        self.log(f"{label}: running")
        start = time.perf_counter()
        try:
            execute_notebook(stage, params, self.run.executed_notebook(stage, model))
            status = "ok"
        except Exception as exc:
            name, msg = describe_failure(exc)
            status = f"{'skipped' if name == skip_on else 'failed'}: {name}: {msg}"
        seconds = time.perf_counter() - start
        if status == "ok":
            self.run.mark_stage_done(key, marker, seconds)
        self.log(f"{label}: {status} ({seconds:.0f} s)")
        if status.startswith("failed"):
            print(f"    see {self.run.executed_notebook(stage, model)}", flush=True)
        outcome = StageOutcome(key, status, seconds)
        self.outcomes.append(outcome)
        write_run_json(self.cfg, self.run, self.start, self.outcomes, None, time.perf_counter() - self.t0)
        return outcome


def write_run_json(
    cfg: RunConfig,
    run: RunDir,
    start: str,
    outcomes: list[StageOutcome],
    end: str | None,
    wall: float | None = None,
) -> None:
    import torch
    import torchvision

    from .benchmark import cpu_name

    previous = read_json(run.run_json) if run.run_json.exists() else {}
    stage_seconds = dict(previous.get("stage_seconds", {}))
    stage_status = dict(previous.get("stage_status", {}))
    for o in outcomes:
        if o.status != "cached":
            stage_seconds[o.name] = round(o.seconds, 1)
            stage_status[o.name] = o.status
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items() if k != "argv"}
    write_json(
        run.run_json,
        {
            "command": " ".join(["python", "run_all.py", *cfg.argv]),
            "parameters": params,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cpu": cpu_name(),
            "platform": platform.platform(),
            "start": previous.get("start", start) if cfg.resume else start,
            "end": end,
            "resumed_at": [*previous.get("resumed_at", []), start] if cfg.resume else [],
            "stage_seconds": stage_seconds,
            "stage_status": stage_status,
            "wall_seconds": round(wall, 1) if wall is not None else None,
        },
    )


def run_pipeline(cfg: RunConfig) -> int:
    try:
        dataset = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = prepare_run_dir(cfg)
    start = now_iso()
    runner = Runner(cfg, run, start)
    runner.log(f"run directory {run.root}")
    write_run_json(cfg, run, start, [], None)
    split = cfg.split or dataset.default_split
    augmentation = (
        cfg.augmentation if cfg.augmentation != "auto" else ("aerial" if dataset.aerial else "light")
    )
    common = {"run_dir": str(run.root), "seed": cfg.seed, "threads": cfg.threads}

    explore = runner.stage(
        "01_explore_data",
        {
            **common,
            "dataset": cfg.dataset,
            "data_dir": cfg.data_dir,
            "split": split,
            "max_per_class": QUICK_IMAGES_PER_CLASS if cfg.quick else 0,
        },
        inputs="",
    )
    if explore.status.startswith("failed"):
        write_run_json(cfg, run, start, runner.outcomes, now_iso())
        return 1
    manifest = _fingerprint([run.splits_csv])
    failed = False
    for model in cfg.models:
        outcome = runner.stage(
            "02_train_model",
            {
                **common,
                "dataset": cfg.dataset,
                "model_name": model,
                "strategy": cfg.strategy,
                "weights": cfg.weights,
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "batch_size": cfg.batch_size,
                "augmentation": augmentation,
                "tta": cfg.tta,
                "explicit": cfg.explicit_models,
            },
            inputs=manifest,
            model=model,
            skip_on=None if cfg.explicit_models else "WeightsUnavailableError",
        )
        failed |= record_training_outcome(run, model, outcome)
    trained = _fingerprint([run.train_json(m) for m in cfg.models])
    quick = {"quick": cfg.quick}
    for stage, params in (
        ("03_benchmark", {**common, **quick}),
        (
            "04_quantize",
            {
                **common,
                **quick,
                "calibration_images": min(cfg.calibration_images, 32)
                if cfg.quick
                else cfg.calibration_images,
            },
        ),
    ):
        failed |= runner.stage(stage, params, inputs=trained).status.startswith("failed")
    report = runner.stage("05_report", {"run_dir": str(run.root)}, inputs=_fingerprint([run.results_csv]))
    if report.status == "ok" or run.executed_notebook("05_report").exists():
        render_report(run)
        runner.log(f"report: {run.report_html}")
    failed |= report.status.startswith("failed")
    write_run_json(cfg, run, start, runner.outcomes, now_iso(), time.perf_counter() - runner.t0)
    runner.log("finished" + (" with failures (see results.csv)" if failed else ""))
    return 1 if failed else 0


def record_training_outcome(run: RunDir, model: str, outcome: StageOutcome) -> bool:
    """Turn a training notebook that did not finish into a results.csv row; True if it is a failure.

    Missing pretrained weights for a model of the default set is 'skipped' (not a failure): the run goes on
    with the models that can be trained here.
    """
    if not outcome.status.startswith(("failed", "skipped")):
        return False
    write_json(run.train_json(model), {"model": model, "status": outcome.status})
    run.upsert_results([{"model": model, "variant": "fp32", "status": outcome.status}])
    return outcome.status.startswith("failed")


def render_report(run: RunDir) -> Path:
    """Executed 05_report -> self-contained report.html: code hidden, images embedded, no stderr."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(run.executed_notebook("05_report"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    nb.metadata["title"] = "Scene classification report"
    exporter = HTMLExporter(
        template_name="report",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    html, _ = exporter.from_notebook_node(nb)
    run.report_html.write_text(html, encoding="utf-8")
    return run.report_html


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv)
        return run_pipeline(cfg)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished stages are kept; continue with --resume --output <run dir>",
            file=sys.stderr,
        )
        return 130
