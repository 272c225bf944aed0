"""Running stages: one at a time through the executor, or many at once where the executor can (Ray).

Each stage (and each model's training) records completion with a hash of its parameters and inputs, so
``--resume`` redoes only what changed or failed; one line per stage goes to the terminal, with a live
progress line while it runs; times and statuses go to run.json after every stage.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import RunConfig
from .executors import Interrupts, Job, run_job
from .memory import peak_rss
from .progress import Watcher
from .rundir import DamagedFileError, RunDir, read_json, write_json
from .stage_outputs import problem


def fingerprint(paths: list[Path]) -> str:
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
    peak_rss_mb: float | None = None  # the run's processes together, sampled while the stage ran


@dataclass
class StageCall:
    """One stage to run: the notebook, its parameters, and what its completion marker hashes."""

    stage: str
    params: dict
    inputs: str
    model: str | None = None
    skip_on: str | None = None  # an error by this name counts as 'skipped' (missing default weights)
    label: str | None = None

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.model}" if self.model else self.stage

    @property
    def title(self) -> str:
        return self.label or (f"{self.stage} {self.model}" if self.model else self.stage)

    @property
    def marker(self) -> dict:
        # Where the run lives is not an input: a run directory moved or copied elsewhere still resumes.
        return {**{k: v for k, v in self.params.items() if k != "run_dir"}, "_inputs": self.inputs}


class Runner:
    """Runs the stages, logs one line per stage, records times and failures in run.json."""

    def __init__(self, cfg: RunConfig, run: RunDir, start: str, executor) -> None:
        self.cfg, self.run, self.start = cfg, run, start
        self.executor = executor
        self.outcomes: list[StageOutcome] = []
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        elapsed = time.perf_counter() - self.t0
        print(f"[{elapsed / 60:5.1f} min] {msg}", flush=True)

    def stage(
        self,
        stage: str,
        params: dict,
        inputs: str,
        model: str | None = None,
        skip_on: str | None = None,
        label: str | None = None,
    ) -> StageOutcome:
        """Run (or, on --resume, skip) one notebook. An error named ``skip_on`` counts as 'skipped'."""
        call = StageCall(stage, params, inputs, model, skip_on, label)
        cached = self._begin(call)
        if cached:
            return cached
        start, job = time.perf_counter(), self._job(call)
        with Watcher({call.title: job.progress}), peak_rss() as rss:
            failure = run_job(job, self.executor)
        return self._finish_heeding_ctrl_c(call, failure, time.perf_counter() - start, rss)

    def skip(self, call: StageCall, name: str, message: str) -> StageOutcome:
        """Record ``call`` as skipped for a reason known before it runs (no kernel is started)."""
        self.run.clear_stage(call.key)
        return self._finish(call, (name, message), 0.0)

    def stages(self, calls: list[StageCall]) -> list[StageOutcome]:
        """Independent stages (one training per model): all at once where the executor runs tasks in
        parallel (Ray), else one after another. Outcomes are returned in the order of ``calls``."""
        if not self.executor.parallel:
            return [self.stage(c.stage, c.params, c.inputs, c.model, c.skip_on, c.label) for c in calls]
        outcomes: dict[str, StageOutcome] = {}
        jobs, started = [], {}
        for call in calls:
            cached = self._begin(call)
            if cached:
                outcomes[call.key] = cached
                continue
            started[call.key] = (call, time.perf_counter())
            jobs.append(self._job(call))

        def done(job, failure) -> None:
            call, start = started[job.key]
            outcomes[job.key] = self._finish_heeding_ctrl_c(call, failure, time.perf_counter() - start)

        with Watcher({started[j.key][0].title: j.progress for j in jobs}):
            self.executor.run_many(jobs, done)
        Interrupts.raise_if_seen()
        return [outcomes[c.key] for c in calls]

    def _job(self, call: StageCall) -> Job:
        output = self.run.executed_notebook(call.stage, call.model)
        return Job(call.key, call.stage, call.params, output, self.run.root / f".progress-{call.key}.json")

    def _done_before(self, call: StageCall) -> bool:
        """On --resume: the stage finished with the same marker and its outputs are all there and load. A
        damaged marker or a missing or broken output is said in one line; the stage then runs again."""
        if not self.cfg.resume:
            return False
        try:
            if not self.run.stage_done(call.key, call.marker):
                return False
        except DamagedFileError as exc:
            self.log(f"{call.title}: {exc}; running it again")
            return False
        where = RunDir(call.params.get("run_dir") or self.run.root)
        notebook = self.run.executed_notebook(call.stage, call.model)
        why = problem(where, call.stage, notebook, call.params.get("model_name"))
        if why:
            self.log(f"{call.title}: done in an earlier run, but {why}; running it again")
        return not why

    def _begin(self, call: StageCall) -> StageOutcome | None:
        """The cached outcome on --resume when the stage is done with the same marker and its outputs are
        sound (``_done_before``); else None, after clearing the stage's earlier record and logging its start."""
        if self._done_before(call):
            self.log(f"{call.title}: done in an earlier run, skipped")
            outcome = StageOutcome(call.key, "cached", 0.0)
            self.outcomes.append(outcome)
            return outcome
        self.run.clear_stage(call.key)
        self.log(f"{call.title}: running")
        return None

    def _finish_heeding_ctrl_c(self, call: StageCall, failure, seconds: float, rss=None) -> StageOutcome:
        """``_finish``, unless a Ctrl-C arrived meanwhile: a stage that failed because of it is not its
        model's failure (nothing is recorded); a stage that finished is kept, then the run stops."""
        if Interrupts.seen and failure is not None:
            raise KeyboardInterrupt
        outcome = self._finish(call, failure, seconds, rss.peak_mb if rss is not None else None)
        Interrupts.raise_if_seen()
        return outcome

    def _finish(
        self, call: StageCall, failure: tuple[str, str] | None, seconds: float, peak_mb: float | None = None
    ) -> StageOutcome:
        if failure is None:
            status = "ok"
            self.run.mark_stage_done(call.key, call.marker, seconds)
        else:
            name, msg = failure
            status = f"{'skipped' if name == call.skip_on else 'failed'}: {name}: {msg}"
        self.log(f"{call.title}: {status} ({seconds:.0f} s)")
        if status.startswith("failed"):
            print(f"    see {self.run.executed_notebook(call.stage, call.model)}", flush=True)
        outcome = StageOutcome(call.key, status, seconds, peak_mb)
        self.outcomes.append(outcome)
        write_run_json(self.cfg, self.run, self.start, self.outcomes, None, time.perf_counter() - self.t0)
        return outcome


def record_end_reference(run: RunDir, threads: int) -> float:
    """Measure the reference latency again once the heavy stages are done, into run.json's machine record.

    A shared or throttled machine's speed can change by 2x within one run; with a second sample the report
    can say so instead of printing one number as if it held for every stage."""
    from .hardware import reference_latency_ms

    info = read_json(run.run_json)
    ms = round(reference_latency_ms(threads), 2)
    info.setdefault("machine", {})["mobilenet_v2_eager_ms_end"] = ms
    write_json(run.run_json, info)
    return ms


def _resumes(previous: dict, start: str) -> list[str]:
    """One entry per resume (run.json is rewritten after every stage of it)."""
    earlier = previous.get("resumed_at", [])
    return earlier if start in earlier else [*earlier, start]


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

    from .devices import device_record
    from .hardware import machine_record

    previous = read_json(run.run_json) if run.run_json.exists() else {}
    machine = previous.get("machine") or {}
    # Re-rendering (--only report) keeps the record of the command that produced the run.
    keep = cfg.only == "report" and "command" in previous
    # Detected once per run, and again on each resume (whose stages are timed on this machine). Re-rendering
    # the report times nothing, so the machine that did the timings stays, even where the run was copied to.
    if not machine or (machine.get("detected_at") != start and cfg.only != "report"):
        machine = {**machine_record(cfg.threads), "detected_at": start}
    stage_seconds = dict(previous.get("stage_seconds", {}))
    stage_status = dict(previous.get("stage_status", {}))
    stage_rss = dict(previous.get("stage_peak_rss_mb", {}))
    for o in outcomes:
        if o.status != "cached":
            stage_seconds[o.name] = round(o.seconds, 1)
            stage_status[o.name] = o.status
            if o.peak_rss_mb is not None:
                stage_rss[o.name] = o.peak_rss_mb
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items() if k != "argv"}
    produced = {
        "command": " ".join(["python", "run_all.py", *map(shlex.quote, cfg.argv)]),
        "argv": list(cfg.argv),
        "parameters": params,
        "seed": cfg.seed,
        "threads": cfg.threads,
    }
    if keep:
        produced = {k: previous[k] for k in produced if k in previous}
    write_json(
        run.run_json,
        {
            **produced,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cpu": machine["cpu"],
            "machine": machine,
            "device": device_record(torch.device(cfg.device)),
            "platform": platform.platform(),
            "start": previous.get("start", start) if cfg.resume else start,
            "end": end,
            "resumed_at": _resumes(previous, start) if cfg.resume else [],
            "stage_seconds": stage_seconds,
            "stage_status": stage_status,
            "stage_peak_rss_mb": stage_rss,
            "plan": previous.get("plan"),  # plan.py's estimates, written once training is planned
            "wall_seconds": round(wall, 1) if wall is not None else None,
        },
    )
