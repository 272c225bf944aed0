"""The training budget in steps, the kept-epoch rule and the views drawn per pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scenelib.training import (
    DEFAULT_EPOCHS,
    MAX_EPOCHS,
    MIN_STEPS,
    TrainConfig,
    default_epochs,
    draw_views,
    fit,
)


def test_a_small_dataset_gets_more_epochs_a_large_one_the_floor():
    assert default_epochs("partial", 1470) == DEFAULT_EPOCHS["partial"]  # 46 steps an epoch: 368 in 8
    small = default_epochs("partial", 353)  # 12 steps an epoch
    assert small * 12 >= MIN_STEPS and (small - 1) * 12 < MIN_STEPS
    assert default_epochs("partial", 20) == MAX_EPOCHS
    assert default_epochs("scratch", 100_000) == DEFAULT_EPOCHS["scratch"]


def test_every_view_once_an_epoch_when_a_pass_per_view():
    drawn = draw_views(8, 3, 8, 50, seed=0)
    assert drawn.shape == (24, 50)
    for epoch in range(3):
        block = drawn[epoch * 8 : (epoch + 1) * 8]
        assert (block.sort(dim=0).values == torch.arange(8)[:, None]).all()
    one = draw_views(8, 3, 1, 50, seed=0)
    assert one.shape == (3, 50) and not (one == one[0]).all()


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    return x, y


@pytest.mark.parametrize("keep", ["last", "best_val"])
def test_the_kept_epoch_rule(keep):
    """``last`` keeps the final weights whatever validation says; ``best_val`` the best validation epoch."""
    x, y = _toy()
    net = nn.Linear(4, 2)
    # validation labels flipped: the more the model learns, the worse validation gets
    val = [(x, 1 - y)]
    cfg = TrainConfig(epochs=6, keep=keep, lr=0.05, batch_size=16, patience=10, weight_decay=0.0)
    history, kept = fit(net, lambda idx, epoch: x[idx], y, lambda: val, cfg, 2)
    assert len(history) == 6
    if keep == "last":
        assert kept == 6
    else:
        best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
        assert kept == best["epoch"] and kept < 6
    final_val_acc = ((net(x).argmax(1) == 1 - y).float().mean()).item()
    assert final_val_acc == pytest.approx(history[kept - 1]["val_accuracy"])


def test_a_config_with_an_unknown_kept_epoch_rule_is_refused():
    with pytest.raises(ValueError, match="kept-epoch rule"):
        TrainConfig(keep="best_test").check()
