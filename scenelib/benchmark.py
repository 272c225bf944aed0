"""CPU inference cost: latency (median and p90), throughput, parameters, MACs, size, peak memory.

Latency on a shared machine is noisy, so candidates are timed *interleaved*: round after round, each
candidate runs a few timed calls, and every call's time is kept. Warm-up calls are never timed.
MACs come from ptflops' operator-level backend: multiply-accumulates of convolutions and matrix products
(1 GMAC = 1e9 MACs, about 2e9 FLOPs).
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


NOISY_P90_RATIO = 1.5  # p90 / median above this: the machine was busy while timing
NOISY_ROUND_SPREAD = 1.5  # slowest / fastest round median above this: the load changed during timing


@dataclass
class Timing:
    times_ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times_ms, 90))

    @property
    def spread(self) -> float:
        """Slowest over fastest round median (1.0 = every round alike)."""
        return max(self.round_medians) / min(self.round_medians) if len(self.round_medians) > 1 else 1.0

    @property
    def noisy(self) -> bool:
        """Unstable timing: no speed claim is made from it (the report marks it)."""
        return self.p90 / self.median > NOISY_P90_RATIO or self.spread > NOISY_ROUND_SPREAD

    def summary(self) -> dict:
        return {
            "median_ms": self.median,
            "p90_ms": self.p90,
            "min_ms": float(np.min(self.times_ms)),
            "runs": len(self.times_ms),
            "round_spread": self.spread,
            "noisy": self.noisy,
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
            this_round = []
            for _ in range(runs_per_round):
                start = time.perf_counter()
                fn()
                this_round.append((time.perf_counter() - start) * 1000.0)
            timings[name].times_ms += this_round
            timings[name].round_medians.append(float(np.median(this_round)))
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
    """Multiply-accumulates of one forward pass at ``size`` x ``size`` (convolutions and matrix products).

    ptflops' ``aten`` backend counts at the operator level, so layers of any module type are counted (its
    module-level backend matches types exactly and counts timm's ``Conv2dSame`` as zero); the totals agree
    with ``torch.utils.flop_counter`` (FLOPs / 2)."""
    from ptflops import get_model_complexity_info

    macs, _ = get_model_complexity_info(
        model.eval(),
        (3, size, size),
        as_strings=False,
        print_per_layer_stat=False,
        verbose=False,
        backend="aten",
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


def machine_info() -> dict:
    import onnxruntime
    import torchvision

    from .hardware import cpu_name

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


def gpu_latency_ms(
    model: torch.nn.Module, size: int, device: torch.device, batch: int, runs: int = 50
) -> dict:
    """Per-batch GPU latency from CUDA events after warm-up and synchronisation (median and p90, ms)."""
    model = model.eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(10):
            model(x)
        torch.cuda.synchronize(device)
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    model.to("cpu", memory_format=torch.contiguous_format)
    return {"batch": batch, "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}
