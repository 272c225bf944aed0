"""The validated ensemble: candidates scored and kept on validation, test only reported."""

from __future__ import annotations

import numpy as np
import pytest

from scenelib import ensemble
from scenelib import summary as sm
from scenelib.evaluation import Predictions
from scenelib.rundir import RunDir, write_json

CLASSES = ["a", "b", "c"]


def _probs(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Confident on the images marked right, confidently wrong (the next class) on the others."""
    guess = np.where(right, labels, (labels + 1) % 3)
    out = np.full((len(labels), 3), 0.1)
    out[np.arange(len(labels)), guess] = 0.8
    return out


def _model(run: RunDir, name: str, val_acc: float, val_right, test_right, labels) -> None:
    write_json(run.train_json(name), {"status": "ok", "val_accuracy": val_acc, "best_epoch": 1})
    write_json(run.history_json(name), [{"val_loss": 1.0 - val_acc}])
    paths = np.array([f"{i}.png" for i in range(len(labels))])
    Predictions(_probs(labels, val_right)[None], labels, paths, CLASSES).save(
        run.predictions(name, "fp32-val")
    )
    test = _probs(labels, test_right)[None]
    Predictions(test, labels, paths, CLASSES).save(run.predictions(name, "fp32-e2e"))
    Predictions(np.concatenate([test, test]), labels, paths, CLASSES).save(run.predictions(name, "fp32"))


@pytest.fixture
def three_models(tmp_path) -> RunDir:
    """Each model errs on its own third of the images (val and test alike); a third model that errs
    nowhere on validation but everywhere on its test third makes the 3-vote best on validation only."""
    run = RunDir(tmp_path)
    labels = np.arange(30) % 3
    third = np.arange(30) // 10
    _model(run, "m1", 0.9, third != 0, third != 0, labels)
    _model(run, "m2", 0.8, third != 1, third != 1, labels)
    _model(run, "m3", 0.7, third != 2, np.ones(30, bool), labels)
    return run


def test_the_ensemble_is_chosen_on_validation(three_models):
    record = ensemble.choose(three_models, {"m1": 5.0, "m2": 7.0, "m3": 1.0})
    assert [c["members"] for c in record["candidates"]] == [["m1", "m2"], ["m1", "m2", "m3"]]
    # m1+m2 tie on the third where they disagree; adding m3 breaks every tie the right way on validation.
    assert record["members"] == ["m1", "m2", "m3"] and record["val_accuracy"] == 1.0
    assert record["beats_best_single_on_validation"] and record["best_single"] == "m1"
    assert record["latency_ms_b1"] == 13.0
    assert record["accuracy_ci_low"] <= record["accuracy"] <= record["accuracy_ci_high"]
    assert record["vs_best_single"]["only_b_right"] == 0  # m1 alone is never right where the vote is wrong
    row = ensemble.results_row(record)
    assert row["model"] == "ensemble(m1+m2+m3)" and row["variant"] == "fp32" and row["latency_ms_b1"] == 13.0


def test_one_model_makes_no_ensemble_and_a_losing_vote_is_not_recommended(three_models, tmp_path):
    write_json(three_models.train_json("m2"), {"status": "failed: x"})
    write_json(three_models.train_json("m3"), {"status": "failed: x"})
    assert ensemble.choose(three_models, {"m1": 1.0}) is None
    run = RunDir(tmp_path / "two")
    labels = np.arange(30) % 3
    _model(run, "m1", 1.0, np.ones(30, bool), np.ones(30, bool), labels)
    _model(run, "m2", 0.5, np.arange(30) < 10, np.arange(30) < 10, labels)
    record = ensemble.choose(run, {"m1": 1.0, "m2": 1.0})
    assert not record["beats_best_single_on_validation"]
    write_json(run.benchmark_json, {"ensemble": record})
    assert "not recommended" in sm.ensemble_line(run)
