"""torchvision's weights path without a network: generated state dicts at the DEFAULT weights' cache file
names in a temporary ``TORCH_HOME``, loaded by the pipeline exactly as after a download, through the cache,
training, benchmark, both INT8 paths and the report."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from scenelib.models import MODELS
from scenelib.pipeline import main
from scenelib.rundir import RunDir, read_json

HEAVY = ("resnet50", "densenet121")
# Every other torchvision entry of the registry whose architecture is cheap to build at a small input size.
OTHERS = ("resnet101", "resnet152", "wide_resnet50_2", "vgg16", "efficientnet_b0")


def write_generated_weights(torch_home: Path, names: tuple[str, ...], seed: int = 0) -> dict[str, Path]:
    """Randomly initialised (seeded) state dicts where torchvision's weights API caches each model's
    DEFAULT weights: ``$TORCH_HOME/hub/checkpoints/<basename of Weights.DEFAULT.url>``."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        weights = torchvision.models.get_model_weights(MODELS[name].torchvision_name).DEFAULT
        path = folder / os.path.basename(weights.url)
        if not path.exists():
            torch.manual_seed(seed)
            kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
            if "resnet" in name:  # each residual branch starts at zero, as trained ResNets stay bounded:
                kwargs["zero_init_residual"] = True  # random branches overflow ResNet-152's fp16 cache
            arch = torchvision.models.get_model(MODELS[name].torchvision_name, weights=None, **kwargs)
            torch.save(arch.state_dict(), path)
        files[name] = path
    return files


@pytest.fixture
def generated_torch_home(tmp_path_factory, monkeypatch):
    """A temporary TORCH_HOME (inherited by the notebook kernels) holding generated DEFAULT weights."""
    home = tmp_path_factory.getbasetemp() / "torch_home"

    def fill(names: tuple[str, ...]) -> dict[str, Path]:
        return write_generated_weights(home, names)

    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() reads TORCH_HOME again
    return fill


def _run(data: Path, out: Path, models: tuple[str, ...], size: int) -> tuple[int, RunDir, str]:
    args = [
        *("--dataset", "folder", "--data-dir", str(data), "--models", ",".join(models)),
        *("--epochs", "1", "--output", str(out), "--threads", "2", "--calibration-images", "8", "--quick"),
        *("--input-size", str(size), "--weights", "torchvision"),
    ]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = main(args)
    print(log.getvalue())
    return code, RunDir(out), log.getvalue()


def _check_run(run: RunDir, models: tuple[str, ...], files: dict[str, Path]) -> None:
    assert run.report_html.exists()
    results = pd.read_csv(run.results_csv)
    fp32 = results[results.variant == "fp32"].set_index("model")
    for model in models:
        row = fp32.loc[model]
        assert row.status == "ok", (model, row.status)
        assert row.weights.startswith("torchvision:"), row.weights
        summary = read_json(run.train_json(model))
        assert summary["frozen_blocks"] > 0  # partial fine-tuning through the feature cache
        assert Path(summary["weights_file"]) == files[model]  # the generated file, read from the cache
    quant = read_json(run.quantization_json)["models"]
    for model in models:
        variants = quant[model]["variants"]
        assert variants["onnx-fp32"]["status"] == "ok", variants["onnx-fp32"]["status"]
        for name in ("onnx-int8", "int8-torch"):  # built, or refused with a reason: never an exception
            assert not variants[name]["status"].startswith("failed"), (model, name, variants[name]["status"])
    info = read_json(run.run_json)
    assert set(info["plan"]["models"]) >= set(models)


def test_default_weights_load_from_the_generated_cache(generated_torch_home):
    """Every torchvision entry of the registry finds its DEFAULT weights in the cache: not missing, loaded
    through the weights API (no download), recorded with the cache file and its hash."""
    from scenelib.weights import load_pretrained, missing_weights

    names = HEAVY + ("resnet101", "efficientnet_b0")
    files = generated_torch_home(names)
    for name in names:
        assert missing_weights(MODELS[name], "auto") is None
        arch, info = load_pretrained(MODELS[name], "torchvision")
        assert info.source == "torchvision" and Path(info.file) == files[name] and info.sha256
        saved = torch.load(files[name], weights_only=True)
        key = next(k for k in saved if k.endswith("weight"))
        assert torch.equal(arch.state_dict()[key], saved[key])


@pytest.mark.slow
def test_resnet50_and_densenet121_through_torchvision_cache(tiny_dataset, tmp_path, generated_torch_home):
    files = generated_torch_home(HEAVY)
    code, run, log = _run(tiny_dataset, tmp_path / "run", HEAVY, 32)
    assert code == 0, log
    _check_run(run, HEAVY, files)


@pytest.mark.slow
def test_other_registry_models_through_torchvision_cache(tiny_dataset, tmp_path, generated_torch_home):
    files = generated_torch_home(OTHERS)
    code, run, log = _run(tiny_dataset, tmp_path / "run", OTHERS, 32)
    assert code == 0, log
    _check_run(run, OTHERS, files)


@pytest.mark.slow
def test_inception_v3_with_its_aux_head_at_299(tiny_dataset, tmp_path, generated_torch_home):
    files = generated_torch_home(("inception_v3",))
    code, run, log = _run(tiny_dataset, tmp_path / "run", ("inception_v3",), 299)
    assert code == 0, log
    _check_run(run, ("inception_v3",), files)
