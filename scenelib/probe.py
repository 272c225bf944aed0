"""The linear-probe baseline: logistic regression on the frozen ImageNet backbone's pooled features.

What does fine-tuning add over frozen features? The field answers with a linear probe, and here it costs
seconds: the frozen prefix's features are already cached for training, so only the pretrained last blocks
(before any fine-tuning) run once more, on the plain view of every image. The regularisation strength is
chosen on the validation split; the test split only reports.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

C_GRID = (0.001, 0.01, 0.1, 1.0)  # inverse regularisation strengths tried; the best on validation is kept


def pooled_features(
    suffix: Callable[[torch.Tensor], torch.Tensor], cached: torch.Tensor, batch: int = 32
) -> np.ndarray:
    """Run the pretrained (not fine-tuned) suffix and pooling, in eval mode, over cached prefix features."""
    with torch.inference_mode():
        out = [suffix(cached[i : i + batch].float()).flatten(1) for i in range(0, len(cached), batch)]
    return torch.cat(out).numpy()


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int = 0,
) -> dict:
    """Fit one probe per C on train, keep the best on validation; returns its numbers and test guesses."""
    start = time.perf_counter()
    best: tuple[float, float, object] | None = None
    # C grows along the grid and each fit starts from the previous, more regularised solution (the
    # regularisation path): the weaker penalties then converge in a few iterations instead of hundreds.
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=300, warm_start=True, random_state=seed)
    )
    for c in sorted(C_GRID):
        probe.set_params(logisticregression__C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 300 iterations: a baseline, not a contest
            probe.fit(*train)
        val_acc = float((probe.predict(val[0]) == val[1]).mean())
        if best is None or val_acc > best[0]:
            best = (val_acc, c, copy.deepcopy(probe))
    assert best is not None
    val_acc, c, probe = best
    guess = probe.predict(test[0])
    return {
        "C": c,
        "val_accuracy": val_acc,
        "test_accuracy": float((guess == test[1]).mean()),
        "test_guess": guess.tolist(),
        "features": int(train[0].shape[1]),
        "seconds": round(time.perf_counter() - start, 1),
    }
