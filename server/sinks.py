"""Event sinks: push the service's events to webhooks and MQTT brokers.

A sink is an object with `async def publish(event: dict)` and `async def close()`. `publish` only
filters, serialises and queues, so it returns at once and never raises, however many streams feed it.
Each sink has its own bounded backlog and one worker task that delivers in order; when the backlog
is full the oldest item gives way and is counted in `metrics.dropped`, so a dead endpoint costs a
fixed amount of memory and never slows the event loop or the other sinks.

Webhook signatures (Stripe's scheme): `X-Cliplive-Signature: sha256=<hex>`, the HMAC-SHA256 with the
shared secret of `f"{X-Cliplive-Timestamp}.".encode() + body`. Signing the timestamp with the body lets
receivers refuse replays of old deliveries; `verify_signature` does both checks. Retries of one event
keep their `X-Cliplive-Delivery` id (receivers can deduplicate) and are signed afresh.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field

import aiomqtt
import httpx

from cliplive.models.errors import InputError
from cliplive.stream.live import backoff_delay
from cliplive.stream.pipeline import counter

log = logging.getLogger(__name__)

USER_AGENT = "cliplive-webhook/1"
SIGNATURE_MAX_AGE = 300.0  # seconds a signed delivery stays acceptable to `verify_signature`


@dataclass
class SinkMetrics:
    """Exported to Prometheus as `cliplive_sink_<name>` (the field metadata)."""

    delivered: int = field(default=0, metadata=counter("Events (webhook) or messages (MQTT) the endpoint accepted"))
    failed: int = field(default=0, metadata=counter("Given up on: retries exhausted, refused with a 4xx, or not JSON-serialisable"))
    retried: int = field(default=0, metadata=counter("Webhook: extra delivery attempts; MQTT: reconnection attempts"))
    dropped: int = field(default=0, metadata=counter("Pushed out of a full backlog before delivery"))

    def to_dict(self) -> dict:
        return asdict(self)


class Backlog:
    """A bounded FIFO that never blocks the producer: when full, the oldest item gives way.

    Like asyncio.Queue it counts unfinished items (`task_done`), so `drained()` waits for the item in
    flight too."""

    def __init__(self, size: int):
        if size < 1:
            raise InputError("queue size must be at least 1")
        self.size = size
        self._items: deque = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._unfinished = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> bool:
        """Queue `item`; True when that pushed the oldest one out."""
        dropped = len(self._items) >= self.size
        if dropped:
            self._items.popleft()
        else:
            self._unfinished += 1
        self._items.append(item)
        self._idle.clear()
        self._ready.set()
        return dropped

    async def get(self):
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def task_done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()


class QueuedSink:
    """What both sinks share: stream and kind filters, the backlog, and one worker task."""

    def __init__(self, name: str, streams: Iterable[str] | None, kinds: Iterable[str], queue_size: int):
        self.name = name
        self.streams = None if streams is None else frozenset(streams)
        self.kinds = frozenset(kinds)
        self.metrics = SinkMetrics()
        self._backlog = Backlog(queue_size)
        self._worker: asyncio.Task | None = None
        self._closed = False

    def wants(self, event: dict) -> bool:
        return event.get("kind") in self.kinds and (self.streams is None or event.get("stream") in self.streams)

    async def publish(self, event: dict) -> None:
        if self._closed or not self.wants(event):
            return
        try:
            items = self._encode(event)
        except (TypeError, ValueError, KeyError) as exc:  # a malformed event is counted, not raised into the caller
            self.metrics.failed += 1
            log.warning("%s: cannot encode event: %r", self.name, exc)
            return
        for item in items:
            if self._backlog.put(item):
                self.metrics.dropped += 1
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop taking events, give queued ones up to `drain_timeout` seconds to go out, then stop."""
        self._closed = True
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self._backlog.drained(), drain_timeout)
        except TimeoutError:
            log.warning("%s: closing with %d undelivered", self.name, len(self._backlog))
        self._worker.cancel()
        with suppress(asyncio.CancelledError):
            await self._worker

    def _encode(self, event: dict) -> list:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError


def _dumps(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The `X-Cliplive-Signature` value for `body` sent at `timestamp` (Unix seconds, as sent)."""
    digest = hmac.new(_key(secret), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes, headers: Mapping[str, str], body: bytes, max_age: float | None = SIGNATURE_MAX_AGE
) -> bool:
    """For receivers: True when `body` was signed with `secret` no more than `max_age` seconds ago.

    `headers` is any mapping with `.items()` (dict, http.server, Starlette, httpx, aiohttp headers);
    names match case-insensitively. `max_age=None` skips the replay check."""
    fields = {name.lower(): value for name, value in headers.items()}
    timestamp = fields.get("x-cliplive-timestamp", "")
    given = fields.get("x-cliplive-signature", "")
    if not timestamp.isdigit() or not given:
        return False
    if max_age is not None and abs(time.time() - int(timestamp)) > max_age:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), given.encode())


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSink(QueuedSink):
    """POSTs each event as JSON to `url`, signed when `secret` is set, retrying with backoff.

    Retries (up to `max_retries`) follow connection errors, timeouts, 5xx and 429, waiting as long as
    Retry-After says (at most `backoff_max`); other 4xx mean the receiver refuses the event for good.
    Events go out one at a time, in order: a retried event holds back the ones after it."""

    def __init__(
        self,
        url: str,
        secret: str | bytes | None = None,
        streams: Iterable[str] | None = None,
        kinds: Iterable[str] = ("highlight", "status"),
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 5.0,
        queue_size: int = 1000,
    ):
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InputError(f"webhook URL must be http(s)://host/...: {url!r}")
        super().__init__(f"webhook {parsed.host}", streams, kinds, queue_size)  # no path: it may hold a token
        self.url, self.secret = url, secret
        self.max_retries, self.timeout = max_retries, timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max

    def _encode(self, event: dict) -> list[tuple[str, str, bytes]]:
        name = f"highlight.{event['type']}" if event["kind"] == "highlight" else event["kind"]
        return [(name, uuid.uuid4().hex, _dumps(event).encode())]

    def _headers(self, name: str, delivery: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Cliplive-Event": name,
            "X-Cliplive-Delivery": delivery,
            "X-Cliplive-Timestamp": timestamp,
        }
        if self.secret is not None:
            headers["X-Cliplive-Signature"] = sign(self.secret, timestamp, body)
        return headers

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, headers={"User-Agent": USER_AGENT}) as client:
            while True:
                name, delivery, body = await self._backlog.get()
                try:
                    await self._deliver(client, name, delivery, body)
                except Exception:  # the worker must outlive any one event
                    self.metrics.failed += 1
                    log.exception("%s: delivery %s failed", self.name, delivery)
                finally:
                    self._backlog.task_done()

    async def _deliver(self, client: httpx.AsyncClient, name: str, delivery: str, body: bytes) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.post(self.url, content=body, headers=self._headers(name, delivery, body))
            except httpx.TransportError as exc:  # refused, reset, timed out...
                reason, wait = repr(exc), None
            else:
                if response.is_success:
                    self.metrics.delivered += 1
                    return
                if response.status_code < 500 and response.status_code != 429:
                    self.metrics.failed += 1
                    log.warning("%s: %s refused with HTTP %d", self.name, name, response.status_code)
                    return
                reason, wait = f"HTTP {response.status_code}", _retry_after(response)
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = backoff_delay(attempt, self.backoff_initial, self.backoff_max)
            delay = min(wait, self.backoff_max)
            log.info("%s: %s: %s, retry in %.2fs", self.name, name, reason, delay)
            self.metrics.retried += 1
            await asyncio.sleep(delay)
        self.metrics.failed += 1
        log.warning("%s: gave up on %s after %d attempts: %s", self.name, name, self.max_retries + 1, reason)


def _topic_level(name: str) -> str:
    """A stream id as one MQTT topic level: '/' would add levels, '+' and '#' are wildcards."""
    return name.replace("/", "_").replace("+", "_").replace("#", "_")


class MqttSink(QueuedSink):
    """Publishes events to an MQTT broker, Frigate-style, for Home Assistant and the like.

    Topics: `{prefix}/{stream}/events` (every event), `{prefix}/{stream}/highlight/{type}` (new, update,
    end), `{prefix}/{stream}/status` (retained, so a new subscriber learns each stream's state at once),
    and `{prefix}/available`: retained `online`, `offline` on close or, as the broker's last will, when
    the connection dies. While the broker is unreachable messages wait in the backlog and the sink
    reconnects with backoff; a message whose publish failed is sent again after reconnecting."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        topic_prefix: str = "cliplive",
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        retain_status: bool = True,
        streams: Iterable[str] | None = None,
        kinds: Iterable[str] = ("highlight", "status"),
        queue_size: int = 1000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
    ):
        super().__init__(f"mqtt {host}:{port}", streams, kinds, queue_size)
        self.host, self.port, self.username, self.password = host, port, username, password
        self.topic_prefix = topic_prefix.rstrip("/")
        self.qos, self.retain_status = qos, retain_status
        self.backoff_initial, self.backoff_max, self.timeout = backoff_initial, backoff_max, timeout
        self.availability_topic = f"{self.topic_prefix}/available"

    def _encode(self, event: dict) -> list[tuple[str, str, bool]]:
        payload = _dumps(event)
        stream = event.get("stream")
        base = f"{self.topic_prefix}/{_topic_level(stream)}" if stream else self.topic_prefix
        messages = [(f"{base}/events", payload, False)]
        if event["kind"] == "highlight":
            messages.append((f"{base}/highlight/{_topic_level(event['type'])}", payload, False))
        elif event["kind"] == "status":
            messages.append((f"{base}/status", payload, self.retain_status))
        return messages

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=f"cliplive-{uuid.uuid4().hex[:12]}",
            will=aiomqtt.Will(self.availability_topic, "offline", qos=1, retain=True),
            timeout=self.timeout,
            logger=log,  # paho's connection errors under cliplive's logger, at cliplive's level
        )

    async def _run(self) -> None:
        pending = None  # taken from the backlog, not yet acknowledged by the broker
        attempt = 0
        while True:
            try:
                async with self._client() as client:
                    attempt = 0
                    log.info("%s: connected", self.name)
                    await client.publish(self.availability_topic, "online", qos=1, retain=True)
                    try:
                        while True:
                            if pending is None:
                                pending = await self._backlog.get()
                            topic, payload, retain = pending
                            await client.publish(topic, payload, qos=self.qos, retain=retain)
                            pending = None
                            self.metrics.delivered += 1
                            self._backlog.task_done()
                    except asyncio.CancelledError:  # closing: a graceful disconnect skips the last will
                        with suppress(aiomqtt.MqttError):
                            await client.publish(self.availability_topic, "offline", qos=1, retain=True, timeout=1.0)
                        raise
            except aiomqtt.MqttError as exc:
                delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max)
                attempt += 1
                self.metrics.retried += 1
                log.warning("%s: %s, reconnecting in %.2fs", self.name, exc, delay)
                await asyncio.sleep(delay)
