"""A run stopped by Ctrl-C (SIGINT to the process group) or killed (SIGKILL) resumes to the same results.

The driver runs as a real process, as a user starts it; it is stopped while a stage runs, then resumed with
``--resume``. The resumed run must reach the uninterrupted run's results.csv (timings aside), leave no kernel
behind, and a Ctrl-C must say what to do in a line or two rather than a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from scenelib.rundir import RunDir, read_json
from scenelib.stages.quantize import is_slower

from .conftest import tiny_args

REPO = Path(__file__).resolve().parent.parent
SAME = ["model", "variant", "status", "recipe", "val_accuracy", "accuracy", "accuracy_tta", "macro_f1"]


def _slower(run_dir: Path) -> set[tuple[str, str]]:
    """The (model, variant) pairs a run found slower than its fp32 (they have no test numbers)."""
    models = read_json(RunDir(run_dir).quantization_json)["models"]
    return {
        (model, variant)
        for model, entry in models.items()
        for variant, v in entry.get("variants", {}).items()
        if is_slower(v)
    }


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "run_all.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        env={**os.environ, "PYTHONPATH": str(REPO)},
        # A foreground job hears Ctrl-C even where this suite runs with SIGINT ignored (a background job of
        # a script inherits SIG_IGN, and a driver started so rightly ignores Ctrl-C).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 300) -> str:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen)}")


def _kernels_of(run_dir: Path) -> list[psutil.Process]:
    """Kernels started for this run (the executor names the run's progress file in their environment)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel" in " ".join(p.info["cmdline"] or []) and str(run_dir) in p.environ().get(
                "SCENELIB_PROGRESS", ""
            ):
                out.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "during"),
    [(signal.SIGINT, "02_train_model mobilenet_v2: running"), (signal.SIGKILL, "04_quantize: running")],
)
def test_an_interrupted_run_resumes_to_the_same_results(tiny_dataset, tiny_run, tmp_path, sig, during):
    _, reference = tiny_run
    out = tmp_path / "run"
    proc = _start(tiny_args(tiny_dataset, out))
    _wait_for(proc, during)
    time.sleep(2)  # inside the stage
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    else:
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone dies; its kernel must notice
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "Traceback" not in err and "ZMQError" not in err, err
        assert f"--resume --output {out}" in err
    deadline = time.monotonic() + 30
    while _kernels_of(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _kernels_of(out), "a kernel outlived its driver"

    resumed = subprocess.run(
        [sys.executable, str(REPO / "run_all.py"), *tiny_args(tiny_dataset, out), "--resume"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "01_explore_data: done in an earlier run, skipped" in resumed.stdout
    assert not list(out.rglob("*.tmp")), "a half-written file was left behind"
    expected = pd.read_csv(reference.results_csv)[SAME]
    got = pd.read_csv(out / "results.csv")[SAME]
    assert list(zip(got.model, got.variant)) == list(zip(expected.model, expected.variant))
    # An INT8 variant slower than its fp32 is not evaluated on test; which one is slower is a timing, free
    # to differ between any two runs, so a row either run found slower is left out.
    slower = _slower(out) | _slower(reference.root)
    timed = pd.Series([pair in slower for pair in zip(got.model, got.variant)], index=got.index)
    assert not timed[got.variant.isin(["fp32", "onnx-fp32"])].any()
    pd.testing.assert_frame_equal(got[~timed], expected[~timed], check_exact=False, rtol=1e-9)


def test_a_ctrl_c_lost_inside_a_stage_still_stops_the_run(tiny_dataset, tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt swallowed on its way up (as one raised inside a finalizer is) must not let the run
    carry on: the stage that finished is kept, and the run stops after it with the resume message."""
    from scenelib import runner
    from scenelib.pipeline import main

    ran = []

    def swallowing_run_job(job, executor=None):
        ran.append(job.stage)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # lost, as Python drops one raised in a finalizer
        return None

    monkeypatch.setattr(runner, "run_job", swallowing_run_job)
    out = tmp_path / "run"
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        assert main(tiny_args(tiny_dataset, out)) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert ran == ["01_explore_data"]
    err = capsys.readouterr().err
    assert f"--resume --output {out}" in err
    assert "01_explore_data" in (out / "run.json").read_text()  # the finished stage was recorded


def test_a_driver_started_with_ctrl_c_ignored_keeps_ignoring_it():
    """``nohup python run_all.py ... &`` from a script: SIGINT is ignored, and stays so during the run."""
    from scenelib.executors import Interrupts

    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Interrupts.remembered():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt, nothing remembered
            time.sleep(0.2)
        assert not Interrupts.seen and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)
