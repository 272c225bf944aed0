"""The run's journal: every stage leaves a line; a stage run by hand after the report says so."""

from __future__ import annotations

import os
import shutil
import stat
import warnings

import pytest

from scenelib import journal
from scenelib import summary as sm
from scenelib.handrun import TOLERANCE_ENV
from scenelib.rundir import RunDir, write_json
from scenelib.stages.bench import benchmark_stage


def test_the_pipeline_journals_every_stage(tiny_run):
    _, run = tiny_run
    piped = [(e["stage"], e["model"]) for e in journal.read(run) if e["via"] == "pipeline"]
    assert piped[:5] == [
        ("01_explore_data", None),
        ("02_train_model", "simple_cnn"),
        ("02_train_model", "mobilenet_v2"),
        ("03_benchmark", None),
        ("04_quantize", None),
    ]
    assert ("05_report", None) in piped


@pytest.fixture
def copied_run(tiny_run, tmp_path) -> RunDir:
    _, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, symlinks=True)
    return RunDir(copy)


def test_a_stage_run_by_hand_after_the_report_is_recorded_and_flagged(copied_run, monkeypatch):
    monkeypatch.delenv(journal.PIPELINE_ENV, raising=False)
    monkeypatch.setenv(TOLERANCE_ENV, "1000")  # a shared machine's speed varies; test_by_hand tests the rule
    assert copied_run.report_html.exists()
    with pytest.warns(journal.StaleReportWarning, match=r"--only report"):
        benchmark_stage(copied_run, threads=1, quick=True)
    assert "out of date" in copied_run.report_html.read_text()  # the banner, until it is re-rendered
    last = journal.read(copied_run)[-1]
    assert last["stage"] == "03_benchmark" and last["via"] == "by hand" and "@" in last["who"]
    note = sm.journal_note(copied_run)
    assert "03_benchmark" in note and last["finished"] in note


def test_inside_the_pipeline_nothing_is_flagged_and_torn_lines_are_skipped(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.report_html.write_text("<html></html>")
    monkeypatch.setenv(journal.PIPELINE_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        journal.record(run, "03_benchmark")
    with open(tmp_path / journal.JOURNAL_FILE, "a") as fh:
        fh.write('{"stage": "04_quan')  # a writer killed mid-line
    assert [e["stage"] for e in journal.read(run)] == ["03_benchmark"]
    assert sm.journal_note(run) == ""


def test_written_files_have_the_usual_permissions(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
