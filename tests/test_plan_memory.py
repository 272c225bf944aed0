"""The plan (estimated stage times and memory, the time budget) and the feature cache's spill to disk."""

from __future__ import annotations

import torch

from scenelib import plan
from scenelib.features import CacheAllocator, extract_views
from scenelib.memory import cache_ram_budget, peak_rss
from scenelib.transforms import views

COUNTS = {"train": 1050, "val": 420, "test": 630}


def _plan(name: str, strategy: str = "partial", size: int = 224, epochs: int = 8) -> plan.ModelPlan:
    return plan.estimate_model(name, strategy, size, epochs, COUNTS, 21, 8, True, ref_ms=20.0)


def test_resnet50_cache_is_layer3_in_fp16_per_drawn_view():
    p = _plan("resnet50")
    assert p.cut == 4 and p.blocks == 5  # layer4 trained
    per_view = 1024 * 14 * 14 * 2  # layer3's output, fp16
    assert p.cached_views > COUNTS["train"] + 8 * (COUNTS["val"] + COUNTS["test"])
    assert abs(p.cache_mb * 2**20 - p.cached_views * per_view) < 2**20
    assert 3.0 < p.prefix_gmacs < 3.5 and 0.7 < p.suffix_gmacs < 0.9


def test_estimates_scale_with_the_reference_latency_and_the_epochs():
    slow = plan.estimate_model("mobilenet_v2", "partial", 224, 8, COUNTS, 21, 8, True, ref_ms=40.0)
    fast = plan.estimate_model("mobilenet_v2", "partial", 224, 8, COUNTS, 21, 8, True, ref_ms=20.0)
    assert slow.seconds["benchmark"] > 1.9 * fast.seconds["benchmark"]
    assert _plan("mobilenet_v2", epochs=16).seconds["train"] > _plan("mobilenet_v2").seconds["train"]
    assert _plan("resnet50").total_seconds > 2 * _plan("mobilenet_v2").total_seconds


def test_budget_keeps_the_most_informative_models_that_fit():
    plans = [_plan(m) for m in ("resnet50", "densenet121", "mobilenet_v2")] + [
        _plan("simple_cnn", "scratch", 64)
    ]
    order = plan.priority([p.model for p in plans], explicit=False)
    assert order[0] == "mobilenet_v2"
    budget = plan.fixed_seconds() + plans[2].total_seconds + plans[3].total_seconds + 1
    plan.choose(plans, budget, order)
    assert [p.model for p in plans if p.status == "planned"] == ["mobilenet_v2", "simple_cnn"]
    assert plans[0].status.startswith("skipped: over the time budget")
    assert plan.priority(["densenet121", "mobilenet_v2"], explicit=True) == ["densenet121", "mobilenet_v2"]
    # a budget too small for any model still keeps the first: the run needs the model it would deploy
    plans = [_plan(m) for m in ("resnet50", "mobilenet_v2")] + [_plan("simple_cnn", "scratch", 64)]
    plan.choose(
        plans,
        plan.fixed_seconds() + plans[2].total_seconds + 1,
        order=["mobilenet_v2", "resnet50", "simple_cnn"],
    )
    assert [p.model for p in plans if p.status == "planned"] == ["mobilenet_v2"]


def test_include_command_keeps_the_options_and_raises_the_budget():
    cmd = plan.include_command(
        ["--dataset", "ucmerced", "--time-budget", "10", "--output", "old", "--force"], "/runs/a", 41.2
    )
    assert cmd == "python run_all.py --dataset ucmerced --time-budget 42 --resume --output /runs/a"


def test_spilled_cache_equals_the_one_in_ram(tmp_path):
    images = torch.randint(0, 255, (6, 3, 16, 16), dtype=torch.uint8)

    def runner(x):
        return x[:, :2, ::4, ::4] * 2

    vs = views("aerial", 16)[:3]
    in_ram = extract_views(runner, images, (0.5,) * 3, (0.2,) * 3, vs, 4)
    alloc = CacheAllocator(budget=0, folder=tmp_path / "features")
    spilled = extract_views(runner, images, (0.5,) * 3, (0.2,) * 3, vs, 4, desc="cache train", allocate=alloc)
    assert alloc.spilled == ["cache train"] and torch.equal(in_ram, spilled)
    assert not list((tmp_path / "features").iterdir())  # unlinked once mapped: nothing left behind
    kept = CacheAllocator(budget=2**30, folder=tmp_path / "features")
    extract_views(runner, images, (0.5,) * 3, (0.2,) * 3, vs, 4, allocate=kept)
    assert kept.spilled == [] and kept.in_ram > 0


def test_ram_budget_and_peak_rss(monkeypatch):
    monkeypatch.setenv("SCENELIB_CACHE_RAM_MB", "10")
    assert cache_ram_budget() == 10 * 2**20
    monkeypatch.delenv("SCENELIB_CACHE_RAM_MB")
    assert cache_ram_budget() > 0
    with peak_rss(interval=0.05) as rss:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB touched
        del block
    assert rss.peak_mb is not None and rss.peak_mb > 64


def test_time_budget_option(tmp_path):
    import pytest

    from scenelib.cli import UsageError, parse_config

    base = ["--dataset", "folder", "--data-dir", str(tmp_path), "--output", str(tmp_path.parent / "out")]
    assert parse_config([*base, "--time-budget", "12.5"]).time_budget == 12.5
    assert parse_config(base).time_budget == 0.0  # the device's default
    with pytest.raises(UsageError, match="--time-budget"):
        parse_config([*base, "--time-budget", "-3"])
