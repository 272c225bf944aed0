"""The Ray executor end to end on a local Ray instance: the same results as the local executor, failures
confined to their model, and clear one-line errors for a missing Ray or an unreachable cluster."""

from __future__ import annotations

import contextlib
import io
import sys

import pandas as pd
import pytest

from scenelib.pipeline import main
from scenelib.rundir import RunDir

METRICS = ["accuracy", "accuracy_tta", "macro_f1", "val_accuracy"]


def _args(data, out, *extra):
    # resnet50 named explicitly has no weights offline: its task fails, the two others must not care.
    return [
        *("--dataset", "folder", "--data-dir", str(data), "--models", "simple_cnn,mobilenet_v2,resnet50"),
        *("--epochs", "1", "--threads", "1", "--quick", "--calibration-images", "16", "--output", str(out)),
        *extra,
    ]


@pytest.fixture(scope="module")
def local_and_ray(tiny_dataset, tmp_path_factory):
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("executors")
    runs, logs = {}, {}
    for executor in ("local", "ray"):
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            code = main(_args(tiny_dataset, root / executor, "--executor", executor))
        print(log.getvalue())
        runs[executor], logs[executor] = (code, RunDir(root / executor)), log.getvalue()
    return runs, logs


def test_ray_gives_the_local_executors_results(local_and_ray):
    runs, logs = local_and_ray
    frames = {}
    for executor, (code, run) in runs.items():
        assert code == 1, executor  # resnet50 failed; the run still completes
        assert run.report_html.exists()
        frames[executor] = pd.read_csv(run.results_csv).set_index(["model", "variant"])
    fp32 = [(m, "fp32") for m in ("simple_cnn", "mobilenet_v2")]
    pd.testing.assert_frame_equal(frames["ray"].loc[fp32, METRICS], frames["local"].loc[fp32, METRICS])
    assert (frames["ray"].loc[fp32, "status"] == "ok").all()
    # Both trainings were handed to Ray before the first one finished.
    lines = logs["ray"].splitlines()
    first_done = next(i for i, line in enumerate(lines) if "02_train_model" in line and ": ok (" in line)
    running = [line for line in lines[:first_done] if "02_train_model" in line and line.endswith(": running")]
    assert len(running) == 3


def test_a_failing_ray_task_marks_only_its_model(local_and_ray):
    runs, logs = local_and_ray
    results = pd.read_csv(runs["ray"][1].results_csv)
    failed = results[results.model == "resnet50"]
    assert len(failed) == 1 and failed.status.iloc[0].startswith("failed: WeightsUnavailableError")
    assert "02_train_model resnet50: failed" in logs["ray"]
    assert {"simple_cnn", "mobilenet_v2"} <= set(results[results.status == "ok"].model)


def test_resume_under_ray_reruns_only_what_did_not_finish(local_and_ray, tiny_dataset, capsys):
    runs, _ = local_and_ray
    run = runs["ray"][1]
    assert main(_args(tiny_dataset, run.root, "--executor", "ray", "--resume")) == 1  # resnet50 again
    out = capsys.readouterr().out
    for model in ("simple_cnn", "mobilenet_v2"):
        assert f"02_train_model {model}: done in an earlier run, skipped" in out
    assert "02_train_model resnet50: failed" in out
    assert "04_quantize: done in an earlier run, skipped" in out


def test_an_unreachable_cluster_fails_fast_in_one_line_and_writes_nothing(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    assert main(_args(tiny_dataset, out, "--executor", "ray", "--ray-address", "127.0.0.1:9")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Ray cluster at 127.0.0.1:9") and "ray start --head" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_without_ray_installed_the_error_says_how_to_install(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(_args(tiny_dataset, tmp_path / "run", "--executor", "ray")) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ray_address_without_the_ray_executor_is_a_usage_error(tiny_dataset, tmp_path, capsys):
    assert main(_args(tiny_dataset, tmp_path / "run", "--ray-address", "10.0.0.5:6379")) == 2
    assert "add --executor ray" in capsys.readouterr().err
