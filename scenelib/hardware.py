"""What machine this is: CPU name and the instruction-set features that decide INT8 speed and accuracy.

INT8 results depend on the CPU. With VNNI (AVX-512 VNNI or AVX-VNNI) or AMX, u8 x s8 products are summed
in 32 bits; on AVX2 and on AVX-512 without VNNI the kernels (ONNX Runtime's U8S8 GEMM, fbgemm) sum pairs of
products in 16 bits first, which saturates with full-range 8-bit weights. Every quantization recipe is
therefore chosen from the features detected here, and every timing is reported beside them and beside a
reference latency (eager MobileNetV2, batch 1), so numbers from two machines are never silently compared.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable

from .rundir import RunDir, read_json

FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _proc_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_features(flags: Iterable[str] | None = None) -> dict[str, bool]:
    """{feature: present} for ``FEATURES``; from ``flags`` if given (tests), else /proc/cpuinfo, else
    PyTorch's own CPU capability (macOS, Windows: AVX-512 reported without telling VNNI apart)."""
    found = set(flags) if flags is not None else _proc_flags()
    if found is None:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        found = {"avx2"} if capability in ("AVX2", "AVX512") else set()
        if capability == "AVX512":
            found.add("avx512f")
    return {f: f in found for f in FEATURES}


def int8_class(features: dict[str, bool], machine: str | None = None) -> str:
    """The INT8 kernel family of this CPU: ``vnni`` (VNNI or AMX: 32-bit accumulation), ``avx512`` and
    ``avx2`` (16-bit pair sums: U8S8 can saturate), ``x86-other``, or ``arm`` / ``other``."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm"
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    if features.get("amx_int8") or features.get("avx512_vnni") or features.get("avx_vnni"):
        return "vnni"
    if features.get("avx512f"):
        return "avx512"
    return "avx2" if features.get("avx2") else "x86-other"


def describe(features: dict[str, bool], kind: str) -> str:
    """'AVX2 only (no AVX-512, no VNNI)'-style text for tables and footers."""
    have = [f.upper().replace("_", "-") for f, on in features.items() if on]
    lacking = [
        label
        for label, keys in (("AVX-512", ("avx512f",)), ("VNNI", ("avx512_vnni", "avx_vnni", "amx_int8")))
        if not any(features.get(k) for k in keys)
    ]
    text = ", ".join(have) or "no AVX2"
    if lacking:
        text += f" (no {', no '.join(lacking)})"
    return f"{text}; INT8 class {kind}"


def reference_latency_ms(threads: int, calls: int = 20) -> float:
    """Median batch-1 latency of an eager, randomly initialised torchvision MobileNetV2 at 224 px: a speed
    index for the machine, printed beside every timing so that runs on two machines can be told apart."""
    import numpy as np
    import torch
    import torchvision

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = torchvision.models.mobilenet_v2().eval()
        x = torch.randn(1, 3, 224, 224)
        times = []
        with torch.inference_mode():
            for i in range(calls + 3):
                start = time.perf_counter()
                model(x)
                if i >= 3:
                    times.append((time.perf_counter() - start) * 1000.0)
        return float(np.median(times))
    finally:
        torch.set_num_threads(previous)


def machine_record(threads: int, reference: bool = True) -> dict:
    """What run.json records about this machine (the stages read it from there)."""
    import torch

    features = cpu_features()
    kind = int8_class(features)
    record = {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "features": features,
        "int8_class": kind,
        "summary": describe(features, kind),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if reference:
        record["mobilenet_v2_eager_ms"] = round(reference_latency_ms(threads), 2)
    return record


def machine_of(run: RunDir, threads: int) -> dict:
    """The machine record the pipeline wrote to run.json (detected here if the notebook runs alone)."""
    if run.run_json.exists():
        machine = read_json(run.run_json).get("machine")
        if machine:
            return machine
    return machine_record(threads, reference=False)
