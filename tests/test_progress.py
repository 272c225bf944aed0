"""Live progress: bars in a stage's kernel publish their state; the pipeline's watcher prints it."""

from __future__ import annotations

import io
import json

from scenelib import progress


def test_a_bar_publishes_its_state_where_the_executor_says(tmp_path, monkeypatch) -> None:
    target = tmp_path / "p.json"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(target))
    epochs = progress.bar(range(1, 4), desc="mobilenet_v2", unit="epoch", disable=False)
    for epoch in epochs:
        epochs.set_postfix_str(f"last validation 9{epoch}.0%")
    (state,) = json.loads(target.read_text())["bars"]
    assert state["desc"] == "mobilenet_v2" and state["unit"] == "epoch" and state["total"] == 3
    assert state["postfix"] == "last validation 93.0%"
    with progress.bar(total=10, desc="cache train", unit="img") as b:
        b.update(10)  # the last update is always written, whatever the throttle
    assert json.loads(target.read_text())["bars"][-1]["n"] == 10


def test_nested_bars_are_published_outermost_first(tmp_path, monkeypatch):
    target = tmp_path / "p.json"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(target))
    with progress.bar(total=5, desc="mobilenet_v2: ONNX INT8 recipes on validation", unit="step") as steps:
        steps.update(2)
        with progress.bar(total=1176, desc="evaluate", unit="img") as inner:
            inner.update(1176)
            text = progress.describe(json.loads(target.read_text()))
    assert text.startswith("mobilenet_v2: ONNX INT8 recipes on validation 40% (2/5 step)")
    assert text.endswith(" > evaluate 100% (1,176/1,176 img)")
    assert progress.bar._open == []  # closed bars leave the stack


def test_without_the_variable_a_bar_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    for _ in progress.bar(range(3), desc="x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_describe_says_how_far_and_how_long() -> None:
    text = progress.describe(
        {"desc": "cache train", "n": 4821, "total": 10584, "unit": "img", "seconds_left": 75.0}
    )
    assert text == "cache train 46% (4,821/10,584 img), about 1.2 min left"
    assert progress.describe({"desc": "guard", "n": 0, "total": None, "unit": "it"}) == "guard 0 it"


def test_the_watcher_prints_changes_in_a_log_and_cleans_up(tmp_path) -> None:
    path, out = tmp_path / ".progress.json", io.StringIO()
    with progress.Watcher({"02_train_model mobilenet_v2": path}, stream=out, every=0) as watcher:
        path.write_text(json.dumps({"desc": "mobilenet_v2", "n": 2, "total": 12, "unit": "epoch"}))
        watcher.poll()
        watcher.poll()  # unchanged: not printed twice
        path.write_text("{not json")  # a half-written file is ignored, not a crash
        watcher.poll()
    lines = out.getvalue().splitlines()
    assert lines.count("    02_train_model mobilenet_v2: mobilenet_v2 17% (2/12 epoch)") == 1
    assert not path.exists()


def test_the_watcher_joins_stages_running_at_once(tmp_path) -> None:
    """Under Ray several trainings run together: one line, each stage named."""
    a, b, out = tmp_path / ".a.json", tmp_path / ".b.json", io.StringIO()
    with progress.Watcher({"02_train_model a": a, "02_train_model b": b}, stream=out, every=0) as watcher:
        a.write_text(json.dumps({"desc": "a", "n": 1, "total": 4, "unit": "epoch"}))
        watcher.poll()
        b.write_text(json.dumps({"desc": "cache train", "n": 5, "total": 10, "unit": "img"}))
        watcher.poll()
    lines = out.getvalue().splitlines()
    assert lines == [
        "    02_train_model a: a 25% (1/4 epoch)",
        "    02_train_model a: a 25% (1/4 epoch) | 02_train_model b: cache train 50% (5/10 img)",
    ]
    assert not a.exists() and not b.exists()
