"""The run directory: the one interface between pipeline stages.

Every artifact a stage writes has its path spelled here, so notebooks, the report and tests agree on it,
and a run can be resumed, re-rendered or audited from its files alone.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import DamagedFileError, atomic_writer, read_json, write_json  # noqa: F401 (importable from here)

VARIANTS = ("fp32", "int8-torch", "onnx-fp32", "onnx-int8")
# Each variant's own fp32 source: INT8 effects are measured against the same runtime's fp32.
FP32_SOURCE = {"fp32": "fp32", "onnx-fp32": "fp32", "int8-torch": "fp32", "onnx-int8": "onnx-fp32"}

# Columns of results.csv, in order. Accuracy-like columns are fractions in [0, 1] on the test split unless
# named val_*; *_ci_low / *_ci_high bound a 95 % interval; latency in ms; speed-ups are ratios (>1 = faster).
RESULT_COLUMNS = (
    "model",
    "variant",
    "status",
    "weights",
    "strategy",
    "recipe",
    "val_accuracy",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "accuracy_tta",
    "accuracy_tta_ci_low",
    "accuracy_tta_ci_high",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "macro_f1_tta",
    "roc_auc",
    "repeats",
    "accuracy_mean",
    "accuracy_std",
    "accuracy_tta_mean",
    "accuracy_tta_std",
    "macro_f1_std",
    "latency_ms_b1",
    "latency_p90_ms_b1",
    "latency_ms_tta",
    "latency_ms_gpu_b1",
    "latency_noisy",
    "speedup_vs_runtime_fp32",
    "speedup_vs_eager_fp32",
    "throughput_ips",
    "params",
    "trainable_params",
    "macs",
    "size_mb",
    "peak_mem_mb",
    "train_seconds",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def params_hash(params: dict[str, Any]) -> str:
    """A short, order-independent fingerprint of a stage's parameters (for resume)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def remove_leftovers(root: Path) -> list[Path]:
    """Temp files of writers killed mid-write (``.<name>.<random>.tmp``) and stale progress files, in a run
    directory scenelib created; called when a run is resumed. Returns what was removed."""
    if not (root / OWNER_MARKER).is_file():
        return []
    gone = [
        p
        for p in root.rglob(".*")
        if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".progress-"))
    ]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


RUN_DIR_ENV = "SCENELIB_RUN_DIR"
START_DIR_ENV = "SCENELIB_START_DIR"  # `make lab` sets it: the folder a relative run directory is read from
REPORTS = Path(__file__).resolve().parent.parent / "reports"  # the installed package's own reports/


class RunDirNotFound(FileNotFoundError):
    """No run directory where a notebook looked; shown in a notebook as its one-line message."""

    def _render_traceback_(self) -> list[str]:  # IPython: print this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


def repository_root(start: str | os.PathLike | None = None) -> Path:
    """The scenelib checkout being worked in: the nearest folder at or above ``start`` (default: the working
    directory, a kernel's being its notebook's folder) that holds ``run_all.py`` and ``notebooks/``; else
    the one the package is installed from. Two clones sharing a venv each open their own runs."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "run_all.py").is_file() and (folder / "notebooks").is_dir():
            return folder
    return REPORTS.parent


def _resolve(path: str | os.PathLike) -> Path:
    """A relative run directory is read from ``$SCENELIB_START_DIR`` (where `make lab` was started), else
    the working directory; where no run is found there, from the repository root."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    bases = [Path(os.environ.get(START_DIR_ENV) or os.getcwd()), repository_root()]
    for base in bases:
        if (base / path / "run.json").is_file():
            return Path(os.path.abspath(base / path))
    return Path(os.path.abspath(bases[0] / path))


def open_run(run_dir: str | os.PathLike = "") -> RunDir:
    """The run a notebook works on: ``run_dir`` if given, else ``$SCENELIB_RUN_DIR``, else the newest
    ``reports/<dataset>/latest`` of the repository being worked in (``repository_root``). A folder that is
    not a run directory is one short error (``RunDirNotFound``)."""
    given = run_dir or os.environ.get(RUN_DIR_ENV, "")
    path = _resolve(given) if given else None
    if path is None:
        reports = repository_root() / "reports"
        latest = sorted(reports.glob("*/latest"), key=lambda p: p.stat().st_mtime if p.exists() else 0)
        path = latest[-1].resolve() if latest else None
    if path is None or not (path / "run.json").is_file():
        where = f"{path} is not a run directory (no run.json)" if path else "no run directory found"
        raise RunDirNotFound(
            f"{where}: run `make report` first, or set {RUN_DIR_ENV}=<run directory> (or the run_dir parameter)"
        )
    return RunDir(path)


TRAIN_VAL = "fp32-train-val"  # RunDir.predictions: training's validation predictions


class RunDir:
    """Paths and small I/O helpers for one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- top-level files -------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def splits_csv(self) -> Path:
        return self.root / "splits.csv"

    @property
    def data_summary_json(self) -> Path:
        return self.root / "data_summary.json"

    @property
    def integrity_csv(self) -> Path:
        """One row per image file: readable?, mode, size, pixel hash, channel statistics."""
        return self.root / "integrity.csv"

    @property
    def benchmark_json(self) -> Path:
        return self.root / "benchmark.json"

    @property
    def quantization_json(self) -> Path:
        return self.root / "quantization.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def stages_dir(self) -> Path:
        return self.root / ".stages"

    def executed_notebook(self, stage: str, model: str | None = None) -> Path:
        name = f"{stage}-{model}.ipynb" if model else f"{stage}.ipynb"
        return self.notebooks_dir / name

    # -- per-model files -------------------------------------------------------------------------------
    def model_dir(self, model: str) -> Path:
        return self.root / "models" / model

    def checkpoint(self, model: str) -> Path:
        return self.model_dir(model) / "checkpoint.pt"

    def history_json(self, model: str) -> Path:
        return self.model_dir(model) / "history.json"

    def train_json(self, model: str) -> Path:
        return self.model_dir(model) / "train.json"

    def predictions(self, model: str, variant: str = "fp32") -> Path:
        """``fp32``: training's test predictions (cached prefix features for linear/partial), ``fp32-train-val``
        its validation ones (plain view; what each repeated split's ensemble is chosen on); ``fp32-e2e``: the
        saved checkpoint end to end in PyTorch (benchmark stage), ``fp32-val`` the same on the validation split
        (for the main split's ensemble); other names: the deployed variants."""
        return self.model_dir(model) / f"predictions-{variant}.npz"

    def onnx_fp32(self, model: str) -> Path:
        return self.model_dir(model) / "model.onnx"

    def onnx_int8(self, model: str) -> Path:
        return self.model_dir(model) / "model.int8.onnx"

    def torch_int8(self, model: str) -> Path:
        return self.model_dir(model) / "model.int8.torchscript.pt"

    def trained_models(self) -> list[str]:
        """Models whose training finished (a train.json with status ok), in name order."""
        found = []
        for path in sorted((self.root / "models").glob("*/train.json")):
            if read_json(path).get("status") == "ok":
                found.append(path.parent.name)
        return found

    # -- completion markers (resume) -------------------------------------------------------------------
    def _marker(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def stage_done(self, stage: str, params: dict[str, Any]) -> bool:
        marker = self._marker(stage)
        return marker.exists() and read_json(marker).get("params_hash") == params_hash(params)

    def mark_stage_done(self, stage: str, params: dict[str, Any], seconds: float) -> None:
        record = {"params_hash": params_hash(params), "seconds": round(seconds, 2), "at": now_iso()}
        write_json(self._marker(stage), record)

    def clear_stage(self, stage: str) -> None:
        self._marker(stage).unlink(missing_ok=True)

    def stage_records(self) -> dict[str, dict[str, Any]]:
        return {p.stem: read_json(p) for p in sorted(self.stages_dir.glob("*.json"))}

    # -- results.csv -----------------------------------------------------------------------------------
    def read_results(self) -> list[dict[str, str]]:
        if not self.results_csv.exists():
            return []
        with self.results_csv.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def upsert_results(self, rows: Iterable[dict[str, Any]]) -> None:
        """Merge rows into results.csv keyed by (model, variant); given columns replace old values."""
        table = {(r["model"], r["variant"]): r for r in self.read_results()}
        for row in rows:
            unknown = set(row) - set(RESULT_COLUMNS)
            if unknown:
                raise ValueError(f"unknown results.csv columns {sorted(unknown)}; known: {RESULT_COLUMNS}")
            if row.get("variant") not in VARIANTS:
                raise ValueError(f"variant must be one of {VARIANTS}, got {row.get('variant')!r}")
            key = (row["model"], row["variant"])
            merged = dict(table.get(key, {}))
            merged.update({k: _format_cell(v) for k, v in row.items()})
            table[key] = merged
        order = {v: i for i, v in enumerate(VARIANTS)}
        ordered = sorted(table.values(), key=lambda r: (r["model"], order[r["variant"]]))
        with atomic_writer(self.results_csv, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            for r in ordered:
                writer.writerow({c: r.get(c, "") for c in RESULT_COLUMNS})


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    if hasattr(value, "item") and callable(value.item):
        return _format_cell(value.item())
    return str(value)


# -- creating, owning and locking a run directory ---------------------------------------------------------
OWNER_MARKER = ".scenelib-run"


class RunDirError(RuntimeError):
    """A run directory cannot be created, reused or started over; the message says why and what to do."""


def is_tool_run_dir(path: Path) -> bool:
    """True if scenelib created ``path`` (its marker file is there)."""
    return (Path(path) / OWNER_MARKER).is_file()


def _claim(path: Path) -> None:
    write_json(path / OWNER_MARKER, {"created_by": "scenelib", "created": now_iso()})


def create_run_dir(path: Path, unique: bool = False) -> Path:
    """Make a new, empty run directory owned by scenelib; never reuse one that exists.

    ``unique``: if ``path`` exists (two runs started in the same second), use ``path-2``, ``path-3``, ...
    """
    path = Path(path)
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()) and not unique:
                _claim(candidate)  # an empty folder the user made for the run
                return candidate
            if unique:
                continue
            raise
        _claim(candidate)
        return candidate
    raise RunDirError(f"could not find a free run directory name next to {path}")


def check_can_start_over(path: Path, protected: Iterable[Path]) -> Path:
    """Raise ``RunDirError`` unless ``path`` is a run directory scenelib created that holds no protected
    path (the repository, the data folder, the user's home)."""
    path = Path(path).resolve()
    for keep in protected:
        keep = Path(keep).resolve()
        if keep == path or path in keep.parents:
            raise RunDirError(f"--force refuses to delete {path}: it contains {keep}")
    if not is_tool_run_dir(path):
        raise RunDirError(
            f"--force refuses to delete {path}: it is not a run directory created by scenelib "
            f"(no {OWNER_MARKER} file). Choose a new --output, or delete the folder yourself"
        )
    return path


def start_over(path: Path, protected: Iterable[Path]) -> Path:
    """``--force``: empty a run directory scenelib created (``check_can_start_over``); refuse anything
    else. The run's lock file stays (the caller holds it)."""
    path = check_can_start_over(path, protected)
    for child in path.iterdir():
        if child.name == ".lock":  # held by this process (see RunLock)
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    _claim(path)
    return path


def point_link(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` atomically (a reader never sees it missing)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


class RunLock:
    """An exclusive lock on a run directory for the lifetime of one writer (``flock`` on ``.lock``).

    A second ``run_all.py`` on the same directory stops at once with one line instead of interleaving its
    writes with the first's. The lock dies with the process, so a killed run never leaves a stale lock."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / ".lock"
        self._fh = None

    def __enter__(self) -> RunLock:
        import fcntl

        self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise RunDirError(
                f"{self.path.parent} is in use by {holder}: wait for it to finish, or choose another --output"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} since {now_iso()}\n")
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
