"""`cliplive serve`: the HTTP API, live events, persistence and the guards, against real servers.

In-process tests run the app on its ASGI interface (httpx's ASGITransport) or on a real uvicorn server
on a loopback port where streaming matters (SSE, WebSocket). Process tests run `cliplive serve` and kill
it. Sources are real: ffmpeg-made files played at real-time pace, a GStreamer RTSP server. Every test is
bounded by an asyncio or subprocess timeout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets
from prometheus_client.parser import text_string_to_metric_families

from conftest import ffprobe_json, scene_cycle
from peers import RtspServer, free_port, require_rtsp_server
from cliplive.server.app import create_app
from cliplive.server.bus import EventBus
from cliplive.server.config import Config, ConfigError, load_config
from cliplive.server.service import Service
from cliplive.server.sinks import SinkMetrics
from cliplive.server.store import StoredEvent

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Relative to the stream's own statistics, so random tiny-CLIP similarities open and close segments.
SENSITIVE = {"prior_weight": 1.0, "open_threshold": 0.5, "close_threshold": 0.0, "min_length": 0.5, "merge_gap": 0.25, "min_score": 0.0}


@pytest.fixture(scope="module")
def scenes(media) -> Path:
    """60 s of H.264 (10 fps, keyframe every second) cycling through five very different 1.5 s scenes."""
    return scene_cycle(media / "scenes.mp4", seconds=60, fps=10, gop=10)


def stream_spec(name: str, source: str, **extra) -> dict:
    return {"name": name, "source": source, "sentences": ["a dog on a beach", "a red square"], "fps": 4, **extra}


@pytest.fixture
def make_app(tmp_path, tiny_clip):
    """(service, app) over a fresh data dir, with the session's tiny CLIP encoder."""

    def make(streams: list[dict] = (), allow_local: bool = True, **server):
        config = Config.model_validate({
            "server": {"data_dir": str(tmp_path / "data"), "allow_local_sources": allow_local, **server},
            "segmenter": SENSITIVE, "streams": list(streams)})
        service = Service(config, tiny_clip)
        return service, create_app(service, TOKEN)

    return make


@asynccontextmanager
async def asgi_client(app):
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cliplive", headers=AUTH) as client:
            yield client


@asynccontextmanager
async def uvicorn_server(app):
    """The app on a real uvicorn server on loopback, in this event loop."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_for(predicate, timeout: float, what: str, every: float = 0.2, explain=None):
    """`predicate()`'s first truthy result; on timeout, fails with what `explain()` says about the state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f": {await explain()}" if explain else ""))


async def sse_events(response: httpx.Response):
    """(id, event) pairs of a Server-Sent Events response."""
    event_id = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            yield event_id, json.loads(line[6:])


def stored_events(db: Path) -> dict[int, dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {i: {"event_id": i, **json.loads(body)} for i, body in conn.execute("SELECT id, body FROM events ORDER BY id")}


# --- configuration ---------------------------------------------------------------------------------


def test_config_errors_name_the_file_and_key(tmp_path, scenes):
    cases = {
        "server = [": "not valid TOML",
        "[server]\nprot = 1": "server.prot: unknown option 'prot' (did you mean 'port'?)",
        f'[[streams]]\nname = "a"\nsource = "{scenes}"\nsentences = ["x"]\nfps = 0': "streams.0.fps: must be greater than 0",
        f'[[streams]]\nname = "a"\nsource = "{scenes}"': "give at least one sentence",
        f'[[streams]]\nname = "a"\nsource = "{scenes}"\nsentences = ["x"]\n' * 2: "stream names must be unique: a",
        '[[streams]]\nname = "a"\nsource = "nope.mp4"\nsentences = ["x"]': "streams[0] (a): no such file",
        "[segmenter]\nmin_length = -1": "must not be negative",
    }
    for text, message in cases.items():
        path = tmp_path / "cliplive.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="cliplive.toml") as error:
            load_config(path)
        assert message in str(error.value), (text, str(error.value))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_no_auth_only_on_loopback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cliplive.server.cli", "serve", "--host", "0.0.0.0", "--no-auth"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--no-auth is only allowed on a loopback address" in out.stderr


# --- guards ----------------------------------------------------------------------------------------


async def test_every_endpoint_but_healthz_needs_the_token(make_app):
    service, app = make_app()
    async with asyncio.timeout(30), asgi_client(app) as client:
        assert (await client.get("/healthz", headers={"Authorization": ""})).json() == {"status": "ok"}
        for path in ("/api/streams", "/api/highlights", "/api/events", "/metrics", "/api/highlights/1/clip.mp4"):
            for auth in ("", "Bearer wrong-token-0123456789", f"Basic {TOKEN}"):
                response = await client.get(path, headers={"Authorization": auth})
                assert response.status_code == 401, (path, auth)
                assert response.json() == {"detail": "missing or invalid bearer token"}
                assert response.headers["www-authenticate"].startswith("Bearer")
        response = await client.post("/api/streams", content=b"{not json", headers={"Authorization": ""})
        assert response.status_code == 401  # refused before the body is even read
        # The token in the query string is for EventSource/WebSocket only.
        assert (await client.get(f"/api/streams?access_token={TOKEN}", headers={"Authorization": ""})).status_code == 401


async def test_bad_requests_are_4xx_json(make_app):
    service, app = make_app(allow_local=False, max_body_bytes=4096)
    async with asyncio.timeout(30), asgi_client(app) as client:
        for source in ("file:///etc/passwd", "/etc/passwd", "ftp://example.com/x.mp4", "rtsp://", "concat:a.mp4|b.mp4",
                       "rtsp-listen://0.0.0.0:8554/cam", "/dev/video0", "rtsp://cam/a b", "gopher://x"):
            response = await client.post("/api/streams", json=stream_spec("cam", source))
            assert response.status_code == 400, (source, response.text)
            assert "source" in response.json()["detail"] or "no host" in response.json()["detail"]
        response = await client.post("/api/streams", json=stream_spec("cam", "rtsp://127.0.0.1:1/x", images=["/etc/hostname"]))
        assert response.status_code == 400 and "reference images" in response.json()["detail"]
        bad_bodies = {
            "malformed JSON": b'{"name": "cam", ',
            "unknown field": json.dumps({**stream_spec("cam", "rtsp://cam/x"), "shell": "rm -rf /"}).encode(),
            "wrong type": json.dumps(stream_spec("cam", "rtsp://cam/x", fps="fast")).encode(),
            "no sentence": json.dumps(stream_spec("cam", "rtsp://cam/x", sentences=[])).encode(),
            "bad name": json.dumps(stream_spec("../etc", "rtsp://cam/x")).encode(),
            "not an object": b"[1, 2, 3]",
        }
        for what, body in bad_bodies.items():
            response = await client.post("/api/streams", content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (what, response.text)
            assert response.json()["detail"], what
        huge = json.dumps(stream_spec("cam", "rtsp://cam/x", sentences=["a dog"] * 2000)).encode()
        response = await client.post("/api/streams", content=huge, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "4096" in response.json()["detail"]

        async def chunked():  # no Content-Length: counted while read
            for _ in range(10):
                yield b" " * 1000

        response = await client.post("/api/streams", content=chunked(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["detail"]
        for method, path in (("GET", "/api/streams/nope"), ("PATCH", "/api/streams/nope"), ("DELETE", "/api/streams/nope"),
                             ("GET", "/api/highlights/99"), ("GET", "/api/highlights/99/thumbnail.jpg"),
                             ("GET", "/api/highlights/99/clip.mp4"), ("GET", "/api/nothing")):
            response = await client.request(method, path, json={"sentences": ["x"]} if method == "PATCH" else None)
            assert response.status_code == 404 and response.json()["detail"], (method, path)
        response = await client.get("/api/highlights?since=yesterday&limit=0")
        assert response.status_code == 422 and response.json()["detail"]
        assert service.streams == {}


class CountingSink:
    """A sink that accepts every event: its counters must reach /metrics."""

    name = "counting"

    def __init__(self):
        self.metrics = SinkMetrics()

    async def publish(self, event: dict) -> None:
        self.metrics.delivered += 1

    async def close(self) -> None:
        pass


async def test_openapi_and_prometheus_metrics(make_app, scenes):
    service, app = make_app([stream_spec("mix", str(scenes))])
    service.add_sink(CountingSink())
    async with asyncio.timeout(30), asgi_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
        assert {"/api/streams", "/api/streams/{name}", "/api/highlights", "/api/highlights/{highlight_id}/clip.mp4",
                "/api/events", "/healthz", "/metrics"} <= set(schema["paths"])
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert set(schema["paths"]["/api/streams"]) == {"get", "post"}
        await wait_for(lambda: _scored(client, "mix", 4), 15, "frames scored")
        response = await client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, s.labels.get("stream"), s.labels.get("quantile")): s.value
                   for family in text_string_to_metric_families(response.text) for s in family.samples}
        assert samples[("cliplive_stream_scored_frames_total", "mix", None)] >= 4
        assert samples[("cliplive_stream_sampled_fps", "mix", None)] > 0
        assert ("cliplive_stream_dropped_frames_total", "mix", None) in samples
        assert samples[("cliplive_stream_latency_seconds", "mix", "0.99")] < 2
        assert samples[("cliplive_encoder_frames_total", None, None)] >= 4
        assert samples[("cliplive_encoder_batch_size_mean", None, None)] >= 1
        assert samples[("cliplive_store_commit_seconds", None, "0.5")] < 0.05
        assert samples[("cliplive_stream_failed_frames_total", "mix", None)] == 0
        sinks = {s.labels["sink"]: s.value for family in text_string_to_metric_families(response.text)
                 for s in family.samples if s.name == "cliplive_sink_delivered_total"}
        assert sinks["counting"] >= 1  # the stream's status events at least


async def _scored(client: httpx.AsyncClient, name: str, frames: int) -> bool:
    return (await client.get(f"/api/streams/{name}")).json()["metrics"]["scored"] >= frames


# --- streams and highlights ------------------------------------------------------------------------


class RecordingSink:
    """A sink as cliplive.server.sinks' are: `publish(event)` and `close()`."""

    name = "recording"

    def __init__(self):
        self.events: list[dict] = []
        self.closed = False

    async def publish(self, event: dict) -> None:
        self.events.append(event)

    async def close(self) -> None:
        self.closed = True


async def test_streams_crud_live_sentence_update_and_kept_highlights(make_app, scenes):
    service, app = make_app()
    sink = RecordingSink()
    service.add_sink(sink)
    async with asyncio.timeout(60), asgi_client(app) as client:
        response = await client.post("/api/streams", json=stream_spec("mix", str(scenes)))
        assert response.status_code == 201, response.text
        assert response.json()["origin"] == "api" and response.json()["sentences"] == ["a dog on a beach", "a red square"]
        assert (await client.post("/api/streams", json=stream_spec("mix", str(scenes)))).status_code == 409

        async def ended_highlight():
            rows = (await client.get("/api/highlights", params={"stream": "mix"})).json()
            return next((h for h in rows if h["state"] == "ended"), None)

        highlight = await wait_for(ended_highlight, 30, "an ended highlight")
        assert highlight["thumbnail_url"] and highlight["clip_url"] and highlight["wall_end"] >= highlight["wall_start"]
        thumbnail = await client.get(highlight["thumbnail_url"])
        assert thumbnail.headers["content-type"] == "image/jpeg" and thumbnail.content[:2] == b"\xff\xd8"
        clip = await client.get(highlight["clip_url"])
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
        (Path(service.clips_dir) / "check.mp4").write_bytes(clip.content)
        duration = float(ffprobe_json(Path(service.clips_dir) / "check.mp4", "-show_format")["format"]["duration"])
        assert abs(duration - (highlight["end"] - highlight["start"] + 2)) < 0.5  # one second of context each side

        # New sentences on the running stream: it is not reconnected, frames keep being scored.
        scored = (await client.get("/api/streams/mix")).json()["metrics"]["scored"]
        response = await client.patch("/api/streams/mix", json={"sentences": ["a blue sky"]})
        assert response.status_code == 200 and response.json()["sentences"] == ["a blue sky"]
        await wait_for(lambda: _scored(client, "mix", scored + 4), 10, "frames scored after the update")
        states = [e.data["state"] for e in service.store.events_after(0, 10_000) if e.data["kind"] == "status"]
        assert states == ["connecting", "live"], states
        assert [s["sentences"] for s, _ in service.store.active_streams()] == [["a blue sky"]]

        listed = (await client.get("/api/highlights", params={"stream": "mix"})).json()
        assert (await client.delete("/api/streams/mix")).status_code == 204
        assert (await client.get("/api/streams/mix")).status_code == 404
        assert (await client.get("/api/streams")).json() == []
        kept = (await client.get("/api/highlights", params={"stream": "mix"})).json()
        assert {h["id"] for h in listed} <= {h["id"] for h in kept}
        assert all(h["state"] == "ended" for h in kept)  # deleting ended the open ones
        assert service.store.active_streams() == []
        # The same name can be used again.
        assert (await client.post("/api/streams", json=stream_spec("mix", str(scenes)))).status_code == 201
        assert (await client.get("/api/highlights", params={"since": time.time() + 3600})).json() == []
    stored = stored_events(service.settings.data_dir / "cliplive.db")
    assert sink.closed and sink.events == list(stored.values())  # every event, in order, stored first


async def test_rtsp_clip_from_the_packet_buffer_and_a_dead_source_hurts_no_one(make_app, scenes, rtsp_server):
    dead = f"rtsp://127.0.0.1:{free_port()}/nobody"
    fast_timeouts = {"open_timeout": 1.0, "stall_timeout": 1.0}
    service, app = make_app([stream_spec("cam", rtsp_server), stream_spec("dead", dead, options=fast_timeouts)],
                            allow_local=False, buffer_minutes=1)
    async with asyncio.timeout(60), asgi_client(app) as client:
        async def recorded_clip():
            for h in (await client.get("/api/highlights", params={"stream": "cam"})).json():
                if h["clip_url"]:
                    return h, await client.get(h["clip_url"])

        async def explain():
            return {"streams": (await client.get("/api/streams")).json(), "highlights": (await client.get("/api/highlights")).json()}

        highlight, clip = await wait_for(recorded_clip, 40, "a clip recorded from the RTSP stream", every=0.5, explain=explain)
        assert clip.headers["content-type"] == "video/mp4"
        path = Path(service.clips_dir) / f"{highlight['id']}.mp4"
        info = ffprobe_json(path, "-show_format", "-show_streams")
        assert info["streams"][0]["codec_name"] == "h264"
        # From the keyframe (1 s GOP) at or before start - 1 s, to end + 1 s: stream copy, not re-encoded.
        length = highlight["end"] - highlight["start"]
        assert length + 1.5 <= float(info["format"]["duration"]) <= length + 3.5

        status = (await client.get("/api/streams/dead")).json()
        assert status["state"] in ("connecting", "reconnecting", "stalled")
        assert status["metrics"]["reconnects"] >= 1 and status["last_status"]["detail"]
        cam = (await client.get("/api/streams/cam")).json()
        assert cam["state"] == "live" and cam["metrics"]["scored"] >= 8 and cam["metrics"]["dropped"] == 0


@pytest.fixture
def rtsp_server(scenes):
    """GStreamer's RTSP server serving `scenes` at real-time pace."""
    require_rtsp_server()
    with RtspServer(scenes) as server:
        yield server.url()


# --- live events -----------------------------------------------------------------------------------


async def test_sse_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(make_app, scenes):
    service, app = make_app([stream_spec("mix", str(scenes))])
    async with asyncio.timeout(60), uvicorn_server(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
        first: list[tuple[int, dict]] = []
        async with client.stream("GET", "/api/events", params={"after": 0}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event_id, event in sse_events(response):
                first.append((event_id, event))
                if event["kind"] == "highlight":
                    break  # the client drops the connection mid-stream
        await wait_for(lambda: _no_subscribers(service), 5, "the dropped client's subscription to go")

        # While it is away: a new stream (its status events) and a sentence change (ends open highlights).
        assert (await client.post("/api/streams", json=stream_spec("other", str(scenes)))).status_code == 201
        assert (await client.patch("/api/streams/mix", json={"sentences": ["a blue sky"]})).status_code == 200
        await wait_for(lambda: _status_seen(service, "other", "live"), 10, "the new stream to go live")
        missed_until = max(service.store.events_after(0, 100_000), key=lambda e: e.id).id

        second: list[tuple[int, dict]] = []
        async with client.stream("GET", "/api/events", headers={"Last-Event-ID": str(first[-1][0])}) as response:
            async for event_id, event in sse_events(response):
                second.append((event_id, event))
                if event_id >= missed_until + 3:  # replayed ones, then live ones
                    break
        ids = [i for i, _ in first + second]
        stored = stored_events(service.settings.data_dir / "cliplive.db")
        assert ids == list(range(1, ids[-1] + 1)), ids  # no gap, no duplicate, in order
        assert all(event == stored[i] for i, event in first + second)
        assert all(i == event["event_id"] for i, event in first + second)
        kinds = {(e["kind"], e.get("stream"), e.get("state")) for _, e in second}
        assert ("status", "other", "live") in kinds  # happened while disconnected, replayed

        # A client that vanishes mid-stream leaves the server serving.
        async with client.stream("GET", "/api/events", params={"after": 0}) as response:
            async for _ in sse_events(response):
                break
        await wait_for(lambda: _no_subscribers(service), 5, "the vanished client's subscription to go")
        assert (await client.get("/healthz")).status_code == 200


async def test_websocket_replays_then_streams_live_and_refuses_without_token(make_app, scenes):
    service, app = make_app([stream_spec("mix", str(scenes))])
    async with asyncio.timeout(30), uvicorn_server(app) as url:
        ws_url = url.replace("http", "ws") + "/api/events/ws"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(ws_url):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(f"{ws_url}?after=0&access_token={TOKEN}") as ws:
            events = [json.loads(await ws.recv()) for _ in range(3)]
        assert [e["event_id"] for e in events] == [1, 2, 3]
        assert events[0] == {"event_id": 1, **{k: v for k, v in events[0].items() if k != "event_id"}}
        assert events[0]["kind"] == "status" and events[0]["state"] == "connecting"
        await wait_for(lambda: _no_subscribers(service), 5, "the closed socket's subscription to go")


async def _no_subscribers(service: Service) -> bool:
    return not service.bus.subscribers


async def _status_seen(service: Service, stream: str, state: str) -> bool:
    return any(e.data.get("stream") == stream and e.data.get("state") == state for e in service.store.events_after(0, 100_000))


async def test_a_slow_subscriber_is_dropped_without_holding_up_the_others():
    bus = EventBus(queue_size=4)
    slow, fast = bus.subscribe("slow"), bus.subscribe("fast")
    received = []
    for i in range(1, 11):
        bus.publish(StoredEvent(i, {"event_id": i}))
        received.append((await fast.get()).id)
    assert received == list(range(1, 11)) and bus.dropped == 1
    assert slow.ended == "too slow" and await slow.get() is None
    assert bus.subscribers == {fast}


# --- persistence across kill -9 --------------------------------------------------------------------


class ServeProcess:
    """`cliplive serve` as a process."""

    def __init__(self, config: Path, port: int):
        self.config, self.port = config, port
        self.log = config.parent / "serve.log"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> ServeProcess:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cliplive.server.cli", "serve", "--config", str(self.config)],
                                         stdout=log, stderr=log, cwd=self.config.parent)

        async def healthy():
            assert self.proc.poll() is None, self.log.read_text()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(healthy, 60, "cliplive serve to answer")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def serve_config(folder: Path, port: int, data_dir: str | Path, tiny_clip_config: str, scenes: Path, server_extra: str = "") -> Path:
    """A config file for a `cliplive serve` process: the tiny CLIP, sensitive thresholds, one file stream."""
    config = folder / "cliplive.toml"
    config.write_text(f"""
[server]
port = {port}
token = "{TOKEN}"
data_dir = "{data_dir}"
allow_local_sources = true
{server_extra}

[encoder]
kind = "clip"
model = "{tiny_clip_config}"
pretrained = "random"

[segmenter]
{chr(10).join(f"{k} = {v}" for k, v in SENSITIVE.items())}

[[streams]]
name = "mix"
source = "{scenes}"
sentences = ["a dog on a beach", "a red square"]
fps = 4
""")
    return config


async def test_kill_9_keeps_every_emitted_event_and_ids_continue_after_restart(tmp_path, tiny_clip_config, scenes):
    port = free_port()
    config = serve_config(tmp_path, port, "data", tiny_clip_config, scenes)
    db = tmp_path / "data" / "cliplive.db"
    server = await ServeProcess(config, port).start()
    try:
        async with asyncio.timeout(80), httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
            seen: list[tuple[int, dict]] = []
            async with client.stream("GET", "/api/events", params={"after": 0}) as response:
                async for event_id, event in sse_events(response):
                    seen.append((event_id, event))
                    if sum(e["kind"] == "highlight" for _, e in seen) >= 3:
                        server.kill(signal.SIGKILL)  # while the client is connected and events flow
                        break
            stored = stored_events(db)
            assert [i for i, _ in seen] == list(range(1, len(seen) + 1))
            assert all(stored[i] == event for i, event in seen), "an event a client saw is missing or differs"
            with sqlite3.connect(db) as conn:
                rows = dict(conn.execute("SELECT id, state FROM highlights"))
            assert {e["highlight_id"] for _, e in seen if e["kind"] == "highlight"} <= set(rows)
            last_before = max(stored)

            server = await ServeProcess(config, port).start()
            after_restart: list[tuple[int, dict]] = []
            async with client.stream("GET", "/api/events", headers={"Last-Event-ID": str(seen[-1][0])}) as response:
                async for event_id, event in sse_events(response):
                    after_restart.append((event_id, event))
                    if event_id > last_before and event.get("stream") == "mix" and event.get("state") == "live":
                        break  # the configured stream started again
            ids = [i for i, _ in seen + after_restart]
            assert ids == list(range(1, ids[-1] + 1)), ids
            new = [e for i, e in after_restart if i > last_before]
            assert [e.get("state") for e in new if e["kind"] == "status"][:2] == ["connecting", "live"]
            open_at_kill = [i for i, state in rows.items() if state == "open"]
            interrupted = [e["highlight_id"] for e in new if e.get("interrupted")]
            assert sorted(interrupted) == sorted(open_at_kill)  # ended at restart, so no consumer waits forever

            # A graceful stop (SIGTERM) ends the open highlights with stored `end` events.
            await asyncio.sleep(3)
            server.kill(signal.SIGTERM)
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT count(*) FROM highlights WHERE state = 'open'").fetchone()[0] == 0
            final = stored_events(db)
            assert list(final) == list(range(1, max(final) + 1))
            assert final[max(final)]["kind"] in ("status", "highlight")
            assert any(e.get("state") == "ended" for i, e in final.items() if i > last_before)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


async def test_a_file_read_to_its_end_is_not_read_again_at_restart_unless_it_or_its_sentences_change(make_app, scenes):
    spec = stream_spec("file", str(scenes), options={"realtime": False})

    last_event = 0

    async def run_service(streams: list[dict], until_ended: bool) -> tuple[list[dict], list[dict]]:
        """Start a service over the same data dir; (stored highlights, the stream's status events this run)."""
        nonlocal last_event
        service, app = make_app(streams)
        async with asyncio.timeout(90), asgi_client(app) as client:
            first_event = last_event
            if until_ended:
                async def ended():  # the runner done: the whole file scored, its highlights closed and stored
                    response = await client.get("/api/streams/file")
                    return response.status_code == 200 and response.json()["state"] == "ended" and \
                        service.streams["file"].runner.task.done()

                await wait_for(ended, 60, "the file read to its end")
            highlights = (await client.get("/api/highlights", params={"limit": 1000})).json()
            events = service.store.events_after(first_event, 100_000)
            last_event = events[-1].id if events else first_event
            statuses = [e.data for e in events if e.data["kind"] == "status" and e.data["stream"] == "file"]
        return highlights, statuses

    first, statuses = await run_service([spec], until_ended=True)
    assert first and all(h["state"] == "ended" for h in first)
    assert [s["state"] for s in statuses] == ["connecting", "live", "ended"], statuses

    again, statuses = await run_service([spec], until_ended=False)  # a restart: the same file and sentences
    assert [h["id"] for h in again] == [h["id"] for h in first], "the same highlights were stored again"
    assert [(s["state"], s["detail"].get("skipped")) for s in statuses] == [("ended", "already scanned to its end")]

    changed, statuses = await run_service([{**spec, "sentences": ["a blue sky"]}], until_ended=True)
    assert len(changed) > len(first) and {h["query"] for h in changed if h not in first} == {"a blue sky"}
    assert [s["state"] for s in statuses] == ["connecting", "live", "ended"], statuses

    _, statuses = await run_service([{**spec, "sentences": ["a blue sky"], "rescan": True}], until_ended=True)
    assert [s["state"] for s in statuses] == ["connecting", "live", "ended"], "rescan = true reads it again"
