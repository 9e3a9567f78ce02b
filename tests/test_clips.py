"""Summary videos: exact cuts, audio kept, atomic output."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json
from cliplive.stream.clips import ClipWriteError, write_summary


def first_frame(path, at=0.0):
    with av.open(str(path)) as c:
        if at:
            c.seek(int(at / c.streams.video[0].time_base), stream=c.streams.video[0])
        for frame in c.decode(video=0):
            if frame.time >= at - 1e-3:
                return frame.to_ndarray(format="gray").astype(float)


def test_cuts_match_the_segments_and_keep_audio(h264_with_audio, tmp_path):
    out = tmp_path / "summary.mp4"
    duration = write_summary(h264_with_audio, [(1.0, 2.5), (4.0, 6.0)], out)
    probe = ffprobe_json(out, "-show_streams")["streams"]
    video = next(s for s in probe if s["codec_type"] == "video")
    audio = next(s for s in probe if s["codec_type"] == "audio")
    assert abs(duration - 3.5) <= 0.04 and abs(float(video["duration"]) - 3.5) <= 0.08  # within 2 frames
    assert abs(float(audio["duration"]) - 3.5) <= 0.1
    # The cut starts on the exact frame: testsrc draws a frame counter, so compare pixels.
    start = first_frame(out)
    assert np.abs(start - first_frame(h264_with_audio, 1.0)).mean() < np.abs(start - first_frame(h264_with_audio, 1.4)).mean() / 3
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # normal permissions, not mkstemp's


def test_source_without_audio_and_overlapping_segments(media, tmp_path):
    silent = media / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(silent))
    out = tmp_path / "s.mp4"
    duration = write_summary(silent, [(2.0, 3.0), (0.5, 1.0), (2.5, 3.5)], out)
    assert abs(duration - 2.0) < 0.11
    assert [s["codec_type"] for s in ffprobe_json(out, "-show_streams")["streams"]] == ["video"]


def test_failures_leave_existing_output_and_no_partial_files(h264_with_audio, bad_inputs, tmp_path):
    out = tmp_path / "summary.mp4"
    out.write_bytes(b"previous summary")
    with pytest.raises(ClipWriteError, match="no video frames"):
        write_summary(h264_with_audio, [(100.0, 105.0)], out)
    with pytest.raises(ClipWriteError, match="cannot read"):
        write_summary(bad_inputs["not a video"], [(0.0, 1.0)], out)
    with pytest.raises(ClipWriteError, match="no video stream"):
        write_summary(bad_inputs["audio-only"], [(0.0, 1.0)], out)
    with pytest.raises(ClipWriteError, match="no segments"):
        write_summary(h264_with_audio, [], out)
    assert out.read_bytes() == b"previous summary"
    assert sorted(os.listdir(tmp_path)) == ["summary.mp4"]


def test_unwritable_destination(h264_with_audio, tmp_path):
    with pytest.raises(ClipWriteError, match="output directory does not exist"):
        write_summary(h264_with_audio, [(0, 1)], tmp_path / "missing" / "out.mp4")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root ignores directory permissions; sysfs refuses new files even to root.
    unwritable = locked if not os.access(locked, os.W_OK) else "/sys"
    try:
        with pytest.raises(ClipWriteError, match="cannot write .*Permission denied"):
            write_summary(h264_with_audio, [(0, 1)], f"{unwritable}/out.mp4")
    finally:
        locked.chmod(0o700)
