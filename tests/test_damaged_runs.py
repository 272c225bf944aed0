"""A damaged or changed run never yields a wrong report: a broken or missing output re-runs its stage on
``--resume``, ``--only report`` refuses an incomplete run (naming what is missing and the command that
repairs it), a failed render keeps the previous report, and class names from the data are escaped in every
executed notebook."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from scenelib.pipeline import main
from scenelib.progress import EVERY_ENV as PROGRESS_EVERY_ENV
from scenelib.rundir import RunDir, read_json, write_json
from scenelib.splits import ManifestError, read_manifest
from scenelib.stage_outputs import problem

from .conftest import write_image_tree

HOSTILE = "<img src=x onerror=alert(1)>"


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("--dataset", "folder", "--data-dir", str(data), "--models", "simple_cnn", "--epochs", "1"),
        *("--output", str(out), "--threads", "2", "--calibration-images", "8", "--quick", *extra),
    ]


def _run(args: list[str]) -> tuple[int, str]:
    log = io.StringIO()
    os.environ[PROGRESS_EVERY_ENV] = "0"
    try:
        with contextlib.redirect_stdout(log):
            code = main(args)
    finally:
        os.environ.pop(PROGRESS_EVERY_ENV)
    return code, log.getvalue()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One finished run (simple_cnn, quick) on four classes, one of them named like an HTML element; the
    fourth class shares the first's colour, so the model confuses them and the tables name it."""
    data = write_image_tree(
        tmp_path_factory.mktemp("hostile") / "images", ["alpha", "beta", "gamma", HOSTILE], 6, size=32
    )
    out = tmp_path_factory.mktemp("hostile-run") / "run"
    code, log = _run(_args(data, out))
    assert code == 0, log
    return data, out


@pytest.fixture
def copy(hostile_run, tmp_path):
    """A copy of the finished run to damage; returns (data, its run directory)."""
    data, out = hostile_run
    shutil.copytree(out, tmp_path / "run", symlinks=True)
    return data, RunDir(tmp_path / "run")


def _only_report(data: Path, run: RunDir, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(
        ["--dataset", "folder", "--data-dir", str(data), "--output", str(run.root), "--only", "report"]
    )
    return code, capsys.readouterr().err


def test_class_names_are_escaped_in_every_executed_notebook(hostile_run):
    _, out = hostile_run
    run = RunDir(out)
    confused = read_json(run.benchmark_json)["models"]["simple_cnn"]["metrics"]["single"]["most_confused"]
    assert any(HOSTILE in (c["true"], c["predicted"]) for c in confused)  # the table holds the name
    for path in sorted(run.notebooks_dir.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                html = "".join(output.get("data", {}).get("text/html", ""))
                assert "<img src=x" not in html, f"{path.name} shows a class name as live HTML"
    assert "<img src=x" not in run.report_html.read_text()


def test_a_report_that_cannot_be_rendered_leaves_the_previous_one(copy, capsys):
    data, run = copy
    report, results_md, run_json = (p.read_bytes() for p in (run.report_html, run.results_md, run.run_json))
    run.quantization_json.write_text('{"models": {"simple_cnn": ')  # truncated
    code, err = _only_report(data, run, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "quantization.json does not load" in err and f"--resume --output {run.root}" in err
    assert "--models simple_cnn" in err  # the repair command is the run's own, not the re-render's
    assert run.report_html.read_bytes() == report and run.results_md.read_bytes() == results_md
    assert run.run_json.read_bytes() == run_json


def test_a_render_that_fails_in_the_notebook_keeps_the_previous_report(copy, capsys):
    data, run = copy
    report = run.report_html.read_bytes()
    bench = read_json(run.benchmark_json)
    bench["models"]["simple_cnn"] = {}  # loads, names the model, but the report cannot read it
    write_json(run.benchmark_json, bench)
    code, _ = _only_report(data, run, capsys)
    assert code == 1 and run.report_html.read_bytes() == report


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda run: run.results_csv.unlink(), "results.csv is missing (stage 02_train_model-simple_cnn)"),
        (lambda run: run.quantization_json.unlink(), "quantization.json is missing (stage 04_quantize)"),
        (
            lambda run: run.checkpoint("simple_cnn").write_bytes(
                run.checkpoint("simple_cnn").read_bytes()[:100]
            ),
            "models/simple_cnn/checkpoint.pt does not load",
        ),
        (
            lambda run: run.executed_notebook("03_benchmark").unlink(),
            "notebooks/03_benchmark.ipynb is missing",
        ),
    ],
    ids=["results.csv deleted", "quantization.json deleted", "checkpoint truncated", "notebook deleted"],
)
def test_only_report_refuses_an_incomplete_run_and_names_the_repair(copy, capsys, damage, says):
    data, run = copy
    report = run.report_html.read_bytes()
    damage(run)
    code, err = _only_report(data, run, capsys)
    assert code == 2 and says in err and f"--resume --output {run.root}" in err and "Traceback" not in err
    assert run.report_html.read_bytes() == report


def test_a_truncated_checkpoint_is_a_problem_of_its_training_stage(copy):
    _, run = copy
    notebook = run.executed_notebook("02_train_model", "simple_cnn")
    assert problem(run, "02_train_model", notebook, "simple_cnn") == ""
    run.checkpoint("simple_cnn").write_bytes(run.checkpoint("simple_cnn").read_bytes()[:100])
    assert (
        problem(run, "02_train_model", notebook, "simple_cnn")
        == "models/simple_cnn/checkpoint.pt does not load"
    )


def test_resume_reruns_each_stage_whose_output_is_missing_or_broken(copy):
    data, run = copy
    trained = run.train_json("simple_cnn").read_bytes()
    run.quantization_json.unlink()
    run.executed_notebook("03_benchmark").unlink()
    (run.stages_dir / "05_report.json").write_text("{garbage")
    code, log = _run(_args(data, run.root, "--resume"))
    assert code == 0, log
    assert "01_explore_data: done in an earlier run, skipped" in log
    assert "02_train_model simple_cnn: done in an earlier run, skipped" in log
    assert (
        "03_benchmark: done in an earlier run, but notebooks/03_benchmark.ipynb is missing; running it again"
        in log
    )
    assert "04_quantize: done in an earlier run, but quantization.json is missing; running it again" in log
    assert f"05_report: {run.stages_dir / '05_report.json'} is damaged" in log
    assert run.quantization_json.exists() and run.executed_notebook("03_benchmark").exists()
    assert run.train_json("simple_cnn").read_bytes() == trained


def test_a_damaged_splits_csv_is_rebuilt_on_resume_and_overwrites_nothing(copy):
    data, run = copy
    trained, results = run.train_json("simple_cnn").read_bytes(), run.results_csv.read_bytes()
    good = run.splits_csv.read_text()
    lines = good.splitlines()
    run.splits_csv.write_text("\n".join([lines[0], *(line.rsplit(",", 3)[0] for line in lines[1:])]) + "\n")
    with pytest.raises(ManifestError, match=r"splits.csv is damaged .*--resume.*--force"):
        read_manifest(run.splits_csv)
    code, log = _run(_args(data, run.root, "--resume"))
    assert code == 0, log
    assert "01_explore_data: done in an earlier run, but splits.csv is damaged; running it again" in log
    assert "02_train_model simple_cnn: done in an earlier run, skipped" in log
    assert run.splits_csv.read_text() == good
    assert run.train_json("simple_cnn").read_bytes() == trained and run.results_csv.read_bytes() == results


def test_garbage_run_json_on_resume_is_one_line(copy, capsys):
    data, run = copy
    run.run_json.write_text("{not json")
    capsys.readouterr()
    assert main(_args(data, run.root, "--resume")) == 2
    err = capsys.readouterr().err
    assert "run.json is damaged" in err and "--force" in err and "Traceback" not in err
    assert run.run_json.read_text() == "{not json"


def test_only_report_keeps_the_command_that_produced_the_run(copy, capsys):
    data, run = copy
    before = read_json(run.run_json)
    code, err = _only_report(data, run, capsys)
    assert code == 0, err
    after = read_json(run.run_json)
    for key in ("command", "argv", "parameters", "threads"):
        assert after[key] == before[key]
    assert "--only" not in after["command"] and "--quick" in after["command"]
    html = run.report_html.read_text()
    assert "--calibration-images 8 --quick" in html and "--only report" not in html


def test_a_changed_image_redoes_the_stages_that_read_it(tmp_path):
    data = write_image_tree(tmp_path / "images", ["a", "b", "c"], 6, size=32)
    out = tmp_path / "run"
    code, log = _run(_args(data, out))
    assert code == 0, log
    shutil.copyfile(data / "b" / "b00.png", data / "a" / "a00.png")  # another class's image, same name
    code, log = _run(_args(data, out, "--resume"))
    assert code == 0, log
    assert "01_explore_data: running" in log and "02_train_model simple_cnn: running" in log
    assert "done in an earlier run" not in log.split("03_benchmark")[0]


def test_sigint_to_the_driver_alone_stops_the_run_promptly(tmp_path):
    """``kill -INT <driver>`` (not its process group: the kernel does not hear it) stops the stage running
    in the kernel, and the run, within seconds."""
    import signal
    import time

    from .test_interrupt import _kernels_of, _start, _wait_for

    data = write_image_tree(tmp_path / "images", ["a", "b"], 4, size=16)
    out = tmp_path / "run"
    proc = _start(_args(data, out))
    _wait_for(proc, "02_train_model simple_cnn: running")
    time.sleep(0.5)
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - start < 30, err
    assert f"--resume --output {out}" in err and "Traceback" not in err
    deadline = time.monotonic() + 30
    while _kernels_of(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _kernels_of(out), "a kernel outlived its driver"
