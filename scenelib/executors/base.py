"""The executors' base: a notebook job, how it runs on this machine, and how a failure is described.

The local executor runs a Jupytext notebook through papermill in a kernel on this machine. The kernel
imports ``scenelib`` from the checkout that runs it (its root first on ``PYTHONPATH``), not whichever copy
the virtual environment happens to have installed. Other executors (``ray.py``) build on this module and
never the reverse.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ..journal import PIPELINE_ENV
from ..progress import PROGRESS_ENV

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


class ExecutorError(RuntimeError):
    """The executor cannot run here (Ray missing, a cluster unreachable, storage not shared): one line."""


class Interrupts:
    """Ctrl-C is remembered as well as raised. A KeyboardInterrupt can be lost on its way up (raised inside
    a finalizer that a library's clean-up runs, which Python reports and drops), and a lost Ctrl-C would let
    the run carry on and exit 0; the runner asks after every stage and stops then at the latest."""

    seen = False

    @classmethod
    @contextlib.contextmanager
    def remembered(cls):
        """Install the remembering handler for the duration: in the main thread only, and not where Ctrl-C
        is ignored (a job started in the background by a script) - elsewhere a no-op."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ):
            yield
            return

        def on_sigint(signum, frame):
            cls.seen = True
            raise KeyboardInterrupt

        cls.seen = False
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            cls.seen = False
            # None: a handler installed from C, which Python cannot re-install; the default is the closest.
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    @classmethod
    def raise_if_seen(cls) -> None:
        if cls.seen:
            raise KeyboardInterrupt


def kernel_env(progress: Path | None = None) -> dict[str, str]:
    """Environment for the kernels: this checkout first on PYTHONPATH; where progress bars report to."""
    paths = [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), PIPELINE_ENV: "1"}
    if progress is not None:
        env[PROGRESS_ENV] = str(progress)
    return env


@dataclass
class Job:
    """One notebook execution: what ``execute`` takes, plus the key the driver knows it by."""

    key: str
    stage: str
    params: dict
    output: Path
    progress: Path | None = None


Failure = tuple[str, str] | None  # (exception name, one-line message), or None when the stage finished


def run_job(job: Job, executor=None) -> Failure:
    """Run one job's notebook (with ``executor``, default local) and return what went wrong, never raise:
    a notebook error is its model's failure, not the driver's (nor, under Ray, the task's)."""
    try:
        (executor or LocalExecutor()).execute(job.stage, job.params, job.output, job.progress)
    except Exception as exc:
        return describe_failure(exc)
    return None


class LocalExecutor:
    """Runs notebooks one after another in papermill kernels on this machine."""

    name = "local"
    parallel = False

    def check_shared(self, root: Path) -> None:
        """Nothing to check: the kernels run on this machine."""

    def close(self) -> None:
        """Nothing to release."""

    def execute(self, stage: str, params: dict, output: Path, progress: Path | None = None) -> None:
        """Run ``notebooks/<stage>.py``; the executed copy (with any traceback) is kept at ``output``.
        The kernel's progress bars write their state to ``progress`` (see ``progress.py``)."""
        import jupytext
        import papermill

        nb = jupytext.read(NOTEBOOKS / f"{stage}.py")
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        output.parent.mkdir(parents=True, exist_ok=True)
        env = kernel_env(progress)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel manager passes this process's environment on
        try:
            papermill.execute_notebook(
                nb,
                str(output),
                parameters=params,
                kernel_name="python3",
                cwd=str(NOTEBOOKS),
                progress_bar=False,
                log_output=False,
                start_timeout=180,
                # A finished or interrupted stage's kernel is killed, not asked to stop: a kernel asked while
                # it runs a cell prints ZMQ tracebacks into the user's terminal. Files are written atomically.
                shutdown_kernel="immediate",
                # ipykernel warns on every start that its local TCP socket is unencrypted; errors still show.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def describe_failure(exc: Exception) -> tuple[str, str]:
    """(exception name, one-line message) of a papermill execution error or any other exception."""
    name = getattr(exc, "ename", type(exc).__name__)
    value = str(getattr(exc, "evalue", exc)).strip().splitlines()
    cell = getattr(exc, "exec_count", None)
    where = f" (cell {cell})" if cell is not None else ""
    return name, (value[0] if value else "")[:300] + where
