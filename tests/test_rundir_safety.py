"""Nothing a user made is lost or overwritten: --force, bad --output, bad options, concurrent writers."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from scenelib.pipeline import main
from scenelib.rundir import (
    RunDirError,
    RunLock,
    check_can_start_over,
    create_run_dir,
    is_tool_run_dir,
    point_link,
    read_json,
    start_over,
    write_json,
)

from .conftest import write_image_tree


@pytest.fixture
def data(tmp_path):
    return write_image_tree(tmp_path / "data", ["a", "b"], 4, size=8)


def test_force_refuses_a_folder_scenelib_did_not_create(tmp_path, data, capsys):
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("chapter 1")
    (out / "sub" / "data.csv").write_text("1,2")
    code = main(["--dataset", "folder", "--data-dir", str(data), "--output", str(out), "--force"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refuses to delete" in err and "Traceback" not in err
    assert (out / "thesis.tex").read_text() == "chapter 1" and (out / "sub" / "data.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["sub", "thesis.tex"]  # not even a lock file


def test_force_never_deletes_a_folder_holding_the_repo_data_or_home(tmp_path):
    run = create_run_dir(tmp_path / "run")
    (run / "data").mkdir()
    with pytest.raises(RunDirError, match="contains"):
        check_can_start_over(run, [run / "data"])
    with pytest.raises(RunDirError, match="contains"):
        check_can_start_over(run, [run])
    assert (run / "data").is_dir()


def test_force_empties_a_run_directory_it_created(tmp_path):
    run = create_run_dir(tmp_path / "run")
    (run / "models" / "m").mkdir(parents=True)
    (run / "results.csv").write_text("old")
    start_over(run, [tmp_path / "elsewhere"])
    assert sorted(p.name for p in run.iterdir()) == [".scenelib-run"] and is_tool_run_dir(run)


def test_output_that_is_a_file_is_one_line(tmp_path, data, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["--dataset", "folder", "--data-dir", str(data), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err and target.read_text() == "mine"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--epochs", "0", "--epochs must be a positive number"),
        ("--threads", "-1", "--threads must be a positive number"),
        ("--models", ",", "names no model"),
        ("--models", "simple_cnn,simple_cnn", "twice"),
        ("--batch-size", "0", "--batch-size must be"),
        ("--calibration-images", "-5", "--calibration-images must be"),
        ("--lr", "0", "--lr must be"),
        ("--repeats", "0", "--repeats must be"),
        ("--weights", "typo.pth", "neither auto"),
    ],
)
def test_nonsense_options_are_refused_before_anything_is_written(tmp_path, data, capsys, option, value, says):
    out = tmp_path / "out"
    assert main(["--dataset", "folder", "--data-dir", str(data), "--output", str(out), option, value]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    a = create_run_dir(tmp_path / "20260101-000000", unique=True)
    b = create_run_dir(tmp_path / "20260101-000000", unique=True)
    assert a != b and b.name == "20260101-000000-2" and is_tool_run_dir(a) and is_tool_run_dir(b)


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path):
    run = create_run_dir(tmp_path / "run")
    with RunLock(run), pytest.raises(RunDirError, match="in use by pid"):
        RunLock(run).__enter__()
    with RunLock(run):  # released: free again
        pass


def test_concurrent_json_writers_never_collide(tmp_path):
    target = tmp_path / "run.json"
    errors = []

    def writer(n):
        try:
            for i in range(300):
                write_json(target, {"writer": n, "i": i})
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and read_json(target)["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "benchmark.json"
    write_json(target, {"v": 1})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json(target, {"v": 2})
    monkeypatch.undo()
    assert read_json(target) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["benchmark.json"]


def test_latest_link_is_replaced_atomically(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    point_link(tmp_path / "latest", "a")
    point_link(tmp_path / "latest", "b")
    assert os.readlink(tmp_path / "latest") == "b" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a",
        "b",
        "latest",
    ]


def test_a_dataset_the_split_cannot_serve_is_refused_before_anything_is_written(tmp_path, capsys):
    one_class = write_image_tree(tmp_path / "one", ["only"], 6, size=8)
    out = tmp_path / "out"
    assert main(["--dataset", "folder", "--data-dir", str(one_class), "--output", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err and not out.exists()
    tiny = write_image_tree(tmp_path / "tiny", ["big", "small"], 6, size=8)
    for extra in sorted((tiny / "small").iterdir())[1:]:
        extra.unlink()
    assert main(["--dataset", "folder", "--data-dir", str(tiny), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "too few in: small (1)" in err and "big" not in err.split("too few in:")[1] and not out.exists()
