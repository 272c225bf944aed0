"""A stage run by hand in a real JupyterLab (`make lab`, a real kernel, headless Chromium), as a user would:
double-click 03_benchmark.py, Run All on a copy of a finished run, read the staleness warning, run the
command it prints, and find every notebook byte-identical after opening and saving it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from scenelib import journal
from scenelib.handrun import TOLERANCE_ENV
from scenelib.rundir import RUN_DIR_ENV, RunDir
from tests import test_report_browser
from tests.test_lab import REPO, VENV_BIN, _free_port
from tests.test_report_browser import CHROMEDRIVER, CHROMIUM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver"),
]
TOKEN = "scenelib-walk"
browser = test_report_browser.browser  # headless Chromium, as the report's test drives it


def away_from_its_data(run: RunDir) -> None:
    """As if the run were copied to another machine: its images and data folder are not there."""
    gone = "/nonexistent/scenelib-data"
    info = json.loads(run.run_json.read_text())
    old = info["parameters"]["data_dir"]
    info["parameters"]["data_dir"] = gone
    info["argv"] = [gone if a == old else a for a in info["argv"]]
    run.run_json.write_text(json.dumps(info))
    run.splits_csv.write_text(run.splits_csv.read_text().replace(old, gone))


@pytest.fixture
def lab(tmp_path):
    """`make lab` on 127.0.0.1, with a relative SCENELIB_RUN_DIR (read from where make was started)."""
    port = _free_port()
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={TOKEN}"
    # a workspace of its own: Lab restores the last one (open tabs, the file browser's folder) otherwise
    args += f" --LabApp.workspaces_dir={tmp_path / 'workspaces'}"
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTERLAB_SETTINGS_DIR", journal.PIPELINE_ENV)}
    env["HOME"] = str(tmp_path / "home")
    env[TOLERANCE_ENV] = "1000"  # a shared test machine's speed varies; the rule has its own tests
    run_dir = tmp_path / "run"
    env[RUN_DIR_ENV] = os.path.relpath(run_dir, REPO)
    server = subprocess.Popen(
        ["make", "-s", "lab", f"VENV={VENV_BIN.parent}", f"LAB_ARGS={args}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5)
                break
            except OSError:
                time.sleep(1)
        yield base, run_dir
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _menu(driver, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(
        By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{menu}']"
    ).click()
    time.sleep(0.5)
    driver.find_element(By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']").click()


def _open_by_double_click(driver, name: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    item = f"//li[contains(@class,'jp-DirListing-item')][.//span[text()='{name}']]"

    def shown(d):  # in the DOM is not enough: the file browser lays its items out after adding them
        found = [e for e in d.find_elements(By.XPATH, item) if e.is_displayed() and e.size["height"] > 0]
        return found[0] if found else False

    ActionChains(driver).double_click(WebDriverWait(driver, 60, poll_frequency=0.5).until(shown)).perform()


def test_a_stage_run_by_hand_in_lab_flags_the_report_and_its_command_re_renders_it(
    tiny_run, browser, lab, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _, finished = tiny_run
    base, run_dir = lab
    shutil.copytree(finished.root, run_dir, symlinks=True)
    run = RunDir(run_dir)
    before = {p.name: p.read_bytes() for p in (REPO / "notebooks").glob("0*.py")}
    status_before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)

    browser.set_window_size(1280, 1000)
    browser.get(f"{base}/lab/tree?token={TOKEN}")
    _open_by_double_click(browser, "notebooks")
    _open_by_double_click(browser, "03_benchmark.py")
    WebDriverWait(browser, 120).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")
            and "Idle" in d.find_element(By.CSS_SELECTOR, "body").text
        )
    )
    assert not browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog"), "a kernel dialog opened"
    _menu(browser, "Run", "Run All Cells")

    outputs = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
    progress_seen, deadline = False, time.monotonic() + 900
    warning = ""
    while time.monotonic() < deadline:
        text = "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, outputs))
        progress_seen |= "03_benchmark" in text or "timing batch 1" in text or "end to end" in text
        found = re.search(r"python run_all\.py --output \S+ --only report", text)
        last = browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell .jp-InputPrompt")
        if found and last and re.search(r"\[\d+\]", last[-1].text):
            warning = found.group(0)
            break
        time.sleep(0.5)
    assert warning, "no staleness warning with a command in the notebook"
    assert progress_seen, "the benchmark cell showed no progress while it ran"
    assert "scenelib-stale" in run.report_html.read_text()  # the HTML says so too, until re-rendered

    # The wide results table stays inside the notebook (it scrolls sideways); a "TTA ms" column exists.
    fits = browser.execute_script(
        """const t = [...document.querySelectorAll('.jp-OutputArea-output table')]
             .find(t => t.innerText.includes('TTA ms'));
           if (!t) return null;
           const area = t.closest('.jp-OutputArea-output').getBoundingClientRect();
           return t.getBoundingClientRect().right <= area.right + 1;"""
    )
    assert fits is True, fits

    # Open and save an unedited notebook; then save 03 itself: the .py files must not change.
    _open_by_double_click(browser, "05_report.py")
    time.sleep(5)
    for _ in range(2):
        browser.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.CONTROL, "s")
        time.sleep(3)
    _menu(browser, "File", "Save All")
    time.sleep(5)

    # The printed command, verbatim, from the repository root; the run's images are elsewhere now.
    away_from_its_data(run)
    rendered = run.report_html.stat().st_mtime_ns
    env = {k: v for k, v in os.environ.items() if k != journal.PIPELINE_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` is the project's venv
    done = subprocess.run(warning, shell=True, cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    html = run.report_html.read_text()
    assert run.report_html.stat().st_mtime_ns != rendered and "scenelib-stale" not in html
    assert "Stages run by hand" in html and "03_benchmark" in html

    after = {p.name: p.read_bytes() for p in (REPO / "notebooks").glob("0*.py")}
    assert after == before, [n for n in before if before[n] != after.get(n)]
    status_after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    assert [ln for ln in status_after.stdout.splitlines() if "notebooks/" in ln] == [
        ln for ln in status_before.stdout.splitlines() if "notebooks/" in ln
    ]
    assert Path(run_dir / "journal.jsonl").read_text().count('"by hand"') >= 1
