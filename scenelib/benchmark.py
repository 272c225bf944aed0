"""CPU inference cost: latency (median and p90), throughput, parameters, MACs, size, peak memory.

Latency on a shared machine is noisy, so candidates are timed *interleaved*: round after round, each
candidate runs a few timed calls, and every call's time is kept. Warm-up calls are never timed.
MACs come from ptflops, which counts multiply-accumulates (1 GMac = 1e9 MACs, about 2e9 FLOPs).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

Infer = Callable[[], object]


@dataclass
class Timing:
    times_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times_ms, 90))

    def summary(self) -> dict:
        return {
            "median_ms": self.median,
            "p90_ms": self.p90,
            "min_ms": float(np.min(self.times_ms)),
            "runs": len(self.times_ms),
        }


def time_interleaved(
    candidates: dict[str, Infer], warmup: int = 3, rounds: int = 10, runs_per_round: int = 3
) -> dict[str, Timing]:
    """Time each zero-argument callable ``rounds * runs_per_round`` times, interleaving candidates."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(runs_per_round):
                start = time.perf_counter()
                fn()
                timings[name].times_ms.append((time.perf_counter() - start) * 1000.0)
    return timings


def torch_infer(model: nn.Module, x: torch.Tensor) -> Infer:
    model = model.eval()

    def run():
        with torch.inference_mode():
            return model(x)

    return run


def onnx_infer(session, x: np.ndarray) -> Infer:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def count_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward pass at ``size`` x ``size`` (ptflops, PyTorch backend)."""
    from ptflops import get_model_complexity_info

    macs, _ = get_model_complexity_info(
        model.eval(),
        (3, size, size),
        as_strings=False,
        print_per_layer_stat=False,
        verbose=False,
        backend="pytorch",
    )
    return int(macs)


def state_dict_mb(model: nn.Module) -> float:
    """Serialized size of the weights (what a deployment ships), in MB (1e6 bytes)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def file_mb(path: str | os.PathLike) -> float:
    return os.path.getsize(path) / 1e6


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Hand memory that malloc keeps cached back to the OS (glibc), so the next peak is a real one."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure as is
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_activation_mb(model: nn.Module, x: torch.Tensor) -> float | None:
    """Memory the process grows by during one forward pass (activations and workspace), in MB.

    Linux: after a warm-up call, release malloc's cached memory, reset the peak-RSS counter
    (``/proc/self/clear_refs``), run once and read ``VmHWM``. None where that is not available.
    """
    model = model.eval()
    with torch.inference_mode():
        model(x)  # warm-up: first-call allocations are not inference memory
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    before = _status_kb("VmRSS")
    with torch.inference_mode():
        model(x)
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1e3


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import onnxruntime
    import torchvision

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }
