"""Live sources: one async pull interface (`await source.recv()`, as aiortc's tracks) over PyAV.

A reader thread per source opens the input, decodes as little as the sampling rate needs (SkipPolicy),
samples and converts only the frames it keeps, and hands the newest one to the event loop; if the
consumer of a live input is slower, older frames are dropped and counted (memory stays at one frame
per stream), while files played as fast as possible wait for the consumer instead, so none of their
frames is lost. A watchdog on the loop side notices silent inputs itself (PyAV's own timeouts have
had bugs), and dead or stalled inputs reconnect with exponential backoff and jitter. Status changes
(`connecting`, `live`, `stalled`, `reconnecting`, `ended`) go to a callback so they join the
highlight events in one stream.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import av

from cliplive.models.errors import InputError, reason
from cliplive.stream.events import StatusEvent
from cliplive.stream.hosts import HostRefused, check_host
from cliplive.stream.source import Frame, Sampler, SkipPolicy, decode_skipping, pts_seconds, to_rgb

log = logging.getLogger(__name__)


NETWORK_KINDS = ("rtsp", "http", "hls")  # sources that connect out to a host named in their URL
_VIDEO_FORMATS = "mov,mp4,matroska,webm,mpegts,flv,avi,mpeg,asf,h264,hevc,mjpeg,mpjpeg,ogg"  # never sdp, rtp, hls, concat
WHITELISTS = {  # FFmpeg's protocol and format whitelists per network source kind (see av_options)
    "rtsp": {"protocol_whitelist": "rtp,srtp,udp,tcp,tls", "format_whitelist": "rtsp"},
    "http": {"protocol_whitelist": "http,https,tcp,tls,httpproxy", "format_whitelist": _VIDEO_FORMATS},
    "hls": {"protocol_whitelist": "http,https,tcp,tls,crypto,httpproxy", "format_whitelist": "hls,mpegts,mov,mp4,aac,mp3,ac3,eac3,webvtt"},
}


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
    skip_nonkey: bool = True  # decode keyframes only, while they come at least as often as frames are sampled
    decoder_threads: int | None = None  # None: 1 for live inputs (streams run in parallel), FFmpeg's choice for files
    # False: an untrusted client (the HTTP API) named the source: its host is checked before every connection
    # (cliplive.stream.hosts) and status events say only "cannot connect" (the log has the reason)
    allow_local: bool = True


@dataclass
class SourceMetrics:
    received: int = 0  # frames (packets) in from the input, decoded or not
    decoded: int = 0  # frames out of the decoder
    sampled: int = 0  # frames kept by the sampler
    dropped: int = 0  # kept frames replaced by a newer one before the consumer took them
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)

    def rates(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "input_fps": round((self.received or self.decoded) / elapsed, 2),
            "decoded_fps": round(self.decoded / elapsed, 2),
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


class NewestFrame:
    """The newest frame not yet taken, and the end of the stream, between a producer and one consumer.

    A newer frame replaces one never taken (the producer counts it as dropped): a slow consumer always
    gets a fresh frame, so latency cannot grow and memory is one frame per stream."""

    def __init__(self):
        self._frame = None
        self._ready = asyncio.Event()
        self.ended = False
        self.error: str | None = None

    @property
    def full(self) -> bool:
        return self._frame is not None

    def put(self, frame) -> bool:
        """Offer a frame; True when it replaced one never taken."""
        replaced = self._frame is not None
        self._frame = frame
        self._ready.set()
        return replaced

    def end(self, error: str | None) -> bool:
        """End the stream after any frame still waiting; True if this call ended it."""
        if self.ended:
            return False
        self.ended, self.error = True, error
        self._ready.set()
        return True

    async def take(self):
        """The waiting frame, or wait for one; raises SourceEnded at the end."""
        while self._frame is None:
            if self.ended:
                raise SourceEnded(self.error or "ended")
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


class Source(Protocol):
    """What the pipeline pulls frames from; every live source implements it (wrappers too)."""

    stream: str
    state: str  # idle, connecting, live, stalled, reconnecting, ended
    metrics: SourceMetrics
    end_time: float | None  # media time where the source ended by itself, when known (a file read to its end)

    async def recv(self) -> Frame:
        """The next sampled frame; raises SourceEnded when there will be none."""

    def stop(self) -> None:
        """Stop reading; recv() then raises SourceEnded."""

    def report_to(self, on_status: StatusCallback) -> None:
        """Send status events to `on_status` from now on, starting with the current state."""


class LiveSource:
    """What every live source shares: the newest-frame slot, metrics, and its state told as status events."""

    def __init__(self, stream: str, options: SourceOptions, on_status: StatusCallback | None):
        self.stream, self.options = stream, options
        self.on_status = on_status
        self.metrics = SourceMetrics()
        self.state = "idle"
        self.end_time: float | None = None
        self._detail: dict = {}  # of the current state
        self._newest = NewestFrame()

    def report_to(self, on_status: StatusCallback) -> None:
        """Send status events to `on_status` from now on, the current state first unless idle (a WebRTC
        track drains from its offer on, before its stream is added)."""
        self.on_status = on_status
        if self.state != "idle":
            self._tell(self._detail)

    def _set_state(self, state: str, **detail) -> None:
        self.state, self._detail = state, detail
        log.info("stream=%s state=%s %s", self.stream, state, detail)
        if self.on_status is not None:
            self._tell(detail)

    def _tell(self, detail: dict) -> None:
        self.on_status(StatusEvent(stream=self.stream, state=self.state, detail=detail))

    def _finish(self, error: str | None) -> None:
        if self._newest.end(error):
            self._set_state("ended", **({"error": error} if error else {}))


class AVSource(LiveSource):
    """RTSP(S) cameras (pull, or listen for a push), HTTP(S) files and HLS, V4L2 devices and local files."""

    def __init__(self, url: str, stream: str, options: SourceOptions = SourceOptions(), on_status: StatusCallback | None = None):
        super().__init__(stream, options, on_status)
        self.url = url
        self.kind = source_kind(url)
        # live: frames come at the pace of the world, so wall-clock gaps check pts (Timeline). A live input
        # that closes is reconnected; files (also at real-time pace) and VOD playlists end at their end.
        self.reconnects = self.kind in ("rtsp", "rtsp-listen", "device", "hls")
        self.live = self.reconnects or (self.kind == "file" and options.realtime)
        self.timeline = Timeline(live=self.live)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0  # readers of older generations are abandoned: their frames are ignored
        self._last_frame = time.monotonic()
        self._stop = threading.Event()
        self._taken = threading.Event()  # the slot is free: files wait for it (backpressure), live inputs don't
        self._taken.set()
        self._watchdog: asyncio.Task | None = None
        self._attempt = 0

    # --- consumer side (event loop) ----------------------------------------------------------

    async def recv(self) -> Frame:
        """The newest sampled frame not yet taken; waits for one. Raises SourceEnded at the end."""
        if self._loop is None:
            self._start()
        frame = await self._newest.take()
        if not self.live:
            self._last_frame = time.monotonic()  # the reader waited for us; its next frame is due from now
        self._taken.set()
        return frame

    def stop(self) -> None:
        """Stop reading; readers blocked in I/O are abandoned and end by their own timeouts."""
        self._stop.set()
        self._taken.set()
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
        self._set_state("connecting", url=mask_url(self.url))
        threading.Thread(target=self._read, args=(self._generation,), name=f"read-{self.stream}", daemon=True).start()

    async def _watch(self) -> None:
        """Notice stalls ourselves: a silent camera must never hang a stream."""
        while not self._newest.ended:
            await asyncio.sleep(min(0.25, self.options.stall_timeout / 4))
            limit = self.options.stall_timeout if self.state == "live" else self.options.open_timeout + self.options.stall_timeout
            # Waiting for a pusher, or a frame waiting for the consumer: the input is not what is late.
            waiting = (self.kind == "rtsp-listen" and self.state == "connecting") or self._newest.full
            if self.state in ("live", "connecting") and not waiting and time.monotonic() - self._last_frame > limit:
                self._set_state("stalled", seconds=round(time.monotonic() - self._last_frame, 1))
                await self._reconnect("no frames")

    async def _reconnect(self, reason: str) -> None:
        self._generation += 1  # abandon the current reader
        delay = backoff_delay(self._attempt, self.options.backoff_initial, self.options.backoff_max)
        self._attempt += 1
        self.metrics.reconnects += 1
        self._set_state("reconnecting", reason=reason, attempt=self._attempt, delay=round(delay, 2))
        await asyncio.sleep(delay)
        if not self._newest.ended:
            self.timeline.reset()
            self._connect()

    # --- reader side (thread) -----------------------------------------------------------------

    def _deliver(self, generation: int, frame: Frame | None, error: str | None) -> None:
        """On the loop: accept a reader's frame, or its end (None) with an error when it failed."""
        if generation != self._generation or self._newest.ended:
            return
        if error is not None and not self.options.allow_local:
            log.warning("stream=%s %s", self.stream, error)  # not in its status: the API must not be a port scanner
            error = "cannot connect"
        if frame is not None:
            self._last_frame = time.monotonic()
            if self.state != "live":
                self._attempt = 0
                self._set_state("live")
            if self._newest.put(frame):
                self.metrics.dropped += 1
        elif self.reconnects or (error is not None and self.kind not in ("file",)):
            self._loop.create_task(self._reconnect(error or "input closed"))
        else:
            self._finish(error)

    def _post(self, *args) -> None:
        """Hand something to the loop; an abandoned reader may outlive it (then there is no one to tell)."""
        try:
            self._loop.call_soon_threadsafe(*args)
        except RuntimeError:  # the event loop is closed
            pass

    def _open(self, generation: int):
        """The opened container, or None when stopped or abandoned while waiting for a pusher."""
        open_timeout = self.options.open_timeout
        if self.kind == "rtsp-listen":
            open_timeout += listen_slice(self.options)  # the wait for a pusher, then its handshake
        while True:
            try:
                return av.open(self._target(), format=self._format(), options=av_options(self.kind, self.options, self._io_timeout()),
                               timeout=(open_timeout, self._io_timeout()))
            except (av.error.TimeoutError, av.error.ExitError):
                # Listen mode waits for a pusher in slices, so that stop() is noticed; no pusher is no error.
                if self.kind != "rtsp-listen":
                    raise
                if self._stop.is_set() or generation != self._generation:
                    return None

    def _read(self, generation: int) -> None:
        post = self._post
        try:
            if not self.options.allow_local and self.kind in NETWORK_KINDS:
                check_host(self._target())  # again at every connection: the name may resolve elsewhere now
            container = self._open(generation)
        except HostRefused as e:
            post(self._deliver, generation, None, f"refused: {e}")
            return
        except (av.error.FFmpegError, OSError) as e:
            # A demuxer or protocol off the whitelists (av_options) fails as EINVAL: say what it most likely is.
            hint = " (not a video format allowed for this source?)" if self.kind in NETWORK_KINDS and getattr(e, "errno", None) == errno.EINVAL else ""
            post(self._deliver, generation, None, f"cannot open: {mask_url(reason(e))}{hint}")
            return
        if container is None:
            return
        error = None
        try:
            if not container.streams.video:
                error = "no video stream"
                return
            if self.kind == "hls" and container.duration is not None:
                # A VOD playlist (it has an end): played like a file, it ends instead of reconnecting.
                self.reconnects = self.live = self.timeline.live = False
            stream = container.streams.video[0]
            ctx = stream.codec_context
            threads = self.options.decoder_threads
            if threads is None:
                threads = 1 if self.live else 0
            ctx.thread_count = threads
            if threads != 1:
                ctx.thread_type = "AUTO"
            skip = SkipPolicy(self.options.fps, self.options.skip_nonref, self.options.skip_nonkey)
            ctx.skip_frame = skip.decoder_mode
            sampler = Sampler(self.options.fps)
            paced_from = None
            for frame in decode_skipping(self._packets(container, stream, generation), stream, skip):
                pts = pts_seconds(frame, stream.time_base)  # frames drained from the decoder carry no time base
                if self.options.realtime and pts is not None:
                    paced_from = paced_from if paced_from is not None else time.monotonic() - pts
                    time.sleep(max(0.0, paced_from + pts - time.monotonic()))
                wall = time.time()  # after pacing: a paced frame is "decoded" when its time comes
                self.metrics.decoded += 1
                t = self.timeline.map(pts, wall)
                if sampler.accept(t):
                    if not self.live:  # a file as fast as possible: as fast as the consumer takes frames, none dropped
                        while not self._taken.wait(0.1):
                            if self._stop.is_set() or generation != self._generation:
                                return
                        self._taken.clear()
                    self.metrics.sampled += 1
                    post(self._deliver, generation, Frame(t, to_rgb(frame, self.options.short_side), wall), None)
            if not self.reconnects and not self._stop.is_set() and generation == self._generation:
                self.end_time = self._media_end(container)  # read to its end: segments end where it does
        except av.error.FFmpegError as e:
            error = mask_url(reason(e))
        finally:
            container.close()
            post(self._deliver, generation, None, error)

    def _media_end(self, container) -> float | None:
        """The container's end on the stream's media time, when it says how long it is."""
        if container.duration is None or self.timeline.offset is None:
            return None
        return ((container.start_time or 0) + container.duration) / av.time_base + self.timeline.offset

    def _packets(self, container, stream, generation: int) -> Iterator[av.Packet]:
        """The input's packets, counted, until the source is stopped or restarted."""
        for packet in container.demux(stream):
            if self._stop.is_set() or generation != self._generation:
                return
            self.metrics.received += packet.size > 0
            yield packet

    def _io_timeout(self) -> float:
        """FFmpeg's own read timeouts are a backstop that frees abandoned readers; the watchdog, which
        fires at stall_timeout, is what notices a silent input (and says `stalled`)."""
        return 2 * self.options.stall_timeout

    def _target(self) -> str:
        if self.kind == "rtsp-listen":
            return "rtsp://" + self.url.split("://", 1)[1]
        return lower_scheme(self.url).removeprefix("file://")

    def _format(self) -> str | None:
        return "v4l2" if self.kind == "device" else ("rtsp" if self.kind == "rtsp-listen" else None)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#]*@")


def mask_url(text: str) -> str:
    """`text` (a source URL, or a message that may quote one) with every URL's password shown as `***`:
    `rtsp://admin:***@cam/stream`. Credentials stay in the stream's spec; whatever shows a source (status
    events, logs, error messages, API answers) shows it masked."""
    return _USERINFO.sub(r"\1:***@", text)


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
        raise InputError(f"unsupported source {mask_url(url)!r}: use rtsp://, rtsps://, rtsp-listen://, http(s)://, /dev/videoN or a file")
    path = url[len("file://") :] if lower.startswith("file://") else url
    if not Path(path).exists():
        raise InputError(f"no such file: {path}")
    return "file"


def av_options(kind: str, options: SourceOptions, io_timeout: float) -> dict[str, str]:
    """FFmpeg's input options for a source kind; `io_timeout`: seconds before a silent read fails.

    Network kinds get FFmpeg's protocol and format whitelists: what a remote server answers must not
    choose another demuxer or protocol (an SDP file served over http would make FFmpeg bind the UDP
    ports it names; an m3u8 would fetch further URLs; file: would read local files). http(s) sources
    do not follow redirects (`max_redirects`, FFmpeg 8; older FFmpeg ignores it and follows them)."""
    if kind == "rtsp":
        return {"rtsp_transport": options.transport, "timeout": str(int(io_timeout * 1e6)), **WHITELISTS["rtsp"]}
    if kind == "rtsp-listen":
        # FFmpeg's RTSP server mode: an encoder (ffmpeg -f rtsp) pushes to us. listen_timeout must be
        # positive: its default (-1, wait forever) fails with "Numerical result out of range" (FFmpeg 7).
        return {"rtsp_flags": "listen", "listen_timeout": str(listen_slice(options)), **WHITELISTS["rtsp"]}
    if kind == "http":
        return {"reconnect": "1", "rw_timeout": str(int(io_timeout * 1e6)), "max_redirects": "0", **WHITELISTS["http"]}
    if kind == "hls":  # the playlist's own fetch does not follow redirects; its segments' (opened by the hls demuxer) may
        return {"reconnect": "1", "rw_timeout": str(int(io_timeout * 1e6)), "max_redirects": "0", **WHITELISTS["hls"]}
    return {}


def lower_scheme(url: str) -> str:
    """The URL with its scheme in lower case (FFmpeg's protocol names are case-sensitive: HTTP:// never opens)."""
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep and scheme.isascii() and scheme.replace("-", "").replace("+", "").replace(".", "").isalnum() else url


def listen_slice(options: SourceOptions) -> int:
    """Seconds a listening source waits for a pusher at a time, so that stop() is noticed."""
    return max(1, int(options.open_timeout))


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter, so many inputs (or sinks) retrying at once do not retry in step."""
    return min(maximum, initial * 2**attempt) * random.uniform(0.5, 1.0)
