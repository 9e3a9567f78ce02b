"""How many live 720p cameras one machine serves: N real RTSP streams through cliplive's Pipeline.
Prints one JSON object.

A GStreamer RTSP server process (tests/tools/rtsp_server.py, under the system Python) serves N mounts of
a 720p 25 fps H.264 camera-style file made from real footage (benchmarks/media.py), each paced in real
time. cliplive's Pipeline pulls all N over RTSP/TCP, samples --fps frames per second per stream, embeds them
with CLIP ViT-B-32 (random weights: speed does not depend on them) in shared micro-batches, scores them with
the causal scorer and runs the segmenter, exactly as `cliplive watch` does.

Measured after a warm-up (--warmup, default 20 s) to the end of the run:
- p50/p99_latency_s: frame decoded -> scored and its events emitted (StreamRunner.latency)
- dropped_frames: sampled frames replaced by a newer one before the encoder took them (whole run)
- behind_s: how far the slowest stream's decoding fell behind real time (wall time elapsed minus media
  time elapsed between its first and last frame), which latency from decode alone would not show
- cpu_percent: cliplive's process (100 = one core); server_cpu_percent: the RTSP server's
- rss_mb at the end, rss_growth_pct: end vs. the end of the warm-up
- other_cpu_percent: CPU used meanwhile by everything else on the machine (a shared machine's other
  work skews everything: a run with more than a few percent here is disturbed); load_before: the
  1-minute load average before starting

    python benchmarks/live.py --streams 8 [--seconds 120] [--fps 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from machine import machine  # noqa: E402
from media import camera_720p  # noqa: E402
from peers import RtspServer  # noqa: E402

from cliplive.models.spec import PRECISIONS  # noqa: E402
from cliplive.stream.events import HighlightEvent, StatusEvent  # noqa: E402
from cliplive.stream.live import AVSource, SourceOptions  # noqa: E402

QUERIES = ["a person riding a bicycle", "a rabbit in a meadow", "a crowd of people in a street"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Watched:
    """A source that remembers its first and last frame (media time, wall clock)."""

    def __init__(self, source: AVSource):
        self.source = source
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    async def recv(self):
        frame = await self.source.recv()
        self.first = self.first or (frame.t, frame.wall)
        self.last = (frame.t, frame.wall)
        return frame

    def __getattr__(self, name):
        return getattr(self.source, name)


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all processes (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


async def run(args: argparse.Namespace, server: RtspServer, urls: list[str]) -> dict:
    from cliplive.models.spec import EncoderSpec, create_encoder
    from cliplive.stream.engine import Queries
    from cliplive.stream.pipeline import Pipeline

    encoder = create_encoder(EncoderSpec(args.encoder, args.model, "random", precision=args.precision, threads=args.torch_threads))
    queries = Queries.build(encoder, QUERIES)
    counts = {"highlight": 0, "status": {}}

    def emit(event) -> None:
        if isinstance(event, HighlightEvent):
            counts["highlight"] += 1
        elif isinstance(event, StatusEvent):
            counts["status"][event.state] = counts["status"].get(event.state, 0) + 1

    source_options = SourceOptions(fps=args.fps, skip_nonkey=args.skip in ("auto",), skip_nonref=args.skip in ("auto", "nonref"),
                                   decoder_threads=args.decoder_threads)
    pipeline = Pipeline(encoder, emit, max_batch=args.max_batch)
    sources = []
    for i, url in enumerate(urls):
        source = Watched(AVSource(url, f"cam{i}", pipeline.source_options(source_options)))
        sources.append(source)
        pipeline.add(f"cam{i}", source, queries)

    started = time.monotonic()
    await asyncio.sleep(args.warmup)
    warm = {
        "wall": time.monotonic(), "cpu": cpu_seconds(), "server_cpu": cpu_seconds(server.proc.pid), "rss": rss_mb(),
        "machine_cpu": machine_cpu_seconds(),
        "scored": {n: r.scored for n, r in pipeline.runners.items()},
        "dropped": sum(s.metrics.dropped for s in sources),
    }
    rss_trace = [round(warm["rss"], 1)]
    while time.monotonic() - started < args.seconds:
        await asyncio.sleep(min(10.0, args.seconds - (time.monotonic() - started)))
        rss_trace.append(round(rss_mb(), 1))
    end = {"wall": time.monotonic(), "cpu": cpu_seconds(), "server_cpu": cpu_seconds(server.proc.pid), "rss": rss_mb(),
           "machine_cpu": machine_cpu_seconds()}
    metrics = pipeline.snapshot()

    latency, lag = [], []
    for name, runner in pipeline.runners.items():
        new = runner.scored - warm["scored"][name]
        if new > 0:
            latency += list(runner.latency)[-new:]
            lag += list(runner.encoder_lag)[-new:]
    behind = [max(0.0, (s.last[1] - s.first[1]) - (s.last[0] - s.first[0])) for s in sources if s.first and s.last]
    dropped = sum(s.metrics.dropped for s in sources)
    await pipeline.stop()
    elapsed = end["wall"] - warm["wall"]
    latency_arr = np.asarray(latency) if latency else np.asarray([np.inf])
    result = {
        "streams": len(urls),
        "p50_latency_s": round(float(np.percentile(latency_arr, 50)), 3),
        "p99_latency_s": round(float(np.percentile(latency_arr, 99)), 3),
        "max_latency_s": round(float(latency_arr.max()), 3),
        "encoder_lag_p50_s": round(float(np.percentile(lag, 50)), 3) if lag else None,
        "dropped_frames": dropped,
        "dropped_after_warmup": dropped - warm["dropped"],
        "scored_after_warmup": len(latency),
        "expected_after_warmup": round(len(urls) * args.fps * elapsed),
        "behind_s": round(max(behind), 2) if behind else None,
        "cpu_percent": round(100 * (end["cpu"] - warm["cpu"]) / elapsed, 1),
        "server_cpu_percent": round(100 * (end["server_cpu"] - warm["server_cpu"]) / elapsed, 1),
        # Everything else on the machine meanwhile (other users' work): non-zero means a disturbed run.
        "other_cpu_percent": round(100 * ((end["machine_cpu"] - warm["machine_cpu"]) - (end["cpu"] - warm["cpu"])
                                          - (end["server_cpu"] - warm["server_cpu"])) / elapsed, 1),
        "rss_mb": round(end["rss"], 1),
        "rss_warm_mb": round(warm["rss"], 1),
        "rss_growth_pct": round(100 * (end["rss"] - warm["rss"]) / warm["rss"], 2),
        "rss_trace_mb": rss_trace,
        "decoded_fps_min": min(s.input_fps for s in metrics.streams),
        "reconnects": sum(s.reconnects for s in metrics.streams),
        "highlight_events": counts["highlight"],
        "status_events": counts["status"],
        "encoder": {**asdict(metrics.encoder), "precision": getattr(encoder, "precision", None),
                    "backend": getattr(encoder, "backend", None)},
    }
    result["held"] = bool(result["p99_latency_s"] < 1.5 and dropped == 0 and result["rss_growth_pct"] < 5 and (result["behind_s"] or 0) < 1.5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the run, warm-up included")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second per stream")
    parser.add_argument("--encoder", choices=("clip", "conse"), default="clip",
                        help="clip (ViT-B-32 by default, random weights) or conse (EfficientNet-Lite0, real weights)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model (clip only)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="CLIP precision (default auto: cliplive's default, int8 where its guard holds)")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--decoder-threads", type=int, help="FFmpeg decoder threads per stream (default: cliplive's choice)")
    parser.add_argument("--skip", choices=("auto", "nonref", "none"), default="auto",
                        help="frames the decoder skips: auto (NONREF, NONKEY when keyframes come often enough; the default), "
                             "nonref only, or none")
    parser.add_argument("--video", type=Path, help="an H.264 mp4 (default: the 720p camera file, made once)")
    args = parser.parse_args()

    video = args.video or camera_720p(max(150, int(args.seconds) + 40))
    load_before = os.getloadavg()[0]
    mounts = tuple(f"/cam{i}" for i in range(args.streams))
    with RtspServer(video, mounts=mounts) as server:
        result = asyncio.run(run(args, server, [server.url(m) for m in mounts]))
    result = {**result, "skip": args.skip, "decoder_threads": args.decoder_threads, "torch_threads": args.torch_threads,
              "max_batch": args.max_batch, "seconds": args.seconds, "warmup_s": args.warmup, "fps": args.fps, "model": f"{args.model} (random weights)" if args.encoder == "clip" else "conse (EfficientNet-Lite0)",
              "video": "1280x720 25 fps H.264 (benchmarks/media.py)", "load_before": round(load_before, 2), "machine": machine()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
