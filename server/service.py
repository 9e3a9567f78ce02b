"""The service: live streams, the store and the event bus, glued together.

Streams run in one `cliplive.stream.pipeline.Pipeline` (one shared batched encoder), whose one event
route is `Service.emit`: every event a stream emits (highlights and status changes) is committed to the
store first, where it gets its id, and only then fanned out to subscribers and sinks: what any client
has seen is on disk. Streams declared in the config file start at every start; those added through
the API are stored and start again after a restart, until deleted.

A full disk stops no stream (cliplive.server.storage): events the store cannot write wait in a bounded
backlog, in order, and are stored (ids assigned then) and sent once it can; below `min_free_mb` clips and
thumbnails are skipped; what fails shows in each stream's `storage` and on `/metrics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from cliplive.models.encoder import Encoder
from cliplive.models.errors import InputError, Unavailable
from cliplive.models.zero_shot import FrameScorer
from cliplive.server.bus import EventBus, Subscription
from cliplive.server.config import Config, StreamRetention, StreamSpec, check_source
from cliplive.server.recorder import RECORDABLE_KINDS, PacketRecorder
from cliplive.server.retention import Retention, remove_clips
from cliplive.server.storage import (RETRY_SECONDS, Backlog, DiskWatermark, StorageHealth, StorageSnapshot, StorageStatus,
                                     StorageUnavailable, open_store, storage_errors)
from cliplive.server.store import HighlightRow, Store, StoredEvent
from cliplive.server.thumbnails import RecentFrames, encode_jpeg
from cliplive.stream.clips import ClipWriteError, write_summary
from cliplive.stream.engine import Queries
from cliplive.stream.events import HighlightEvent, StatusEvent
from cliplive.stream.live import Source, SourceOptions, mask_url, source_kind
from cliplive.stream.pipeline import Observer, Pipeline, PipelineSnapshot, StreamRunner

if TYPE_CHECKING:
    from cliplive.server.sinks import SinkMetrics

log = logging.getLogger(__name__)

Origin = Literal["config", "api", "session"]  # session: built by the caller (e.g. WebRTC), neither stored nor restarted
CLIP_PRE_ROLL = 1.0  # seconds of video kept before a highlight's start in its clip ...
CLIP_POST_ROLL = 1.0  # ... and after its end
STORE_SAMPLES = 1000


class StreamExists(InputError):
    http_status = 409


class NotFound(InputError):
    http_status = 404

    def __init__(self, what: str):
        super().__init__(f"not found: {what}")


class ClipUnavailable(InputError):
    http_status = 404


class HighlightOpen(InputError):
    http_status = 409


class Sink(Protocol):
    """An event consumer fed from the bus (cliplive.server.sinks: webhooks, MQTT)."""

    name: str
    metrics: SinkMetrics

    async def publish(self, event: dict) -> None: ...

    async def close(self) -> None: ...


@dataclass
class LiveStream:
    spec: StreamSpec
    origin: Origin
    frames: RecentFrames
    runner: StreamRunner
    recorder: PacketRecorder | None
    deleting: bool = False
    thumbnail_ts: dict[int, float] = field(default_factory=dict)  # open highlight id -> best frame of its thumbnail


class Service:
    def __init__(self, config: Config, encoder: Encoder, scorer: FrameScorer | None = None):
        self.config, self.settings, self.encoder = config, config.server, encoder
        self.pipeline = Pipeline(encoder, self.emit, scorer, config.segmenter, max_batch=config.encoder.max_batch)
        self.bus = EventBus()
        self.streams: dict[str, LiveStream] = {}
        self.sinks: list[Sink] = []
        self.store: Store | None = None
        self.store_seconds: deque[float] = deque(maxlen=STORE_SAMPLES)  # per event: commit time
        self._forwarders: list[asyncio.Task] = []  # one per sink
        self._clip_tasks: set[asyncio.Task] = set()  # clips cut once a highlight's post-roll arrived
        self.webrtc_sessions: dict[str, object] = {}  # open WebRTC sessions by id (server/webrtc_api.py)
        self.backlog = Backlog()  # events the store could not write yet, oldest first
        self.storage = StorageHealth()
        self.disk = DiskWatermark(self.settings.data_dir, self.settings.min_free_mb)
        self._retry: asyncio.Task | None = None  # writes the backlog now and then
        self.replay_slots = asyncio.Semaphore(config.server.max_concurrent_replays)  # event replays served at once
        self.retention: Retention | None = None
        self._retention_task: asyncio.Task | None = None
        self._running = False

    @property
    def clips_dir(self) -> Path:
        return self.settings.data_dir / "clips"

    def add_sink(self, sink: Sink) -> None:
        """Register before start(): the sink then sees every event, startup's included."""
        self.sinks.append(sink)

    async def start(self) -> None:
        self.store = open_store(self.settings.data_dir)
        with storage_errors():  # a disk that cannot take even this: the start fails with one line
            self.clips_dir.mkdir(parents=True, exist_ok=True)
        self.retention = Retention(self.store, self.clips_dir, self.config.retention, self._stream_retention)
        self._running = True
        loop = asyncio.get_running_loop()
        self._forwarders = [loop.create_task(self._forward(sink, self.bus.subscribe(f"sink {sink.name}")), name=f"sink {sink.name}")
                            for sink in self.sinks]
        self._retry = loop.create_task(self._retry_backlog(), name="store backlog")
        with storage_errors():  # (its highlights left open would be taken for new ones with the same segment ids)
            self._end_interrupted_highlights()
        for spec in self.config.streams:
            await self._resume(spec, "config")
        declared = {spec.name for spec in self.config.streams}  # the config file wins over what the API stored
        for spec, origin in self.store.active_streams():
            if origin == "api" and spec["name"] not in declared:
                await self._resume(StreamSpec.model_validate(spec), "api")
        self._retention_task = loop.create_task(self.retention.run(), name="retention")

    async def stop(self) -> None:
        """Stop every stream (their open segments end; those `end` events are stored and sent), then end
        the subscriptions, flush the sinks and close the store. Safe to call twice."""
        if not self._running:
            return
        self._running = False
        if self._retention_task:
            self._retention_task.cancel()
        for stream in self.streams.values():
            if stream.recorder:
                stream.recorder.stop()
        await self.pipeline.stop()
        self._retry.cancel()
        self._write_backlog()
        if self.backlog:
            log.error("%d events were never stored (the store cannot write: %s)", len(self.backlog), self.storage.error)
        for task in self._clip_tasks:  # their packet buffers are gone with the recorders
            task.cancel()
        self.bus.close()  # subscribers and sink forwarders get what is queued, then their end
        await asyncio.gather(*self._clip_tasks, *self._forwarders, self._retry, return_exceptions=True)
        for sink in self.sinks:
            await sink.close()
        if self._retention_task:
            await asyncio.gather(self._retention_task, return_exceptions=True)
        self.store.close()

    # --- streams ---------------------------------------------------------------------------------

    async def add_stream(self, spec: StreamSpec, origin: Origin = "api", source: Source | None = None,
                         observers: list[Observer] = ()) -> LiveStream:
        """Start a stream. API streams are checked against the source policy; `source` is a ready-made
        source (e.g. WebRTC); `observers` see each of its scored frames (e.g. a live score plot)."""
        self._check_new(spec, origin)
        if origin == "api":  # it resolves the source's host: not on the loop
            source_url = await asyncio.to_thread(check_source, spec.source, self.settings.allow_local_sources)
            spec = spec.model_copy(update={"source": source_url})
        queries = await asyncio.to_thread(Queries.build, self.encoder, spec.sentences, spec.images)
        self._check_new(spec, origin)  # again: another request may have taken the name meanwhile
        if origin == "api" and self.backlog:  # its events could not be stored either
            raise StorageUnavailable(f"storage unavailable: {self.storage.error}")
        if origin != "session":
            with storage_errors():
                self.store.save_stream(spec.name, spec.model_dump(mode="json"), origin)
        return self._launch(spec, origin, queries, source, list(observers))

    async def update_queries(self, name: str, sentences: list[str], images: list[str]) -> LiveStream:
        """Look for other sentences on a running stream, without restarting it; open segments end."""
        stream = self.stream(name)
        # The request is what is untrusted, whatever the stream's origin (a config stream too): images it
        # names are refused before any is opened, unless the stream has them already.
        self._check_images([image for image in images if image not in stream.spec.images])
        spec = StreamSpec.model_validate({**stream.spec.model_dump(), "sentences": sentences, "images": images})
        queries = await asyncio.to_thread(Queries.build, self.encoder, spec.sentences, spec.images)
        if stream.origin != "session":  # stored first: a change the store refused is not made (503)
            with storage_errors():
                self.store.save_stream(name, spec.model_dump(mode="json"), stream.origin)
        self.pipeline.set_queries(name, queries)
        stream.spec = spec
        return stream

    async def delete_stream(self, name: str) -> None:
        """Stop a stream; its open segments end, its highlights stay stored."""
        stream = self.stream(name)
        if stream.origin != "session":  # stored first: a stream the store still has goes on (503)
            with storage_errors():
                self.store.delete_stream(name)
        stream.deleting = True
        if stream.recorder:
            stream.recorder.stop()
        await self.pipeline.remove(name)
        del self.streams[name]

    def _stream_retention(self) -> dict[str, StreamRetention]:
        """The own retention limits of the streams running now (deleted ones keep only the global limits)."""
        return {name: stream.spec.retention for name, stream in self.streams.items() if stream.spec.retention is not None}

    def stream(self, name: str) -> LiveStream:
        stream = self.streams.get(name)
        if stream is None or stream.deleting:
            raise NotFound(name)
        return stream

    def _check_new(self, spec: StreamSpec, origin: Origin) -> None:
        if spec.name in self.streams:
            raise StreamExists(f"stream {spec.name!r} exists already")
        # (an API stream's source is checked by add_stream, in a thread: it resolves the host)
        if origin != "config":  # what an API client named (a session's too); the config file is trusted
            self._check_images(spec.images)

    def _check_images(self, images: list[str]) -> None:
        if images and not self.settings.allow_local_sources:
            raise InputError("reference images are files on the server: the server's config does not allow local sources")

    def _already_scanned(self, spec: StreamSpec) -> bool:
        """A local file read to its end before, unchanged and with the same queries, is not read again at a
        restart (its highlights are stored already) unless the stream asks to `rescan`; its `ended`
        status event says so."""
        key = file_scan_key(spec)
        if spec.rescan or key is None or self.store.scanned(spec.name) != key:
            return False
        log.info("stream %s not started: %s was read to its end already (rescan = true reads it again)", spec.name, mask_url(spec.source))
        self.emit(StatusEvent(spec.name, "ended", {"skipped": "already scanned to its end", "source": mask_url(spec.source)}))
        return True

    def _remember_scan(self, stream: LiveStream, key: str | None) -> None:
        """When a file stream's runner ends: if it read the whole file (not stopped, no error, queries not
        changed meanwhile), remember it (see `_already_scanned`)."""
        status = stream.runner.last_status
        if (key is None or not self._running or stream.deleting or status is None or status.state != "ended"
                or status.detail.get("error") or file_scan_key(stream.spec) != key):
            return
        try:
            self.store.mark_scanned(stream.spec.name, key)
        except sqlite3.Error:
            log.exception("stream %s: its complete scan was not recorded", stream.spec.name)

    async def _resume(self, spec: StreamSpec, origin: Origin) -> None:
        """At startup: a stream starts unless it is a file read to its end already. One broken stream (a file
        gone, an image unreadable) must not keep the others down."""
        if self._already_scanned(spec):
            return
        try:
            await self.add_stream(spec, origin)
        except (InputError, Unavailable, OSError) as e:
            log.error("stream %s not started: %s", spec.name, mask_url(str(e)))

    def _launch(self, spec: StreamSpec, origin: Origin, queries: Queries, source: Source | None,
                observers: list[Observer]) -> LiveStream:
        options = self.pipeline.source_options(SourceOptions(fps=spec.fps, **spec.options.model_dump(),
                                                             allow_local=origin != "api" or self.settings.allow_local_sources))
        frames = RecentFrames(spec.fps)
        runner = self.pipeline.add(spec.name, source or spec.source, queries, options, [frames, *observers])
        recorder = None
        kind = source_kind(spec.source) if source is None else None
        if kind in RECORDABLE_KINDS and self.settings.buffer_minutes > 0:
            recorder = PacketRecorder(spec.source, spec.name, kind, self.settings.buffer_minutes, options)
            recorder.start()
        self.streams[spec.name] = stream = LiveStream(spec, origin, frames, runner, recorder)
        if source is None and origin != "session":
            key = file_scan_key(spec)
            runner.task.add_done_callback(lambda _: self._remember_scan(stream, key))
        return stream

    # --- events ----------------------------------------------------------------------------------

    def emit(self, event: HighlightEvent | StatusEvent) -> None:
        """Store one event, then fan it out. Called on the loop by the streams' sources and runners. While
        the store cannot write, events wait in the backlog behind those already there (order is kept)."""
        data = event.to_dict()
        self.backlog.add(data, self.streams.get(data["stream"]))
        self._write_backlog()

    def _write_backlog(self) -> None:
        """Store and send the waiting events, oldest first, until the store refuses one (it stays first)."""
        while self.backlog:
            waiting, stream = self.backlog.first()
            data = dict(waiting)  # the attempt adds the highlight's id: a failed one must leave no trace
            try:
                event_id = self._store_event(data, stream)
            except sqlite3.Error as e:  # rolled back; retried at the next event or by `_retry_backlog`
                self.storage.failed(e, "events")
                return
            except Exception:  # a bug: it would fail again, holding up every later event
                log.exception("event not stored, so not sent: %s", data)
                self.backlog.pop()
                continue
            self.backlog.pop()
            self.storage.recovered()
            self._send(event_id, data, stream)

    async def _retry_backlog(self) -> None:
        """Waiting events are stored at the next event, or by this when no event comes."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            if self.backlog:
                self._write_backlog()

    def _store_event(self, data: dict, stream: LiveStream | None) -> int:
        started = time.perf_counter()
        with self.store.transaction():
            if data["kind"] == "highlight":
                self._record_highlight(data, stream)
            event_id = self.store.append_event(data)
        self.store_seconds.append(time.perf_counter() - started)
        return event_id

    def _send(self, event_id: int, data: dict, stream: LiveStream | None) -> None:
        """A stored event to subscribers and sinks; a highlight's thumbnail and clip follow it."""
        self.bus.publish(StoredEvent(event_id, {"event_id": event_id, **data}))
        if stream is None or data["kind"] != "highlight":
            return
        self._keep_thumbnail(data, stream)
        if data["type"] == "end" and stream.recorder and self._running:
            task = asyncio.get_running_loop().create_task(self._record_clip(data["highlight_id"], stream.recorder))
            self._clip_tasks.add(task)
            task.add_done_callback(self._clip_tasks.discard)

    def _record_highlight(self, data: dict, stream: LiveStream | None) -> None:
        """Keep the highlight's row in step with its event, and give the event the row's id: the
        segmenter's ids restart with each run of a stream, the row's never repeat."""
        highlight_id = self.store.open_highlight(data["stream"], data["id"])
        if highlight_id is None:
            source = stream.spec.source if stream else ""
            highlight_id = self.store.insert_highlight(data, source, data["wall_start"])
        if data["type"] != "new":
            self.store.update_highlight(highlight_id, data, data["wall_end"])
        data["id"], data["highlight_id"] = f"{data['stream']}-{highlight_id}", highlight_id

    def _keep_thumbnail(self, data: dict, stream: LiveStream) -> None:
        """JPEG of the best frame whenever it changes (at most about once a second per open highlight;
        about 1 ms for a 224x398 frame, so it runs on the loop). None when that frame is no longer kept (an
        event stored late, from the backlog) or the disk is low; a failed write is reported, not raised."""
        highlight_id, best = data["highlight_id"], data["best_frame_ts"]
        frame = stream.frames.nearest(best) if stream.thumbnail_ts.get(highlight_id) != best else None
        if frame is not None and abs(frame.t - best) <= 0.5 / stream.spec.fps and self.disk.allows("thumbnail"):
            try:
                self.store.set_thumbnail(highlight_id, encode_jpeg(frame.image))
                stream.thumbnail_ts[highlight_id] = best
            except sqlite3.Error as e:
                self.storage.failed(e, "a thumbnail")
        if data["type"] == "end":
            stream.thumbnail_ts.pop(highlight_id, None)

    def _end_interrupted_highlights(self) -> None:
        """Highlights a killed server left open get their `end` event now, flagged `interrupted`, so
        consumers tracking them are not left with one that never ends."""
        stored = []
        with self.store.transaction():
            for row in self.store.interrupt_open_highlights():
                data = HighlightEvent("end", f"{row.stream}-{row.id}", row.stream, row.start, row.end, row.score,
                                      row.query, row.query_index, row.best_frame_ts).to_dict()
                data.update(highlight_id=row.id, interrupted=True)
                stored.append((self.store.append_event(data), data))
        for event_id, data in stored:  # stored before sent, as every event
            self.bus.publish(StoredEvent(event_id, {"event_id": event_id, **data}))

    async def _forward(self, sink: Sink, subscription: Subscription) -> None:
        """Feed one sink from its subscription (made at start, so it sees startup's events too)."""
        while True:
            async for event in subscription:
                try:
                    await sink.publish(event.data)
                except Exception:  # a sink's bug must not stop the others or the service
                    log.exception("sink %s failed on event %d", sink.name, event.id)
            if not self._running:
                return
            log.error("sink %s fell behind (%s): events were skipped; resubscribing", sink.name, subscription.ended)
            subscription = self.bus.subscribe(f"sink {sink.name}")

    # --- clips -----------------------------------------------------------------------------------

    async def _record_clip(self, highlight_id: int, recorder: PacketRecorder) -> None:
        """Cut a live highlight's clip from the packet buffer once its post-roll has arrived (not on a low disk)."""
        await asyncio.sleep(CLIP_POST_ROLL + 0.5)
        if not self.disk.allows("clip"):
            log.info("no clip for highlight %d: free space under min_free_mb", highlight_id)
            return
        row = self.store.highlight(highlight_id)
        if row is None:  # deleted meanwhile
            return
        try:
            await asyncio.to_thread(recorder.clip, row.wall_start - CLIP_PRE_ROLL, row.wall_end + CLIP_POST_ROLL,
                                    self.clips_dir / f"{highlight_id}.mp4")
        except (ClipWriteError, OSError) as e:
            log.warning("no clip for highlight %d: %s", highlight_id, e)
        except Exception:
            log.exception("no clip for highlight %d", highlight_id)

    async def clip(self, highlight_id: int) -> Path:
        """The highlight's mp4: recorded when it ended (live sources), or cut from the file now (files)."""
        row = self.highlight(highlight_id)
        path = self.clips_dir / f"{highlight_id}.mp4"
        if path.exists():
            return path
        if row.end is None:
            raise ClipUnavailable("the highlight is still open: its clip is cut when it ends")
        if clip_source_kind(row) not in ("file", "http"):
            raise ClipUnavailable("no clip was recorded for this highlight")
        if not self.disk.allows("clip"):
            raise StorageUnavailable("low disk space: clips are not written below min_free_mb")
        try:
            await asyncio.to_thread(write_summary, row.source, [(row.start - CLIP_PRE_ROLL, row.end + CLIP_POST_ROLL)], path)
        except ClipWriteError as e:
            raise ClipUnavailable(str(e)) from None
        return path

    async def delete_highlight(self, highlight_id: int) -> None:
        """Delete an ended highlight: its row, thumbnail and clip. Its events stay in the log."""
        self.highlight(highlight_id)  # NotFound
        with storage_errors():  # a deletion writes too (a full disk may refuse it): 503
            deleted = self.store.delete_ended_highlights([highlight_id])
        if not deleted:
            raise HighlightOpen(f"highlight {highlight_id} is still open: it can be deleted once it ends")
        await asyncio.to_thread(remove_clips, self.clips_dir, [highlight_id])

    def highlight(self, highlight_id: int) -> HighlightRow:
        row = self.store.highlight(highlight_id)
        if row is None:
            raise NotFound(f"highlight {highlight_id}")
        return row

    def has_clip(self, row: HighlightRow) -> bool:
        return (self.clips_dir / f"{row.id}.mp4").exists() or (row.end is not None and clip_source_kind(row) in ("file", "http"))

    # --- metrics ---------------------------------------------------------------------------------

    def snapshot(self) -> ServiceSnapshot:
        return ServiceSnapshot(self.pipeline.snapshot(), [(sink.name, sink.metrics) for sink in self.sinks],
                               len(self.bus.subscribers), self.bus.dropped, list(self.store_seconds),
                               storage=StorageSnapshot(self.storage.failing, self.storage.write_errors, len(self.backlog),
                                                       self.backlog.dropped, self.disk.low, dict(self.disk.skipped)))

    def storage_status(self, stream: str) -> StorageStatus:
        return StorageStatus(ok=not self.storage.failing, error=self.storage.error, since=self.storage.since,
                             backlog=self.backlog.count(stream), low_disk=self.disk.low)


@dataclass(frozen=True)
class ServiceSnapshot:
    pipeline: PipelineSnapshot
    sinks: list[tuple[str, SinkMetrics]]
    subscribers: int
    subscribers_dropped: int
    store_seconds: list[float]  # recent events' commit times
    storage: StorageSnapshot


def file_scan_key(spec: StreamSpec) -> str | None:
    """What a complete read of a local-file stream depends on (the file's path, size and modification
    time, the queries and sampling rate), as JSON; None for other sources or a file that is gone."""
    try:
        if source_kind(spec.source) != "file":
            return None
        path = Path(spec.source.removeprefix("file://")).resolve()
        info = path.stat()
    except (InputError, OSError):
        return None
    return json.dumps({"path": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "fps": spec.fps,
                       "sentences": spec.sentences, "images": spec.images})


def clip_source_kind(row: HighlightRow) -> str | None:
    try:
        return source_kind(row.source)
    except InputError:  # a file since removed, or a source the service did not open itself
        return None
