"""Event sinks against real endpoints: a loopback HTTP receiver and a real mosquitto broker."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiomqtt
import pytest

from peers import free_port
from cliplive.models.errors import InputError
from cliplive.server.sinks import MqttSink, WebhookSink, sign, verify_signature
from cliplive.stream.events import HighlightEvent, StatusEvent, metrics_event
from cliplive.stream.pipeline import EncoderSnapshot, PipelineSnapshot

SECRET = "s3cret"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}  # retries in tenths of a second, not seconds


def highlight(type_: str, event_id: int, stream: str = "cam1", segment: str = "seg-1") -> dict:
    end = 4.0 if type_ == "end" else None
    event = HighlightEvent(type_, segment, stream, 1.0, end, 0.9, "a dog", 0, 2.0, wall_time=1.7e9).to_dict()
    return {**event, "event_id": event_id}


def status(state: str, event_id: int, stream: str = "cam1") -> dict:
    return {**StatusEvent(stream, state).to_dict(), "event_id": event_id}


async def until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Receiver:
    """A webhook endpoint on loopback: answers the scripted statuses first, then 200; records requests.

    `gate`, when given, holds every answer until it is set (a slow endpoint)."""

    def __init__(self, port=None, statuses=(), retry_after: str | None = None, gate: threading.Event | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.statuses, self.retry_after, self.gate = list(statuses), retry_after, gate
        self.requests: list[tuple[dict, bytes, int]] = []  # (headers, body, status answered)
        self._server: ThreadingHTTPServer | None = None

    @property
    def delivered(self) -> list[dict]:
        return [json.loads(body) for _, body, code in self.requests if code == 200]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.gate is not None:
                    receiver.gate.wait(timeout=10)
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append((dict(self.headers.items()), body, code))
                self.send_response(code)
                if code == 429 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


# --- webhooks ---------------------------------------------------------------------------------------


async def test_webhook_delivers_signed_events_in_order(receivers):
    receiver = receivers().start()
    sink = WebhookSink(receiver.url, secret=SECRET, streams=["cam1"], **FAST)
    events = [status("live", 1), highlight("new", 2), highlight("update", 3), highlight("end", 4)]
    for event in events:
        await sink.publish(event)
    await sink.publish(highlight("new", 5, stream="cam2"))  # another stream: filtered out
    await sink.publish({**metrics_event(PipelineSnapshot([], EncoderSnapshot(0, 0, 0.0, 0.0))), "event_id": 6})  # metrics: not a default kind
    await sink.close()

    assert receiver.delivered == events
    headers = [h for h, _, _ in receiver.requests]
    assert [h["X-Cliplive-Event"] for h in headers] == ["status", "highlight.new", "highlight.update", "highlight.end"]
    assert len({h["X-Cliplive-Delivery"] for h in headers}) == 4
    assert all(h["Content-Type"] == "application/json" for h in headers)
    assert all(verify_signature(SECRET, h, body) for h, body, _ in receiver.requests)
    assert sink.metrics.to_dict() == {"delivered": 4, "failed": 0, "retried": 0, "dropped": 0}


async def test_webhook_retries_until_receiver_comes_up(receivers):
    receiver = receivers()  # nothing listens on its port yet: connection refused
    sink = WebhookSink(receiver.url, secret=SECRET, max_retries=50, **FAST)
    events = [highlight("new", 1), highlight("update", 2), highlight("end", 3)]
    for event in events:
        await sink.publish(event)
    await until(lambda: sink.metrics.retried >= 3, what="failed attempts")
    receiver.start()
    await until(lambda: len(receiver.delivered) == 3, what="deliveries after the receiver came up")
    await sink.close()

    assert receiver.delivered == events
    assert sink.metrics.delivered == 3 and sink.metrics.failed == 0


async def test_webhook_retries_5xx_then_delivers_once(receivers):
    receiver = receivers(statuses=[500, 503]).start()
    sink = WebhookSink(receiver.url, secret=SECRET, **FAST)
    await sink.publish(highlight("new", 1))
    await sink.close()

    assert [code for _, _, code in receiver.requests] == [500, 503, 200]
    assert len({h["X-Cliplive-Delivery"] for h, _, _ in receiver.requests}) == 1  # one delivery, three attempts
    assert receiver.delivered == [highlight("new", 1)]
    assert sink.metrics.to_dict() == {"delivered": 1, "failed": 0, "retried": 2, "dropped": 0}


async def test_webhook_honours_retry_after(receivers):
    receiver = receivers(statuses=[429], retry_after="0").start()
    sink = WebhookSink(receiver.url, backoff_initial=20.0, backoff_max=20.0)  # its own backoff would wait 10-20 s
    started = time.monotonic()
    await sink.publish(highlight("new", 1))
    await until(lambda: sink.metrics.delivered == 1, what="delivery after Retry-After")
    assert time.monotonic() - started < 3
    assert sink.metrics.retried == 1
    await sink.close()


async def test_webhook_does_not_retry_4xx(receivers):
    receiver = receivers(statuses=[400]).start()
    sink = WebhookSink(receiver.url, **FAST)
    await sink.publish(highlight("new", 1))
    await sink.publish(highlight("end", 2))  # the sink carries on with the next event
    await sink.close()

    assert [code for _, _, code in receiver.requests] == [400, 200]
    assert receiver.delivered == [highlight("end", 2)]
    assert sink.metrics.to_dict() == {"delivered": 1, "failed": 1, "retried": 0, "dropped": 0}


async def test_webhook_gives_up_after_max_retries(receivers):
    receiver = receivers(statuses=[500] * 3).start()
    sink = WebhookSink(receiver.url, max_retries=2, **FAST)
    await sink.publish(highlight("new", 1))
    await sink.close()
    assert len(receiver.requests) == 3 and receiver.delivered == []
    assert sink.metrics.to_dict() == {"delivered": 0, "failed": 1, "retried": 2, "dropped": 0}


async def test_webhook_full_queue_drops_oldest(receivers):
    gate = threading.Event()
    receiver = receivers(gate=gate).start()
    sink = WebhookSink(receiver.url, queue_size=3, **FAST)
    await sink.publish(highlight("new", 1))
    await until(lambda: len(sink._backlog) == 0, what="the first event in flight")
    for event_id in range(2, 8):  # six more while the endpoint stalls: room for three
        await sink.publish(highlight("update", event_id))
    assert sink.metrics.dropped == 3
    gate.set()
    await sink.close()

    assert [event["event_id"] for event in receiver.delivered] == [1, 5, 6, 7]
    assert sink.metrics.delivered == 4 and sink.metrics.dropped == 3


async def test_dead_webhook_slows_nothing_else(receivers):
    blackhole = socket.socket()  # accepts connections in the kernel, never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    dead = WebhookSink(f"http://127.0.0.1:{blackhole.getsockname()[1]}/", timeout=30, queue_size=100)
    receiver = receivers().start()
    alive = WebhookSink(receiver.url)
    try:
        started = time.monotonic()
        for event_id in range(500):
            event = highlight("update", event_id)
            await dead.publish(event)
            await alive.publish(event)
        assert time.monotonic() - started < 0.5  # publishing only queues
        await until(lambda: len(receiver.delivered) == 500, timeout=15, what="the live endpoint's deliveries")
        assert dead.metrics.delivered == 0 and dead.metrics.dropped == 400  # its backlog keeps the newest 100
    finally:
        await alive.close()
        await dead.close(drain_timeout=0)
        blackhole.close()


def test_signature_verification():
    body = json.dumps(highlight("new", 1)).encode()
    timestamp = str(int(time.time()))
    headers = {"x-cliplive-timestamp": timestamp, "X-CLIPLIVE-SIGNATURE": sign(SECRET, timestamp, body)}
    assert verify_signature(SECRET, headers, body)
    assert verify_signature(SECRET.encode(), headers, body)
    assert not verify_signature("wrong", headers, body)
    assert not verify_signature(SECRET, headers, body.replace(b"a dog", b"a cat"))
    assert not verify_signature(SECRET, {**headers, "x-cliplive-timestamp": str(int(timestamp) + 1)}, body)
    assert not verify_signature(SECRET, {"x-cliplive-timestamp": timestamp}, body)
    assert not verify_signature(SECRET, {**headers, "X-CLIPLIVE-SIGNATURE": "sha256=é"}, body)

    stale = str(int(time.time()) - 3600)
    replayed = {"X-Cliplive-Timestamp": stale, "X-Cliplive-Signature": sign(SECRET, stale, body)}
    assert not verify_signature(SECRET, replayed, body)
    assert verify_signature(SECRET, replayed, body, max_age=None)


def test_webhook_refuses_non_http_urls():
    for url in ("file:///etc/passwd", "ftp://example.com/", "http://"):
        with pytest.raises(InputError):
            WebhookSink(url)


# --- MQTT -------------------------------------------------------------------------------------------

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A real mosquitto on a loopback port. Its sessions persist across restarts, as a deployed one's."""

    def __init__(self, workdir: Path):
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is missing: run .ci/setup --test (it installs Debian's mosquitto)")
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to a user that cannot write workdir
        )
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # a clean exit saves the persistent sessions
            self._process.wait(timeout=5)


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path)
    yield broker
    broker.stop()


class Subscriber:
    """A Home Assistant-like subscriber to `cliplive/#`, with a persistent QoS 1 session."""

    def __init__(self, port: int, identifier: str = "ha", clean_session: bool = False, topic: str = "cliplive/#"):
        self.port, self.identifier, self.clean_session, self.topic = port, identifier, clean_session, topic
        self.messages: list[tuple[str, dict | str, bool]] = []  # (topic, payload, retained)
        self._task: asyncio.Task | None = None

    def on(self, topic: str) -> list:
        return [payload for t, payload, _ in self.messages if t == topic]

    async def connect(self) -> None:
        subscribed = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(subscribed))
        await asyncio.wait_for(subscribed, 5)

    async def _listen(self, subscribed: asyncio.Future) -> None:
        client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier=self.identifier, clean_session=self.clean_session, timeout=5
        )
        async with client:
            await client.subscribe(self.topic, qos=1)
            subscribed.set_result(None)
            async for message in client.messages:
                text = message.payload.decode()
                payload = json.loads(text) if text.startswith("{") else text
                self.messages.append((str(message.topic), payload, message.retain))

    async def disconnect(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_mqtt_topics_and_retained_status(broker):
    broker.start()
    subscriber = Subscriber(broker.port, clean_session=True)
    await subscriber.connect()
    sink = MqttSink("127.0.0.1", broker.port, **FAST)
    events = [status("live", 1), highlight("new", 2), highlight("update", 3), highlight("end", 4)]
    for event in events:
        await sink.publish(event)
    await sink.publish(highlight("new", 5, stream="cam/2"))  # '/' stays inside one topic level
    await until(lambda: len(subscriber.on("cliplive/cam_2/events")) == 1, what="MQTT messages")
    await sink.close()
    await until(lambda: "offline" in subscriber.on("cliplive/available"), what="offline on close")
    await subscriber.disconnect()

    assert subscriber.on("cliplive/cam1/events") == events
    for event in events[1:]:
        assert subscriber.on(f"cliplive/cam1/highlight/{event['type']}") == [event]
    assert subscriber.on("cliplive/cam1/status") == [events[0]]
    assert subscriber.on("cliplive/available") == ["online", "offline"]
    assert sink.metrics.to_dict() == {"delivered": 10, "failed": 0, "retried": 0, "dropped": 0}

    late = Subscriber(broker.port, identifier="late", clean_session=True, topic="cliplive/+/status")
    await late.connect()
    await until(lambda: late.messages, what="the retained status")
    await late.disconnect()
    assert late.messages == [("cliplive/cam1/status", events[0], True)]


async def test_mqtt_broker_down_at_start(broker):
    broker.start()  # once, so the subscriber's session exists, then down before the sink starts
    subscriber = Subscriber(broker.port)
    await subscriber.connect()
    await subscriber.disconnect()
    broker.stop()

    sink = MqttSink("127.0.0.1", broker.port, **FAST)
    events = [status("connecting", 1), highlight("new", 2), highlight("end", 3)]
    for event in events:
        await sink.publish(event)
    await until(lambda: sink.metrics.retried >= 2, what="failed connection attempts")
    assert sink.metrics.delivered == 0

    broker.start()
    await subscriber.connect()
    await until(lambda: len(subscriber.on("cliplive/cam1/events")) == 3, what="messages after reconnecting")
    await sink.close()
    await subscriber.disconnect()
    assert subscriber.on("cliplive/cam1/events") == events
    assert subscriber.on("cliplive/cam1/highlight/end") == [events[2]]


async def test_mqtt_broker_restart_mid_stream(broker):
    broker.start()
    subscriber = Subscriber(broker.port)
    await subscriber.connect()
    sink = MqttSink("127.0.0.1", broker.port, **FAST)
    await sink.publish(highlight("new", 1))
    await until(lambda: subscriber.on("cliplive/cam1/events"), what="the first message")

    broker.stop()
    await subscriber.disconnect()
    for event_id in (2, 3):
        await sink.publish(highlight("update", event_id))
    await until(lambda: sink.metrics.retried >= 1, what="the sink noticing the broker is gone")
    broker.start()
    await subscriber.connect()
    await until(lambda: len(subscriber.on("cliplive/cam1/events")) == 3, what="messages after the restart")
    await sink.close()
    await subscriber.disconnect()
    assert [event["event_id"] for event in subscriber.on("cliplive/cam1/events")] == [1, 2, 3]
