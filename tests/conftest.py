"""Shared fixtures: media made with ffmpeg at test time, a tiny open_clip architecture."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def ffmpeg(*args: str) -> None:
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is missing: run .ci/setup (it installs Debian's ffmpeg)")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def ffprobe_json(path: Path, *args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def scene_cycle(path: Path, seconds: int, fps: int, gop: int) -> Path:
    """H.264 cycling through five very different 1.5 s scenes (test pattern, red, mandelbrot, bars, blue):
    even random weights find highlights in it. Made once per path."""
    if not path.exists():
        inputs = ["testsrc=", "color=c=red:", "mandelbrot=", "smptebars=", "color=c=blue:"]
        args = [a for src in inputs for a in ("-f", "lavfi", "-i", f"{src}size=320x240:rate={fps}")]
        chain = "".join(f"[{i}]trim=duration=1.5,setpts=PTS-STARTPTS[v{i}];" for i in range(5))
        loops, frames = math.ceil(seconds / 7.5) - 1, math.ceil(7.5 * fps)
        ffmpeg(*args, "-filter_complex", f"{chain}{''.join(f'[v{i}]' for i in range(5))}concat=n=5:v=1,loop=loop={loops}:size={frames}[o]",
               "-map", "[o]", "-t", str(seconds), "-c:v", "libx264", "-g", str(gop), "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_config):
    import torch

    from cliplive.models.clip import ClipEncoder

    torch.manual_seed(0)
    return ClipEncoder(tiny_clip_config, "random", precision="fp32")


@pytest.fixture(scope="session")
def conse():
    from cliplive.models.conse import ConseEncoder

    return ConseEncoder()


@pytest.fixture(scope="session")
def h264_with_audio(media) -> Path:
    """6 s, 25 fps, 320x240 H.264 with a keyframe every second and a sine audio track."""
    path = media / "testsrc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
           "-t", "6", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="session")
def vfr_video(media) -> Path:
    """Variable frame rate: 10 fps for 2 s, then 2 fps for 2 s, then 25 fps for 1 s (mkv keeps exact pts)."""
    parts = []
    for i, (rate, seconds) in enumerate([(10, 2), (2, 2), (25, 1)]):
        part = media / f"vfr{i}.mkv"
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size=160x120:rate={rate}", "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(part))
        parts.append(part)
    listing = media / "vfr.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    path = media / "vfr.mkv"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))
    return path


@pytest.fixture(scope="session")
def bad_inputs(media) -> dict[str, Path]:
    """Files that are not usable video, by what is wrong with them."""
    text = media / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = media / "empty.mp4"
    empty.write_bytes(b"")
    audio = media / "audio.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:a", "aac", str(audio))
    # An AVI whose video fourcc no decoder knows.
    avi = media / "mpeg4.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1", "-c:v", "mpeg4", str(avi))
    unknown = media / "unknown-codec.avi"
    unknown.write_bytes(avi.read_bytes().replace(b"FMP4", b"QQQQ"))
    return {"not a video": text, "zero-length": empty, "audio-only": audio, "unsupported codec": unknown}
