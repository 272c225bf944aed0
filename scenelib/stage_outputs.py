"""What each stage leaves in the run directory, checked before a finished stage is trusted.

A stage's completion marker (``.stages/<stage>.json``) says it finished with these parameters and inputs;
the files it wrote can still have been deleted, truncated or edited since. ``problem`` names the first
output of a stage that is missing or does not load, so that ``--resume`` runs that stage again, and
``report_blockers`` lists what keeps a run from being re-rendered (``--only report``) with the command that
repairs it.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

from .atomic import DamagedFileError, read_json
from .rundir import RunDir
from .splits import read_manifest

QUANTIZED_FILES = {"onnx-fp32": "onnx_fp32", "onnx-int8": "onnx_int8", "int8-torch": "torch_int8"}


def _name(run: RunDir, path: Path) -> str:
    try:
        return str(path.relative_to(run.root))
    except ValueError:
        return str(path)


def _json(run: RunDir, path: Path) -> tuple[object, str]:
    """(the JSON in ``path``, '') or (None, what is wrong with it)."""
    if not path.is_file():
        return None, f"{_name(run, path)} is missing"
    try:
        return read_json(path), ""
    except (DamagedFileError, OSError):
        return None, f"{_name(run, path)} does not load"


def _results(run: RunDir) -> tuple[dict[tuple[str, str], dict], str]:
    if not run.results_csv.is_file():
        return {}, "results.csv is missing"
    try:
        with run.results_csv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return {(r["model"], r["variant"]): r for r in rows}, ""
    except (KeyError, UnicodeDecodeError, csv.Error, OSError):
        return {}, "results.csv does not load"


def _npz(run: RunDir, path: Path) -> str:
    import numpy as np

    if not path.is_file():
        return f"{_name(run, path)} is missing"
    try:
        with np.load(path) as data:
            data.files  # noqa: B018 (reads the archive's directory)
    except (OSError, ValueError, EOFError):
        return f"{_name(run, path)} does not load"
    return ""


def _checkpoint(run: RunDir, path: Path) -> str:
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        return f"{_name(run, path)} is missing"
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError):
        return f"{_name(run, path)} does not load"
    if not isinstance(meta, dict) or not {"model", "classes", "state_dict"} <= set(meta):
        return f"{_name(run, path)} is not a scenelib checkpoint"
    return ""


def _explore(run: RunDir) -> str:
    try:
        read_manifest(run.splits_csv)
    except (FileNotFoundError, ValueError):
        return "splits.csv is missing" if not run.splits_csv.exists() else "splits.csv is damaged"
    if not run.integrity_csv.is_file():
        return "integrity.csv is missing"
    return _json(run, run.data_summary_json)[1]


def _train(run: RunDir, model: str) -> str:
    record, why = _json(run, run.train_json(model))
    if why:
        return why
    if not isinstance(record, dict) or record.get("status") != "ok":
        return f"{_name(run, run.train_json(model))} does not record a finished training"
    for why in (
        _json(run, run.history_json(model))[1],
        _npz(run, run.predictions(model, "fp32")),
        _checkpoint(run, run.checkpoint(model)),
    ):
        if why:
            return why
    rows, why = _results(run)
    if why or (model, "fp32") not in rows:
        return why or f"results.csv has no row for {model}"
    return ""


def _trained(run: RunDir) -> list[str]:
    try:
        return run.trained_models()
    except DamagedFileError:
        return []


def _benchmark(run: RunDir) -> str:
    record, why = _json(run, run.benchmark_json)
    if why:
        return why
    models = record.get("models") if isinstance(record, dict) else None
    rows, why = _results(run)
    for model in _trained(run):
        if not isinstance(models, dict) or model not in models:
            return f"benchmark.json has no record of {model}"
        if why := why or _npz(run, run.predictions(model, "fp32-e2e")):
            return why
        if not rows.get((model, "fp32"), {}).get("latency_ms_b1"):
            return f"results.csv has no latency for {model}"
    return why


def _quantize(run: RunDir) -> str:
    record, why = _json(run, run.quantization_json)
    if why:
        return why
    models = record.get("models") if isinstance(record, dict) else None
    rows, why = _results(run)
    if why:
        return why
    for model in _trained(run):
        if not isinstance(models, dict) or model not in models:
            return f"quantization.json has no record of {model}"
        for variant, entry in (models[model].get("variants") or {}).items():
            attr = QUANTIZED_FILES.get(variant)
            if not attr or not str(entry.get("status", "")).startswith("ok"):
                continue
            path = getattr(run, attr)(model)
            if not path.is_file() or path.stat().st_size == 0:
                return f"{_name(run, path)} is missing"
            if (model, variant) not in rows:
                return f"results.csv has no {variant} row for {model}"
    return ""


def problem(run: RunDir, stage: str, notebook: Path, model: str | None = None) -> str:
    """'' when the outputs of a finished ``stage`` (of ``model``, for training) exist and load; else the
    first that is missing or broken, as a short phrase. ``run`` is where the stage wrote (a repeated split's
    own run directory for its trainings); ``notebook`` its executed notebook."""
    if not notebook.is_file():
        return f"{_name(run, notebook)} is missing"
    if stage == "01_explore_data":
        return _explore(run)
    if stage == "02_train_model" and model:
        return _train(run, model)
    if stage == "03_benchmark":
        return _benchmark(run)
    if stage == "04_quantize":
        return _quantize(run)
    if stage == "05_report":
        return "" if run.report_html.is_file() else "report.html is missing"
    return ""


def report_blockers(run: RunDir) -> list[str]:
    """What keeps ``run`` from being re-rendered: a stage the report reads that did not finish, or whose
    outputs are missing or broken. A stage that failed in the run is not one (the report shows the
    failure)."""
    info, why = _json(run, run.run_json)
    if why:
        return [why]
    status = info.get("stage_status", {}) if isinstance(info, dict) else {}
    found = []
    if why := problem(run, "01_explore_data", run.executed_notebook("01_explore_data")):
        found.append(f"{why} (stage 01_explore_data)")
    for model in _trained(run):
        key = f"02_train_model-{model}"
        if why := problem(run, "02_train_model", run.executed_notebook("02_train_model", model), model):
            found.append(f"{why} (stage {key})")
    if not _trained(run) and not found:
        found.append("no model finished training (stage 02_train_model)")
    for stage in ("03_benchmark", "04_quantize"):
        if str(status.get(stage, "")).startswith("failed"):
            continue
        if why := problem(run, stage, run.executed_notebook(stage)):
            found.append(f"{why} (stage {stage})")
    return found


def original_argv(run: RunDir) -> list[str]:
    """The options of the command that produced ``run`` (run.json), without --resume, --force, --only
    and --output; [] when run.json does not say."""
    try:
        info = read_json(run.run_json)
    except (DamagedFileError, OSError):
        return []
    argv = info.get("argv")
    if not isinstance(argv, list):
        argv = shlex.split(str(info.get("command", "")))[2:]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--output", "--only"):
            skip = True
        elif a not in ("--resume", "--force") and not a.startswith(("--output=", "--only=")):
            out.append(str(a))
    return out


def repair_command(run: RunDir) -> str:
    """The command that redoes what is missing or broken in ``run``: its own options, --resume."""
    args = [shlex.quote(a) for a in original_argv(run)] or ["..."]
    return " ".join(["python run_all.py", *args, "--resume", "--output", shlex.quote(str(run.root))])
