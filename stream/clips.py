"""Clips on disk: cut time ranges out of a source video and join them into one mp4, with PyAV.

Video is re-encoded (H.264) so cuts land on the exact frame rather than the keyframe before; audio is
re-encoded (AAC) over the same ranges so sound stays in sync. The output appears atomically: it is
written to a temporary file beside the target and renamed only when complete.

Times are seconds from the start of the video stream, as `cliplive.stream.source` reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path

import av
import numpy as np

from cliplive.models.errors import Unavailable, reason
from cliplive.models.files import atomic_path
from cliplive.stream.live import SourceOptions, av_options, lower_scheme
from cliplive.stream.source import pts_seconds

HTTP_IO_TIMEOUT = 10.0  # seconds before a silent read of a remote file fails
CUT_TOLERANCE = 1e-6  # seconds: float noise when comparing frame times with cut points
AUDIO_WAIT = 1.0  # seconds of video past a range's end to read while waiting for its audio
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class ClipWriteError(Unavailable):
    """The clip could not be written; the message is one line for the user."""


def write_summary(
    source: str | Path,
    segments: Sequence[tuple[float, float]],
    out: str | Path,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Join the [start, end) ranges (seconds of media time) of `source` into the mp4 `out`: their union in
    time order, so time that several ranges share (segments of different sentences) is written once.

    Returns the output's duration in seconds.
    """
    ranges = _merge(segments)
    if not ranges:
        raise ClipWriteError("no segments to write")
    out = Path(out)
    if not out.parent.is_dir():
        raise ClipWriteError(f"output directory does not exist: {out.parent}")
    reader = _Reader(str(source))
    try:
        with atomic_path(out, suffix=".mp4") as tmp:
            return _write(reader, ranges, tmp, progress)
    except OSError as e:
        raise ClipWriteError(f"cannot write {out}: {reason(e)}") from None
    finally:
        reader.close()


def _merge(segments: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping, non-empty ranges."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted((max(0.0, float(s)), float(e)) for s, e in segments):
        if not end > start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _write(
    reader: _Reader, ranges: list[tuple[float, float]], path: str, progress: Callable[[float], None] | None
) -> float:
    total = sum(end - start for start, end in ranges)
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        summary = _Summary(container, reader)
        for start, end in ranges:
            summary.begin_range()
            audio_end = end + 2 / reader.rate  # the range's last frame may be shown a little past `end`
            video_end = None  # where the range's last frame stops showing, once a later frame is seen
            audio_done = reader.audio is None
            for item in reader.frames_from(start):
                if item.is_video:
                    if item.time >= end - CUT_TOLERANCE:
                        video_end = min(end, item.time) if video_end is None else video_end
                    elif item.time >= start - CUT_TOLERANCE:
                        summary.add_video(item.time, item.frame, end)
                        if progress:
                            progress(min(1.0, summary.duration / total))
                elif item.time >= audio_end:
                    audio_done = True
                else:
                    summary.add_audio(item.time, item.frame, audio_end)
                # Give up on audio that stopped before the range ended rather than read to the end of the file.
                if video_end is not None and (audio_done or item.time > end + AUDIO_WAIT):
                    break
            summary.end_range(video_end)
        if summary.frames == 0:
            raise ClipWriteError(f"the segments hold no video frames of {reader.path}")
        summary.finish()
    if progress:
        progress(1.0)
    return summary.duration


@dataclass
class _Decoded:
    is_video: bool
    time: float  # seconds from the start of the video stream
    frame: av.VideoFrame | av.AudioFrame


class _Reader:
    """The source's decoded frames with media times, from the keyframe at or before a given time."""

    def __init__(self, path: str):
        self.path = path
        self._open()
        if self.video is None:
            self.close()
            raise ClipWriteError(f"no video stream in {path}")
        if self.video.codec_context is None:
            self.close()
            raise ClipWriteError(f"no decoder for the video of {path}")
        self.rate = self.video.guessed_rate or self.video.average_rate or Fraction(25)
        start = self.video.start_time
        self.origin = float(start * self.video.time_base) if start is not None else 0.0

    def _open(self) -> None:
        url = lower_scheme(self.path)
        # A remote file is opened as a live http source is: its server must not pick the demuxer or protocol (an SDP).
        options = av_options("http", SourceOptions(), HTTP_IO_TIMEOUT) if url.startswith(("http://", "https://")) else {}
        try:
            self.container = av.open(url, options=options)
        except (av.error.FFmpegError, OSError) as e:
            raise ClipWriteError(f"cannot read {self.path}: {reason(e)}") from None
        streams = self.container.streams
        self.video = streams.video[0] if streams.video else None
        self.audio = streams.audio[0] if streams.audio else None
        if self.video is not None:
            self.video.thread_type = "AUTO"

    def close(self) -> None:
        self.container.close()

    def frames_from(self, start: float) -> Iterator[_Decoded]:
        """Frames from at or before `start` on, in decoding order; the caller drops the early ones."""
        back_off = 0.0
        while start - back_off > 0 and self._seek(start - back_off):
            frames = self._decode(first_time=None)
            head: list[_Decoded] = []
            for item in frames:
                head.append(item)
                if item.is_video:
                    break
            landed = head[-1].time if head and head[-1].is_video else None
            if landed is None or landed <= start + CUT_TOLERANCE:
                return chain(head, frames)
            back_off = max(1.0, 2 * back_off)  # some demuxers (MPEG-TS) land past the target: seek earlier
        # From the top, or no seeking at all (raw .h264): read from a fresh open, the one sure start.
        self.close()
        self._open()
        return self._decode(first_time=0.0)

    def _seek(self, time: float) -> bool:
        """Seek to the keyframe at or before `time` (as the demuxer sees it); False if the format cannot."""
        try:
            self.container.seek(round((time + self.origin) / self.video.time_base), stream=self.video, backward=True)
            return True
        except av.error.FFmpegError:
            return False

    def _decode(self, first_time: float | None) -> Iterator[_Decoded]:
        """Decoded frames; one without pts follows its predecessor, or gets `first_time` (None: dropped)."""
        streams = [s for s in (self.video, self.audio) if s is not None]
        next_time = {self.video: first_time, self.audio: first_time}
        try:
            for packet in self.container.demux(*streams):
                for frame in packet.decode():
                    stream = packet.stream
                    time = pts_seconds(frame)
                    if time is not None:
                        time -= self.origin
                    elif next_time[stream] is None:
                        continue
                    else:
                        time = next_time[stream]
                    is_video = stream is self.video
                    next_time[stream] = time + (1 / self.rate if is_video else frame.samples / frame.sample_rate)
                    yield _Decoded(is_video, time, frame)
        except av.error.FFmpegError as e:
            raise ClipWriteError(f"cannot decode {self.path}: {reason(e)}") from None


class _Summary:
    """The output: video on a constant-rate grid, audio made level with the video at every cut.

    Each range starts at its first frame; later frames sit at their media time from it, rounded to
    the grid (a slot already taken drops the frame, as for sources faster than the grid). The range's
    audio is taken from the same first-frame time, and at the range's end padded with silence or cut
    to end exactly where the video does, so rounding never adds up across ranges.
    """

    def __init__(self, container: av.container.OutputContainer, reader: _Reader):
        self.container = container
        self.rate = reader.rate
        source = reader.video.codec_context
        self.video = container.add_stream("libx264", rate=self.rate)
        self.video.width, self.video.height = source.width // 2 * 2, source.height // 2 * 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"preset": "veryfast", "crf": "23"}
        self.video.thread_type = "FRAME"  # x264 frame threads: PyAV defaults encoders to slower slice threads
        self.frames = 0  # slots of 1/rate filled so far: the output's length in frames
        self.last_picture: av.VideoFrame | None = None
        self.audio = None
        if reader.audio is not None:
            source_rate = reader.audio.codec_context.sample_rate
            self.sample_rate = source_rate if source_rate in AAC_RATES else 48000
            layout = "mono" if reader.audio.codec_context.layout.nb_channels == 1 else "stereo"
            self.audio = container.add_stream("aac", rate=self.sample_rate, layout=layout)
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate)
            self.fifo = av.AudioFifo()
            self.samples = 0  # audio samples encoded so far

    @property
    def duration(self) -> float:
        return float(self.frames / self.rate)

    def begin_range(self) -> None:
        self.range_frame = self.frames
        self.range_time: float | None = None  # media time of the range's first video frame
        self.early_audio: list[tuple[float, av.AudioFrame, float]] = []  # decoded before that frame

    def add_video(self, time: float, frame: av.VideoFrame, end: float) -> None:
        if self.range_time is None:
            self.range_time = time
            for audio in self.early_audio:
                self.add_audio(*audio)
        slot = self.range_frame + round((time - self.range_time) * self.rate)
        range_slots = math.ceil((end - self.range_time) * self.rate - CUT_TOLERANCE)
        if slot < self.frames or slot >= self.range_frame + range_slots:  # taken, or rounded past the cut
            return
        picture = frame.reformat(self.video.width, self.video.height, format="yuv420p")
        picture.pts, picture.time_base = slot, 1 / self.rate
        self.container.mux(self.video.encode(picture))
        self.frames = slot + 1
        self.last_picture = picture
        self._encode_audio()

    def add_audio(self, time: float, frame: av.AudioFrame, end: float) -> None:
        if self.audio is None:
            return
        if self.range_time is None:
            self.early_audio.append((time, frame, end))
            return
        piece = _trim(frame, time, self.range_time, end)
        if piece is not None:
            for resampled in self.resampler.resample(piece):
                self.fifo.write(resampled)
        self._encode_audio()

    def end_range(self, video_end: float | None) -> None:
        """Close the range; `video_end` (media time) lets its last frame show until then (variable rate)."""
        if self.range_time is None:
            return
        if video_end is not None:
            last_slot = self.range_frame + round((video_end - self.range_time) * self.rate) - 1
            if last_slot >= self.frames:  # repeat the last frame so the output shows it for as long
                self.last_picture.pts = last_slot
                self.container.mux(self.video.encode(self.last_picture))
                self.frames = last_slot + 1
        if self.audio is None:
            return
        missing = self._audio_target() - self.samples - self.fifo.samples
        if missing > 0:
            self.fifo.write(self._silence(missing))
        elif missing < 0:
            queued = self.fifo.read(self.fifo.samples)
            if queued.samples + missing > 0:
                self.fifo.write(_slice(queued, 0, queued.samples + missing))
        self._encode_audio()

    def finish(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self._encode_audio(final=True)
            self.container.mux(self.audio.encode(None))

    def _audio_target(self) -> int:
        """Audio samples that match the video written so far."""
        return round(self.frames * self.sample_rate / self.rate)

    def _encode_audio(self, final: bool = False) -> None:
        """Encode whole AAC frames of queued audio, never running ahead of the video (all of it if `final`)."""
        if self.audio is None:
            return
        size = self.audio.codec_context.frame_size or 1024
        while (self.fifo.samples >= size and self.samples + size <= self._audio_target()) or (final and self.fifo.samples):
            frame = self.fifo.read(min(size, self.fifo.samples))
            frame.pts, frame.time_base = self.samples, Fraction(1, self.sample_rate)
            self.samples += frame.samples
            self.container.mux(self.audio.encode(frame))

    def _silence(self, samples: int) -> av.AudioFrame:
        channels = self.audio.codec_context.layout.nb_channels
        frame = av.AudioFrame.from_ndarray(np.zeros((channels, samples), np.float32), format="fltp", layout=self.audio.codec_context.layout.name)
        frame.sample_rate = self.sample_rate
        return frame


def _trim(frame: av.AudioFrame, time: float, start: float, end: float) -> av.AudioFrame | None:
    """The part of an audio frame (starting at `time`) inside [start, end); None if nothing is."""
    first = max(0, round((start - time) * frame.sample_rate))
    last = min(frame.samples, round((end - time) * frame.sample_rate))
    if last <= first:
        return None
    if first == 0 and last == frame.samples:
        frame.pts = None  # the output's timestamps are counted afresh
        return frame
    return _slice(frame, first, last)


def _slice(frame: av.AudioFrame, first: int, last: int) -> av.AudioFrame:
    """Samples [first, last) of an audio frame, as a new frame without pts."""
    samples = frame.to_ndarray()
    if frame.format.is_planar:
        kept = samples[:, first:last]
    else:  # packed: one row of interleaved channels
        channels = frame.layout.nb_channels
        kept = samples[:, first * channels : last * channels]
    piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format=frame.format.name, layout=frame.layout.name)
    piece.sample_rate = frame.sample_rate
    return piece

