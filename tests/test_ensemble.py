"""The validated ensemble: candidates scored and kept on validation, test only reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scenelib import ensemble, repeats
from scenelib import summary as sm
from scenelib.evaluation import Predictions
from scenelib.rundir import TRAIN_VAL, RunDir, write_json

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
    _model(run, "m2", 0.9, np.arange(30) >= 3, np.arange(30) >= 3, labels)  # not told from m1 (p = 0.25)
    record = ensemble.choose(run, {"m1": 1.0, "m2": 1.0})
    assert not record["beats_best_single_on_validation"]
    write_json(run.benchmark_json, {"ensemble": record})
    assert "not recommended" in sm.ensemble_line(run)


def test_a_level_vote_is_not_recommended_whatever_its_log_loss():
    """A vote costs its members' latencies added: level on validation accuracy, the single model stays,
    even where the vote's averaged softmax has the lower log-loss; a less accurate vote never wins."""
    labels = np.arange(30) % 3
    unsure = np.full((30, 3), 0.25)
    unsure[np.arange(30), labels] = 0.5
    sure = np.full((30, 3), 0.005)
    sure[np.arange(30), labels] = 0.99
    single, votes = ensemble.select({"m1": unsure, "m2": sure}, labels, ["m1", "m2"])
    assert single["val_accuracy"] == votes[0]["val_accuracy"] == 1.0
    assert votes[0]["val_log_loss"] < single["val_log_loss"] and not ensemble.better(votes[0], single)
    assert ensemble.best([single, *votes]) is single


def test_a_model_validation_shows_worse_is_never_a_member():
    """A weak model (validation tells it from the best: McNemar p < 0.05) joins no vote."""
    labels = np.arange(60) % 3
    best = _probs(labels, np.arange(60) >= 2)  # 58 of 60 right
    close = _probs(labels, np.arange(60) % 20 != 5)  # 57 of 60, wrong elsewhere
    weak = _probs(labels, np.arange(60) % 2 == 0)  # 30 of 60
    ranked = ["best", "close", "weak"]
    probs = {"best": best, "close": close, "weak": weak}
    assert ensemble.eligible(probs, labels, ranked) == ["best", "close"]
    single, votes = ensemble.select(probs, labels, ranked)
    assert [v["members"] for v in votes] == [["best", "close"]]
    single, votes = ensemble.select({"best": best, "weak": weak}, labels, ["best", "weak"])
    assert votes == []


def _split_model(sub: RunDir, name: str, seed: int, val_right, test_right, labels) -> None:
    """What training writes for one model of one split: train.json, history, validation and test softmax."""
    val_acc = float(np.mean(val_right))
    write_json(
        sub.train_json(name),
        {"val_accuracy": val_acc, "best_epoch": 1, "train_seconds": 10.0, "config": {"seed": seed}},
    )
    write_json(sub.history_json(name), [{"val_loss": 1.0 - val_acc}])
    paths = np.array([f"{i}.png" for i in range(len(labels))])
    Predictions(_probs(labels, val_right)[None], labels, paths, CLASSES).save(
        sub.predictions(name, TRAIN_VAL)
    )
    test = _probs(labels, test_right)[None]
    Predictions(np.concatenate([test, test]), labels, paths, CLASSES).save(sub.predictions(name, "fp32"))


def test_each_repeated_split_picks_single_or_vote_on_its_own_validation(tmp_path):
    """repeats.csv: per split, the soft vote competes with the best single model on that split's validation
    (training's predictions) and is scored on its test images; the report names the picks."""
    run = RunDir(tmp_path)
    labels, third = np.arange(30) % 3, np.arange(30) // 10
    every = np.ones(30, bool)
    for name, wrong in (("m1", 0), ("m2", 1), ("m3", 2)):  # split 1: the 3-vote is right everywhere
        _split_model(run, name, 0, third != wrong, third != wrong, labels)
    sub = repeats.repeat_run(run, 2)
    write_json(sub.run_json, {"repeat": 2, "seed": 1})
    _split_model(sub, "m1", 1, every, every, labels)  # split 2: m1 alone; any vote with m2 loses
    _split_model(sub, "m2", 1, ~every, ~every, labels)
    _split_model(sub, "m3", 1, ~every, ~every, labels)
    repeats.summarize(run, 2, ["m1", "m2", "m3"])
    rows = pd.read_csv(run.root / repeats.REPEATS_CSV)
    vote = rows[rows.model == repeats.VOTE].set_index("split")
    assert vote.picked.tolist() == ["m1+m2+m3", "m1"]
    assert vote.accuracy.tolist() == [1.0, 1.0] and vote.accuracy_tta.tolist() == [1.0, 1.0]
    assert vote.loc[1, "train_seconds"] == 30.0
    assert repeats.VOTE not in set(pd.read_csv(run.results_csv).model)  # no results.csv row of its own
    table = sm.repeats_table(run).set_index("model")
    assert table.loc[repeats.VOTE, "picked per split"] == "m1+m2+m3, m1"
    assert table.loc[repeats.CHOSEN, "picked per split"] == "m1, m1"
    assert list(table.index[-2:]) == [repeats.CHOSEN, repeats.VOTE]  # the two rules close the table
    sentence = sm.repeats_line(run)
    assert "the picks are (m1+m2+m3, m1): 100.00% ± 0.00 single view" in sentence


def test_no_soft_vote_rows_unless_every_split_can_have_one(tmp_path):
    """A split whose models lack training's validation predictions (a run resumed from an older release) drops
    the soft-vote rows altogether: a mean over some splits is not the announced one. A split with one model
    picks that model."""
    run = RunDir(tmp_path)
    labels, every = np.arange(30) % 3, np.ones(30, bool)
    _split_model(run, "m1", 0, every, every, labels)
    _split_model(run, "m2", 0, every, every, labels)
    sub = repeats.repeat_run(run, 2)
    write_json(sub.run_json, {"repeat": 2, "seed": 1})
    _split_model(sub, "m1", 1, every, every, labels)  # m2 failed on split 2
    rows = repeats.repeat_rows(run, 2, ["m1", "m2"])
    assert repeats.vote_rows(run, rows).picked.tolist() == ["m1", "m1"]  # equal models: a tie keeps one
    sub.predictions("m1", TRAIN_VAL).unlink()
    assert repeats.vote_rows(run, rows).empty
