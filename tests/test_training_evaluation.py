"""Training on cached features and on images, and the metrics computed from predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenelib import training
from scenelib.evaluation import Predictions, classification_metrics, expected_calibration_error, misclassified
from scenelib.features import extract_views
from scenelib.hardware import cpu_features
from scenelib.models import MODELS, HeadConfig, build_classifier, to_scene_classifier
from scenelib.training import (
    SplitData,
    TrainConfig,
    needed_pairs,
    seed_everything,
    train_model,
    training_layout,
)
from scenelib.transforms import decode_images, dihedral, views
from scenelib.weights import load_pretrained

from .conftest import write_image_tree


def colour_split(n_per_class: int, size: int, seed: int) -> SplitData:
    """Images whose dominant channel is the class: learnable in a couple of epochs."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(3):
        x = torch.randint(0, 90, (n_per_class, 3, size, size), generator=g, dtype=torch.uint8)
        x[:, c] += 140
        images.append(x)
        labels += [c] * n_per_class
    return SplitData(torch.cat(images), torch.tensor(labels))


def test_partial_fine_tune_on_cached_views_learns_and_repeats(monkeypatch):
    # an AVX2 CPU without AVX-512 on any host: the suffix trains in channels_last (training_layout)
    monkeypatch.setattr(training, "cpu_features", lambda: cpu_features(["avx2"]))
    spec = MODELS["mobilenet_v2"]
    arch, info = load_pretrained(spec, "offline")
    train, val, test = colour_split(8, 64, 0), colour_split(2, 64, 1), colour_split(4, 64, 2)
    cfg = TrainConfig(strategy="partial", epochs=6, lr=3e-3, batch_size=8, seed=0)

    def run():
        seed_everything(0)
        model = to_scene_classifier(spec, load_pretrained(spec, "offline")[0], 3, HeadConfig())
        return train_model(model, spec, info.mean, info.std, train, val, test, 3, cfg)

    result = run()
    assert (
        result.cut == len(result.model.blocks) - spec.trainable_blocks
        and result.cache_engine == "onnxruntime"
    )
    assert result.test_probs.shape == (8, 12, 3) and np.allclose(result.test_probs.sum(-1), 1, atol=1e-5)
    assert 1 <= result.best_epoch <= len(result.history) <= 6
    assert result.history[result.best_epoch - 1]["val_accuracy"] == max(
        h["val_accuracy"] for h in result.history
    )
    assert (result.test_probs.mean(0).argmax(1) == test.labels.numpy()).mean() >= 0.75  # chance: 1/3
    # Views no epoch draws are never computed and left NaN: a read of one would make a loss NaN.
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    assert result.trainable_params < sum(p.numel() for p in result.model.parameters())
    # Trained in channels_last, returned in the default layout: what checkpoints, ONNX export and INT8 expect.
    convs = [m.weight for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert result.layout == "channels_last" and convs and all(w.is_contiguous() for w in convs)
    again = run()
    assert [h["train_loss"] for h in again.history] == pytest.approx(
        [h["train_loss"] for h in result.history], rel=1e-4
    )


def test_the_cache_computes_only_the_views_some_epoch_draws():
    drawn = torch.tensor([[1, 1, 3], [1, 2, 3]])  # 2 epochs x 3 images, views of 4
    needed = needed_pairs(drawn, 4)
    assert [n.tolist() for n in needed] == [[0, 1, 2], [0, 1], [1], [2]]  # view 0 always: the probe's

    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    seen = []

    def runner(x):
        seen.append(len(x))
        return x.reshape(len(x), -1)[:, :5]

    out = extract_views(runner, images, (0, 0, 0), (1, 1, 1), views("aerial", 8)[:4], needed=needed)
    assert sum(seen) == 7 and out.shape == (4, 3, 5)
    assert torch.isnan(out[2, 0]).all() and torch.isnan(out[3, 1]).all()  # never drawn: never computed
    full = extract_views(runner, images, (0, 0, 0), (1, 1, 1), views("aerial", 8)[:4])
    for v, idx in enumerate(needed):
        assert torch.equal(out[v, idx], full[v, idx])  # the same features as computing everything


def test_scratch_training_runs_on_images_with_early_stopping():
    spec = MODELS["simple_cnn"]
    model = build_classifier("simple_cnn", 3)
    cfg = TrainConfig(
        strategy="scratch",
        epochs=6,
        patience=1,
        scheduler="plateau",
        augmentation="light",
        tta=False,
        batch_size=8,
        class_weights=True,
    )
    result = train_model(
        model,
        spec,
        (0.5,) * 3,
        (0.25,) * 3,
        colour_split(6, 32, 0),
        colour_split(2, 32, 1),
        colour_split(2, 32, 2),
        3,
        cfg,
    )
    assert result.cut == 0 and result.cache_engine == "none" and result.test_probs.shape == (1, 6, 3)
    assert 2 <= len(result.history) <= 6
    # Trained in channels_last, returned in the default layout, as above.
    convs = [m.weight for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous() for w in convs)


def test_the_training_layout_follows_the_strategy_the_device_and_the_cpu(monkeypatch):
    cpu, blocks = torch.device("cpu"), 19
    for flags, suffix in (
        (["avx2"], torch.channels_last),
        (["avx2", "avx512f"], torch.contiguous_format),
        ([], torch.contiguous_format),  # not x86 with AVX2: not measured, so the default layout
    ):
        monkeypatch.setattr(training, "cpu_features", lambda f=flags: cpu_features(f))
        assert training_layout(14, blocks, cpu) == suffix  # partial: a suffix on cached features
        assert training_layout(0, blocks, cpu) == torch.channels_last  # full, scratch: the whole network
        assert training_layout(blocks, blocks, cpu) == torch.contiguous_format  # linear: pooled 2-D features
    assert training_layout(14, blocks, torch.device("cuda")) == torch.channels_last


def test_bad_config_is_refused():
    for bad in (TrainConfig(strategy="everything"), TrainConfig(augmentation="wild"), TrainConfig(epochs=0)):
        with pytest.raises(ValueError):
            bad.check()


def test_dihedral_views_are_the_eight_symmetries(tmp_path):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert torch.equal(outs[0], x) and len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert len(views("aerial", 4)) == 8 and len(views("light", 4)) == 2 and len(views("none", 4)) == 1
    seeded = views("seed", 16, seed=1)
    img = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(seeded[3](img), views("seed", 16, seed=1)[3](img))
    root = write_image_tree(tmp_path, ["a"], 1, size=40)
    assert decode_images([root / "a" / "a00.png"], 24).shape == (1, 3, 24, 24)


def test_metrics_on_hand_made_predictions():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    m = classification_metrics(probs, labels, ["a", "b"])
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["most_confused"] == [{"true": "b", "predicted": "a", "count": 1}]
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["roc_auc_macro"] == pytest.approx(0.75)
    ece, bins = expected_calibration_error(np.array([[0.8, 0.2]] * 4), np.array([0, 0, 1, 1]))
    assert ece == pytest.approx(0.3) and bins[0]["count"] == 4


def test_predictions_round_trip_and_gallery(tmp_path):
    probs = np.stack([np.eye(3)[[0, 1, 1]], np.eye(3)[[0, 1, 2]]]).astype(np.float32)
    pred = Predictions(probs, np.array([0, 1, 2]), np.array(["p0", "p1", "p2"]), ["a", "b", "c"])
    loaded = Predictions.load(pred.save(tmp_path / "p.npz"))
    assert np.array_equal(loaded.probs, probs) and loaded.classes == ["a", "b", "c"]
    assert [g["path"] for g in misclassified(loaded)] == ["p2"]
    assert misclassified(loaded, use_tta=True) == [
        {"path": "p2", "true": "c", "predicted": "b", "confidence": 0.5}
    ]


def test_the_linear_probe_baseline_is_chosen_on_validation_and_learns():
    """The frozen-features baseline (probe.py) on the cached prefix, before fine-tuning changes the suffix."""
    spec = MODELS["mobilenet_v2"]
    arch, info = load_pretrained(spec, "offline")
    model = to_scene_classifier(spec, arch, 3, HeadConfig())
    before = {k: v.clone() for k, v in model.blocks[-1].state_dict().items()}
    train, val, test = colour_split(8, 64, 0), colour_split(3, 64, 1), colour_split(4, 64, 2)
    cfg = TrainConfig(strategy="partial", epochs=1, batch_size=8, seed=0)
    seed_everything(0)
    probe = train_model(model, spec, info.mean, info.std, train, val, test, 3, cfg).probe
    assert probe["C"] in (0.001, 0.01, 0.1, 1.0) and probe["features"] == 1280
    assert probe["test_accuracy"] >= 0.75 and len(probe["test_guess"]) == len(test.labels)  # chance: 1/3
    assert any(not torch.equal(before[k], v) for k, v in model.blocks[-1].state_dict().items())
    cfg.linear_probe = False
    assert train_model(model, spec, info.mean, info.std, train, val, test, 3, cfg).probe is None


def test_a_seeded_view_is_the_same_transform_whatever_batch_an_image_is_in():
    images = torch.randint(0, 255, (5, 3, 80, 80), dtype=torch.uint8)
    view = views("seed", 64, seed=0)[2]
    whole = view(images)
    assert torch.equal(whole, torch.cat([view(images[3:]), view(images[:3])])[[2, 3, 4, 0, 1]])
    assert not torch.equal(whole, views("seed", 64, seed=0)[3](images))  # another view, another transform
