"""Where a stage's notebook runs. ``pipeline.py`` decides what runs and in which order, never where.

A small registry of executors over one base (``base.py``): ``local`` runs a notebook through papermill in a
kernel on this machine; ``ray`` (``ray.py``, an optional extra) runs the trainings of many models as Ray
tasks, each doing exactly what the local executor does.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    KERNELSPEC,
    NOTEBOOKS,
    REPO,
    ExecutorError,
    Failure,
    Interrupts,
    Job,
    LocalExecutor,
    describe_failure,
    run_job,
)
from .ray import RayExecutor

EXECUTORS: dict[str, Callable[[str, int, str], object]] = {
    "local": lambda address, threads, device: LocalExecutor(),
    "ray": RayExecutor,  # starts or joins a Ray instance when built
}


def make_executor(name: str, address: str = "", threads: int = 1, device: str = "cpu"):
    """An executor of the registry by name; release it with ``close()``."""
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    return EXECUTORS[name](address, threads, device)


__all__ = [
    "EXECUTORS",
    "KERNELSPEC",
    "NOTEBOOKS",
    "REPO",
    "ExecutorError",
    "Failure",
    "Interrupts",
    "Job",
    "LocalExecutor",
    "RayExecutor",
    "describe_failure",
    "make_executor",
    "run_job",
]
