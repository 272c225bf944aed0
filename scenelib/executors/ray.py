"""Training stages as Ray tasks: many models (and repeats) at once, on one machine or a cluster.

Each ``02_train_model`` execution becomes one Ray task that runs the notebook through papermill exactly as
the local executor does (``LocalExecutor.execute`` inside the task), with a resource request of one GPU when
training on CUDA and ``--threads`` CPUs otherwise, so Ray never runs more trainings than fit. The other
stages stay on the driver. The run directory must be on storage every node sees (a probe task checks it);
this checkout must be at the same path on every node, with the same packages (``pip install -e '.[ray]'``).

Ray is an optional extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from .base import (
    REPO,
    ExecutorError,
    Failure,
    Interrupts,
    Job,
    LocalExecutor,
    describe_failure,
    run_job,
)

INSTALL = "pip install -e '.[ray]'"


def _probe(root: str, name: str) -> str:
    """Written by a task: the driver reads it back to know the run directory is shared."""
    path = Path(root) / name
    path.write_text(socket.gethostname())
    return socket.gethostname()


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address (``host:port``) that accepts a TCP connection, or an ExecutorError in one line
    (``ray.init`` alone would keep retrying for a minute)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r} is not host:port (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ExecutorError(
            f"no Ray cluster at {address} ({exc.strerror or exc}); start one with `ray start --head` "
            "there, or leave out --ray-address for a local Ray instance"
        ) from None


class RayExecutor:
    """Runs independent stages as Ray tasks; ``execute`` (one stage) runs on the driver like the local one."""

    name = "ray"
    parallel = True

    def __init__(self, address: str = "", threads: int = 1, device: str = "cpu") -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
        if address:
            check_address(address)
        self.ray = ray
        # Workers import scenelib and find the notebooks from this checkout (the same path on every node).
        env = {
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        }
        ray.init(
            address=address or None,
            runtime_env={"env_vars": env},
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
        self.resources = (
            {"num_gpus": 1, "num_cpus": 1} if device.startswith("cuda") else {"num_cpus": threads}
        )
        self.local = LocalExecutor()
        self._task = ray.remote(max_retries=0)(run_job)  # the local executor's work, inside the task

    def execute(self, stage: str, params: dict, output: Path, progress: Path | None = None) -> None:
        self.local.execute(stage, params, output, progress)

    def check_shared(self, root: Path) -> str:
        """The host a task ran on, after checking it wrote into ``root`` where this process can read it."""
        name = f".ray-probe-{uuid.uuid4().hex}"
        try:
            host = self.ray.get(self.ray.remote(num_cpus=0)(_probe).remote(str(root), name), timeout=120)
        except Exception as exc:
            name_, msg = describe_failure(exc)
            raise ExecutorError(f"a Ray task could not write to {root}: {name_}: {msg}") from None
        probe = root / name
        if not probe.exists():
            raise ExecutorError(
                f"a Ray task on {host} wrote into {root} but this machine does not see it: put --output on "
                "storage every node mounts at the same path"
            )
        probe.unlink()
        return host

    def run_many(self, jobs: Iterable[Job], done: Callable[[Job, Failure], None]) -> None:
        """Submit every job; call ``done(job, failure)`` as each finishes. A lost task (a worker or node that
        died) is that job's failure; Ctrl-C cancels whatever still runs."""
        ray = self.ray
        pending = {self._task.options(**self.resources).remote(job): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                Interrupts.raise_if_seen()  # a Ctrl-C lost on its way up still stops the run within a second
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        failure = ray.get(ref)
                    except Exception as exc:  # the task itself died: a crashed worker, a lost node
                        failure = describe_failure(exc)
                    done(job, failure)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        self.ray.shutdown()
