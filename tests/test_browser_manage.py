"""The web page manages streams, end to end in real headless Chromium (Debian's, driven by Playwright)
against a real uvicorn server running the service in this process (tiny random CLIP, a segmenter
sensitive enough that it opens highlights), with every request to another host blocked:

the token prompt says whether a token is missing or refused and where it is; a stream added from a
local file (the config allows local sources) goes live, its sentences are edited, its highlights appear
as cards with score, date, times and duration, paged with "Older"; a clip that cannot be cut says so;
a stream whose file ended shows "ended" and no fps; the API docs open from the page, offline, authorized
with the page's token; with a viewer token the page says it is read-only and offers no control that changes
anything; the stream is deleted. Screenshots of each view go to a temporary folder
(printed; CLIPLIVE_SCREENSHOTS=DIR keeps them there)."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn

from conftest import ffmpeg
from peers import free_port
from test_browser import CHROMIUM
from cliplive.server.app import create_app
from cliplive.server.config import Config
from cliplive.server.service import Service
from cliplive.server.store import Store
from cliplive.server.tokens import Credentials, TokenFile

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

TOKEN = "manage-test-token-0123456789"
VIEWER_TOKEN = "manage-viewer-token-0123456789"
SENSITIVE = {"prior_weight": 1.0, "open_threshold": 0.5, "close_threshold": 0.0, "min_length": 0.5, "merge_gap": 0.25, "min_score": 0.0}
ARCHIVED = 30  # stored highlights of an old stream: more than the page's 24 a page
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def videos(media) -> tuple[Path, Path]:
    """25 s cycling through five very different scenes, and a 2 s clip that ends quickly."""
    long, short = media / "manage-scenes.mp4", media / "manage-short.mp4"
    inputs = ["testsrc=", "color=c=red:", "mandelbrot=", "smptebars=", "color=c=blue:"]
    args = [a for src in inputs for a in ("-f", "lavfi", "-i", f"{src}size=320x240:rate=10")]
    chain = "".join(f"[{i}]trim=duration=1.5,setpts=PTS-STARTPTS[v{i}];" for i in range(5))
    ffmpeg(*args, "-filter_complex", f"{chain}{''.join(f'[v{i}]' for i in range(5))}concat=n=5:v=1,loop=loop=3:size=75[o]",
           "-map", "[o]", "-t", "25", "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", str(long))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "2", "-c:v", "libx264", "-g", "10",
           "-pix_fmt", "yuv420p", str(short))
    return long, short


def archive_highlights(db: Path, count: int) -> None:
    """`count` ended highlights of a stream that is gone, from yesterday, whose source file is no video:
    their clips cannot be cut."""
    db.parent.mkdir(parents=True, exist_ok=True)
    broken = db.parent / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    store = Store(db)
    yesterday = time.time() - 86_400
    for i in range(count):
        event = {"stream": "archive", "id": i, "query": "an old sentence", "query_index": 0, "start": 10.0 * i,
                 "score": 0.61, "best_frame_ts": 10.0 * i + 1}
        row = store.insert_highlight(event, str(broken), yesterday + 10 * i)
        store.update_highlight(row, {**event, "end": 10.0 * i + 4}, yesterday + 10 * i + 4)
    store.close()


@pytest.fixture
def server(tmp_path, tiny_clip):
    """The service on a real uvicorn server on a loopback port, in a thread with its own event loop."""
    data = tmp_path / "data"
    archive_highlights(data / "cliplive.db", ARCHIVED)
    config = Config.model_validate({"server": {"data_dir": str(data), "allow_local_sources": True}, "segmenter": SENSITIVE})
    service = Service(config, tiny_clip)
    tokens = TokenFile(data)
    tokens.add("viewer", "wall-screen", secret=VIEWER_TOKEN)
    app = create_app(service, Credentials(tokens, admin_token=TOKEN))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def shots() -> Path:
    folder = Path(os.environ.get("CLIPLIVE_SCREENSHOTS") or tempfile.mkdtemp(prefix="cliplive-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


def test_manage_streams_highlights_and_offline_docs(server, videos, shots):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/setup --test (it installs Debian's chromium)")
    long, short = videos
    elsewhere: list[str] = []  # requests to any host but this machine: blocked, and the test fails

    def only_local(route):
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("blockedbyclient")

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30_000, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_local)
            page = context.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)

            # the token: missing, then refused, then right; the messages say where it is
            page.locator("#token-form").wait_for(state="visible")
            page.locator("#error", has_text="A token is needed").wait_for()
            assert "cliplive token add" in page.inner_text("#error")
            page.fill("#token", "not-the-token-at-all")
            page.click("#token-form button")
            page.locator("#error", has_text="The token was refused").wait_for()
            assert "cliplive token add" in page.inner_text("#error")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            page.locator("#streams tbody").get_by_text("No streams").wait_for()
            assert page.locator("#error").is_hidden()

            # add: an API error is shown as the API says it; then two real streams
            page.click("#add-stream summary")
            add_stream(page, "door", "/no/such/file.mp4", "a red square")
            page.locator("#add-error").wait_for(state="visible")
            assert "file.mp4" in page.inner_text("#add-error"), page.inner_text("#add-error")
            add_stream(page, "scenes", str(long), "a red square\na dog on a beach", fps="4")
            page.locator('#streams tr[data-stream="scenes"] .state.live').wait_for()
            assert page.locator("#add-error").is_hidden()
            add_stream(page, "short", str(short), "a test pattern", fps="4")
            ended = page.locator('#streams tr[data-stream="short"]')
            ended.locator(".state.ended").wait_for(timeout=20_000)
            assert ended.locator("td.fps").inner_text() == "—"

            # edit the sentences (PATCH): the stream keeps running with the new ones
            row = page.locator('#streams tr[data-stream="scenes"]')
            row.locator("button.edit").click()
            row.locator("form.editor textarea").fill("a red square\na dog on a beach\na mandelbrot fractal")
            page.wait_for_timeout(3500)  # a refresh of the list meanwhile keeps what is typed
            row.locator("form.editor button[type=submit]").click()
            row.locator("td.sentences", has_text="a mandelbrot fractal").wait_for()
            assert row.locator("form.editor").count() == 0

            # highlights of the new stream: cards with score, date and times, duration
            cards = page.locator('#highlights .card[data-state="ended"]:not([data-query="an old sentence"])')
            cards.first.wait_for(timeout=30_000)
            text = cards.first.inner_text()
            assert re.search(r"^(\d+(\.\d)?|<0\.1)%$", cards.first.locator(".score").inner_text()), text
            assert re.search(r"\d{1,2}:\d{2}:\d{2}.*–.*\d{1,2}:\d{2}:\d{2}", cards.first.locator(".when").inner_text()), text
            assert re.search(r"scenes · \d+\.\d s", text), text
            page.wait_for_function("[...document.querySelectorAll('#highlights .card img')].some(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(shots / "page-streams.png"), full_page=True)

            # paging: the newest 24 first, then the older ones; none twice
            card_ids = "cards => cards.map(c => Number(c.dataset.id))"
            first = page.eval_on_selector_all("#highlights .card", card_ids)
            assert len(first) >= 24 and min(first) > 1, first  # the newest (new ones join as they come), not all
            assert page.locator("#older").is_visible()
            page.click("#older")
            page.wait_for_function(f"document.querySelectorAll('#highlights .card').length >= {ARCHIVED + 1}")
            ids = page.eval_on_selector_all("#highlights .card", card_ids)
            assert len(ids) == len(set(ids)) and ids == sorted(ids, reverse=True) and min(ids) == 1
            page.locator("#older").wait_for(state="hidden")

            # a clip that cannot be cut (its source is no video): a spinner and a disabled button, then why
            archived = '#highlights .card[data-id="1"]'
            page.locator(archived).scroll_into_view_if_needed()
            during = page.evaluate("""(sel) => { document.querySelector(sel + ' .play').click();
                const b = document.querySelector(sel + ' .play');
                return {disabled: b.disabled, spinner: !!b.querySelector('.spinner'), text: b.textContent}; }""", archived)
            assert during == {"disabled": True, "spinner": True, "text": "Cutting clip…"}, during
            page.locator(f"{archived} .clip-error", has_text="Clip unavailable").wait_for()
            assert page.locator(f"{archived} .play").is_enabled()

            # a clip that can be cut plays
            playable = page.locator('#highlights .card:not([data-query="an old sentence"]) .play:enabled').first
            playable.wait_for(timeout=30_000)
            playable.click()
            page.locator("#player[open]").wait_for(timeout=30_000)
            page.wait_for_function("document.querySelector('#clip').readyState >= 1")
            page.screenshot(path=str(shots / "page-highlights.png"), full_page=True)
            page.click("#player .close")

            # the API docs, from the page's link: offline, the endpoint list, authorized with the page's token
            page.click("#docs-link")
            page.wait_for_url("**/docs")
            page.locator(".opblock-tag", has_text="streams").first.wait_for()
            assert page.locator(".opblock-summary-path", has_text="/api/streams").count() >= 3
            page.screenshot(path=str(shots / "docs.png"), full_page=True)
            page.wait_for_function("document.querySelector('.btn.authorize') && "
                                   "document.querySelector('.btn.authorize').classList.contains('locked')")
            operation = page.locator("#operations-streams-list_streams_api_streams_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for()
            assert status.inner_text().strip().startswith("200"), status.inner_text()
            page.screenshot(path=str(shots / "docs-try-it-out.png"))

            # a viewer token: the streams and highlights, and no control that changes anything
            page.goto(server)
            page.evaluate("token => sessionStorage.setItem('cliplive-token', token)", VIEWER_TOKEN)
            page.reload()
            page.locator("#role", has_text="read-only (viewer token “wall-screen”)").wait_for()
            page.locator('#streams tr[data-stream="scenes"]').wait_for()
            page.locator('#highlights .card').first.wait_for()
            for control in ("#add-stream", "#start-form", '#streams tr[data-stream="scenes"] button.edit',
                            '#streams tr[data-stream="scenes"] button.delete'):
                assert page.locator(control).is_hidden(), control
            page.screenshot(path=str(shots / "page-viewer.png"), full_page=True)

            # delete, after a confirm
            page.evaluate("token => sessionStorage.setItem('cliplive-token', token)", TOKEN)
            page.goto(server)
            page.wait_for_function("document.body.dataset.role === 'admin'")
            assert page.locator("#role").is_hidden() and page.locator("#add-stream").is_visible()
            row = page.locator('#streams tr[data-stream="scenes"]')
            row.wait_for()
            page.once("dialog", lambda dialog: dialog.accept())
            row.locator("button.delete").click()
            row.wait_for(state="detached")
            assert not errors, errors
        finally:
            browser.close()
    assert not elsewhere, f"requests to other hosts: {elsewhere}"


def add_stream(page, name: str, source: str, sentences: str, fps: str = "2") -> None:
    page.fill("#add-name", name)
    page.fill("#add-source", source)
    page.fill("#add-sentences", sentences)
    page.fill("#add-fps", fps)
    page.click("#add-submit")
    page.wait_for_function("!document.querySelector('#add-submit').disabled")
