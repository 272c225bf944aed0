"""Where training runs: ``--device auto|cpu|cuda|cuda:N|mps``, resolved once, recorded, and the mixed
precision that goes with it.

On a CUDA GPU training uses autocast (bf16 where the GPU supports it, else fp16 with a gradient scaler),
channels_last and ``cudnn.benchmark``, and the frozen prefix's feature cache runs in PyTorch on the GPU (ONNX
Runtime's CPU session is the CPU path). INT8 is a CPU deployment format: quantization and every latency of
the INT8 stage run on the CPU whatever the device, and the report says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device that this machine's PyTorch cannot use; the message names the fix."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA if PyTorch sees a GPU, else Apple MPS, else the CPU; anything else is checked."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: this PyTorch sees no Apple GPU (MPS); use --device cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            built = torch.version.cuda or "none (a CPU-only build)"
            raise DeviceError(
                f"--device {spec}: PyTorch {torch.__version__} sees no CUDA GPU (its CUDA build: {built}). "
                "Check the driver with nvidia-smi and install a CUDA build of torch, or use --device cpu"
            )
        index = 0 if spec == "cuda" else spec.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered 0 to {torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", int(index))
    raise DeviceError(f"unknown --device {spec!r}; valid: {DEVICE_CHOICES}")


def device_record(device: torch.device) -> dict:
    """What run.json and the report say about the training device."""
    record: dict = {"device": str(device), "type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(
            name=props.name,
            memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16=torch.cuda.is_bf16_supported(),
            amp_dtype=str(amp_dtype(device)).removeprefix("torch."),
        )
    return record


def amp_dtype(device: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype for training on ``device``: bf16 on GPUs that support it, else fp16; on the CPU
    none unless asked (bf16 autocast on a CPU without AMX or AVX-512 BF16 is slower than fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16:
        return torch.bfloat16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A scaler that only scales for fp16 (bf16 and fp32 have the range to do without); disabled otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def prepare(device: torch.device) -> None:
    """Per-process settings for the device (cuDNN picks the fastest kernels for the fixed input size)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.set_device(device)
