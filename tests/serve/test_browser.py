"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against ``pthkit serve`` running
the real EfficientNet-Lite0 weights.

Chromium comes from the system (``.ci/install-browser.sh`` installs Debian's package); Playwright drives it through
``executable_path`` (a browser downloaded by ``playwright install`` does not run here). Set
``PTHKIT_SERVE_SCREENSHOT=docs/serve-screenshot.png`` to also save the screenshot for the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.serve.conftest import Server, kill_group, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no {CHROMIUM}: run .ci/install-browser.sh (apt-get install chromium, as root) to run the browser test",
)


@pytest.fixture(scope="module")
def lite0_server(tmp_path_factory: pytest.TempPathFactory, lite0_path: Path) -> Iterator[Server]:
    server = start_server(lite0_path, tmp_path_factory.mktemp("browser"), "--arch", "timm:tf_efficientnet_lite0")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            kill_group(server.process)


@pytest.fixture(scope="module")
def page(lite0_server: Server) -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 980, "height": 760})
            tab = context.new_page()
            tab.goto(lite0_server.url + "/", wait_until="load")
            yield tab
        finally:
            browser.close()


def test_coffee_is_espresso_with_a_score_bar(page, coffee: Path, tmp_path: Path):
    page.wait_for_function("document.getElementById('model').textContent.includes('lite0')", timeout=30_000)
    page.set_input_files("#file", str(coffee))
    top = page.locator("#classes .row").first
    top.locator(".label", has_text="espresso").wait_for(timeout=60_000)
    score = float(top.locator(".bar > span").get_attribute("data-score") or 0)
    width = top.locator(".bar > span").evaluate("el => el.getBoundingClientRect().width")
    full = top.locator(".bar").evaluate("el => el.getBoundingClientRect().width")
    assert score > 0.5 and width == pytest.approx(score * full, rel=0.05)
    assert page.locator("#preview").is_visible()
    page.locator("#how summary").click()
    assert "tf_efficientnet_lite0" in page.locator("#describe").inner_text()
    shot = tmp_path / "serve-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("PTHKIT_SERVE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
    page.locator("#how summary").click()


def test_a_text_file_shows_the_error(page, tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n" * 20, encoding="utf-8")
    page.set_input_files("#file", str(text))
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=30_000)
    assert "not an image" in error.inner_text()
    assert page.locator("#classes .row").count() == 0
