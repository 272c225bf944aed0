"""Stages run by hand on a finished run (JupyterLab, papermill): which run they open, the timing rule, the
one-line errors, re-rendering from the run's files alone, and every command they print, run verbatim."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings

import jupytext
import pandas as pd
import pytest

from scenelib import handrun, journal
from scenelib import report as rp
from scenelib.models import MODELS
from scenelib.rundir import RUN_DIR_ENV, START_DIR_ENV, RunDir, RunDirNotFound, open_run, repository_root
from scenelib.stages.bench import benchmark_stage
from tests.test_lab import REPO, VENV_BIN


@pytest.fixture
def copied_run(tiny_run, tmp_path) -> RunDir:
    _, run = tiny_run
    shutil.copytree(run.root, tmp_path / "run", symlinks=True)
    return RunDir(tmp_path / "run")


def _venv_env(**extra: str) -> dict[str, str]:
    """The environment a user of the project's venv has: its `python` and `papermill` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in (journal.PIPELINE_ENV, RUN_DIR_ENV)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def _move_away_from_data(run: RunDir) -> None:
    """As on another machine: run.json's data folder and the split's images do not exist."""
    info = json.loads(run.run_json.read_text())
    old, gone = info["parameters"]["data_dir"], "/nonexistent/scenelib-data"
    info["parameters"]["data_dir"] = gone
    info["argv"] = [gone if a == old else a for a in info["argv"]]
    run.run_json.write_text(json.dumps(info))
    run.splits_csv.write_text(run.splits_csv.read_text().replace(old, gone))


# -- which run a notebook opens -------------------------------------------------------------------------
def _fake_checkout(root):
    (root / "notebooks").mkdir(parents=True)
    (root / "run_all.py").write_text("")
    run = root / "reports" / "folder" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (root / "reports" / "folder" / "latest").symlink_to(run.name)
    return run


def test_the_default_run_is_the_notebooks_own_checkouts(tmp_path, monkeypatch):
    """Two clones sharing one venv: a kernel in clone B's notebooks/ opens B's runs, not the package's."""
    run = _fake_checkout(tmp_path / "clone")
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "clone" / "notebooks")
    assert repository_root() == tmp_path / "clone"
    assert open_run("").root == run.resolve()


def test_a_relative_run_dir_is_read_from_where_make_lab_started(tmp_path, monkeypatch):
    run = _fake_checkout(tmp_path / "clone")
    monkeypatch.chdir(tmp_path / "clone" / "notebooks")  # a kernel's working directory
    monkeypatch.setenv(START_DIR_ENV, str(tmp_path / "clone"))
    monkeypatch.setenv(RUN_DIR_ENV, "reports/folder/latest")
    assert open_run("").root.resolve() == run.resolve()
    monkeypatch.delenv(START_DIR_ENV)  # without make lab: the checkout's root is tried after the cwd
    assert open_run("").root.resolve() == run.resolve()


def test_a_missing_run_is_one_short_line_in_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RunDirNotFound) as err:
        open_run("")
    lines = err.value._render_traceback_()
    assert len(lines) == 1 and "not a run directory" in lines[0] and "make report" in lines[0]


def test_papermill_on_a_py_notebook_without_a_run_ends_in_one_kernel_line(tmp_path):
    """`papermill notebooks/03_benchmark.py out.ipynb` reads the .py; a missing run is one short message."""
    result = subprocess.run(
        ["papermill", "notebooks/03_benchmark.py", str(tmp_path / "out.ipynb")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_venv_env(**{RUN_DIR_ENV: str(tmp_path / "nowhere")}),
    )
    assert result.returncode != 0
    assert "NotJSONError" not in result.stderr
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "RunDirNotFound"
    assert len(errors[0]["traceback"]) == 1 and "SCENELIB_RUN_DIR" in errors[0]["traceback"][0]


# -- the timing rule ------------------------------------------------------------------------------------
def test_speed_problem_rule():
    assert handrun.speed_problem(30.0, [20.0, 25.0], 1.5) == ""
    assert handrun.speed_problem(60.0, [20.0, 25.0], 1.5) == "2.4x slower"
    assert handrun.speed_problem(10.0, [20.0, 25.0], 1.5) == "2.0x faster"
    assert handrun.speed_problem(999.0, [], 1.5) == ""


def test_a_by_hand_benchmark_on_a_much_slower_machine_writes_nothing(copied_run, monkeypatch):
    monkeypatch.delenv(journal.PIPELINE_ENV, raising=False)
    monkeypatch.delenv(handrun.TOLERANCE_ENV, raising=False)
    info = json.loads(copied_run.run_json.read_text())
    info["machine"].update(mobilenet_v2_eager_ms=0.01, mobilenet_v2_eager_ms_end=0.01)  # "the run's machine"
    copied_run.run_json.write_text(json.dumps(info))
    files = [copied_run.benchmark_json, copied_run.results_csv, copied_run.root / journal.JOURNAL_FILE]
    before = [p.read_bytes() for p in files]
    with pytest.raises(handrun.MachineSpeedError, match=r"03_benchmark before timing: .*slower.*nothing was"):
        benchmark_stage(copied_run, threads=1, quick=True)
    assert [p.read_bytes() for p in files] == before
    monkeypatch.setenv(journal.PIPELINE_ENV, "1")  # the pipeline's own stage is one session: no check
    handrun.check_timing_session(copied_run, "03_benchmark", 1)


# -- re-rendering and the commands printed --------------------------------------------------------------
def test_the_staleness_warnings_command_re_renders_without_the_data(copied_run, monkeypatch):
    """The warning's command, run verbatim from the repository root, with the images gone; the report then
    says which stage was run by hand, and the banner the by-hand stage put in report.html is gone."""
    monkeypatch.delenv(journal.PIPELINE_ENV, raising=False)
    with pytest.warns(journal.StaleReportWarning) as caught:
        journal.record(copied_run, "03_benchmark")
    command = re.search(r"Re-render it: (.*)$", str(caught[0].message)).group(1)
    assert "scenelib-stale" in copied_run.report_html.read_text()
    _move_away_from_data(copied_run)
    done = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True, env=_venv_env())
    assert done.returncode == 0, done.stderr[-3000:]
    html = copied_run.report_html.read_text()
    assert "scenelib-stale" not in html and "Stages run by hand" in html


def test_only_report_takes_the_dataset_from_run_json(copied_run):
    from scenelib.cli import UsageError, parse_config

    cfg = parse_config(["--output", str(copied_run.root), "--only", "report"])
    assert (
        cfg.dataset == "folder"
        and cfg.data_dir == json.loads(copied_run.run_json.read_text())["parameters"]["data_dir"]
    )
    with pytest.raises(UsageError, match="required: --dataset"):
        parse_config(["--output", str(copied_run.root)])


def test_the_report_notebook_run_by_hand_is_journaled(copied_run, tmp_path):
    """`papermill notebooks/05_report.py out.ipynb -p run_dir RUN` (the .py, directly) leaves a journal line."""
    result = subprocess.run(
        [
            "papermill",
            "notebooks/05_report.py",
            str(tmp_path / "out.ipynb"),
            "-p",
            "run_dir",
            str(copied_run.root),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_venv_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert journal.by_hand(copied_run)[-1]["stage"] == "05_report"


# -- the notebooks as Lab shows them --------------------------------------------------------------------
def test_kernelspec_display_name_is_the_kernels_own():
    """Lab writes the running kernel's display name on save; the same name keeps the .py unchanged."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = KernelSpecManager().get_kernel_spec("python3").display_name
    for path in sorted((REPO / "notebooks").glob("0*.py")):
        assert jupytext.read(path).metadata["kernelspec"]["display_name"] == name, path.name


def test_the_training_notebook_says_what_it_replaces_and_lists_the_models():
    text = (REPO / "notebooks" / "02_train_model.py").read_text()
    cell = text[text.index('tags=["parameters"]') - 900 : text.index("run_dir = ")]
    assert "replaces that model's results" in cell and "quick = False" in cell
    listed = set(
        re.findall(r"[a-z][a-z0-9_]+", cell[cell.index("# model_name: one of") : cell.index("model_name =")])
    )
    assert set(MODELS) <= listed


def test_models_never_trained_are_one_line_not_rows(copied_run):
    copied_run.upsert_results([{"model": "resnet50", "variant": "fp32", "status": "skipped: no weights"}])
    (copied_run.model_dir("resnet50")).mkdir(parents=True, exist_ok=True)
    copied_run.train_json("resnet50").write_text(
        json.dumps({"model": "resnet50", "status": "skipped: no weights"})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        styled = rp.metrics_table(copied_run)
    html = styled.to_html()
    assert "resnet50 (skipped: no weights)" in html and "overflow-x: auto" in html
    assert "resnet50" not in pd.DataFrame(styled.data)["model"].tolist()


def test_the_repair_command_of_a_refused_re_render_runs_verbatim(copied_run):
    """--only report on a run missing quantization.json refuses and prints the command that repairs it;
    that command, run as printed, redoes the stage and re-renders the report."""
    copied_run.quantization_json.unlink()
    refused = subprocess.run(
        f"python run_all.py --output {copied_run.root} --only report",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_venv_env(),
    )
    assert refused.returncode == 2 and "quantization.json" in refused.stderr
    command = refused.stderr.split("Redo what is missing with: ")[1].strip()
    done = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True, env=_venv_env())
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert copied_run.quantization_json.is_file() and copied_run.report_html.is_file()
