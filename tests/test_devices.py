"""--device: resolution and its errors, and the mixed-precision and GPU code paths exercised on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenelib.devices import DeviceError, amp_dtype, device_record, grad_scaler, resolve_device
from scenelib.features import device_runner, torch_runner
from scenelib.models import MODELS, build_classifier
from scenelib.pipeline import main
from scenelib.stages.train import resolve_strategy
from scenelib.training import TrainConfig, train_model

from .conftest import write_image_tree
from .test_training_evaluation import colour_split

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


def test_auto_is_the_cpu_here_and_cpu_is_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if (
        not torch.cuda.is_available()
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    assert device_record(torch.device("cpu")) == {"device": "cpu", "type": "cpu"}


@NO_CUDA
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_names_the_fix(spec):
    with pytest.raises(DeviceError, match=r"sees no CUDA GPU.*nvidia-smi.*--device cpu"):
        resolve_device(spec)


def test_unknown_device_lists_the_choices():
    with pytest.raises(DeviceError, match=r"unknown --device 'tpu'; valid: auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")


@NO_CUDA
def test_the_command_line_refuses_cuda_before_writing_anything(tmp_path, capsys):
    data = write_image_tree(tmp_path / "data", ["a", "b"], 4)
    out = tmp_path / "out"
    assert (
        main(["--dataset", "folder", "--data-dir", str(data), "--output", str(out), "--device", "cuda"]) == 2
    )
    assert "sees no CUDA GPU" in capsys.readouterr().err and not out.exists()


def test_auto_strategy_is_full_fine_tuning_on_a_gpu_only():
    assert resolve_strategy("auto", "auto", "partial", "cuda:0") == "full"
    assert resolve_strategy("auto", "auto", "partial", "cpu") == "partial"
    assert resolve_strategy("auto", "none", "partial", "cuda:0") == "scratch"
    assert resolve_strategy("linear", "auto", "partial", "cuda:0") == "linear"


def test_fp16_gets_a_gradient_scaler_and_bf16_does_not():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None and amp_dtype(cpu, cpu_bf16=True) == torch.bfloat16
    assert not grad_scaler(cpu, torch.bfloat16).is_enabled()
    assert not grad_scaler(cpu, None).is_enabled()


def test_the_gpu_feature_runner_gives_the_cpu_runners_features():
    """device_runner is the cache's GPU path; on the CPU device it must agree with the CPU runner."""
    net = build_classifier("simple_cnn", 3).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = torch_runner(net)(x)
    np.testing.assert_allclose(device_runner(net, torch.device("cpu"))(x), expected, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_training_runs_in_bf16_and_keeps_fp32_weights():
    """The mixed-precision path of fit(), on the CPU (PyTorch's bf16 autocast): activations in bf16, master
    weights in fp32, and the model still learns the separable colours."""
    spec = MODELS["simple_cnn"]
    model = build_classifier("simple_cnn", 3)
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    cfg = TrainConfig(
        strategy="scratch", epochs=4, lr=3e-3, augmentation="light", tta=False, batch_size=8, cpu_bf16=True
    )
    result = train_model(
        model,
        spec,
        (0.5,) * 3,
        (0.25,) * 3,
        *(colour_split(n, 32, s) for n, s in ((8, 0), (3, 1), (4, 2))),
        3,
        cfg,
    )
    assert torch.bfloat16 in seen  # training steps ran under autocast
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert result.test_probs.dtype == np.float32
    assert max(h["val_accuracy"] for h in result.history) > 1 / 3 + 0.2  # it learns (chance: 1/3)
