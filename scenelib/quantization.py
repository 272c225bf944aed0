"""INT8 post-training quantization and ONNX deployment of a trained model.

Variants (``rundir.VARIANTS``): ``fp32`` (eager PyTorch), ``int8-torch``, ``onnx-fp32``, ``onnx-int8``.

PyTorch INT8 uses FX graph mode static PTQ (``torch.ao.quantization.quantize_fx``, x86 backend). Why not
PT2E: in PyTorch 2.14 the PT2E quantizers live in the separate ``torchao`` package, and a converted PT2E
graph is only fast after ``torch.compile``, which costs minutes per model on a 2-core CPU and a C++
toolchain at deployment. The FX result runs eagerly on fbgemm/x86 INT8 kernels and reloads as TorchScript.
FX mode is deprecated upstream and says so in a warning, which is recorded, not hidden.

ONNX Runtime INT8 is static QDQ quantization with per-channel weights, calibrated on the same training
images (never the test set). Both are calibrated on ``n_calibration`` training images.
"""

from __future__ import annotations

import copy
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_writer, write_bytes
from .features import freeze_same_padding, onnx_bytes, ort_session
from .recipes import OrtRecipe, TorchRecipe

ONNX_TOLERANCE = 1e-3  # max |logit difference| allowed between PyTorch and ONNX Runtime fp32


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's fp32 output differs from PyTorch's beyond the tolerance."""


# -- ONNX ----------------------------------------------------------------------------------------------------
def export_onnx(model: nn.Module, size: int, path: Path, check_inputs: np.ndarray, threads: int = 1) -> float:
    """Export with a dynamic batch axis, check the graph, compare with PyTorch; returns max |diff|."""
    import onnx

    write_bytes(path, onnx_bytes(model, size))  # temp file and rename: never half a model.onnx
    onnx.checker.check_model(str(path))
    session = ort_session(str(path), threads)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(check_inputs)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: check_inputs})[0]
    diff = float(np.abs(expected - got).max())
    if diff > ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise ExportMismatchError(
            f"ONNX Runtime differs from PyTorch by {diff:.3g} (tolerance {ONNX_TOLERANCE})"
        )
    return diff


class _Calibration:
    """onnxruntime CalibrationDataReader over a float32 array of normalised images."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 16) -> None:
        self._batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])
        self._name = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def _edge_nodes(model_path: Path) -> list[str]:
    """Names of the first convolution and the last Gemm/MatMul (the classifier) of an ONNX graph."""
    import onnx

    nodes = onnx.load(str(model_path)).graph.node
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    last = next((n.name for n in reversed(nodes) if n.op_type in ("Gemm", "MatMul")), None)
    return [n for n in (first, last) if n]


def quantize_onnx(
    fp32_path: Path, int8_path: Path, calibration: np.ndarray, recipe: OrtRecipe | None = None
) -> None:
    """Static INT8, QDQ format, per-channel weights, calibrated on ``calibration`` (training images), with
    the weight format, range, calibration method and fp32 layers of ``recipe`` (``recipes.py``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = recipe or OrtRecipe("u8s8")
    prepared = int8_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            _Calibration(calibration[: recipe.calibration_images(len(calibration))], "input"),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=recipe.reduce_range,
            weight_type=getattr(QuantType, recipe.weight_type),
            activation_type=QuantType.QUInt8,
            calibrate_method=getattr(CalibrationMethod, recipe.calibrate),
            nodes_to_exclude=_edge_nodes(prepared) if recipe.edges_fp32 else None,
        )
    finally:
        prepared.unlink(missing_ok=True)


# -- PyTorch ---------------------------------------------------------------------------------------------
def plain_batchnorm(model: nn.Module) -> nn.Module:
    """Replace timm's ``BatchNormAct2d`` (BatchNorm and activation in one module, traced by FX as a bare
    ``F.batch_norm`` call) by ``BatchNorm2d`` + activation, so FX fuses BatchNorm into the convolution."""
    for name, m in list(model.named_modules()):
        if type(m).__name__ != "BatchNormAct2d":
            continue
        bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        bn.load_state_dict({k: v for k, v in m.state_dict().items() if "." not in k})
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, nn.Sequential(bn, m.drop, m.act).eval())
    return model


def _kept_fp32(model: nn.Module, recipe: TorchRecipe) -> list[str]:
    """Module names the recipe keeps in fp32: the first convolution and the classifier, depthwise convs."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = []
    if recipe.edges_fp32:
        names += [convs[0][0]] if convs else []
        names += linears[-1:]
    if recipe.depthwise_fp32:
        names += [n for n, m in convs if m.groups > 1 and m.groups == m.in_channels]
    return names


def prepare_torch(model: nn.Module, size: int, example: torch.Tensor, recipe: TorchRecipe | None = None):
    """FX static PTQ, observers in place (x86 kernels; qnnpack on Arm), with the layers ``recipe`` keeps in
    fp32: feed it ``calibrate`` (any number of times; the observers accumulate), then ``convert``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    recipe = recipe or TorchRecipe("default")
    engine = "qnnpack" if platform.machine().lower() in ("arm64", "aarch64") else "x86"
    torch.backends.quantized.engine = engine
    float_model = plain_batchnorm(freeze_same_padding(copy.deepcopy(model).eval(), size)).eval()
    # x86 defaults: histogram observer with 7-bit activations (reduce_range), per-channel weights. Full 8-bit
    # activations saturate fbgemm's kernels even on VNNI CPUs (MobileNetV2 fell to chance level).
    mapping = get_default_qconfig_mapping(engine)
    for name in _kept_fp32(float_model, recipe):
        mapping = mapping.set_module_name(name, None)
    return prepare_fx(float_model, mapping, (example[:1],))


def calibrate(prepared: nn.Module, images: torch.Tensor, batch: int = 16) -> None:
    """Run normalised training images through the observers, in batches of ``batch``."""
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            prepared(images[i : i + batch])


def convert(prepared: nn.Module, keep: bool = False) -> nn.Module:
    """The INT8 model from the observers seen so far; ``keep``: convert a copy, so that calibration can go
    on (a quick speed check on the first images, then the rest)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    return convert_fx(copy.deepcopy(prepared) if keep else prepared).eval()


def quantize_torch(
    model: nn.Module, size: int, calibration: torch.Tensor, recipe: TorchRecipe | None = None
) -> nn.Module:
    """FX static PTQ calibrated on ``calibration`` (normalised training images), in one call."""
    prepared = prepare_torch(model, size, calibration, recipe)
    calibrate(prepared, calibration)
    return convert(prepared)


def save_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript keeps the quantized graph and its packed weights in one file that reloads with
    ``torch.jit.load`` (no Python class definitions needed)."""
    with torch.inference_mode():
        scripted = torch.jit.freeze(torch.jit.trace(model, example).eval())
    with atomic_writer(path, "wb") as fh:
        torch.jit.save(scripted, fh)


def quantized_layers(model: nn.Module) -> dict[str, int]:
    """How many modules of each kind the converted model holds (quantized vs float), for the notebook."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if len(list(m.children())) == 0:
            kind = type(m).__module__.split(".")
            key = ("int8 " if "quantized" in kind else "fp32 ") + type(m).__name__
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
