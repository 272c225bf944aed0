"""The notebooks as a JupyterLab user meets them: `make lab`'s server, kernelspecs, papermill without -k."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import pytest

from scenelib.rundir import RUN_DIR_ENV, open_run

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def test_every_notebook_carries_its_kernelspec():
    for path in sorted((REPO / "notebooks").glob("0*.py")):
        nb = jupytext.read(path)
        assert nb.metadata["kernelspec"]["name"] == "python3", path.name
        assert nb.metadata["kernelspec"]["language"] == "python", path.name


def test_papermill_runs_a_converted_notebook_without_kernel_flags(tiny_run, tmp_path):
    """`jupytext --to notebook` then `papermill in out` with no -k / --language, as a user would type it."""
    code, run = tiny_run
    assert code == 0
    converted = tmp_path / "05_report.ipynb"
    subprocess.run(
        [VENV_BIN / "jupytext", "--to", "notebook", REPO / "notebooks" / "05_report.py", "-o", converted],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out.ipynb"
    result = subprocess.run(
        [VENV_BIN / "papermill", converted, out, "-p", "run_dir", str(run.root), "--cwd", REPO / "notebooks"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No kernel name found" not in result.stderr and out.exists()


def test_default_run_dir_resolution_and_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"not a run directory.*make report.*SCENELIB_RUN_DIR"):
        open_run("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    assert open_run("").root == tmp_path / "run"
    assert open_run(str(tmp_path / "run")).root == tmp_path / "run"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_py_notebooks_as_notebooks(tmp_path):
    """`make lab` on 127.0.0.1: the settings it writes into the venv make .py files open in the Jupytext
    Notebook viewer, and the contents API hands 05_report.py over as a notebook with its kernelspec."""
    port, token = _free_port(), "scenelib-test"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.open_browser=False"
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERLAB_SETTINGS_DIR"}
    env["HOME"] = str(tmp_path)  # nothing may land in the user's home
    server = subprocess.Popen(
        ["make", "-s", "lab", f"VENV={VENV_BIN.parent}", f"LAB_ARGS={args}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path):
        req = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    try:
        for _ in range(120):
            try:
                get("/api/status")
                break
            except OSError:
                time.sleep(1)
        settings = get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        # The venv's overrides.json becomes the setting's default, which the Lab front end applies.
        viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
        assert viewers["python"] == "Jupytext Notebook", viewers
        model = get("/api/contents/notebooks/05_report.py?type=notebook&content=1")
        assert model["type"] == "notebook"
        assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
        assert not (tmp_path / ".jupyter").exists()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
