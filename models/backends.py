"""Inference backends for an encoder's image tower (the part that runs for every frame): PyTorch itself, or
ONNX Runtime on an exported copy of the same module.

Which is faster depends on the CPU (benchmarks/README.md has the table): where the CPU computes bf16
natively (AVX512_BF16 or AMX), torch in bf16 is fastest; in fp32, ONNX Runtime's fused kernels beat
torch's eager ones. `auto` picks by that rule from what is installed. Text towers stay in torch: queries
are encoded once and cached.

The ONNX export is made once and cached on disk (`CLIPLIVE_CACHE`, default ~/.cache/cliplive), keyed by
everything it depends on (the model and its weights, the torch and onnx versions), written atomically;
the first run says what it is doing (on a terminal's stderr, and in the log), since an export takes seconds to
a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from cliplive.models.encoder import EncoderUnavailable
from cliplive.models.errors import InputError
from cliplive.models.files import atomic_path, cache_dir
from cliplive.models.spec import BACKENDS

log = logging.getLogger(__name__)

ImageTower = Callable[[torch.Tensor], torch.Tensor]  # preprocessed (N, 3, S, S) float32 -> (N, D) float32
OPSET = 17


def choose_backend(backend: str, precision: str) -> str:
    """The backend `auto` means for a tower running in `precision` (already resolved: fp32 or bf16)."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        return backend
    if precision == "bf16":  # ONNX Runtime's CPU kernels have no bf16 path
        return "torch"
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") else "torch"


def weights_key(path: str) -> dict:
    """What identifies a weights file cheaply: its resolved path, size and modification time."""
    info = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


class OnnxImageTower:
    """`module` (pixels -> embeddings, fp32) exported to ONNX once and run with ONNX Runtime.

    `key` names the module and its weights (see `weights_key`); a change of any part of it, or of the
    torch or onnx version, makes a new export."""

    def __init__(self, module: torch.nn.Module, size: int, key: dict, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise EncoderUnavailable("the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)") from None
        self.path = self._exported(module, size, key)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"pixels": pixels})[0])

    @staticmethod
    def _exported(module: torch.nn.Module, size: int, key: dict) -> Path:
        import onnx

        full_key = {**key, "size": size, "opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__}
        digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:20]
        path = cache_dir() / "onnx" / f"{key.get('model', 'tower')}-{digest}.onnx".replace("/", "_")
        if path.exists():
            return path
        doing = f"exporting the image tower of {key.get('model', 'the encoder')} to ONNX (once; cached in {path.parent})"
        log.info(doing)
        if sys.stderr.isatty():  # a person waits for it; pipes and logs stay as quiet as ever
            print(f"cliplive: {doing}", file=sys.stderr)
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(2, 3, size, size)
        # With gradients on: nn.MultiheadAttention's inference fast path is an op ONNX cannot express.
        with atomic_path(path, suffix=".onnx") as part, warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes are not the user's concern
            torch.onnx.export(module.float().eval(), (example,), str(part), input_names=["pixels"], output_names=["embeddings"],
                              dynamic_axes={"pixels": {0: "frames"}, "embeddings": {0: "frames"}}, opset_version=OPSET,
                              dynamo=False)
        log.info("exported %s in %.1f s", path.name, time.perf_counter() - started)
        return path
