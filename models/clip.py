"""CLIP through open_clip: any model name with a pretrained tag or a local checkpoint path."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cliplive.models.backends import INT8_MIN_COSINE, OnnxImageTower, calibration_frames, choose_backend, onnxruntime_installed, weights_key
from cliplive.models.embedding import CLIP_CALIBRATION
from cliplive.models.encoder import Encoder, EncoderUnavailable, Preprocess
from cliplive.models.errors import InputError, reason
from cliplive.models.spec import PRECISIONS

log = logging.getLogger(__name__)

RANDOM = "random"  # explicit opt-in to untrained weights (tests, speed benchmarks); never a fallback


# A frame against a reference image: CLIP's image embeddings share a large common part, so unrelated photos
# sit near cosine 0.5 and views of the same subject from 0.8 up. An estimate, not measured here (no CLIP
# weights offline), unlike conse's (tests/test_absent.py): boundary 0.8.
CLIP_IMAGE_CALIBRATION: tuple[float, float] = (30.0, -24.0)


class ClipEncoder(Encoder):
    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str = "openai",
        precision: str = "auto",
        backend: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
    ):
        super().__init__()
        import open_clip

        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if threads:
            torch.set_num_threads(threads)
        architecture = {"model": model}
        if model.endswith(".json"):
            # A model config file (e.g. a tiny test architecture): register it under its file stem.
            architecture["config_sha256"] = hashlib.sha256(Path(model).read_bytes()).hexdigest()
            open_clip.add_model_config(model)
            model = os.path.splitext(os.path.basename(model))[0]
        if model not in open_clip.list_models():
            raise EncoderUnavailable(f"unknown open_clip model {model!r} (see open_clip.list_models())")
        self.model_name = model
        self.name = f"clip:{model}:{os.path.basename(pretrained) if pretrained else RANDOM}"
        self.device = torch.device(device)
        self.model = _create(open_clip, model, pretrained).to(self.device).eval()
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        self.preprocess = Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))
        key = {**architecture, "open_clip": open_clip.__version__, **(
            {"weights": RANDOM, "seed": 0} if not pretrained or pretrained == RANDOM
            else weights_key(pretrained) if os.path.isfile(pretrained) else {"tag": pretrained})}
        if precision != "auto":
            self._use_image_tower(precision, backend, key, threads)
        # auto: int8 where its guard holds (the fastest on every CPU measured, benchmarks/README.md), else bf16
        # where the hardware computes it natively (2x fp32 on CPU), else fp32.
        elif not (self.device.type == "cpu" and backend != "torch" and onnxruntime_installed()
                  and self._use_image_tower("int8", backend, key, threads, INT8_MIN_COSINE)):
            native = _native_bf16(self.device) and backend != "onnxruntime"
            self._use_image_tower("bf16" if native else "fp32", backend, key, threads)
        self.tokenizer = open_clip.get_tokenizer(model)
        self.context_length = getattr(self.tokenizer, "context_length", 77)
        self.dim = int(open_clip.get_model_config(model)["embed_dim"])
        self.calibration = CLIP_CALIBRATION
        self.image_calibration = CLIP_IMAGE_CALIBRATION

    def _use_image_tower(self, precision: str, backend: str, key: dict, threads: int | None, min_cosine: float | None = None) -> bool:
        """Set the image tower up in `precision` on `backend` (auto: by `choose_backend`); False when an int8
        tower's guard is below `min_cosine` (then nothing is set: the caller picks another precision)."""
        self.backend = choose_backend(backend, precision) if self.device.type == "cpu" else "torch"
        if self.backend == "onnxruntime":
            if precision == "bf16":
                raise InputError("the onnxruntime backend runs fp32 or int8 (its CPU kernels have no bf16): use backend torch for bf16")
            int8_pixels = (lambda: self.preprocess(calibration_frames()).numpy()) if precision == "int8" else None
            tower = OnnxImageTower(self.model.visual, self.preprocess.size, key, threads, int8_pixels, min_cosine)
            if tower.precision != precision:
                return False
            self.image_tower = tower
        else:
            self.image_tower = self._torch_image_tower
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if self.backend == "torch" and self.dtype != torch.float32:
            # Cast the image tower's weights once. Autocast would re-cast all of them on every batch:
            # 3/4 of a 16-frame ViT-B-32 batch's time on CPU, slower than fp32. The text tower stays
            # fp32: queries are encoded once and cached, so they may as well be exact.
            self.model.visual.to(self.dtype)
            if not _native_bf16(self.device):
                log.warning("this CPU has no native bf16 (AVX512_BF16 or AMX): bf16 will be slower than fp32")
        return True

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower(pixels)

    @torch.inference_mode()
    def _torch_image_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        encode = getattr(self.tokenizer, "encode", None)
        for text in texts:
            if encode is not None and len(encode(text)) > self.context_length - 2:
                warnings.warn(
                    f"query longer than {self.model_name}'s {self.context_length} tokens, truncated: {text[:60]!r}...",
                    stacklevel=3,
                )
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens).float()


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX512_BF16 or AMX
    except (AttributeError, RuntimeError):  # a private probe: without it, stay on the safe side
        return False


def _create(open_clip, model: str, pretrained: str | None) -> torch.nn.Module:
    if not pretrained or pretrained == RANDOM:
        log.warning("clip encoder on RANDOM weights (asked for explicitly): scores are meaningless")
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same random model in every process, so runs are reproducible
            return open_clip.create_model(model, pretrained=None, pretrained_text=False)
    is_path = os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
    if is_path and not os.path.isfile(pretrained):
        raise EncoderUnavailable(f"CLIP checkpoint not found: {pretrained}")
    if not is_path and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise EncoderUnavailable(f"{model} has no pretrained tag {pretrained!r} (known: {tags})")
    if not is_path:
        _check_hub_reachable(model, pretrained)
    try:
        with _no_random_init():
            return open_clip.create_model(model, pretrained=pretrained, require_pretrained=True)
    except Exception as e:  # open_clip wraps download and load failures in several exception types
        what = f"checkpoint {pretrained}" if is_path else f"weights {model}/{pretrained}"
        raise EncoderUnavailable(
            f"cannot load CLIP {what} ({reason(e)}); download them where there is network and pass "
            f"--pretrained /path/to/open_clip_model.safetensors, or use --encoder conse"
        ) from e


@contextmanager
def _no_random_init() -> Iterator[None]:
    """Build a model whose every parameter the checkpoint then overwrites without drawing random initial
    values first: ViT-B-32's initialisation takes seconds, its loading a fraction of one. open_clip loads
    checkpoints strictly, so no parameter is left uninitialised."""
    initialisers = {name: fn for name, fn in vars(torch.nn.init).items()
                    if name.endswith("_") and not name.startswith("_") and callable(fn)}
    for name in initialisers:
        setattr(torch.nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, fn in initialisers.items():
            setattr(torch.nn.init, name, fn)


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


def _check_hub_reachable(model: str, tag: str) -> None:
    """Fail in milliseconds, not after a minute of hub retries, when weights are not cached and the hub's
    host does not even resolve (an offline machine)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if constants.HF_HUB_OFFLINE:
        return  # open_clip then reads the local cache, or fails with its own offline message
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        from open_clip.pretrained import get_pretrained_cfg

        hf_hub = get_pretrained_cfg(model, tag).get("hf_hub", "")
        if not hf_hub or not _cached(hf_hub):
            raise EncoderUnavailable(
                f"cannot download CLIP weights {model}/{tag}: no network ({host} does not resolve); download them "
                f"where there is network and pass --pretrained /path/to/open_clip_model.safetensors, "
                f"or use --encoder conse"
            ) from None


def _cached(hf_hub: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo_id = "/".join(hf_hub.rstrip("/").split("/")[:2])
    return any(
        isinstance(try_to_load_from_cache(repo_id, name), str)
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    )
