"""`sample.py serve` in a real browser: Debian's headless Chromium, driven by Playwright (nothing is
downloaded), uploads an image, waits for the output, checks it is sample.py's file, shows a clear
message for a file that is not an image, and saves a screenshot. Marked `browser` (run with
-m browser); skips without /usr/bin/chromium, playwright or gradio.

GEN_SERVE_SCREENSHOT=PATH also copies the screenshot there."""
from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from test_serve import same_file, sample_py, start_server, train_runs, write_inputs

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
# On a closed network Chromium's own background connections fail by the dozen: switch them off.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser is downloaded)")
    pytest.importorskip("gradio", reason='pip install -e ".[serve]"')
    root = tmp_path_factory.mktemp("browser")
    runs, inputs = train_runs(root, ("p2p", "seg")), write_inputs(root / "inputs")
    sample_py(runs["p2p"], "--input", inputs["photo"].parent, "--output", root / "reference")
    proc, url = start_server([runs["p2p"], runs["seg"]], root)
    yield root, url, inputs
    proc.terminate()
    proc.wait(timeout=30)


def test_page_uploads_translates_and_shows_bad_input(page_server, tmp_path):
    from playwright.sync_api import sync_playwright

    root, url, inputs = page_server
    (tmp_path / "notes.png").write_text("not an image")
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.get_by_role("tab", name="p2p").click()
        page.locator("#p2p-input input[type=file]").set_input_files(str(inputs["photo"]))
        page.locator("#p2p-input img").wait_for(timeout=30_000)  # the upload is shown
        page.locator("#p2p-run").click()
        output = page.locator("#p2p-output img")
        output.wait_for(timeout=60_000)
        src = output.get_attribute("src")
        shot = tmp_path / "serve_screenshot.png"
        page.screenshot(path=str(shot), full_page=True)

        page.get_by_role("tab", name="seg").click()
        page.locator("#seg-input input[type=file]").set_input_files(str(tmp_path / "notes.png"))
        page.locator("#seg-run").click()
        page.get_by_text("cannot read image notes.png").first.wait_for(timeout=30_000)  # the page says why
        page.locator("#seg-input input[type=file]").set_input_files(str(inputs["photo"]))
        page.locator("#seg-run").click()  # the server keeps serving: a photo is segmented, with its legend
        page.get_by_text("label id").first.wait_for(timeout=30_000)
        browser.close()

    served = tmp_path / "served.png"
    address = src if src.startswith("http") else url + src.lstrip("/")
    served.write_bytes(urllib.request.urlopen(address).read())
    assert same_file(served, root / "reference" / "photo.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("GEN_SERVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["GEN_SERVE_SCREENSHOT"])
    outside = [u for u in requests if not u.startswith((url, "data:", "blob:"))]
    assert not outside, f"the page fetched from elsewhere: {outside[:5]}"  # no telemetry, fonts, CDNs
