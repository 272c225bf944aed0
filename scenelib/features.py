"""The feature cache: run the frozen prefix of a model once per image view, keep the outputs in fp16.

Training then only runs the trainable suffix, so a partial fine-tune costs seconds per epoch on a CPU.
The prefix runs in ONNX Runtime, which on a small x86 CPU is several times faster than eager PyTorch for
these convolution stacks (it falls back to PyTorch, channels-last, if the export fails).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import progress
from .transforms import View, normalize

Runner = Callable[[np.ndarray], np.ndarray]


def torch_runner(module: nn.Module) -> Runner:
    """The module in PyTorch on the CPU (channels_last, fp32)."""
    return device_runner(module, torch.device("cpu"))


def device_runner(module: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> Runner:
    """The module in PyTorch on ``device`` (channels_last, autocast when ``dtype`` is given): the feature
    cache's GPU path, and ``torch_runner`` on the CPU."""
    module = module.eval().to(device, memory_format=torch.channels_last)

    def run(x: np.ndarray) -> np.ndarray:
        batch = (
            torch.from_numpy(x).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        )
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return module(batch).float().cpu().numpy()

    return run


def onnx_bytes(module: nn.Module, size: int, input_channels: int = 3) -> bytes:
    """Export a module to ONNX in memory, with a dynamic batch axis, for ``size`` px inputs (any dynamic
    'same' padding frozen for that size, on a copy)."""
    module.eval()  # in place, as before any copy: the caller's module is left in eval mode either way
    if any(type(m).__name__ == "Conv2dSame" for m in module.modules()):
        module = freeze_same_padding(copy.deepcopy(module), size, input_channels)
    buffer = io.BytesIO()
    example = torch.randn(1, input_channels, size, size)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript
        # and is much slower to run; the exported graph is checked against PyTorch by the callers.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            module.eval(),
            example,
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def freeze_same_padding(model: nn.Module, size: int, input_channels: int = 3) -> nn.Module:
    """Replace TensorFlow-style dynamic 'same' convolutions (timm ``Conv2dSame``) by a fixed ZeroPad2d + Conv2d
    for one input size, in place. Their padding is computed from the input shape at run time, which FX cannot
    trace and which ONNX Runtime runs as a chain of shape ops and a separate Pad: frozen, it fuses the
    padding into the convolution (EfficientNet-Lite0 ran 27% faster at batch 1 and 36% at batch 16 on an
    AVX2 EPYC, with identical outputs)."""
    dynamic = {name: m for name, m in model.named_modules() if type(m).__name__ == "Conv2dSame"}
    if not dynamic:
        return model
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, n=n: shapes.__setitem__(n, a[0].shape[-2:]))
        for n, m in dynamic.items()
    ]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, input_channels, size, size))
    for h in hooks:
        h.remove()
    for name, conv in dynamic.items():
        pads = []
        for dim in (1, 0):  # ZeroPad2d takes (left, right, top, bottom)
            i, k, s, d = shapes[name][dim], conv.kernel_size[dim], conv.stride[dim], conv.dilation[dim]
            total = max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
            pads += [total // 2, total - total // 2]
        plain = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
        )
        plain.load_state_dict(conv.state_dict())
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, nn.Sequential(nn.ZeroPad2d(tuple(pads)), plain))
    return model


def ort_session(model: bytes | str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Idle worker threads would otherwise spin after each call, stealing the cores from whatever runs next
    # (another session, PyTorch): on a 2-core machine that distorts every interleaved timing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def onnx_runner(module: nn.Module, size: int, threads: int) -> Runner:
    session = ort_session(onnx_bytes(module, size), threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def make_runner(
    module: nn.Module, size: int, threads: int | None = None, engine: str = "onnx"
) -> tuple[Runner, str]:
    """A fast inference function for the frozen prefix; returns (runner, engine actually used)."""
    threads = threads or torch.get_num_threads()
    if engine == "onnx":
        try:
            return onnx_runner(module, size, threads), "onnxruntime"
        except Exception as exc:  # an op the exporter does not support: PyTorch still works
            warnings.warn(f"ONNX export of the frozen prefix failed ({exc}); using PyTorch", stacklevel=2)
    return torch_runner(module), "torch"


class CacheAllocator:
    """Where the feature cache's arrays live: in RAM while their total stays within ``budget`` bytes, else
    in a memory-mapped file under ``folder``, whose pages the kernel writes back and drops under memory
    pressure instead of the process running out of memory. The file is unlinked as soon as it is mapped:
    nothing is left behind, even when the process is killed. ``spilled`` lists the splits put on disk."""

    def __init__(self, budget: int, folder: Path | None) -> None:
        self.budget, self.folder = budget, folder
        self.in_ram = 0
        self.spilled: list[str] = []

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> torch.Tensor:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if self.folder is None or self.in_ram + nbytes <= self.budget:
            self.in_ram += nbytes
            return torch.empty(shape, dtype=dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix = f"features-{name.replace(' ', '-')}-"
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".bin", dir=self.folder)
        os.close(fd)
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        array = np.memmap(path, dtype=np_dtype, mode="w+", shape=shape)
        with contextlib.suppress(OSError):  # Windows keeps a mapped file: it then stays until deleted
            os.unlink(path)
        self.spilled.append(name)
        return torch.from_numpy(array)


def spilling_allocator(budget: int | None = None) -> CacheAllocator:
    """The feature cache's allocator: RAM up to ``memory.cache_ram_budget()``, then a memory-mapped file in
    ``<cache folder>/features`` (``$SCENELIB_CACHE_DIR``, else ``~/.cache/scenelib``)."""
    from .integrity import cache_dir
    from .memory import cache_ram_budget

    return CacheAllocator(cache_ram_budget() if budget is None else budget, cache_dir() / "features")


# Images per call when ONNX Runtime runs many images on the CPU (the feature cache, validation and test
# passes). Small batches keep a layer's activations in the CPU's cache: on a 2-core AVX2 EPYC, per image and
# interleaved, MobileNetV2's frozen prefix took 6.4 ms at batch 4 against 6.9 at 16, EfficientNet-Lite0's
# 10.0 against 10.9, and the whole fp32 models 7.9 against 10.7 ms (MobileNetV2) and 10.8 against 12.5 ms
# (Lite0) at batch 32; INT8 models ran 11-13% faster at batch 4 than at 32.
BULK_BATCH = 4


def extract_views(
    runner: Runner,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    views: Sequence[View],
    batch_size: int = BULK_BATCH,
    desc: str = "features",
    needed: Sequence[torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float16,
    allocate: Callable[[tuple[int, ...], torch.dtype, str], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``runner`` over every view of every image -> ``dtype`` tensor [V, N, ...] (fp16 for feature caches,
    fp32 for predictions that are compared across runtimes). With ``needed`` (per view,
    the indices of the images wanted in it) only those entries are computed; the others are NaN, so reading
    one by mistake shows up as a NaN loss rather than as silently wrong features. ``allocate(shape, dtype,
    desc)`` makes the output array (default: ``torch.empty``; ``CacheAllocator`` spills large ones to disk)."""
    out: torch.Tensor | None = None
    wanted = [torch.arange(len(images)) for _ in views] if needed is None else list(needed)
    wanted += [torch.empty(0, dtype=torch.long)] * (len(views) - len(wanted))
    with progress.bar(total=sum(len(w) for w in wanted), desc=desc, unit="img", mininterval=2.0) as bar:
        for v, view in enumerate(views):
            for start in range(0, len(wanted[v]), batch_size):
                idx = wanted[v][start : start + batch_size]
                batch = normalize(view(images[idx]), mean, std).contiguous()
                feats = torch.from_numpy(runner(batch.numpy())).to(dtype)
                if out is None:
                    shape = (len(views), len(images), *feats.shape[1:])
                    out = allocate(shape, dtype, desc) if allocate else torch.empty(shape, dtype=dtype)
                    if needed is not None:
                        out.fill_(math.nan)
                out[v, idx] = feats
                bar.update(len(idx))
    assert out is not None, "no images to extract features from"
    return out
