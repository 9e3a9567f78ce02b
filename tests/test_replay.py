"""A replay storm (issue 11, finding 2): 50 SSE clients asking for everything from id 0 over 20k stored events.

The service runs as `cliplive serve` in its own process (the clients' parsing must not share its event
loop), with 20k events put in its store before it starts. While the clients replay, a thread polls
`/healthz`, and a live client waits for an event of a stream added mid-storm. Replays are capped at
`max_replay_events`: each client gets a `replay_truncated` notice, then the newest events, gap-free and
duplicate-free, then the live ones. A second test checks the notice on WebSocket and on a per-stream
SSE replay, in process, with a small `max_replay_events`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from peers import free_port
from test_service import AUTH, TOKEN, make_app, uvicorn_server  # noqa: F401 (fixture)
from cliplive.server.store import Store

STORED = 20_000
CLIENTS = 50
MAX_REPLAY = 10_000  # the default


def fill_store(db: Path, count: int) -> None:
    store = Store(db)
    with store.transaction():
        for i in range(count):
            store.append_event({"kind": "status", "stream": "cam", "state": "live", "detail": {"n": i, "note": "x" * 60}})
    store.close()


@pytest.fixture
def served(tmp_path):
    """`cliplive serve` (no auth, the offline encoder, no streams) over a store holding STORED events: its URL."""
    data = tmp_path / "data"
    data.mkdir()
    fill_store(data / "cliplive.db", STORED)
    config = tmp_path / "cliplive.toml"
    config.write_text('[server]\ndata_dir = "data"\nallow_local_sources = true\n')
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cliplive.server.cli", "serve", "--config", str(config), "--encoder", "conse",
                             "--no-auth", "--port", str(port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        assert time.monotonic() < deadline, "cliplive serve did not answer in 60 s"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def sse_messages(response: httpx.Response):
    """(event type, id, data) of each message of an SSE response; data decoded only for typed events (the
    notice), so 50 clients x 10k events parse quickly."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        *messages, buffer = buffer.split(b"\n\n")
        for message in messages:
            fields = dict(line.split(b": ", 1) for line in message.split(b"\n") if b": " in line and not line.startswith(b":"))
            if b"id" in fields:
                kind = fields.get(b"event", b"message").decode()
                yield kind, int(fields[b"id"]), json.loads(fields[b"data"]) if kind != "message" else fields[b"data"]


async def replaying_client(client: httpx.AsyncClient, until_id: int) -> list[tuple[str, int, object]]:
    """What a client asking for everything from id 0 receives, up to event `until_id`."""
    got = []
    async with client.stream("GET", "/api/events", headers={"Last-Event-ID": "0"}) as response:
        assert response.status_code == 200
        async for message in sse_messages(response):
            got.append(message)
            if message[1] >= until_id:
                return got
    return got


def poll_healthz(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """In a thread of its own, so its timing is not the test's event loop's."""
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)


async def test_a_replay_storm_keeps_healthz_fast_and_every_client_gets_a_truncated_gap_free_replay(served):
    latencies: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_healthz, args=(served, stop, latencies), daemon=True)
    poller.start()
    try:
        async with asyncio.timeout(90), httpx.AsyncClient(base_url=served, timeout=30) as client:
            live_seen = asyncio.get_running_loop().create_future()

            async def live_client() -> None:
                async with client.stream("GET", "/api/events") as response:
                    async for _, event_id, data in sse_messages(response):
                        if json.loads(data).get("stream") == "late":
                            live_seen.set_result((time.monotonic(), event_id))
                            return

            live = asyncio.create_task(live_client())
            await asyncio.sleep(0.5)  # connected before the storm
            # Each replaying client reads on until the first event after the stored ones: a live one.
            storm = [asyncio.create_task(replaying_client(client, STORED + 1)) for _ in range(CLIENTS)]
            await asyncio.sleep(1.0)  # mid-storm: a new stream's status events are live events
            created = await client.post("/api/streams", json={"name": "late", "source": "rtsp://127.0.0.1:9/none",
                                                               "sentences": ["a cat"]})
            assert created.status_code == 201, created.text
            posted = time.monotonic()
            seen_at, first_live_id = await asyncio.wait_for(live_seen, 10)
            results = await asyncio.gather(*storm)
            await live
    finally:
        stop.set()
        poller.join(15)

    assert first_live_id == STORED + 1
    assert seen_at - posted < 1.0, f"the live event took {seen_at - posted:.2f} s to reach a live client"
    for got in results:
        (kind, notice_id, notice), *events = got
        assert kind == "replay_truncated"
        assert notice == {"kind": "replay_truncated", "after": 0, "skipped": STORED - MAX_REPLAY, "resume_after": STORED - MAX_REPLAY}
        assert notice_id == STORED - MAX_REPLAY  # an EventSource reconnecting now resumes after the skipped ones
        ids = [event_id for _, event_id, _ in events]
        assert ids == list(range(STORED - MAX_REPLAY + 1, STORED + 2)), "gap or duplicate"
        assert all(kind == "message" for kind, _, _ in events)
    assert json.loads(got[-1][2])["stream"] == "late" and json.loads(got[1][2])["event_id"] == STORED - MAX_REPLAY + 1
    assert len(latencies) > 20
    p99 = float(np.quantile(latencies, 0.99))
    assert p99 < 0.2, f"/healthz p99 {p99 * 1000:.0f} ms during the storm (max {max(latencies) * 1000:.0f} ms)"


async def test_the_truncation_notice_on_websocket_and_per_stream_sse_replays(make_app):
    service, app = make_app(max_replay_events=5)
    async with asyncio.timeout(30), uvicorn_server(app) as url:
        for stream in ["cam"] * 12 + ["other"] * 3:
            service.store.append_event({"kind": "status", "stream": stream, "state": "live"})
        async with websockets.connect(f"{url.replace('http', 'ws')}/api/events/ws?after=2&access_token={TOKEN}") as ws:
            received = [json.loads(await ws.recv()) for _ in range(6)]
        assert received[0] == {"kind": "replay_truncated", "after": 2, "skipped": 8, "resume_after": 10}
        assert [e["event_id"] for e in received[1:]] == [11, 12, 13, 14, 15]

        async def sse(params: dict, count: int) -> list[tuple[str, int, object]]:
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client, \
                    client.stream("GET", "/api/events", params=params) as response:
                got = []
                async for message in sse_messages(response):
                    got.append(message)
                    if len(got) == count:
                        return got

        (kind, notice_id, notice), *events = await sse({"stream": "cam", "after": 0}, 6)
        assert (kind, notice_id, notice) == ("replay_truncated", 7, {"kind": "replay_truncated", "after": 0, "skipped": 7,
                                                                      "resume_after": 7})
        assert [(kind, event_id, json.loads(data)["stream"]) for kind, event_id, data in events] == [
            ("message", i, "cam") for i in range(8, 13)]
        within = await sse({"after": 10}, 5)  # no more than the limit: no notice
        assert [(kind, event_id) for kind, event_id, _ in within] == [("message", i) for i in range(11, 16)]
