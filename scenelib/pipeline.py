"""What ``run_all.py`` drives: the notebooks in order, with papermill, then nbconvert for ``report.html``.

01_explore_data -> 02_train_model (once per model) -> 03_benchmark -> 04_quantize -> 05_report.
Stages share nothing in memory: each reads and writes the run directory (``rundir.py``). Each stage (and
each model's training) records completion with a hash of its parameters and inputs, so ``--resume`` redoes
only what changed or failed.
"""

from __future__ import annotations

import errno
import logging
import shlex
import sys
import time
from pathlib import Path

from . import journal
from .atomic import DamagedFileError, write_text
from .cli import REPO, RunConfig, UsageError, parse_config
from .datasets import DatasetNotFoundError, load_dataset
from .executors import NOTEBOOKS, ExecutorError, Interrupts, make_executor
from .integrity import data_fingerprint
from .plan import plan_training
from .repeats import RANDOM_ONLY, prepare_repeat
from .repeats import summarize as summarize_repeats
from .rundir import (
    RunDir,
    RunDirError,
    RunLock,
    check_can_start_over,
    create_run_dir,
    now_iso,
    point_link,
    read_json,
    remove_leftovers,
    start_over,
    write_json,
)
from .runner import Runner, StageCall, StageOutcome, fingerprint, record_end_reference, write_run_json
from .splits import check_split_feasible, read_manifest
from .stage_outputs import repair_command, report_blockers
from .verdict import plain_text, verdict

TEMPLATES = Path(__file__).resolve().parent / "templates"
STAGES = ("01_explore_data", "02_train_model", "03_benchmark", "04_quantize", "05_report")
QUICK_IMAGES_PER_CLASS = 10
SKIP_ON = "WeightsUnavailableError"  # a default model without pretrained weights is skipped, not failed
__all__ = ["NOTEBOOKS", "STAGES", "main", "run_pipeline", "RunConfig"]


def _protected(cfg: RunConfig) -> list[Path]:
    """Folders --force must never delete, nor any folder holding them."""
    return [REPO, Path(cfg.data_dir), Path.home(), Path("/")]


def prepare_run_dir(cfg: RunConfig) -> tuple[RunDir, bool]:
    """Create the run directory, or check that an existing one may be reused (--resume) or emptied
    (--force); returns it and whether it must be emptied (done under the run's lock, ``run_pipeline``).
    Only a directory scenelib created is ever emptied."""
    out = cfg.output
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} is a file, not a directory: choose a folder path")
    # Without --output the folder is named by the second it started in; a taken name gets "-2" (below).
    if out.is_dir() and any(out.iterdir()) and (cfg.output_given or cfg.resume or cfg.force):
        if not (cfg.force or cfg.resume):
            raise UsageError(
                f"{out} already exists: pass --resume to continue it or --force to start it over"
            )
        if cfg.force:
            check_can_start_over(out, _protected(cfg))
        return RunDir(out), cfg.force
    if cfg.resume:
        raise UsageError(f"--resume: {out} does not exist or is empty")
    try:
        out = create_run_dir(out, unique=not cfg.output_given)
    except OSError as exc:
        raise UsageError(f"cannot create the run directory {out}: {exc.strerror or exc}") from None
    if out.parent.parent == REPO / "reports":
        point_link(out.parent / "latest", out.name)
    return RunDir(out), False


def run_pipeline(cfg: RunConfig) -> int:
    dataset = None if cfg.only else _checked_dataset(cfg)  # re-rendering reads the run directory alone
    if dataset is None and not cfg.only:
        return 2
    # Ray is started (or its cluster reached) before the run directory is made: a bad address writes nothing.
    executor = make_executor("local" if cfg.only else cfg.executor, cfg.ray_address, cfg.threads, cfg.device)
    try:
        run, reset = prepare_run_dir(cfg)
        with RunLock(run.root):
            if reset:
                start_over(run.root, _protected(cfg))
            elif cfg.resume:
                remove_leftovers(run.root)
            executor.check_shared(run.root)
            return _run_stages(cfg, run, dataset, executor)
    finally:
        executor.close()


def _checked_dataset(cfg: RunConfig):
    """The dataset, its split and --repeats checked before anything is written; None (said) if not found."""
    try:
        dataset = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        check_split_feasible(
            dataset, cfg.split or dataset.default_split, QUICK_IMAGES_PER_CLASS if cfg.quick else None
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.repeats > 1 and (cfg.split or dataset.default_split) == RANDOM_ONLY:
        raise UsageError(
            f"--repeats {cfg.repeats} needs a random split, and {cfg.dataset}'s default is its official one: "
            "add --split 70/30 (or 80/20, 80/10/10)"
        )
    return dataset


def _check_renderable(run: RunDir) -> None:
    """--only report: refuse, before anything is written, a run whose report would be incomplete or wrong
    (a stage not finished, an output missing or broken), naming what and the command that repairs it."""
    blockers = report_blockers(run)
    if blockers:
        raise UsageError(
            f"{run.root}: the report is not re-rendered: {'; '.join(blockers)}. "
            f"Redo what is missing with: {repair_command(run)}"
        )


def print_answer(run: RunDir) -> None:
    """The report's answer block in the terminal, once the run has finished."""
    if run.report_html.exists():
        try:
            print("\n" + plain_text(verdict(run)) + f"\nDetails: {run.report_html}", flush=True)
        except (OSError, ValueError, KeyError) as exc:  # a run with nothing to recommend still finished
            print(f"(no answer to print: {type(exc).__name__}: {exc})", flush=True)


def _render_only(cfg: RunConfig, run: RunDir, runner: Runner) -> int:
    """--only report: re-run 05_report on the run's files and re-render report.html; nothing else. A
    failed render leaves the previous report.html in place."""
    report = runner.stage("05_report", {"run_dir": str(run.root)}, inputs=now_iso())
    if report.status == "ok":
        render_report(run)
        runner.log(f"report: {run.report_html}")
        print_answer(run)
    return 1 if report.status.startswith("failed") else 0


def _check_resumable(cfg: RunConfig, run: RunDir) -> None:
    """--resume / --only report: run.json must load (it holds the run's start and its command)."""
    if cfg.resume and run.run_json.exists():
        try:
            read_json(run.run_json)
        except DamagedFileError as exc:
            raise UsageError(f"{exc}: restore it, or start the run over with --force") from None


def _run_stages(cfg: RunConfig, run: RunDir, dataset, executor) -> int:
    start = now_iso()
    runner = Runner(cfg, run, start, executor)
    _check_resumable(cfg, run)
    if cfg.only == "report":
        _check_renderable(run)
    runner.log(f"run directory {run.root}")
    write_run_json(cfg, run, start, [], None)
    if cfg.only == "report":
        code = _render_only(cfg, run, runner)
        write_run_json(cfg, run, start, runner.outcomes, now_iso(), time.perf_counter() - runner.t0)
        return code
    split = cfg.split or dataset.default_split
    augmentation = (
        cfg.augmentation if cfg.augmentation != "auto" else ("aerial" if dataset.aerial else "light")
    )
    common = {"run_dir": str(run.root), "seed": cfg.seed, "threads": cfg.threads}
    if cfg.device != "cpu":  # INT8 and its timings stay on the CPU; training and the cache move
        runner.log(f"training on {cfg.device}; benchmark latencies and INT8 on the CPU")

    explore = runner.stage(
        "01_explore_data",
        {
            **common,
            "dataset": cfg.dataset,
            "data_dir": cfg.data_dir,
            "split": split,
            "max_per_class": QUICK_IMAGES_PER_CLASS if cfg.quick else 0,
        },
        inputs=data_fingerprint(dataset),  # every image file's name, size and time: a changed one redoes it
    )
    if explore.status.startswith("failed"):
        write_run_json(cfg, run, start, runner.outcomes, now_iso())
        return 1
    try:
        read_manifest(run.splits_csv)  # checked before any later stage writes over its outputs
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # The split and every image's pixels (integrity.csv holds their hashes): a changed image retrains.
    manifest = fingerprint([run.splits_csv, run.integrity_csv])
    failed = False
    train_params = {
        **common,
        "dataset": cfg.dataset,
        "strategy": cfg.strategy,
        "weights": cfg.weights,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "augmentation": augmentation,
        "tta": cfg.tta,
        "explicit": cfg.explicit_models,
        "device": cfg.device,
        "input_size": cfg.input_size,
    }
    calls = [
        StageCall(
            "02_train_model",
            {**train_params, "model_name": model},
            inputs=manifest,
            model=model,
            skip_on=None if cfg.explicit_models else SKIP_ON,
        )
        for model in cfg.models
    ]
    outcomes = {c.model: runner.skip(c, SKIP_ON, why) for c, why in _without_weights(cfg, run, calls)}
    # the plan: estimated times and memory, printed and kept in run.json; models over --time-budget skipped
    outcomes.update(plan_training(cfg, run, runner, [c for c in calls if c.model not in outcomes], augmentation))
    to_train = [c for c in calls if c.model not in outcomes]
    outcomes.update(zip([c.model for c in to_train], runner.stages(to_train), strict=True))
    for model in cfg.models:
        failed |= record_training_outcome(run, model, outcomes[model])
    if not run.trained_models():
        runner.log("no model was trained (see above): nothing to benchmark, quantize or report")
        write_run_json(cfg, run, start, runner.outcomes, now_iso(), time.perf_counter() - runner.t0)
        return 1
    failed |= _repeat_training(cfg, run, dataset, runner, train_params)
    trained = fingerprint([run.train_json(m) for m in cfg.models])
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
    record_end_reference(run, cfg.threads)
    report = runner.stage("05_report", {"run_dir": str(run.root)}, inputs=fingerprint([run.results_csv]))
    if report.status == "ok" or (report.status == "cached" and not run.report_html.exists()):
        render_report(run)
        runner.log(f"report: {run.report_html}")
    failed |= report.status.startswith("failed")
    write_run_json(cfg, run, start, runner.outcomes, now_iso(), time.perf_counter() - runner.t0)
    runner.log("finished" + (" with failures (see results.csv)" if failed else ""))
    print_answer(run)
    return 1 if failed else 0


def _repeat_training(cfg: RunConfig, run: RunDir, dataset, runner: Runner, params: dict) -> bool:
    """--repeats N: every trained model again on splits 2..N (see ``repeats.py``); True if one failed."""
    if cfg.repeats < 2:
        return False
    models, calls = run.trained_models(), []
    for r in range(2, cfg.repeats + 1):
        sub = prepare_repeat(run, dataset, r)
        calls += [
            StageCall(
                "02_train_model",
                {**params, "run_dir": str(sub.root), "seed": cfg.seed + r - 1, "model_name": model},
                inputs=fingerprint([sub.splits_csv, run.integrity_csv]),
                model=f"{model}-split{r}",
                label=f"02_train_model {model} (split {r} of {cfg.repeats})",
            )
            for model in models
        ]
    failed = any(o.status.startswith("failed") for o in runner.stages(calls))
    summarize_repeats(run, cfg.repeats, models)
    return failed


def _without_weights(cfg: RunConfig, run: RunDir, calls: list[StageCall]) -> list[tuple[StageCall, str]]:
    """Default models (skipped, not failed, without weights) whose pretrained weights are found missing
    in the driver: no kernel is started for them. Named models go to their notebook, which fails. Only on
    the local executor (Ray workers may hold weights the driver lacks), never for a training that --resume
    will keep, and not with --strategy scratch (which needs no weights)."""
    from .models import check_model_name
    from .weights import missing_weights

    if cfg.executor != "local" or cfg.strategy == "scratch":
        return []
    found = [
        (c, missing_weights(check_model_name(c.model), cfg.weights))
        for c in calls
        if c.skip_on and not (cfg.resume and run.stage_done(c.key, c.marker))
    ]
    return [(c, why) for c, why in found if why]


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
    write_text(run.report_html, html)  # a temp file renamed over the previous report: never half a page
    journal.record(run, "05_report", via="pipeline")
    return run.report_html


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = None
    try:
        cfg = parse_config(argv)
        with Interrupts.remembered():
            return run_pipeline(cfg)
    except (UsageError, RunDirError, ExecutorError, DamagedFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"error: cannot write{where}: {exc.strerror}; free space or choose another --output",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        # The notebook client's tasks may still hold the killed kernel's DeadKernelError; asyncio would print
        # each as a traceback when it is collected at exit, after (and in spite of) the line below.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        print(
            f"\ninterrupted: finished stages are kept; continue with\n  {resume_command(cfg)}",
            file=sys.stderr,
        )
        return 130


def resume_command(cfg: RunConfig | None) -> str:
    """The command that continues an interrupted run (its own options, --resume, its --output)."""
    if cfg is None:
        return "python run_all.py ... --resume --output <run dir>"
    args = [a for a in cfg.argv if a not in ("--force", "--resume")]
    if "--output" in args:
        i = args.index("--output")
        del args[i : i + 2]
    args = [a for a in args if not a.startswith("--output=")]
    return " ".join(
        ["python run_all.py", *map(shlex.quote, args), "--resume", "--output", shlex.quote(str(cfg.output))]
    )
