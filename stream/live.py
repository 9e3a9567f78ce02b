"""Live sources: one async pull interface (`await source.recv()`, as aiortc's tracks) over PyAV.

A reader thread per source opens the input, decodes, samples and converts only the frames it keeps,
and hands the newest one to the event loop; if the consumer is slower, older frames are dropped and
counted (memory stays at one frame per stream). A watchdog on the loop side notices silent inputs
itself (PyAV's own timeouts have had bugs), and dead or stalled inputs reconnect with exponential
backoff and jitter. Status changes (`connecting`, `live`, `stalled`, `reconnecting`, `ended`) go to a
callback so they join the highlight events in one stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av

from cliplive.stream.events import StatusEvent
from cliplive.stream.source import Frame, Sampler, to_rgb

log = logging.getLogger(__name__)


class SourceEnded(Exception):
    """The source has no more frames and will not reconnect."""


@dataclass(frozen=True)
class SourceOptions:
    fps: float = 2.0  # frames sampled per second
    short_side: int | None = 224  # decoder scales kept frames to this (the encoder's input size)
    transport: str = "tcp"  # RTSP lower transport: tcp (default) or udp
    open_timeout: float = 10.0  # seconds to connect
    stall_timeout: float = 5.0  # seconds without a frame before the input counts as stalled
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    realtime: bool = False  # local files: play at real-time pace instead of as fast as possible
    skip_nonref: bool = True  # let the decoder drop frames no other frame references when sampling sparsely


@dataclass
class SourceMetrics:
    decoded: int = 0  # frames out of the decoder
    sampled: int = 0  # frames kept by the sampler
    dropped: int = 0  # kept frames replaced by a newer one before the consumer took them
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)

    def rates(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "input_fps": round(self.decoded / elapsed, 2),
            "sampled_fps": round(self.sampled / elapsed, 2),
            "dropped": self.dropped,
            "reconnects": self.reconnects,
        }


class Timeline:
    """One increasing stream time from per-connection pts: survives jumps, wraps, gaps and missing pts.

    Media time follows pts while it advances plausibly; when pts is missing, goes backwards, or jumps
    further than wall-clock time allows (a wrap, an encoder restart, a reconnect), the timeline is
    re-anchored so that it continues from the last time by the wall-clock gap.
    """

    def __init__(self, live: bool, max_jump: float = 2.0):
        self.live, self.max_jump = live, max_jump
        self.offset: float | None = None
        self.last_t: float | None = None
        self.last_wall = 0.0

    def reset(self) -> None:
        """A new connection: its pts have nothing to do with the last one's."""
        self.offset = None

    def map(self, pts_seconds: float | None, wall: float) -> float:
        wall_gap = wall - self.last_wall if self.last_t is not None else 0.0
        if self.last_t is None:
            t = 0.0
        elif pts_seconds is None or self.offset is None:
            t = self.last_t + max(wall_gap, 1e-3)
        else:
            t = pts_seconds + self.offset
            step = t - self.last_t
            if step <= 0 or (self.live and abs(step - wall_gap) > self.max_jump):
                t = self.last_t + max(wall_gap, 1e-3)
        if pts_seconds is not None:
            self.offset = t - pts_seconds
        self.last_t, self.last_wall = t, wall
        return t


StatusCallback = Callable[[StatusEvent], None]


class AVSource:
    """RTSP(S) cameras (pull, or listen for a push), HTTP(S) files and HLS, V4L2 devices and local files."""

    def __init__(self, url: str, stream: str, options: SourceOptions = SourceOptions(), on_status: StatusCallback | None = None):
        self.url, self.stream, self.options = url, stream, options
        self.on_status = on_status or (lambda event: None)
        self.kind = source_kind(url)
        self.live = self.kind in ("rtsp", "rtsp-listen", "device", "hls") or (self.kind == "file" and options.realtime)
        self.metrics = SourceMetrics()
        self.timeline = Timeline(live=self.live)
        self.state = "idle"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._latest: Frame | None = None
        self._ready = asyncio.Event()
        self._generation = 0  # readers of older generations are abandoned: their frames are ignored
        self._last_frame = time.monotonic()
        self._ended = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._watchdog: asyncio.Task | None = None
        self._attempt = 0

    # --- consumer side (event loop) ----------------------------------------------------------

    async def recv(self) -> Frame:
        """The newest sampled frame not yet taken; waits for one. Raises SourceEnded at the end."""
        if self._loop is None:
            self._start()
        while self._latest is None:
            if self._ended:
                raise SourceEnded(self._error or "ended")
            self._ready.clear()
            await self._ready.wait()
        frame, self._latest = self._latest, None
        return frame

    def stop(self) -> None:
        """Stop reading; readers blocked in I/O are abandoned and end by their own timeouts."""
        self._stop.set()
        self._generation += 1
        if self._watchdog:
            self._watchdog.cancel()
        self._finish(None)

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect()
        self._watchdog = self._loop.create_task(self._watch())

    def _connect(self) -> None:
        self._generation += 1
        self._last_frame = time.monotonic()
        self._set_state("connecting", url=self.url)
        threading.Thread(target=self._read, args=(self._generation,), name=f"read-{self.stream}", daemon=True).start()

    async def _watch(self) -> None:
        """Notice stalls ourselves: a silent camera must never hang a stream."""
        while not self._ended:
            await asyncio.sleep(min(0.25, self.options.stall_timeout / 4))
            limit = self.options.stall_timeout if self.state == "live" else self.options.open_timeout + self.options.stall_timeout
            if self.state in ("live", "connecting") and time.monotonic() - self._last_frame > limit:
                self._set_state("stalled", seconds=round(time.monotonic() - self._last_frame, 1))
                await self._reconnect("no frames")

    async def _reconnect(self, reason: str) -> None:
        self._generation += 1  # abandon the current reader
        delay = min(self.options.backoff_max, self.options.backoff_initial * 2**self._attempt) * random.uniform(0.5, 1.0)
        self._attempt += 1
        self.metrics.reconnects += 1
        self._set_state("reconnecting", reason=reason, attempt=self._attempt, delay=round(delay, 2))
        await asyncio.sleep(delay)
        if not self._ended:
            self.timeline.reset()
            self._connect()

    def _set_state(self, state: str, **detail) -> None:
        self.state = state
        log.info("stream=%s state=%s %s", self.stream, state, detail)
        self.on_status(StatusEvent(stream=self.stream, state=state, detail=detail))

    def _finish(self, error: str | None) -> None:
        if self._ended:
            return
        self._ended, self._error = True, error
        self._set_state("ended", **({"error": error} if error else {}))
        self._ready.set()

    # --- reader side (thread) -----------------------------------------------------------------

    def _deliver(self, generation: int, frame: Frame | None, error: str | None) -> None:
        """On the loop: accept a reader's frame, or its end (None) with an error when it failed."""
        if generation != self._generation or self._ended:
            return
        if frame is not None:
            self._last_frame = time.monotonic()
            if self.state != "live":
                self._attempt = 0
                self._set_state("live")
            if self._latest is not None:
                self.metrics.dropped += 1
            self._latest = frame
            self._ready.set()
        elif self.live or (error is not None and self.kind not in ("file",)):
            self._loop.create_task(self._reconnect(error or "input closed"))
        else:
            self._finish(error)

    def _read(self, generation: int) -> None:
        post = self._loop.call_soon_threadsafe
        try:
            container = av.open(self._target(), format=self._format(), options=self._av_options(),
                                timeout=(self.options.open_timeout, self.options.stall_timeout))
        except (av.error.FFmpegError, OSError) as e:
            post(self._deliver, generation, None, f"cannot open: {_reason(e)}")
            return
        error = None
        try:
            if not container.streams.video:
                error = "no video stream"
                return
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"
            if self.options.skip_nonref and self.options.fps < 10:
                stream.codec_context.skip_frame = "NONREF"
            sampler = Sampler(self.options.fps)
            paced_from = None
            for frame in container.decode(stream):
                if self._stop.is_set() or generation != self._generation:
                    return
                wall = time.time()
                pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                if self.options.realtime and pts is not None:
                    paced_from = paced_from if paced_from is not None else time.monotonic() - pts
                    time.sleep(max(0.0, paced_from + pts - time.monotonic()))
                self.metrics.decoded += 1
                t = self.timeline.map(pts, wall)
                if sampler.accept(t):
                    self.metrics.sampled += 1
                    post(self._deliver, generation, Frame(t, to_rgb(frame, self.options.short_side), wall), None)
        except av.error.FFmpegError as e:
            error = _reason(e)
        finally:
            container.close()
            post(self._deliver, generation, None, error)

    def _target(self) -> str:
        if self.kind == "rtsp-listen":
            return "rtsp://" + self.url.split("://", 1)[1]
        return self.url.removeprefix("file://")

    def _format(self) -> str | None:
        return "v4l2" if self.kind == "device" else ("rtsp" if self.kind == "rtsp-listen" else None)

    def _av_options(self) -> dict[str, str]:
        if self.kind == "rtsp":
            return {"rtsp_transport": self.options.transport, "timeout": str(int(self.options.stall_timeout * 1e6))}
        if self.kind == "rtsp-listen":
            # FFmpeg's RTSP server mode: an encoder (ffmpeg -f rtsp) pushes to us.
            return {"rtsp_flags": "listen", "timeout": str(int(self.options.open_timeout))}
        if self.kind in ("http", "hls"):
            return {"reconnect": "1", "rw_timeout": str(int(self.options.stall_timeout * 1e6))}
        return {}


def source_kind(url: str) -> str:
    """rtsp | rtsp-listen | http | hls | device | file, from the source string."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith("rtsp-listen://"):
        return "rtsp-listen"
    if lower.startswith(("http://", "https://")):
        return "hls" if ".m3u8" in lower else "http"
    if lower.startswith("/dev/video"):
        return "device"
    if "://" in lower and not lower.startswith("file://"):
        raise ValueError(f"unsupported source {url!r}: use rtsp://, rtsps://, rtsp-listen://, http(s)://, /dev/videoN or a file")
    path = url[len("file://") :] if lower.startswith("file://") else url
    if not Path(path).exists():
        raise ValueError(f"no such file: {path}")
    return "file"


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).split(":")[0] or type(e).__name__
