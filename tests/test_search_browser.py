"""`vatt serve` in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
driven by Selenium. The page loads, a caption of an indexed demo clip finds that clip, clicking a
result plays the video from the moment's start, and screenshots are kept as test artifacts
(``test-artifacts/search_results.png``: the result grid; ``search_page.png``: the player).

Skipped, with the reason, where Chromium or Selenium is missing; `.ci/run` installs both so CI
never skips it.
"""

import importlib.util
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

import vatt
from vatt.search.engine import SearchEngine
from vatt.search.window_index import WindowIndex, build_index
from vatt.search.server import make_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Without these Chromium tries to reach the network (closed here) and hangs on connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                  "--mute-audio"]


def _why_skip() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; .ci/run does)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium; it is in the test extra)"
    return None


# decided before any fixture runs, so a machine without a browser skips at once
pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


def _browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(driver, script, timeout=60.0, what="the page"):
    """Poll a JavaScript expression until it is truthy; return its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {script}")


@pytest.mark.slow
def test_search_and_play_in_a_real_browser(memorised_model, synth_corpus, tmp_path):
    model_dir, captions, keys = memorised_model
    out = tmp_path / "index"
    model = vatt.load_model(model_dir)
    driver = _browser(tmp_path)
    server = None
    try:
        build_index(synth_corpus / "retrieval", model, out)
        server = make_server(SearchEngine(WindowIndex(out), model), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        _wait(driver, "document.getElementById('library').textContent.includes('files')", what="the library line")
        assert driver.title == "vatt search"

        target = 2  # any demo clip: its own caption must bring it up
        caption, clip = captions[target], Path(keys[target].split("@")[0]).name
        box = driver.find_element("id", "query")
        box.send_keys(caption)
        driver.find_element("id", "search-button").click()
        _wait(driver, "document.querySelectorAll('#results .result').length > 0", what="results")
        cards = driver.find_elements("css selector", "#results .result")
        paths = [c.get_attribute("data-path") for c in cards]
        assert clip in paths[:3], (caption, paths)
        hit = cards[paths.index(clip)]
        start = float(hit.get_attribute("data-start"))
        _wait(driver, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
              what="the thumbnails")
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(tmp_path / "search_results.png"))
        shutil.copy(tmp_path / "search_results.png", ARTIFACTS / "search_results.png")

        hit.click()
        _wait(driver, "document.getElementById('player').dataset.seeked === '1'", what="the player to seek")
        at = driver.execute_script("return parseFloat(document.getElementById('player').dataset.seekedAt);")
        now = driver.execute_script("return document.getElementById('player').currentTime;")
        assert abs(at - start) < 0.5, (at, start)  # where the player landed after seeking
        assert now >= start - 0.5, (now, start)  # and it did not jump back since (it may be playing)
        src = driver.execute_script("return document.getElementById('player').src")
        assert src.endswith(hit.get_attribute("data-media")), (src, hit.get_attribute("data-media"))
        _wait(driver, "document.getElementById('player').readyState >= 2", what="video data")
        assert driver.execute_script("return document.getElementById('player').error") is None
        shot = tmp_path / "search_page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        shutil.copy(shot, ARTIFACTS / "search_page.png")
    finally:
        driver.quit()
        if server is not None:
            server.shutdown()
            server.server_close()
