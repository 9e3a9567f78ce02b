"""Video sources: decoded frames with media timestamps.

Timestamps come from each frame's pts and the stream's time_base, relative to the stream's start, so
variable-frame-rate files keep their true timing. Only the frames a sampler keeps are converted to RGB,
and they are scaled by the decoder (swscale) straight to the size the encoder wants.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from cliplive.models.errors import InputError, reason

T = TypeVar("T")


class MediaError(InputError):
    """Input that cannot be read as video; the message is one line for the user."""


@dataclass
class Frame:
    t: float  # media time in seconds since the stream's start
    image: np.ndarray  # RGB uint8 (H, W, 3)
    wall: float  # wall-clock time (time.time()) when it was decoded


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds; 0 when the container does not say
    fps: float  # average frame rate; 0 when unknown
    width: int
    height: int
    codec: str
    has_audio: bool


class FileSource:
    """A local video file (or anything FFmpeg opens as a file), decoded with PyAV."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if not Path(self.path).exists():
            raise MediaError(f"no such file: {self.path}")
        if Path(self.path).is_dir():
            raise MediaError(f"is a directory, not a video: {self.path}")
        try:
            self.container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise MediaError(f"not a readable video file: {self.path} ({reason(e)})") from None
        if not self.container.streams.video:
            kind = "audio-only file" if self.container.streams.audio else "file without a video stream"
            self.container.close()
            raise MediaError(f"{kind}, nothing to watch: {self.path}")
        self.stream = self.container.streams.video[0]
        ctx = self.stream.codec_context
        if ctx is None or not ctx.codec:
            self.container.close()
            raise MediaError(f"unsupported video codec in {self.path}")
        ctx.thread_type = "AUTO"
        self.decoded_frames = 0
        self.info = VideoInfo(
            duration=_duration(self.container, self.stream),
            fps=float(self.stream.average_rate or self.stream.guessed_rate or 0),
            width=ctx.width,
            height=ctx.height,
            codec=ctx.codec.name,
            has_audio=bool(self.container.streams.audio),
        )

    def decoded(self, sample_fps: float | None = None) -> Iterator[tuple[float, av.VideoFrame]]:
        """The decoded frames with their media times: every frame, or, for sampling at `sample_fps`, only as
        many as SkipPolicy says that needs (keyframes only where they come often enough, else no frame that
        nothing references). Decode errors end the stream with a MediaError."""
        start = self.stream.start_time
        origin = float(start * self.stream.time_base) if start is not None else None  # seconds
        step = 1.0 / self.info.fps if self.info.fps else 0.04
        last = None
        if sample_fps is None:
            frames = self.container.decode(self.stream)
        else:
            skip = SkipPolicy(sample_fps)
            self.stream.codec_context.skip_frame = skip.decoder_mode
            frames = decode_skipping(self.container.demux(self.stream), self.stream, skip)
        try:
            for frame in frames:
                self.decoded_frames += 1
                t = pts_seconds(frame, self.stream.time_base)  # frames drained from the decoder carry no time base
                if t is None:
                    t = (last + step) if last is not None else 0.0
                else:
                    if origin is None:
                        origin = t
                    t -= origin
                    if last is not None and t <= last:
                        t = last + step  # out-of-order or repeated pts: keep time moving forward
                last = t
                yield t, frame
        except av.error.FFmpegError as e:
            raise MediaError(f"cannot decode {self.path}: {reason(e)}") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sampler:
    """Keeps frames on a regular grid of `fps` per second, whatever the source's (variable) rate.

    A frame is taken for a grid point when it is the nearest to it; "nearest" is judged with the gap to
    the previous frame (the rate is locally constant), so no frame needs to be held back.
    """

    def __init__(self, fps: float):
        if fps <= 0:
            raise ValueError("sampling fps must be positive")
        self.interval = 1.0 / fps
        self.next = 0.0
        self.previous: float | None = None

    def accept(self, t: float) -> bool:
        gap = t - self.previous if self.previous is not None else 0.0
        self.previous = t
        tolerance = min(gap / 2, self.interval / 4)
        if t < self.next - tolerance - 1e-9:
            return False
        while self.next <= t + tolerance + 1e-9:  # skip grid points inside gaps in the source (a tie counts once)
            self.next += self.interval
        return True


def to_rgb(frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
    """RGB uint8 array, scaled so its shorter side is `short_side` (None: keep the size)."""
    if short_side is None or min(frame.width, frame.height) == short_side:
        return frame.to_ndarray(format="rgb24")
    scale = short_side / min(frame.width, frame.height)
    width, height = max(short_side, round(frame.width * scale)), max(short_side, round(frame.height * scale))
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")


def pts_seconds(item: av.VideoFrame | av.AudioFrame | av.Packet, time_base: Fraction | None = None) -> float | None:
    """A frame's or packet's pts in seconds, on its own time base or else `time_base` (frames drained from
    a decoder may carry none); None when the pts or both time bases are unknown."""
    base = item.time_base or time_base
    return float(item.pts * base) if item.pts is not None and base else None


def sample(source: FileSource, sampler: Sampler, short_side: int | None, every_frame: bool = False) -> Iterator[Frame]:
    """The source's frames that `sampler` accepts (it is asked about every one decoded), converted to RGB
    only when kept; the source decodes only what sampling at the sampler's rate needs, unless `every_frame`
    (a sampler that counts frames)."""
    for t, frame in source.decoded(None if every_frame else 1.0 / sampler.interval):
        if sampler.accept(t):
            yield Frame(t, to_rgb(frame, short_side), time.time())


def prefetch(items: Iterable[T], size: int = 32) -> Iterator[T]:
    """Run a producer (decoding) in a thread so it overlaps the consumer (encoding); bounded queue.

    Exceptions in the producer are re-raised in the consumer. Stops the producer if the consumer quits.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class SkipPolicy:
    """Which frames the decoder may skip unseen, from the sampling rate and the keyframes seen so far.

    Sampling sparsely (below 10 fps), frames that no other frame references are skipped by the decoder
    (NONREF). When keyframes come at least as often as frames are sampled (cameras often send one a
    second), only keyframes are decoded (NONKEY): the other packets never reach the decoder, a quarter
    of NONREF's decoding work. The packets skipped since the last keyframe are held (a keyframe interval
    of compressed video), so when keyframes turn out sparser than sampling needs, decoding goes back to
    NONREF by replaying them and no sampled frame is lost. That makes NONKEY safe to assume from the
    start (a connection starts at a keyframe anyway), so many streams starting at once do not all pay
    for full decoding while the keyframe interval is learnt; after a fall back it must be seen again
    (WINDOW gaps). benchmarks/decode.py measures what each mode costs. Files and live inputs alike.
    """

    SLACK = 1.1  # keyframe gaps up to 10% over the sampling interval still qualify
    WINDOW = 3  # keyframe gaps that must qualify before switching to NONKEY
    MAX_HELD = 1000  # packets: a bound on the held ones should packets come without timestamps
    DECODE, SKIP, ALONE, REPLAY = "decode", "skip", "alone", "replay"  # what to do with a packet

    def __init__(self, fps: float, skip_nonref: bool = True, skip_nonkey: bool = True):
        self.interval = 1.0 / fps
        self.nonkey_allowed = skip_nonkey and fps < 10
        self.decoder_mode = "NONREF" if skip_nonref and fps < 10 else "DEFAULT"  # the decoder's skip_frame
        self.mode = "NONKEY" if self.nonkey_allowed else self.decoder_mode  # NONKEY applies to packets
        self.first: float | None = None  # media time of the first packet
        self.last_key: float | None = None
        self.gaps: list[float] = []
        self.held: list = []  # in NONKEY mode: the last keyframe's packet and the packets skipped since

    def packet(self, packet) -> str:
        """DECODE it, SKIP it (held, not decoded), decode it ALONE (a keyframe in NONKEY mode), or
        REPLAY the held packets before it (back to decoding everything)."""
        if not self.nonkey_allowed:
            return self.DECODE
        t = pts_seconds(packet)
        if self.first is None:
            self.first = t
        limit = self.interval * self.SLACK
        if not packet.is_keyframe:
            if self.mode != "NONKEY":
                return self.DECODE
            since = self.last_key if self.last_key is not None else self.first
            if (t is not None and since is not None and t - since > limit) or len(self.held) >= self.MAX_HELD:
                self.mode, self.gaps = self.decoder_mode, []  # keyframes are sparser than sampling (or absent)
                return self.REPLAY
            if self.held:  # (before the first keyframe there is nothing to decode from)
                self.held.append(packet)
            return self.SKIP
        if t is not None and self.last_key is not None:
            gap = t - self.last_key
            self.gaps = (self.gaps + [gap])[-self.WINDOW :] if gap > 0 else []  # pts went back: start over
        self.last_key = t if t is not None else self.last_key
        if self.mode != "NONKEY" and len(self.gaps) == self.WINDOW and max(self.gaps) <= limit:
            self.mode = "NONKEY"
        if self.mode == "NONKEY":
            self.held = [packet]
            return self.ALONE
        return self.DECODE

    def take_held(self) -> list:
        held, self.held = self.held, []
        return held


def decode_skipping(packets: Iterable[av.Packet], stream: av.video.stream.VideoStream, skip: SkipPolicy) -> Iterator[av.VideoFrame]:
    """Decoded frames; packets the skip policy rules out do not reach the decoder. A keyframe decoded
    alone is drained at once (the decoder would otherwise hold it back for B-frame reordering: a
    keyframe interval per reordered frame, seconds of latency) and the decoder reset for the next one."""
    for packet in packets:
        action = skip.packet(packet)
        if action == SkipPolicy.SKIP:
            continue
        if action == SkipPolicy.REPLAY:  # the held keyframe (delivered already) and what followed it
            held = skip.take_held()
            after = held[0].pts if held else None
            frames = [f for p in held + [packet] for f in p.decode()]
            frames = [f for f in frames if after is None or f.pts is None or f.pts > after]
        else:
            frames = packet.decode()
        if action == SkipPolicy.ALONE:
            frames += stream.decode(None)
            stream.codec_context.flush_buffers()
        yield from frames


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0
