"""A full disk (issue 11, finding 1): streams go on scoring, events wait in memory and are stored and sent in
order once space returns, the failure shows in the API and on /metrics, a low-disk watermark stops clips and
thumbnails first, and a stream whose processing dies shows `failed` and restarts.

Two ways to fill the disk: for real, a 16 MiB tmpfs mounted in a user+mount namespace (`unshare -rm`, no
root needed) holding the data dir of a `cliplive serve` process, filled and emptied by a ballast file; and,
in-process and fast, the store's own connection capped at the pages its database has (`PRAGMA
max_page_count`), those filled by a ballast table: SQLite's "database or disk is full", as a full disk gives it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import namedtuple
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from peers import free_port
from test_service import AUTH, asgi_client, make_app, scenes, serve_config, stream_spec, wait_for  # noqa: F401 (fixtures)
from cliplive.server import storage
from cliplive.server.storage import Backlog
from cliplive.stream.events import StatusEvent

FULL = "database or disk is full"


def fill_database(db: sqlite3.Connection) -> None:
    """No page more than the database has now, and those filled: its next growth fails as on a full disk."""
    db.execute("CREATE TABLE IF NOT EXISTS ballast (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    for size in (4000, 400, 40):  # big rows first, then the gaps they leave
        with suppress(sqlite3.OperationalError):
            for _ in range(100_000):
                db.execute("INSERT INTO ballast VALUES (zeroblob(?))", (size,))


class DiskSpace:
    """`shutil.disk_usage` as the watermark sees it: `free_mb` free; counts its calls."""

    def __init__(self, monkeypatch, free_mb: int = 10_000):
        self.free_mb, self.calls = free_mb, 0
        monkeypatch.setattr(storage.shutil, "disk_usage", self)

    def __call__(self, path):
        self.calls += 1
        return namedtuple("usage", "total used free")(2**40, 0, self.free_mb * 2**20)


def fill_last_page(service) -> int:
    """Status events of a stream "filler" until the store refuses one: the events table's last page is full
    too (a ballast table has pages of its own). The number the refused one carries, which now waits first."""
    for n in range(1000):
        service.emit(StatusEvent("filler", "live", {"n": n}))
        if service.backlog:
            return n
    pytest.fail("the full database took 1000 events")


def free_database(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA max_page_count = 1073741823")
    db.execute("DROP TABLE ballast")


def stored(db: sqlite3.Connection) -> dict[int, dict]:
    return {i: json.loads(body) for i, body in db.execute("SELECT id, body FROM events ORDER BY id")}


def metrics_of(text: str) -> dict[tuple, float]:
    return {(s.name, s.labels.get("stream") or s.labels.get("what")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def drain(subscription) -> list[int]:
    """Ids of the events published to `subscription` since it was last drained."""
    ids = []
    while not subscription.queue.empty():
        ids.append(subscription.queue.get_nowait().id)
    return ids


def same_event(stored_event: dict, waiting: dict) -> bool:
    """A stored event is a waiting one: the same but for the ids the store gave it (a highlight's)."""
    def without_ids(event: dict) -> dict:
        return {k: v for k, v in event.items() if k not in ("id", "highlight_id")}

    return without_ids(stored_event) == without_ids(waiting)


# --- in-process: a full database ---------------------------------------------------------------------


async def test_a_full_database_keeps_the_stream_scoring_and_its_events_are_stored_in_order_when_space_returns(
        make_app, scenes, monkeypatch):
    disk = DiskSpace(monkeypatch)
    service, app = make_app([stream_spec("mix", str(scenes))])
    async with asyncio.timeout(60), asgi_client(app) as client:
        db = service.store.db

        async def highlights_stored():
            return any(e["kind"] == "highlight" for e in stored(db).values())

        await wait_for(highlights_stored, 20, "a highlight stored before the disk fills")
        published = service.bus.subscribe("test")
        disk.free_mb = 0  # (the disk is full too: no thumbnails, whose churn would free pages)
        fill_database(db)
        fill_last_page(service)
        before = stored(db)

        async def waiting(count: int):
            info = (await client.get("/api/streams/mix")).json()
            return info if info["storage"]["backlog"] >= count else None

        first = await wait_for(lambda: waiting(1), 15, "an event of the stream refused by the full store")
        assert first["storage"]["ok"] is False and first["storage"]["error"] == FULL and first["storage"]["since"] > 0
        full = await wait_for(lambda: waiting(3), 15, "more events produced while full")
        assert full["state"] == "live" and full["metrics"]["scored"] > first["metrics"]["scored"], "the stream stopped scoring"
        samples = metrics_of((await client.get("/metrics")).text)
        assert samples[("cliplive_store_failing", None)] == 1 and samples[("cliplive_store_write_errors_total", None)] >= 3
        assert samples[("cliplive_store_backlog_events", None)] >= 3 and samples[("cliplive_store_dropped_events_total", None)] == 0
        response = await client.post("/api/streams", json=stream_spec("other", str(scenes)))
        assert response.status_code == 503 and response.json() == {"detail": f"storage unavailable: {FULL}"}
        assert "other" not in service.streams
        unstored = [dict(data) for data, _ in service.backlog.items]
        sent_while_full = drain(published)
        assert max(stored(db)) == max(before) and max(sent_while_full) <= max(before), "a waiting event was stored or sent"

        free_database(db)
        disk.free_mb = 10_000

        async def recovered():
            info = (await client.get("/api/streams/mix")).json()
            return info["storage"]["ok"] and info["storage"]["backlog"] == 0

        await wait_for(recovered, 10, "the backlog to be written once space returned")
        after = stored(db)
        assert list(after) == list(range(1, max(after) + 1)), "ids skipped or repeated"
        assert all(after[i] == event for i, event in before.items()), "an event stored before the disk filled changed"
        ids = [next(i for i, e in after.items() if same_event(e, w)) for w in unstored]  # every one of them stored...
        assert ids == sorted(ids) and ids[0] > max(before)  # ... in the order they were produced
        walls = [e["wall_time"] for e in after.values()]
        assert walls == sorted(walls), "events stored out of order"
        sent = sent_while_full + drain(published)
        assert sent == list(range(sent[0], max(after) + 1)) and set(ids) <= set(sent), "stored events not sent, once each"
        highlight_rows = {row[0] for row in db.execute("SELECT id FROM highlights")}
        assert {e["highlight_id"] for e in after.values() if e["kind"] == "highlight"} <= highlight_rows
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        samples = metrics_of((await client.get("/metrics")).text)
        assert samples[("cliplive_store_failing", None)] == 0 and samples[("cliplive_store_backlog_events", None)] == 0


async def test_the_backlog_keeps_the_newest_events_up_to_its_cap_and_counts_the_others(make_app):
    service, app = make_app()
    async with asyncio.timeout(30), asgi_client(app) as client:
        service.backlog = Backlog(capacity=5)
        fill_database(service.store.db)
        first_refused = fill_last_page(service)
        for last in range(first_refused + 1, first_refused + 8):
            service.emit(StatusEvent("filler", "live", {"n": last}))
        samples = metrics_of((await client.get("/metrics")).text)
        assert samples[("cliplive_store_backlog_events", None)] == 5
        assert samples[("cliplive_store_dropped_events_total", None)] == 3
        free_database(service.store.db)
        await wait_for(lambda: _empty(service), 5, "the retry timer to write the backlog (no new event comes)")
        kept = [e["detail"]["n"] for e in stored(service.store.db).values() if e["stream"] == "filler"]
        assert kept == [*range(first_refused), *range(last - 4, last + 1)]  # the 3 oldest waiting ones dropped


async def _empty(service) -> bool:
    return not service.backlog


# --- in-process: the low-disk watermark --------------------------------------------------------------


async def test_below_min_free_mb_clips_and_thumbnails_stop_and_resume_above_it(make_app, scenes, monkeypatch):
    disk = DiskSpace(monkeypatch, free_mb=100)
    service, app = make_app([stream_spec("mix", str(scenes))], min_free_mb=256)
    async with asyncio.timeout(50), asgi_client(app) as client:
        started = time.monotonic()

        async def ended_highlight(with_thumbnail: bool, after_id: int = 0):
            rows = (await client.get("/api/highlights", params={"stream": "mix"})).json()
            return next((h for h in rows if h["end"] is not None and h["id"] > after_id
                         and (h["thumbnail_url"] is not None) == with_thumbnail), None)

        low = await wait_for(lambda: ended_highlight(False), 20, "a highlight ended under the watermark")
        info = (await client.get("/api/streams/mix")).json()
        assert info["storage"] == {"ok": True, "error": None, "since": None, "backlog": 0, "low_disk": True}
        response = await client.get(f"/api/highlights/{low['id']}/clip.mp4")
        assert response.status_code == 503 and "low disk space" in response.json()["detail"]
        samples = metrics_of((await client.get("/metrics")).text)
        assert samples[("cliplive_low_disk", None)] == 1 and samples[("cliplive_store_failing", None)] == 0
        assert samples[("cliplive_low_disk_skipped_total", "thumbnail")] >= 1
        assert samples[("cliplive_low_disk_skipped_total", "clip")] == 1

        disk.free_mb = 10_000
        await wait_for(lambda: ended_highlight(True, low["id"]), 20, "a thumbnail once above the watermark")
        response = await client.get(f"/api/highlights/{low['id']}/clip.mp4")
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        assert metrics_of((await client.get("/metrics")).text)[("cliplive_low_disk", None)] == 0
        assert (await client.get("/api/streams/mix")).json()["storage"]["low_disk"] is False
        # Hundreds of frames and events, and free space measured about once a second, never per frame.
        assert disk.calls <= time.monotonic() - started + 2, disk.calls


# --- a stream whose processing dies ---------------------------------------------------------------------


async def test_a_stream_whose_processing_dies_shows_failed_then_restarts_and_goes_live(make_app, scenes):
    service, app = make_app([stream_spec("mix", str(scenes))])
    async with asyncio.timeout(40), asgi_client(app) as client:

        async def open_highlight():
            return next((h for h in service.store.highlights("mix") if h.state == "open"), None)

        highlight = await wait_for(open_highlight, 20, "a highlight open")
        runner = service.streams["mix"].runner
        scoring = runner.highlighter.push

        def broken(*args):  # once, as the store's unhandled error did from inside the stream's loop
            runner.highlighter.push = scoring
            raise sqlite3.OperationalError(FULL)

        runner.highlighter.push = broken
        failed = await wait_for(lambda: _state(client, "failed"), 10, "the stream failed", every=0.05)
        assert failed["last_status"]["state"] == "failed"
        assert failed["last_status"]["detail"] == {"error": f"OperationalError: {FULL}", "attempt": 1, "delay": 1.0}
        samples = metrics_of((await client.get("/metrics")).text)
        assert samples[("cliplive_stream_live", "mix")] == 0
        assert service.store.highlight(highlight.id).state == "ended", "the failed run left its highlight open"
        live = await wait_for(lambda: _state(client, "live"), 10, "the stream restarted")
        await wait_for(lambda: _scored_beyond(client, live["metrics"]["scored"] + 4), 10, "frames scored after the restart")
        states = [e["state"] for e in stored(service.store.db).values() if e["kind"] == "status"]
        assert states[-2:] == ["failed", "live"], states


async def _state(client: httpx.AsyncClient, state: str) -> dict | None:
    info = (await client.get("/api/streams/mix")).json()
    return info if info["state"] == state else None


async def _scored_beyond(client: httpx.AsyncClient, frames: int) -> bool:
    return (await client.get("/api/streams/mix")).json()["metrics"]["scored"] >= frames


# --- for real: `cliplive serve` on a full tmpfs ----------------------------------------------------------

DRIVER = r'''
"""In a user+mount namespace: a tmpfs at MNT, `cliplive serve` on it, and commands from stdin."""
import json, os, signal, sqlite3, subprocess, sys
mnt, config, log = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], check=True)
serve = [sys.executable, "-m", "cliplive.server.cli", "serve", "--config", config]
proc = subprocess.Popen(serve, stderr=open(log, "a"), stdout=subprocess.DEVNULL)
db = os.path.join(mnt, "data", "cliplive.db")
for command in sys.stdin:
    command = command.strip()
    if command == "fill":
        with open(os.path.join(mnt, "ballast"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError as e:
                answer = e.strerror
    elif command == "free":
        os.unlink(os.path.join(mnt, "ballast"))
        answer = "freed"
    elif command == "events":
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            answer = {i: json.loads(body) for i, body in conn.execute("SELECT id, body FROM events ORDER BY id")}
    elif command == "stop":
        proc.send_signal(signal.SIGTERM)
        answer = proc.wait(30)
    elif command == "serve again":
        again = subprocess.run(serve, capture_output=True, text=True, timeout=120)
        answer = {"rc": again.returncode, "stderr": again.stderr}
    print(json.dumps(answer), flush=True)
'''


class Namespace:
    """The driver above as a process; `ask` sends one command and reads its JSON answer."""

    def __init__(self, tmp_path: Path, config: Path):
        (tmp_path / "mnt").mkdir()
        (tmp_path / "driver.py").write_text(DRIVER)
        self.log = tmp_path / "serve.log"
        self.proc = subprocess.Popen(["unshare", "-rm", sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "mnt"),
                                      str(config), str(self.log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line, f"the namespace's driver is gone: {self.log.read_text()}"
        return json.loads(line)

    def close(self) -> None:
        with suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def namespaces_work() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not namespaces_work(), reason="user+mount namespaces (unshare -rm) are not available here")
async def test_serve_on_a_full_tmpfs_goes_on_scoring_and_stores_what_it_held_once_space_returns(tmp_path, tiny_clip_config, scenes):
    port = free_port()
    config = serve_config(tmp_path, port, tmp_path / "mnt" / "data", tiny_clip_config, scenes, "min_free_mb = 1")
    namespace = Namespace(tmp_path, config)
    try:
        async with asyncio.timeout(100), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as client:

            async def stream():
                with suppress(httpx.TransportError):
                    if (response := await client.get("/api/streams/mix")).status_code == 200:
                        return response.json()
                assert namespace.proc.poll() is None, namespace.log.read_text()

            async def highlights_stored():
                return any(e["kind"] == "highlight" for e in (await namespace.ask("events")).values())

            await wait_for(stream, 60, "cliplive serve on the tmpfs", explain=lambda: _log(namespace))
            await wait_for(highlights_stored, 20, "a highlight stored before the disk fills")
            before = await namespace.ask("events")
            assert await namespace.ask("fill") == "No space left on device"
            filled_at = time.time()

            async def waiting(count: int):
                info = await stream()
                return info if info["storage"]["backlog"] >= count else None

            first = await wait_for(lambda: waiting(1), 15, "an event the full disk refused", explain=lambda: _log(namespace))
            assert first["storage"]["ok"] is False and first["storage"]["error"] == FULL
            full = await wait_for(lambda: waiting(3), 15, "more events produced while full")
            assert full["state"] == "live" and full["metrics"]["scored"] > first["metrics"]["scored"], "the stream stopped scoring"
            samples = metrics_of((await client.get("/metrics")).text)
            assert samples[("cliplive_store_failing", None)] == 1 and samples[("cliplive_low_disk", None)] == 1
            assert samples[("cliplive_store_backlog_events", None)] >= 3
            for method, path, body in (("POST", "/api/streams", stream_spec("other", str(scenes))),
                                       ("PATCH", "/api/streams/mix", {"sentences": ["a cat"]}),
                                       ("DELETE", "/api/streams/mix", None)):
                response = await client.request(method, path, json=body)
                assert response.status_code == 503, (method, response.text)
                assert response.json()["detail"].startswith("storage unavailable: "), (method, response.text)
            kept = await stream()
            assert kept["sentences"] == ["a dog on a beach", "a red square"] and kept["state"] == "live"
            waiting_at_free, freed_at = kept["storage"]["backlog"], time.time()
            assert await namespace.ask("free") == "freed"

            async def recovered():
                info = await stream()
                return info["storage"]["ok"] and info["storage"]["backlog"] == 0

            await wait_for(recovered, 10, "the backlog to be written once space returned")
            after = {int(i): e for i, e in (await namespace.ask("events")).items()}
            assert all(after[int(i)] == e for i, e in before.items()), "an event stored before the disk filled changed"
            assert list(after) == list(range(1, max(after) + 1)), "ids skipped or repeated"
            held = [e for e in after.values() if filled_at <= e["wall_time"] < freed_at]  # what waited in memory
            assert len(held) >= waiting_at_free >= 3, "events produced while the disk was full are missing"
            walls = [e["wall_time"] for e in after.values()]
            assert walls == sorted(walls), "events stored out of order"

            assert await namespace.ask("stop") == 0
            final = await namespace.ask("events")
            opened = {e["highlight_id"] for e in final.values() if e["kind"] == "highlight" and e["type"] == "new"}
            ended = {e["highlight_id"] for e in final.values() if e["kind"] == "highlight" and e["type"] == "end"}
            assert opened and opened <= ended, "highlights left open through SIGTERM"

            # Starting on the full disk: one line, exit 1.
            assert await namespace.ask("fill") == "No space left on device"
            again = await namespace.ask("serve again")
            lines = again["stderr"].strip().splitlines()
            assert again["rc"] == 1 and "Traceback" not in again["stderr"], again["stderr"]
            errors = [line for line in lines if "RANDOM weights" not in line]  # the tiny encoder's own warning
            assert len(errors) == 1 and errors[0].startswith("cliplive: error: storage unavailable: "), again["stderr"]
    finally:
        namespace.close()


async def _log(namespace: Namespace) -> str:
    return namespace.log.read_text()[-3000:]
