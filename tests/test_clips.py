"""Summary videos: exact cuts, audio in sync, odd sources, atomic output and clear errors."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json
from cliplive.stream.clips import ClipWriteError, write_summary

FPS = 25
# Each frame shows its own number as 8 black/white bars (bit k = bar k), which survive compression,
# so an output frame tells exactly which source frame it is.
FRAME_NUMBER_BARS = "nullsrc=s=8x2:r=25,geq=lum='16+219*mod(floor(N/pow(2\\,X))\\,2)':cb=128:cr=128,scale=320:240:flags=neighbor"
# A 1 kHz tone 20 ms long at every whole second, so sync can be read off the output's audio.
BEEP_EVERY_SECOND = "aevalsrc=if(lt(mod(t\\,1)\\,0.02)\\,sin(2*PI*1000*t)\\,0):s=48000"


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """8 s, 25 fps, 320x240 H.264 (keyframe every second) with beeps, as mp4 and as MPEG-TS (start time 1.4 s)."""
    folder = tmp_path_factory.mktemp("clips")
    mp4, ts = folder / "numbered.mp4", folder / "numbered.ts"
    ffmpeg("-f", "lavfi", "-i", FRAME_NUMBER_BARS, "-f", "lavfi", "-i", BEEP_EVERY_SECOND, "-t", "8",
           "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", str(mp4))
    ffmpeg("-i", str(mp4), "-c", "copy", str(ts))
    return {"mp4": mp4, "ts": ts}


def frame_numbers(path) -> list[int]:
    with av.open(str(path)) as container:
        return [_number(frame.to_ndarray(format="gray")) for frame in container.decode(video=0)]


def _number(gray: np.ndarray) -> int:
    bars = gray.reshape(gray.shape[0], 8, -1).mean(axis=(0, 2)) > 128
    return int((bars << np.arange(8)).sum())


def beeps(path) -> np.ndarray:
    """Output times (s) where beeps start."""
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].sample_rate
        sound = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(audio=0)])
    loud = np.flatnonzero(np.abs(sound) > 0.3 * np.abs(sound).max())
    onsets = loud[np.insert(np.diff(loud) > rate // 10, 0, True)]
    return onsets / rate


def stream_durations(path) -> dict[str, float]:
    return {s["codec_type"]: float(s["duration"]) for s in ffprobe_json(path, "-show_streams")["streams"]}


@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_cuts_land_on_the_exact_frames_with_audio_in_sync(numbered, kind, tmp_path):
    out = tmp_path / "summary.mp4"
    done: list[float] = []
    duration = write_summary(numbered[kind], [(1.0, 2.5), (4.0, 6.0)], out, done.append)
    # Frames 25..62 (1.00 s to 2.48 s) then 100..149 (4.00 s to 5.96 s): 88 frames, within a frame of 3.5 s.
    assert frame_numbers(out) == list(range(25, 63)) + list(range(100, 150))
    assert duration == pytest.approx(88 / FPS)
    lengths = stream_durations(out)
    assert lengths["video"] == pytest.approx(duration, abs=1e-3) and lengths["audio"] == pytest.approx(duration, abs=0.03)
    # Beeps at source seconds 1, 2 | 4, 5 play when their frames do: 0, 1.0 | 1.52, 2.52.
    np.testing.assert_allclose(beeps(out), [0.0, 1.0, 1.52, 2.52], atol=0.005)
    assert done == sorted(done) and done[-1] == 1.0


def test_many_short_cuts_do_not_drift(numbered, tmp_path):
    out = tmp_path / "summary.mp4"
    write_summary(numbered["mp4"], [(k + 0.9, k + 1.3) for k in range(7)], out)
    # Each cut starts at its first frame (k + 0.92 s) and holds 10 frames; its beep (k + 1 s) is 0.08 s in.
    assert frame_numbers(out) == [n for k in range(7) for n in range(25 * k + 23, 25 * k + 33)]
    np.testing.assert_allclose(beeps(out), 0.08 + 0.4 * np.arange(7), atol=0.005)


def test_overlapping_segments_of_different_sentences_are_written_once_in_time_order(numbered, tmp_path):
    # As the demo's three sentences found them: nested, overlapping and out of order; then a second stretch.
    segments = [(1.2, 3.0), (0.0, 2.0), (1.0, 1.6), (5.5, 5.8), (5.0, 6.0)]
    out = tmp_path / "summary.mp4"
    duration = write_summary(numbered["mp4"], segments, out)
    assert frame_numbers(out) == list(range(0, 75)) + list(range(125, 150))  # the union: no frame twice
    assert duration == pytest.approx(4.0)


def test_sources_that_cannot_seek_or_have_no_audio(numbered, media, tmp_path):
    raw = media / "numbered.h264"  # an elementary stream: no container, no timestamps, no seeking
    ffmpeg("-i", str(numbered["mp4"]), "-c:v", "copy", "-an", "-f", "h264", str(raw))
    out = tmp_path / "raw.mp4"
    # Unsorted and overlapping on purpose: merged to [0.4, 1.0) and [2.0, 2.4).
    duration = write_summary(raw, [(2.0, 2.4), (0.4, 0.8), (0.6, 1.0)], out)
    assert frame_numbers(out) == list(range(10, 25)) + list(range(50, 60))
    assert duration == pytest.approx(1.0) and list(stream_durations(out)) == ["video"]


def test_variable_frame_rate_keeps_the_timing(vfr_video, tmp_path):
    # 10 fps to 2 s, 2 fps to 4 s, then 25 fps: the 2 fps frame at 2.5 s shows until the cut at 3 s.
    out = tmp_path / "summary.mp4"
    duration = write_summary(vfr_video, [(1.0, 3.0), (3.5, 4.5)], out)
    assert duration == pytest.approx(3.0)
    assert stream_durations(out)["video"] == pytest.approx(duration, abs=1e-3)


def test_audio_ending_early_is_padded_to_the_video(media, tmp_path):
    source = media / "short-audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "5", "-af", "atrim=0:2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(source))
    out = tmp_path / "summary.mp4"
    duration = write_summary(source, [(1.0, 2.0), (3.0, 4.0)], out)
    lengths = stream_durations(out)
    assert duration == pytest.approx(2.0) and lengths["audio"] == pytest.approx(2.0, abs=0.03)


def test_failures_leave_existing_output_and_no_partial_files(h264_with_audio, bad_inputs, tmp_path):
    out = tmp_path / "summary.mp4"
    out.write_bytes(b"previous summary")
    failures = [
        (h264_with_audio, [(100.0, 105.0)], "no video frames"),
        (h264_with_audio, [], "no segments"),
        (bad_inputs["not a video"], [(0.0, 1.0)], "cannot read"),
        (bad_inputs["audio-only"], [(0.0, 1.0)], "no video stream"),
        (bad_inputs["unsupported codec"], [(0.0, 1.0)], "no decoder"),
    ]
    for source, segments, message in failures:
        with pytest.raises(ClipWriteError, match=message):
            write_summary(source, segments, out)
    assert out.read_bytes() == b"previous summary"
    assert sorted(os.listdir(tmp_path)) == ["summary.mp4"]


def test_output_replaces_the_old_file_with_normal_permissions(h264_with_audio, tmp_path):
    out = tmp_path / "summary.mp4"
    out.write_bytes(b"previous summary")
    write_summary(h264_with_audio, [(0.0, 1.0)], out)
    assert out.read_bytes()[4:8] == b"ftyp" and out.stat().st_mode & 0o777 != 0o600  # not mkstemp's
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
