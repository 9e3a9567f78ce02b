"""CLIP through open_clip: any model name with a pretrained tag or a local checkpoint path."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch

from cliplive.models.backends import OnnxImageTower, choose_backend, weights_key
from cliplive.models.embedding import CLIP_CALIBRATION
from cliplive.models.encoder import Encoder, EncoderUnavailable, Preprocess
from cliplive.models.errors import InputError, reason
from cliplive.models.spec import PRECISIONS

log = logging.getLogger(__name__)

RANDOM = "random"  # explicit opt-in to untrained weights (tests, speed benchmarks); never a fallback


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
        if precision == "auto":  # bf16 where the hardware computes it natively: 2x fp32's speed on CPU
            precision = "bf16" if _native_bf16(self.device) and backend != "onnxruntime" else "fp32"
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.backend = choose_backend(backend, precision) if self.device.type == "cpu" else "torch"
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        if self.backend == "onnxruntime":
            if precision != "fp32":
                raise InputError("the onnxruntime backend runs fp32 (its CPU kernels have no bf16): use backend torch for bf16")
            weights = {"weights": RANDOM, "seed": 0} if not pretrained or pretrained == RANDOM else (
                weights_key(pretrained) if os.path.isfile(pretrained) else {"tag": pretrained})
            self.image_tower = OnnxImageTower(self.model.visual, size, {**architecture, **weights, "open_clip": open_clip.__version__},
                                              threads)
        else:
            self.image_tower = self._torch_image_tower
        if self.backend == "torch" and self.dtype != torch.float32:
            # Cast the image tower's weights once. Autocast would re-cast all of them on every batch:
            # 3/4 of a 16-frame ViT-B-32 batch's time on CPU, slower than fp32. The text tower stays
            # fp32: queries are encoded once and cached, so they may as well be exact.
            self.model.visual.to(self.dtype)
            if not _native_bf16(self.device):
                log.warning("this CPU has no native bf16 (AVX512_BF16 or AMX): bf16 will be slower than fp32")
        self.tokenizer = open_clip.get_tokenizer(model)
        self.context_length = getattr(self.tokenizer, "context_length", 77)
        self.preprocess = Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))
        self.dim = int(open_clip.get_model_config(model)["embed_dim"])
        self.calibration = CLIP_CALIBRATION

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
        return open_clip.create_model(model, pretrained=pretrained, require_pretrained=True)
    except Exception as e:  # open_clip wraps download and load failures in several exception types
        what = f"checkpoint {pretrained}" if is_path else f"weights {model}/{pretrained}"
        raise EncoderUnavailable(
            f"cannot load CLIP {what} ({reason(e)}); download them where there is network and pass "
            f"--pretrained /path/to/open_clip_model.safetensors, or use --encoder conse"
        ) from e


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
