"""The web page end to end: real headless Chromium (Debian's `chromium`, driven by Playwright) sends its
fake camera, fed real footage, over WebRTC to a real `cliplive serve` process with the `conse` encoder.

The footage is the demo's carphone clip (a man in a tie, in a car): highlights for "a man wearing a tie"
must appear in the page, none for "wild animals in nature". Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from peers import free_port

CHROMIUM = "/usr/lib/chromium/chromium"  # the real binary (/usr/bin/chromium is a wrapper script)
TOKEN = "browser-test-token-0123456789"
RIGHT, WRONG = "a man wearing a tie", "wild animals in nature"
SCREENSHOT = Path("/tmp/cliplive-page.png")

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")


@pytest.fixture(scope="module")
def camera_y4m(tmp_path_factory) -> Path:
    """The carphone clip played forward then backward (9.6 s, 640x360, 25 fps) as Chromium's fake camera
    input (it loops the file)."""
    from cliplive.server.demo import FPS, HEIGHT, WIDTH, clip_path, read_clip

    frames, _ = read_clip(clip_path("carphone"))
    path = tmp_path_factory.mktemp("camera") / "carphone.y4m"
    ffmpeg = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}",
                               "-r", str(FPS), "-i", "-", "-pix_fmt", "yuv420p", str(path)], stdin=subprocess.PIPE)
    for image in frames + frames[::-1]:
        ffmpeg.stdin.write(image.tobytes())
    ffmpeg.stdin.close()
    assert ffmpeg.wait(timeout=60) == 0
    return path


@pytest.fixture
def server(tmp_path):
    """`cliplive serve` on a loopback port, with a token, offering loopback ICE candidates."""
    port = free_port()
    config = tmp_path / "cliplive.toml"
    config.write_text(f'[server]\nport = {port}\ntoken = "{TOKEN}"\ndata_dir = "data"\n[encoder]\nkind = "conse"\n')
    env = {**os.environ, "CLIPLIVE_WEBRTC_LOOPBACK": "1"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cliplive.server.cli", "serve", "--config", str(config)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_camera_highlights_appear_in_the_page(server, camera_y4m):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/setup --test (it installs Debian's chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30_000, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_y4m}", "--allow-loopback-in-peer-connection",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server)
            page.locator("#token-form").wait_for(state="visible")  # the API answered 401: the page asks once
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            page.locator("#streams tbody").get_by_text("No streams").wait_for()

            page.fill("#sentences", f"{RIGHT}\n{WRONG}")
            page.fill("#name", "browser-cam")
            page.click("#start")
            right = page.locator(f'#live-highlights li[data-query="{RIGHT}"]')
            right.first.wait_for(timeout=45_000)
            page.locator('#streams tr[data-stream="browser-cam"] .state.live').wait_for(timeout=10_000)
            page.wait_for_function("document.querySelector('#live-highlights li[data-query]') && "
                                   "window.getComputedStyle(document.querySelector('#plot')).width !== '0px'")
            page.wait_for_timeout(3000)  # a few more seconds of plot for the screenshot
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert page.locator(f'#live-highlights li[data-query="{WRONG}"]').count() == 0
            assert RIGHT in page.inner_text("#live-highlights")

            page.click("#stop")  # the stream stops: its open highlight ends and is stored, with a thumbnail
            page.locator(f'#live-highlights li[data-query="{RIGHT}"][data-state="ended"]').first.wait_for(timeout=10_000)
            card = page.locator(f'#highlights .card[data-query="{RIGHT}"]')
            card.first.wait_for(timeout=15_000)
            page.wait_for_function(f"[...document.querySelectorAll('#highlights .card[data-query=\"{RIGHT}\"] img')]"
                                   ".some(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
            assert page.locator(f'#highlights .card[data-query="{WRONG}"]').count() == 0
            page.screenshot(path=str(SCREENSHOT.with_name("cliplive-page-stopped.png")), full_page=True)
        finally:
            browser.close()
    stored = httpx.get(f"{server}/api/highlights", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
    assert stored and {h["query"] for h in stored} == {RIGHT}
    assert all(h["stream"] == "browser-cam" and h["state"] == "ended" for h in stored)

