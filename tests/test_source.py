"""File source: timestamps from pts (variable frame rate included), sampling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ffprobe_json
from cliplive.stream.source import FileSource, MediaError, Sampler, prefetch, sample


def test_timestamps_match_ffprobe_on_variable_frame_rate(vfr_video):
    probed = ffprobe_json(vfr_video, "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time")
    expected = np.array([float(f["best_effort_timestamp_time"]) for f in probed["frames"]])
    expected -= expected[0]
    with FileSource(vfr_video) as source:
        times = np.array([t for t, _ in source.decoded()])
    assert len(times) == len(expected) == 20 + 4 + 25
    np.testing.assert_allclose(times, expected, atol=1e-3)
    gaps = np.diff(times)
    assert np.allclose(gaps[:19], 0.1, atol=2e-3) and np.allclose(gaps[20:23], 0.5, atol=2e-3)


def test_sampler_keeps_a_regular_grid_across_rate_changes(vfr_video):
    with FileSource(vfr_video) as source:
        kept = [f.t for f in sample(source, Sampler(2.0), None)]
    # 2 fps over 5 s of video: one frame per half second, each the one nearest the grid point.
    np.testing.assert_allclose(kept, np.arange(10) * 0.5, atol=0.02)


def test_sampler_skips_grid_points_inside_gaps():
    sampler = Sampler(2.0)
    accepted = [t for t in [0.0, 0.04, 0.5, 0.52, 3.0, 3.04, 3.5, 4.0] if sampler.accept(t)]
    assert accepted == [0.0, 0.5, 3.0, 3.5, 4.0]


def test_frames_are_scaled_by_the_decoder_to_the_encoder_size(h264_with_audio):
    with FileSource(h264_with_audio, skip_nonref=True) as source:
        assert source.info.has_audio and source.info.width == 320 and abs(source.info.duration - 6.0) < 0.1
        frames = list(sample(source, Sampler(2.0), 96))
    # Non-reference frames are never decoded (every other frame here), so the nearest decoded frame
    # to each grid point is taken: up to one 25 fps frame off; the last one (5.96 s) stands for 6.0 s.
    assert len(frames) == 13
    assert all(f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.t for f in frames], np.arange(13) * 0.5, atol=0.041)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("not a video", "not a readable video file"),
        ("zero-length", "not a readable video file"),
        ("audio-only", "audio-only file, nothing to watch"),
        ("unsupported codec", "unsupported video codec"),
    ],
)
def test_bad_files_raise_one_line_media_errors(bad_inputs, kind, message):
    with pytest.raises(MediaError, match=message) as info:
        FileSource(bad_inputs[kind])
    assert "\n" not in str(info.value) and str(bad_inputs[kind]) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        FileSource(tmp_path / "nope.mp4")


def test_prefetch_preserves_order_and_reraises_producer_errors():
    assert list(prefetch(iter(range(100)), size=4)) == list(range(100))

    def broken():
        yield 1
        raise MediaError("cannot decode x")

    out = []
    with pytest.raises(MediaError, match="cannot decode"):
        for item in prefetch(broken()):
            out.append(item)
    assert out == [1]
