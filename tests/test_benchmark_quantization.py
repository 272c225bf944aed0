"""Benchmark mechanics and the INT8 / ONNX variants, on real (small) models and real ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from scenelib import quantization
from scenelib.benchmark import count_macs, peak_activation_mb, state_dict_mb, time_interleaved
from scenelib.features import freeze_same_padding, onnx_bytes, ort_session
from scenelib.models import build_classifier
from scenelib.quantization import (
    ExportMismatchError,
    calibrate,
    convert,
    export_onnx,
    plain_batchnorm,
    prepare_torch,
    quantize_onnx,
    quantize_torch,
    quantized_layers,
)


def test_interleaved_timing_counts_and_excludes_warm_up():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    timings = time_interleaved({"a": make("a"), "b": make("b")}, warmup=4, rounds=5, runs_per_round=2)
    assert calls == {"a": 14, "b": 14}
    assert all(len(t.times_ms) == 10 for t in timings.values())
    t = timings["a"]
    assert t.summary()["runs"] == 10 and t.p90 >= t.median >= min(t.times_ms)


def test_macs_of_known_layers_equal_the_hand_count():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_macs(conv, 8) == 8 * 8 * 8 * 3 * 3 * 3  # output pixels x out channels x kernel volume
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 5, bias=False))
    assert count_macs(linear, 2) == 12 * 5
    assert state_dict_mb(linear) > 60 * 4 / 1e6


def test_peak_memory_sees_a_large_activation():
    big = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU())  # 64 x 512 x 512 fp32 output = 67 MB
    small = nn.Sequential(nn.Conv2d(3, 4, 1))
    x = torch.randn(1, 3, 512, 512)
    peak_big = peak_activation_mb(big, x)
    if peak_big is None:
        pytest.skip("peak RSS cannot be reset on this system")
    assert peak_big > 50 and peak_activation_mb(small, x) < peak_big / 3


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_classifier("simple_cnn", 4).eval()


def test_onnx_export_matches_pytorch_and_int8_quantizes(small_model, tmp_path):
    x = torch.randn(8, 3, 64, 64).numpy()
    diff = export_onnx(small_model, 64, tmp_path / "m.onnx", x)
    assert diff < 1e-4
    session = ort_session(str(tmp_path / "m.onnx"), 1)
    assert session.run(None, {"input": np.concatenate([x, x])})[0].shape == (16, 4)  # dynamic batch axis
    quantize_onnx(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", x)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = ort_session(str(tmp_path / "m.int8.onnx"), 1).run(None, {"input": x})[0]
    with torch.inference_mode():
        ref = small_model(torch.from_numpy(x)).numpy()
    assert np.abs(int8 - ref).max() < 0.25 * np.abs(ref).max() + 1e-3


def test_export_mismatch_fails_loudly(small_model, tmp_path, monkeypatch):
    monkeypatch.setattr(quantization, "ONNX_TOLERANCE", -1.0)
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_onnx(small_model, 32, tmp_path / "m.onnx", torch.randn(2, 3, 32, 32).numpy())


def test_torch_int8_quantizes_the_convolutions(small_model):
    calibration = torch.randn(16, 3, 64, 64)
    qmodel = quantize_torch(small_model, 64, calibration)
    layers = quantized_layers(qmodel)
    assert any(k.startswith("int8 ") and "Conv" in k for k in layers), layers
    with torch.inference_mode():
        assert qmodel(calibration[:2]).shape == (2, 4)


def test_calibrating_in_two_parts_gives_the_one_call_model(small_model):
    """Stage 04 times a build calibrated on the first images, then goes on calibrating the same observers:
    the model it keeps is the one a single calibration over all images gives."""
    torch.manual_seed(0)
    calibration, x = torch.randn(48, 3, 64, 64), torch.randn(4, 3, 64, 64)
    whole = quantize_torch(small_model, 64, calibration)
    observed = prepare_torch(small_model, 64, calibration)
    calibrate(observed, calibration[:16])
    quick = convert(observed, keep=True)
    calibrate(observed, calibration[16:])
    two_parts = convert(observed)
    with torch.inference_mode():
        assert torch.equal(two_parts(x), whole(x))
        assert not torch.equal(quick(x), whole(x))  # the quick build saw fewer images: other scales


def test_same_padding_is_frozen_without_changing_outputs():
    model = build_classifier("efficientnet_lite0", 3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        before = model(x)
        frozen = plain_batchnorm(freeze_same_padding(model, 224))
        names = {type(m).__name__ for m in frozen.modules()}
        assert "Conv2dSame" not in names and "BatchNormAct2d" not in names
        assert torch.allclose(frozen(x), before, atol=1e-5)
    torch.fx.symbolic_trace(frozen)  # traceable now, which FX quantization needs


def test_the_onnx_export_has_no_run_time_padding_and_leaves_the_model_alone():
    """The feature cache's and the deployed ONNX graph pad by constants that ONNX Runtime fuses into the
    convolutions, instead of computing the padding from the input shape on every call."""
    import onnx

    model = build_classifier("efficientnet_lite0", 3).eval()
    graph = onnx.load_from_string(onnx_bytes(model, 224)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Shape", "Ceil", "Gather"}, ops
    assert any(type(m).__name__ == "Conv2dSame" for m in model.modules())  # exported from a copy
    x = torch.randn(2, 3, 224, 224)
    session = ort_session(onnx_bytes(model, 224), 1)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
