"""Clips on disk: cut time ranges out of a source video and join them into one mp4, with PyAV.

Video is re-encoded (H.264) so cuts land on the exact frame rather than the keyframe before; audio is
re-encoded (AAC) over the same ranges so sound stays in sync. The output appears atomically: it is
written to a temporary file beside the target and renamed only when complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cliplive.stream.files import atomic_path


class ClipWriteError(RuntimeError):
    """The clip could not be written; the message is one line for the user."""


def write_summary(
    source: str | Path,
    segments: Sequence[tuple[float, float]],
    out: str | Path,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Join the [start, end) ranges (seconds of media time) of `source` into the mp4 `out`.

    Returns the output's duration in seconds.
    """
    ranges = _merge(segments)
    if not ranges:
        raise ClipWriteError("no segments to write")
    out = Path(out)
    if not out.parent.is_dir():
        raise ClipWriteError(f"output directory does not exist: {out.parent}")
    try:
        with atomic_path(out, suffix=".mp4") as tmp:
            return _cut(str(source), ranges, tmp, progress)
    except OSError as e:
        raise ClipWriteError(f"cannot write {out}: {e.strerror or e}") from None


def _merge(segments: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted((max(0.0, float(s)), float(e)) for s, e in segments):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _cut(source: str, ranges: list[tuple[float, float]], out: str, progress) -> float:
    try:
        src = av.open(source)
    except (av.error.FFmpegError, OSError) as e:
        raise ClipWriteError(f"cannot read {source}: {getattr(e, 'strerror', None) or e}") from None
    with src, av.open(out, "w", format="mp4") as dst:
        if not src.streams.video:
            raise ClipWriteError(f"no video stream in {source}")
        video_in = src.streams.video[0]
        audio_in = src.streams.audio[0] if src.streams.audio else None
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        video_out = dst.add_stream("libx264", rate=rate)
        video_out.width = video_in.codec_context.width // 2 * 2
        video_out.height = video_in.codec_context.height // 2 * 2
        video_out.pix_fmt = "yuv420p"
        video_out.options = {"preset": "veryfast", "crf": "23"}
        audio_out = resampler = None
        if audio_in is not None:
            layout = "stereo" if audio_in.codec_context.channels >= 2 else "mono"
            audio_out = dst.add_stream("aac", rate=audio_in.codec_context.sample_rate, layout=layout)
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=audio_in.codec_context.sample_rate)
        video_start = video_in.start_time if video_in.start_time is not None else 0
        audio_start = audio_in.start_time if audio_in is not None and audio_in.start_time is not None else 0
        total = sum(e - s for s, e in ranges)
        offset = 0.0  # output time at which the current range starts
        frames_out = 0
        samples_out = 0
        fifo = av.AudioFifo() if audio_out is not None else None
        for start, end in ranges:
            src.seek(int(start / video_in.time_base) + video_start, stream=video_in, backward=True)
            streams = [video_in] + ([audio_in] if audio_in is not None else [])
            video_done, audio_done = False, audio_in is None
            for packet in src.demux(*streams):
                if video_done and audio_done:
                    break
                for frame in packet.decode():
                    if packet.stream is video_in and not video_done:
                        t = _time(frame, video_start)
                        if t is None or t < start - 1e-6:
                            continue
                        if t >= end - 1e-6:
                            video_done = True
                            continue
                        pts = max(frames_out, round((offset + t - start) * rate))
                        out_frame = frame.reformat(video_out.width, video_out.height, format="yuv420p")
                        out_frame.pts, out_frame.time_base = pts, Fraction(1) / rate
                        dst.mux(video_out.encode(out_frame))
                        frames_out = pts + 1
                        if progress:
                            progress(min(1.0, (offset + t - start) / total))
                    elif packet.stream is audio_in and not audio_done:
                        t = _time(frame, audio_start)
                        if t is None:
                            continue
                        if t >= end:
                            audio_done = True
                            continue
                        inside = _trim(frame, t, start, end)
                        for piece in resampler.resample(inside) if inside is not None else ():
                            fifo.write(piece)
                        samples_out = _drain(fifo, audio_out, dst, samples_out, final=False)
            offset += end - start
        if frames_out == 0:
            raise ClipWriteError(f"the segments hold no video frames of {source}")
        dst.mux(video_out.encode(None))
        if audio_out is not None:
            samples_out = _drain(fifo, audio_out, dst, samples_out, final=True)
            dst.mux(audio_out.encode(None))
    if progress:
        progress(1.0)
    return float(frames_out / rate)


def _time(frame, start_pts: int) -> float | None:
    return None if frame.pts is None else float((frame.pts - start_pts) * frame.time_base)


def _trim(frame: av.AudioFrame, t: float, start: float, end: float) -> av.AudioFrame | None:
    """The part of an audio frame inside [start, end), as a new frame (None if nothing is inside)."""
    rate = frame.sample_rate
    first = max(0, round((start - t) * rate))
    last = min(frame.samples, round((end - t) * rate))
    if first == 0 and last == frame.samples:
        frame.pts = None  # timestamps are rewritten on output
        return frame
    if last <= first:
        return None
    samples = frame.to_ndarray()
    planar = frame.format.is_planar
    kept = samples[:, first:last] if planar else samples[:, first * len(frame.layout.channels) : last * len(frame.layout.channels)]
    piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format=frame.format.name, layout=frame.layout.name)
    piece.sample_rate = rate
    return piece


def _drain(fifo: av.AudioFifo, stream, dst, samples_out: int, final: bool) -> int:
    size = stream.codec_context.frame_size or 1024
    while fifo.samples >= size or (final and fifo.samples > 0):
        frame = fifo.read(min(size, fifo.samples))
        frame.pts, frame.time_base = samples_out, Fraction(1, stream.codec_context.sample_rate)
        samples_out += frame.samples
        dst.mux(stream.encode(frame))
    return samples_out
