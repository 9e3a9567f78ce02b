"""File source: timestamps from pts (variable frame rate included), sampling, decoding only what sampling
needs, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json
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
        sampler = Sampler(2.0)
        kept = [t for t, _ in source.decoded() if sampler.accept(t)]  # every frame decoded: the sampler alone
    # 2 fps over 5 s of video: one frame per half second, each the one nearest the grid point.
    np.testing.assert_allclose(kept, np.arange(10) * 0.5, atol=0.02)
    with FileSource(vfr_video) as source:
        sparse = [f.t for f in sample(source, Sampler(2.0), None)]
    # Decoding only what sampling needs (no frame that nothing references, at this rate): a decodable frame
    # near each grid point, within half an interval, or none (3.0 s, a B-frame between 2.5 and 3.5 s at 2 fps).
    grid = np.arange(10) * 0.5
    nearest = [grid[np.abs(grid - t).argmin()] for t in sparse]
    assert len(sparse) == 9 and len(set(nearest)) == 9 and 3.0 not in nearest
    assert np.abs(np.array(sparse) - nearest).max() <= 0.1 + 1e-6


def test_sampler_skips_grid_points_inside_gaps():
    sampler = Sampler(2.0)
    accepted = [t for t in [0.0, 0.04, 0.5, 0.52, 3.0, 3.04, 3.5, 4.0] if sampler.accept(t)]
    assert accepted == [0.0, 0.5, 3.0, 3.5, 4.0]


def test_frames_are_scaled_by_the_decoder_to_the_encoder_size(h264_with_audio):
    with FileSource(h264_with_audio) as source:
        assert source.info.has_audio and source.info.width == 320 and abs(source.info.duration - 6.0) < 0.1
        frames = list(sample(source, Sampler(2.0), 96))
    # Non-reference frames are never decoded (every other frame here), so the nearest decoded frame
    # to each grid point is taken: up to one 25 fps frame off; the last one (5.96 s) stands for 6.0 s.
    assert len(frames) == 13
    assert all(f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.t for f in frames], np.arange(13) * 0.5, atol=0.041)


def test_a_file_sampled_sparsely_decodes_keyframes_only_while_they_are_frequent_enough(media):
    """1 fps over 6 s with a keyframe every second, then 6 s with one every 3 s: keyframes alone first, then
    every frame that others reference; the sampled times are those of a full decode (within half an
    interval), each a frame's own."""
    video = media / "two-gops.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "12", "-c:v", "libx264", "-preset", "ultrafast",
           "-bf", "2", "-force_key_frames", "expr:if(lt(t,6),gte(t,n_forced*1),gte(t,6+(n_forced-6)*3))",
           "-sc_threshold", "0", "-g", "75", "-pix_fmt", "yuv420p", str(video))
    with FileSource(video) as everything:
        sampler = Sampler(1.0)
        full = [t for t, _ in everything.decoded() if sampler.accept(t)]
        all_frames = everything.decoded_frames
    with FileSource(video) as source:
        sparse = [f.t for f in sample(source, Sampler(1.0), None)]
    assert all_frames == 300
    # (a 13th at 11.96 s may stand for 12 s: with non-reference frames skipped, frames are 0.08 s apart)
    assert len(full) == 12 and len(sparse) in (12, 13) and sparse[:12] == pytest.approx(full, abs=0.5)
    assert sparse[:6] == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-6)  # the keyframes' own times
    # The first half: 6 keyframes alone. The second: from the keyframe at 6 s on, every reference frame.
    assert 6 + 50 < source.decoded_frames < 6 + 150, source.decoded_frames


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
