"""The produced report.html in a real browser: headless Chromium through chromedriver (selenium)."""

from __future__ import annotations

import contextlib
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (make browser)"
    ),
]


@pytest.fixture
def browser():
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_report_renders_offline_with_every_image_and_the_table(tiny_run, browser, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, run = tiny_run
    browser.get(run.report_html.as_uri())
    assert "Scene classification" in browser.title
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    script = "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    with contextlib.suppress(TimeoutException):  # big data-URI images may still be decoding at "load"
        WebDriverWait(browser, 15).until(lambda d: all(d.execute_script(script)))
    loaded = browser.execute_script(script)
    assert len(loaded) >= 6 and all(loaded), loaded
    tables = [t.text for t in browser.find_elements(By.TAG_NAME, "table")]
    assert any("latency ms (bs1)" in t and "mobilenet_v2" in t and "onnx-int8" in t for t in tables)
    shot = tmp_path / "report.png"
    browser.set_window_size(1280, browser.execute_script("return document.body.scrollHeight"))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
