"""Many live streams in one asyncio process, sharing one batched encoder.

Overload policy: every queue is bounded. A source keeps only its newest sampled frame (older ones are
dropped and counted), and each stream has at most one frame at the encoder, so memory is flat however
far the encoder falls behind; what falls behind shows as `dropped` and a lower effective sampling rate
in the stream's metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from cliplive.models.encoder import Encoder
from cliplive.models.scorer import CausalScorer, zero_shot
from cliplive.stream.engine import Highlighter, Queries
from cliplive.stream.live import AVSource, SourceEnded, SourceOptions
from cliplive.stream.segmenter import SegmenterConfig

log = logging.getLogger(__name__)

Emit = Callable[[object], None]  # receives HighlightEvent and StatusEvent objects
LATENCY_SAMPLES = 1000


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
        size = getattr(self.encoder, "image_size", 224)
        try:
            self.encoder.encode_frames([np.zeros((size, size, 3), np.uint8)] * 2)
        except Exception as e:  # noqa: BLE001 - the real batches will report it
            log.warning("encoder warm-up failed: %s", e)

    def metrics(self) -> dict:
        return {
            "batches": self.batches,
            "frames": self.frames,
            "mean_batch": round(self.frames / self.batches, 2) if self.batches else 0.0,
            "img_per_busy_s": round(self.frames / self.busy_seconds, 2) if self.busy_seconds else 0.0,
        }

    def close(self) -> None:
        if self._task:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class StreamMetrics:
    encoder_lag: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))  # decoded -> embedded
    latency: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))  # decoded -> scored, events out
    scored: int = 0
    events: int = 0
    failed: int = 0  # frames whose encoder batch failed


class StreamRunner:
    """One stream: source -> shared encoder -> highlighter -> emit."""

    def __init__(self, name: str, source, highlighter: Highlighter, encoder: BatchedEncoder, emit: Emit):
        self.name, self.source, self.highlighter, self.encoder, self.emit = name, source, highlighter, encoder, emit
        self.metrics = StreamMetrics()

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
                    self.metrics.failed += 1
                    continue
                self.metrics.encoder_lag.append(time.time() - frame.wall)
                events = self.highlighter.push_embeddings([frame.t], embedding[None])
                self.metrics.latency.append(time.time() - frame.wall)
                self.metrics.scored += 1
                for event in events:
                    self._emit(event)
        finally:
            for event in self.highlighter.close():
                self._emit(event)

    def _emit(self, event) -> None:
        self.metrics.events += 1
        self.emit(event)

    def snapshot(self) -> dict:
        lag, latency = np.asarray(self.metrics.encoder_lag), np.asarray(self.metrics.latency)
        source = self.source.metrics.rates() if hasattr(self.source, "metrics") else {}
        return {
            "stream": self.name,
            "state": getattr(self.source, "state", None),
            **source,
            "scored": self.metrics.scored,
            "events": self.metrics.events,
            "encoder_lag_p50_s": round(float(np.percentile(lag, 50)), 3) if lag.size else None,
            "latency_p50_s": round(float(np.percentile(latency, 50)), 3) if latency.size else None,
            "latency_p99_s": round(float(np.percentile(latency, 99)), 3) if latency.size else None,
        }


class Runtime:
    """N streams, one encoder, one event sink."""

    def __init__(
        self,
        encoder: Encoder,
        queries: Queries,
        emit: Emit,
        scorer: CausalScorer | None = None,
        source_options: SourceOptions = SourceOptions(),
        segmenter: SegmenterConfig = SegmenterConfig(),
        max_batch: int = 16,
    ):
        self.queries, self.emit, self.segmenter = queries, emit, segmenter
        self.scorer = scorer or zero_shot(encoder.dim, encoder.calibration)
        self.source_options = replace(source_options, short_side=encoder.image_size)
        self.encoder = BatchedEncoder(encoder, max_batch=max_batch)
        self.runners: dict[str, StreamRunner] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def add(self, url: str, name: str | None = None, source=None, queries: Queries | None = None) -> StreamRunner:
        """Start a stream from a source string (or an already built source, e.g. a WebRTC track), looking
        for `queries` (default: the runtime's)."""
        name = name or f"stream{len(self.runners)}"
        if name in self.runners:
            raise ValueError(f"stream {name!r} exists already")
        source = source or AVSource(url, name, self.source_options, on_status=self.emit)
        highlighter = Highlighter(self.scorer, queries or self.queries, self.segmenter, stream=name)
        runner = StreamRunner(name, source, highlighter, self.encoder, self.emit)
        self.encoder.start()
        self.runners[name] = runner
        self._tasks[name] = asyncio.get_running_loop().create_task(runner.run(), name=f"stream-{name}")
        return runner

    async def wait(self) -> None:
        """Until every stream has ended."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Stop every source; each stream closes its open segments (their `end` events are emitted)."""
        for runner in self.runners.values():
            runner.source.stop()
        await self.wait()
        self.encoder.close()

    def metrics(self) -> dict:
        return {"streams": [r.snapshot() for r in self.runners.values()], "encoder": self.encoder.metrics()}

