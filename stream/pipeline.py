"""The live pipeline: sources -> one shared batched encoder -> a highlighter per stream -> events.

One `Pipeline` serves every live use: `cliplive watch`, the service's streams (config, API and WebRTC
sessions), and later a Ray deployment. Streams are added, removed and given new queries one at a time;
every event (a stream's status changes and its highlights) leaves through the one `emit` callback.
Taps (thumbnails, live score plots, a history index) observe each scored frame (`Observer`); they do
not wrap sources.

Overload policy: every queue is bounded. A source keeps only its newest sampled frame (older ones are
dropped and counted), and each stream has at most one frame at the encoder, so memory is flat however
far the encoder falls behind; what falls behind shows as `dropped` and a lower effective sampling rate
in the stream's metrics.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace

import numpy as np

from cliplive.models.encoder import Encoder
from cliplive.models.zero_shot import FrameScorer, ZeroShotScorer
from cliplive.stream.engine import Highlighter, Queries
from cliplive.stream.events import HighlightEvent, StatusEvent
from cliplive.stream.live import AVSource, Source, SourceEnded, SourceOptions, mask_url
from cliplive.stream.segmenter import SegmenterConfig
from cliplive.stream.source import Frame

log = logging.getLogger(__name__)

Emit = Callable[[HighlightEvent | StatusEvent], None]
LATENCY_SAMPLES = 1000
WALL_SAMPLES = 256  # recent frames that place media time on the wall clock: minutes at usual sampling rates
RESTART_INITIAL = 1.0  # seconds before a failed stream restarts, doubling at each failure ...
RESTART_MAX = 60.0  # ... up to this; a run that lasted this long starts the doubling again


@dataclass(frozen=True)
class ScoredFrame:
    """What an observer sees of each frame, after scoring and before its events are emitted."""

    stream: str
    frame: Frame  # as the encoder saw it (scaled to its input size)
    embedding: np.ndarray  # (D,) unit vector
    relevance: np.ndarray  # (Q,) logits, one per query of the stream
    queries: list[str]


Observer = Callable[[ScoredFrame], None]


class BatchedEncoder:
    """One encoder for all streams: frames queued by any stream are encoded together in micro-batches
    of up to `max_batch`, waiting at most `max_wait` seconds to fill one. Encoding runs on its own
    thread, so the event loop keeps serving sources while a batch is computed."""

    def __init__(self, encoder: Encoder, max_batch: int = 16, max_wait: float = 0.02):
        self.encoder, self.max_batch, self.max_wait = encoder, max_batch, max_wait
        self._pending: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.frames = 0
        self.busy_seconds = 0.0

    def start(self) -> None:
        """Start serving (on the running loop), warming the model up first; idempotent."""
        if self._task is None:
            self._pending = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._serve())

    @property
    def queued(self) -> int:
        """Frames waiting for a batch."""
        return self._pending.qsize() if self._pending else 0

    async def encode(self, image: np.ndarray) -> np.ndarray:
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self._pending.put((image, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        # The first forward pass on the encoder thread is slow (thread pools, allocations): pay for it
        # while the streams connect, not with their first frames.
        await loop.run_in_executor(self._executor, self._warm_up)
        while True:
            batch = [await self._pending.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            started = time.perf_counter()
            try:
                embeddings = await loop.run_in_executor(self._executor, self.encoder.encode_frames, [b[0] for b in batch])
            except Exception as e:  # the streams waiting on this batch see the error; the service goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.busy_seconds += time.perf_counter() - started
            self.batches += 1
            self.frames += len(batch)
            for (_, future), embedding in zip(batch, embeddings):
                if not future.done():
                    future.set_result(embedding)

    def _warm_up(self) -> None:
        size = self.encoder.image_size
        try:
            self.encoder.encode_frames([np.zeros((size, size, 3), np.uint8)] * 2)
        except Exception as e:  # noqa: BLE001 - the real batches will report it
            log.warning("encoder warm-up failed: %s", e)

    def snapshot(self) -> EncoderSnapshot:
        return EncoderSnapshot(
            batches=self.batches,
            frames=self.frames,
            mean_batch=round(self.frames / self.batches, 2) if self.batches else 0.0,
            img_per_busy_s=round(self.frames / self.busy_seconds, 2) if self.busy_seconds else 0.0,
        )

    def close(self) -> None:
        if self._task:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


# --- metrics: one typed snapshot, read by `watch`, the API model and the Prometheus collector -----------


def gauge(help_text: str, name: str | None = None) -> dict:
    return {"help": help_text, "type": "gauge", "name": name}


def counter(help_text: str, name: str | None = None) -> dict:
    return {"help": help_text, "type": "counter", "name": name}


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream's metrics; fields with `metadata` are exported to Prometheus as `cliplive_stream_<name>`."""

    stream: str
    state: str  # idle, connecting, live, stalled, reconnecting, failed (waiting to restart), ended
    input_fps: float = field(metadata=gauge("Frames (packets) in from the input per second"))
    decoded_fps: float = field(metadata=gauge("Frames decoded per second"))
    sampled_fps: float = field(metadata=gauge("Frames sampled per second"))
    dropped: int = field(metadata=counter("Sampled frames dropped because the encoder was behind", "dropped_frames"))
    reconnects: int = field(metadata=counter("Reconnections to the source"))
    scored: int = field(metadata=counter("Frames scored against the stream's queries", "scored_frames"))
    failed: int = field(metadata=counter("Frames lost because their encoder batch failed", "failed_frames"))
    events: int = field(metadata=counter("Highlight events emitted"))
    encoder_lag_p50_s: float | None = field(metadata=gauge("Median time from decoded to embedded", "encoder_lag_seconds"))
    latency_p50_s: float | None  # decoded -> scored and events out; exported as cliplive_stream_latency_seconds
    latency_p99_s: float | None


@dataclass(frozen=True)
class EncoderSnapshot:
    """The shared encoder's metrics; exported as `cliplive_encoder_<name>`."""

    batches: int = field(metadata=counter("Batches encoded"))
    frames: int = field(metadata=counter("Frames encoded"))
    mean_batch: float = field(metadata=gauge("Mean frames per batch", "batch_size_mean"))
    img_per_busy_s: float = field(metadata=gauge("Frames encoded per second of encoder time", "throughput_fps"))


@dataclass(frozen=True)
class PipelineSnapshot:
    streams: list[StreamSnapshot]
    encoder: EncoderSnapshot


def exported(snapshot_type: type) -> list[tuple[str, str, str, str]]:
    """(field, metric name suffix, help, gauge|counter) for each field of a snapshot that Prometheus exports."""
    return [(f.name, f.metadata["name"] or f.name, f.metadata["help"], f.metadata["type"])
            for f in fields(snapshot_type) if f.metadata]


def _percentile(samples: deque, q: float) -> float | None:
    return round(float(np.percentile(np.asarray(samples), q)), 3) if samples else None


# --- streams -------------------------------------------------------------------------------------


class StreamRunner:
    """One stream: source -> shared encoder -> highlighter -> observers, then events out."""

    def __init__(self, name: str, source: Source, highlighter: Highlighter, encoder: BatchedEncoder, emit: Emit,
                 observers: list[Observer]):
        self.name, self.source, self.highlighter, self.encoder = name, source, highlighter, encoder
        self.observers = observers
        self._emit = emit
        self.encoder_lag: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # decoded -> embedded
        self.latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # decoded -> scored, events out
        self.scored = self.events = self.failed = 0
        self.last_status: StatusEvent | None = None
        self._ended: StatusEvent | None = None
        self._walls: deque[tuple[float, float]] = deque(maxlen=WALL_SAMPLES)  # (media, wall) of recent scored frames
        self._wall_starts: dict[str, float] = {}  # open segment id -> its wall_start
        self._failed_observers: list[Observer] = []
        self._failure: StatusEvent | None = None  # while a failed run waits to restart
        self._source_ended = asyncio.Event()
        self.task: asyncio.Task | None = None

    def emit(self, event: HighlightEvent | StatusEvent) -> None:
        if isinstance(event, StatusEvent):
            if event.state == "ended":
                self._source_ended.set()  # a failed run waiting to restart need not
            if event.state == "ended" and self.task is not None and not self.task.done():
                self._ended = event  # told after the stream's last highlight events (run's finally)
                return
            self.last_status = event
        else:
            self.events += 1
            # A segment's start stays where its first event put it, however the clock mapping moves later.
            start = self._wall_starts.setdefault(event.id, self.wall_time(event.start))
            if event.end is not None:
                self._wall_starts.pop(event.id)
            event = replace(event, wall_start=start, wall_end=None if event.end is None else self.wall_time(event.end))
        self._emit(event)

    def wall_time(self, t: float) -> float:
        """Unix time at which media time `t` was live: from the recent scored frame nearest to it (media and
        wall time move together from there), else the current time."""
        if not self._walls:
            return time.time()
        i = min(bisect.bisect_left(self._walls, (t, -math.inf)), len(self._walls) - 1)
        if i > 0 and t - self._walls[i - 1][0] < self._walls[i][0] - t:
            i -= 1
        media, wall = self._walls[i]
        return wall + (t - media)

    async def supervise(self) -> None:
        """Run the stream until its source ends. A run that dies of an unexpected error (a bug: the failures
        of the stream's own I/O are contained where they happen) shows as `failed`, with the error, in the
        stream's state and a status event; its open segments end, and the stream restarts on the same source
        after a backoff (1, 2, 4 ... 60 s), unless the source ends meanwhile."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self.run()
                return
            except Exception as e:  # noqa: BLE001 - logged with its traceback; the stream restarts
                log.exception("stream=%s failed", self.name)
                error = mask_url(f"{type(e).__name__}: {e}")
            if time.monotonic() - started >= RESTART_MAX:
                attempt = 0
            delay = min(RESTART_MAX, RESTART_INITIAL * 2**attempt)
            attempt += 1
            self._failure = StatusEvent(self.name, "failed", {"error": error, "attempt": attempt, "delay": delay})
            self.emit(self._failure)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._source_ended.wait(), delay)
            self._failure = None
            for event in self.highlighter.set_queries(self.highlighter.queries):  # a fresh window and segmenter
                self.emit(event)  # (none: the failed run ended its segments)
            if self.source.state != "ended":  # (else the next run ends at once, telling `ended` last)
                self.source.report_to(self.emit)  # the restarted stream's status: its source's state again

    async def run(self) -> None:
        try:
            while True:
                try:
                    frame = await self.source.recv()
                except SourceEnded:
                    return
                try:
                    embedding = await self.encoder.encode(frame.image)
                except Exception as e:  # noqa: BLE001 - a failed batch costs its frames, not the stream
                    log.warning("stream=%s frame at %.3f s not encoded: %s", self.name, frame.t, e)
                    self.failed += 1
                    continue
                self.encoder_lag.append(time.time() - frame.wall)
                relevance, events = self.highlighter.push(frame.t, embedding)
                self._walls.append((frame.t, frame.wall))
                self._observe(ScoredFrame(self.name, frame, embedding, relevance, self.highlighter.queries.labels))
                self.latency.append(time.time() - frame.wall)
                self.scored += 1
                for event in events:
                    self.emit(event)
        finally:
            for event in self.highlighter.close(self.source.end_time):
                self.emit(event)
            if self._ended is not None:
                self.last_status, ended, self._ended = self._ended, self._ended, None
                self._emit(ended)

    def _observe(self, scored: ScoredFrame) -> None:
        """Before the frame's events go out: a thumbnail tap must hold their best frame. (A method, so that
        nothing keeps the frame alive while the runner waits for the next one: memory is bounded in frames.)"""
        for observer in self.observers:
            try:
                observer(scored)
            except Exception:  # a tap's bug must not stop the stream; its traceback is logged once, not per frame
                if observer not in self._failed_observers:
                    self._failed_observers.append(observer)
                    log.exception("stream=%s observer %r failed (further failures are not logged)", self.name, observer)

    def set_queries(self, queries: Queries) -> None:
        """Look for other queries from now on; open segments end (their `end` events are emitted)."""
        for event in self.highlighter.set_queries(queries):
            self.emit(event)

    @property
    def state(self) -> str:
        """The source's state, unless the stream's processing failed: waiting to restart, or (a bug in the
        supervisor itself) dead; never `live` then."""
        died = self.task is not None and self.task.done() and not self.task.cancelled() and self.task.exception() is not None
        return "failed" if self._failure or died else self.source.state

    def snapshot(self) -> StreamSnapshot:
        source = self.source.metrics
        return StreamSnapshot(
            stream=self.name, state=self.state, **source.rates(), scored=self.scored, failed=self.failed,
            events=self.events, encoder_lag_p50_s=_percentile(self.encoder_lag, 50),
            latency_p50_s=_percentile(self.latency, 50), latency_p99_s=_percentile(self.latency, 99),
        )


class Pipeline:
    """Live streams sharing one batched encoder and one scorer; every event goes to `emit`."""

    def __init__(
        self,
        encoder: Encoder,
        emit: Emit,
        scorer: FrameScorer | None = None,
        segmenter: SegmenterConfig = SegmenterConfig(),
        max_batch: int = 16,
    ):
        self.emit, self.segmenter = emit, segmenter
        self.scorer = scorer or ZeroShotScorer(encoder.dim, encoder.calibration)
        self.image_size = encoder.image_size
        self.encoder = BatchedEncoder(encoder, max_batch=max_batch)
        self.runners: dict[str, StreamRunner] = {}

    def source_options(self, options: SourceOptions = SourceOptions()) -> SourceOptions:
        """`options` with frames scaled to the encoder's input size, for sources built outside the pipeline."""
        return replace(options, short_side=self.image_size)

    def add(self, name: str, source: Source | str, queries: Queries, options: SourceOptions = SourceOptions(),
            observers: list[Observer] | None = None) -> StreamRunner:
        """Start a stream from a source string (opened with `options`) or a ready source (e.g. a WebRTC
        track), looking for `queries`. Its status events join the pipeline's events from now on."""
        if name in self.runners:
            raise ValueError(f"stream {name!r} exists already")  # callers check names; this is a bug guard
        if isinstance(source, str):
            source = AVSource(source, name, self.source_options(options))
        highlighter = Highlighter(self.scorer, queries, self.segmenter, stream=name)
        runner = StreamRunner(name, source, highlighter, self.encoder, self.emit, list(observers or []))
        source.report_to(runner.emit)
        self.encoder.start()
        self.runners[name] = runner
        runner.task = asyncio.get_running_loop().create_task(runner.supervise(), name=f"stream-{name}")
        runner.task.add_done_callback(_log_failure)
        return runner

    async def remove(self, name: str) -> None:
        """Stop one stream; its open segments end (their `end` events are emitted) before this returns."""
        runner = self.runners[name]
        runner.source.stop()
        await asyncio.gather(runner.task, return_exceptions=True)
        del self.runners[name]

    def set_queries(self, name: str, queries: Queries) -> None:
        self.runners[name].set_queries(queries)

    async def wait(self) -> None:
        """Until every stream has ended."""
        await asyncio.gather(*(r.task for r in self.runners.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Stop every source; each stream closes its open segments (their `end` events are emitted)."""
        for runner in self.runners.values():
            runner.source.stop()
        await self.wait()
        self.encoder.close()

    def snapshot(self) -> PipelineSnapshot:
        return PipelineSnapshot([r.snapshot() for r in self.runners.values()], self.encoder.snapshot())


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
