"""A timing stage (03_benchmark, 04_quantize) run by hand on a finished run: one timing session or none.

The pipeline times every model in one sitting and records the machine's speed beside it (run.json: eager
MobileNetV2 at the start and the end of the run). A notebook re-run later in JupyterLab or papermill may meet
a busy machine and time everything 20x slower; written over the run's files, those timings would sit beside
the other stage's and make every speed-up and latency comparison wrong. So a timing stage run by hand measures
the same reference before it starts and again before it writes: when either is further than the tolerance
(``$SCENELIB_TIMING_TOLERANCE``, default 1.5x) from the run's own, it writes nothing and says why in one line.
"""

from __future__ import annotations

import os

from .journal import PIPELINE_ENV
from .rundir import RunDir, read_json

TOLERANCE_ENV = "SCENELIB_TIMING_TOLERANCE"
TOLERANCE = 1.5  # as summary.DRIFT: further apart than this, seconds from two sessions are not comparable


class MachineSpeedError(RuntimeError):
    """Timings taken now would not be comparable with the run's; shown in a notebook as one line."""

    def _render_traceback_(self) -> list[str]:  # IPython: print this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


def by_hand() -> bool:
    """True outside the pipeline's kernels (a notebook in JupyterLab, papermill typed by hand)."""
    return not os.environ.get(PIPELINE_ENV)


def tolerance() -> float:
    try:
        return max(1.0, float(os.environ.get(TOLERANCE_ENV, TOLERANCE)))
    except ValueError:
        return TOLERANCE


def run_reference(run: RunDir) -> list[float]:
    """The run's reference latencies (ms): at its start and, where measured, after quantization."""
    machine = read_json(run.run_json).get("machine") or {} if run.run_json.exists() else {}
    return [
        float(v)
        for v in (machine.get("mobilenet_v2_eager_ms"), machine.get("mobilenet_v2_eager_ms_end"))
        if v
    ]


def speed_problem(now_ms: float, reference_ms: list[float], limit: float) -> str:
    """'' when ``now_ms`` lies within ``limit`` times the run's reference range; else the ratio, in words."""
    if not reference_ms:
        return ""
    low, high = min(reference_ms), max(reference_ms)
    if now_ms > high * limit:
        return f"{now_ms / high:.1f}x slower"
    if now_ms * limit < low:
        return f"{low / now_ms:.1f}x faster"
    return ""


def check_timing_session(run: RunDir, stage: str, threads: int, when: str = "before timing") -> None:
    """By hand only: raise ``MachineSpeedError`` when the machine's speed now differs from the run's by more
    than the tolerance (nothing of the stage's timings is written then). Costs about 25 MobileNetV2 calls."""
    reference = run_reference(run) if by_hand() else []
    if not reference:
        return
    from .hardware import reference_latency_ms

    now = reference_latency_ms(threads)
    why = speed_problem(now, reference, tolerance())
    if why:
        raise MachineSpeedError(
            f"{stage} {when}: this machine is {why} than when the run was timed (eager MobileNetV2 {now:.1f} ms "
            f"at {threads} threads, the run's {'-'.join(f'{r:.1f}' for r in reference)} ms), so its timings "
            "would not be comparable with the rest of the run; nothing was written. Run it when the machine "
            f"is as it was (or set {TOLERANCE_ENV} to a larger ratio to accept the difference)"
        )
