"""What each decoding option buys when a stream is sampled sparsely. Prints one JSON object.

A 720p 25 fps H.264 camera-style file (benchmarks/media.py: real footage, keyframe every second, x264's
default B-frames) is decoded for --seconds of media time per configuration, keeping 1 frame per second
(--fps) converted to the encoder's input (RGB, short side 224, as cliplive's sources do):

- all_convert_all:     decode every frame, convert every frame (what a naive reader does)
- all_convert_sampled: decode every frame, convert only the sampled ones
- nonref:              skip_frame=NONREF, the decoder drops frames no other frame references
- nonkey:              skip_frame=NONKEY, only keyframes are decoded (enough when the keyframe interval is
                       at most the sampling interval)
- nonkey_packets:      what cliplive's live sources do in NONKEY mode: non-key packets never reach the
                       decoder, each keyframe is decoded alone and drained at once (with skip_frame=NONKEY
                       the decoder holds each keyframe back for B-frame reordering: seconds of latency)
each with thread_type AUTO (frame + slice threads, thread_count 0 = one per core), and the same with
threads off (thread_count 1). `media_fps` is frames of media per wall second (how many 25 fps streams one
reader keeps up with: media_fps / 25), `cpu_ms_per_media_s` the process CPU time per second of media
(what bounds the number of streams on a busy machine, where threads cannot add cores), `output_delay_s`
how much later in media time a frame comes out of the decoder than its packet went in (B-frame
reordering: with skip_frame=NONKEY every held frame is a whole keyframe interval). Each configuration
runs --rounds times, interleaved, and the round with the highest media_fps counts (the machine may be
shared).

    python benchmarks/decode.py [--seconds 30] [--fps 1] [--video FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402
from media import GOP, camera_720p  # noqa: E402

from cliplive.stream.source import Sampler, pts_seconds, to_rgb  # noqa: E402


def decoded_frames(container, stream, skip: str):
    """(frame, media time of the newest packet fed to the decoder when the frame came out)."""
    for packet in container.demux(stream):
        fed = pts_seconds(packet, stream.time_base)
        if skip != "NONKEY_PACKETS":
            frames = packet.decode()
        elif packet.is_keyframe:
            frames = packet.decode() + stream.decode(None)
            stream.codec_context.flush_buffers()
        else:
            continue
        for frame in frames:
            frame.time_base = stream.time_base
            yield frame, fed


def run(video: Path, seconds: float, fps: float, skip: str, convert_all: bool, threads: bool) -> dict:
    container = av.open(str(video))
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if threads:
        ctx.thread_type, ctx.thread_count = "AUTO", 0
    else:
        ctx.thread_count = 1
    ctx.skip_frame = "DEFAULT" if skip == "NONKEY_PACKETS" else skip
    sampler = Sampler(fps)
    decoded = kept = 0
    media_end = 0.0
    delays = []
    wall, cpu = time.perf_counter(), time.process_time()
    for frame, fed in decoded_frames(container, stream, skip):
        t = pts_seconds(frame)
        if t >= seconds:
            break
        decoded += 1
        media_end = t
        if fed is not None:
            delays.append(max(0.0, fed - t))
        if sampler.accept(t):
            kept += 1
            to_rgb(frame, 224)
        elif convert_all:
            to_rgb(frame, 224)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    container.close()
    media = max(media_end, 1e-9) + 1 / 25
    return {
        "decoded_frames": decoded,
        "sampled_frames": kept,
        "media_fps": round(media * 25 / wall, 1),
        "realtime_streams_per_reader": round(media / wall, 1),
        "cpu_ms_per_media_s": round(1000 * cpu / media, 1),
        "output_delay_s": round(sum(delays) / len(delays), 3) if delays else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    video = args.video or camera_720p(150)
    configs = {
        "all_convert_all": ("DEFAULT", True),
        "all_convert_sampled": ("DEFAULT", False),
        "nonref": ("NONREF", False),
        "nonkey": ("NONKEY", False),
        "nonkey_packets": ("NONKEY_PACKETS", False),
    }
    load_before = os.getloadavg()[0]
    run(video, 5, args.fps, "DEFAULT", False, True)  # warm up (page cache, libraries)
    results: dict[str, dict] = {}
    for _ in range(args.rounds):  # interleaved rounds, the best counts: the machine may be shared
        for threads in (True, False):
            for name, (skip, convert_all) in configs.items():
                key = f"{name}{'' if threads else '_nothreads'}"
                result = run(video, args.seconds, args.fps, skip, convert_all, threads)
                if key not in results or result["media_fps"] > results[key]["media_fps"]:
                    results[key] = result
    print(json.dumps({
        "video": {"path": str(video), "size": "1280x720", "fps": 25, "codec": "h264", "gop": GOP},
        "seconds": args.seconds, "sample_fps": args.fps, "rounds": args.rounds, "load_before": round(load_before, 2),
        "machine": {**machine(), "pyav": av.__version__},
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
