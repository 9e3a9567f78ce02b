"""CLIP through open_clip: any model name with a pretrained tag or a local checkpoint path.

On a CPU with ONNX Runtime, both towers run exported copies (the image tower int8 where its guard holds).
Once they are exported, an encoder is made from the cache alone (`ModelCard`: what the model expects, and
the tokenizer as a `tokenizers` file), without importing torch or open_clip or reading the weights: seconds
sooner. The torch model is created only when something needs it: an export, bf16, `--backend torch`.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cliplive.models.backends import (
    INT8_MIN_COSINE,
    OnnxTextTower,
    OnnxTower,
    TorchTower,
    cached_file,
    calibration_frames,
    choose_backend,
    onnxruntime_installed,
    version,
    weights_key,
)
from cliplive.models.embedding import CLIP_CALIBRATION
from cliplive.models.encoder import Encoder, EncoderUnavailable, Preprocess
from cliplive.models.errors import InputError, reason
from cliplive.models.files import atomic_path
from cliplive.models.spec import PRECISIONS

log = logging.getLogger(__name__)

RANDOM = "random"  # explicit opt-in to untrained weights (tests, speed benchmarks); never a fallback


# A frame against a reference image: CLIP's image embeddings share a large common part, so unrelated photos
# sit near cosine 0.5 and views of the same subject from 0.8 up. An estimate, not measured here (no CLIP
# weights offline), unlike conse's (tests/test_absent.py): boundary 0.8.
CLIP_IMAGE_CALIBRATION: tuple[float, float] = (30.0, -24.0)


@dataclass(frozen=True)
class ModelCard:
    """What encoding with a model needs besides its towers, cached beside their exports."""

    preprocess: Preprocess
    dim: int
    context_length: int
    tokenizer: str | None  # a `tokenizers` file equivalent to the model's own tokenizer; None: open_clip's is needed


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
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        architecture = {"model": model}
        self._config_file = None
        if model.endswith(".json"):
            # A model config file (e.g. a tiny test architecture): registered under its file stem.
            architecture["config_sha256"] = hashlib.sha256(Path(model).read_bytes()).hexdigest()
            self._config_file, model = model, os.path.splitext(os.path.basename(model))[0]
        self.model_name, self.pretrained = model, pretrained
        self.name = f"clip:{model}:{os.path.basename(pretrained) if pretrained else RANDOM}"
        self.device, self.threads, self._model = device, threads, None
        random = not pretrained or pretrained == RANDOM
        key = {**architecture, "open_clip": version("open_clip_torch"), **(
            {"weights": RANDOM, "seed": 0} if random
            else weights_key(pretrained) if os.path.isfile(pretrained) else {"tag": pretrained})}
        self.key = key
        onnx = device == "cpu" and backend != "torch" and onnxruntime_installed()
        card = _read_card(key) if onnx else None
        if card is None:
            card = self._card()  # validates the model and its weights by creating it
        elif random:
            log.warning("clip encoder on RANDOM weights (asked for explicitly): scores are meaningless")
        self.preprocess, self.dim, self.context_length = card.preprocess, card.dim, card.context_length
        if precision != "auto":
            self._use_image_tower(precision, backend)
        # auto: int8 where its guard holds (the fastest on every CPU measured, benchmarks/README.md), else bf16
        # where the hardware computes it natively (2x fp32 on CPU), else fp32.
        elif not (onnx and self._use_image_tower("int8", backend, INT8_MIN_COSINE)):
            native = _native_bf16(device) and backend != "onnxruntime"
            self._use_image_tower("bf16" if native else "fp32", backend)
        if onnx and card.tokenizer:
            self.tokenizer = ClipTokenizer(card.tokenizer, card.context_length)
            example = np.zeros((1, card.context_length), np.int64)
            self.text_tower = OnnxTextTower(lambda: _text_module(self.model), key, example, threads)
        else:
            import open_clip

            self.tokenizer = open_clip.get_tokenizer(model)
            self.text_tower = TorchTower(self.model.encode_text, device)
        self.calibration = CLIP_CALIBRATION
        self.image_calibration = CLIP_IMAGE_CALIBRATION

    @property
    def model(self):
        """The open_clip model, created on first use (an export, the torch backend): from the cache, none is."""
        if self._model is None:
            import open_clip
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            if self._config_file:
                open_clip.add_model_config(self._config_file)
            if self.model_name not in open_clip.list_models():
                raise EncoderUnavailable(f"unknown open_clip model {self.model_name!r} (see open_clip.list_models())")
            self._model = _create(open_clip, self.model_name, self.pretrained).to(self.device).eval()
        return self._model

    def _card(self) -> ModelCard:
        """The model's card, from the model itself; written to the cache (with its tokenizer) for next time."""
        import open_clip

        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        preprocess = Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))
        tokenizer = open_clip.get_tokenizer(self.model_name)
        context_length = getattr(tokenizer, "context_length", 77)
        dim = int(open_clip.get_model_config(self.model_name)["embed_dim"])
        path = cached_file(self.key, ".card.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer_file = None
        if isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
            tokenizer_file = str(path.with_suffix(".tokenizer.json"))
            with atomic_path(tokenizer_file, suffix=".json") as part:
                ClipTokenizer.build(tokenizer).save(part)
            # Kept only where it tokenizes as the model's own does (a model may clean or shorten texts its way).
            probes = list(TOKENIZER_PROBES)
            if not np.array_equal(ClipTokenizer(tokenizer_file, context_length)(probes), tokenizer(probes).numpy()):
                Path(tokenizer_file).unlink()
                tokenizer_file = None
        card = ModelCard(preprocess, dim, context_length, tokenizer_file)
        with atomic_path(path, suffix=".json") as part:  # the tokenizer by name: the cache may move
            Path(part).write_text(json.dumps({**asdict(card), "tokenizer": tokenizer_file and Path(tokenizer_file).name}))
        return card

    def _use_image_tower(self, precision: str, backend: str, min_cosine: float | None = None) -> bool:
        """Set the image tower up in `precision` on `backend` (auto: by `choose_backend`); False when an int8
        tower's guard is below `min_cosine` (then nothing is set: the caller picks another precision)."""
        self.backend = choose_backend(backend, precision) if self.device == "cpu" else "torch"
        if self.backend == "onnxruntime":
            if precision == "bf16":
                raise InputError("the onnxruntime backend runs fp32 or int8 (its CPU kernels have no bf16): use backend torch for bf16")
            int8_pixels = (lambda: self.preprocess(calibration_frames())) if precision == "int8" else None
            example = np.zeros((1, 3, self.preprocess.size, self.preprocess.size), np.float32)
            tower = OnnxTower(lambda: self.model.visual, self.key, example, self.threads, int8_pixels, min_cosine)
            if tower.precision != precision:
                return False
            self.image_tower = tower
        else:
            import torch

            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            # Cast the image tower's weights once. Autocast would re-cast all of them on every batch:
            # 3/4 of a 16-frame ViT-B-32 batch's time on CPU, slower than fp32.
            self.model.visual.to(dtype)
            self.image_tower = TorchTower(self.model.encode_image, self.device, dtype)
            if dtype != torch.float32 and not _native_bf16(self.device):
                log.warning("this CPU has no native bf16 (AVX512_BF16 or AMX): bf16 will be slower than fp32")
        self.precision = precision
        return True

    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.image_tower(pixels)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        encode = getattr(self.tokenizer, "encode", None)
        for text in texts:
            if encode is not None and len(encode(text)) > self.context_length - 2:
                warnings.warn(
                    f"query longer than {self.model_name}'s {self.context_length} tokens, truncated: {text[:60]!r}...",
                    stacklevel=3,
                )
        tokens = self.tokenizer(texts)
        return self.text_tower(tokens if isinstance(tokens, np.ndarray) else tokens.numpy())


# Texts that tell a tokenizer's cleaning and truncation apart: case, spacing, HTML entities, accents, length.
TOKENIZER_PROBES = ("a photo of a Cat.", "  Two   DOGS &amp; a ball!! ", "naïve café, 3 bikes", "a very long sentence " * 40)


class ClipTokenizer:
    """open_clip's CLIP tokenizer (its `SimpleTokenizer`: BPE over bytes, lower-cased, `<start_of_text>` ...
    `<end_of_text>`, zero-padded or truncated to the context) on HuggingFace `tokenizers`, which needs no
    torch. Built once from open_clip's own vocabulary and merges (`build`); tests/test_encoders.py checks
    the ids equal open_clip's (code points unassigned in either library's Unicode version aside)."""

    # open_clip's split of a cleaned text into words, before byte-level BPE
    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    SPECIAL = ("<start_of_text>", "<end_of_text>")

    def __init__(self, path: str, context_length: int):
        from tokenizers import Tokenizer

        self.bpe = Tokenizer.from_file(path)
        self.context_length = context_length
        self.sot, self.eot = (self.bpe.token_to_id(t) for t in self.SPECIAL)

    @classmethod
    def build(cls, simple):
        """A `tokenizers.Tokenizer` with the vocabulary and merges of open_clip tokenizer `simple`."""
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
        bpe = Tokenizer(models.BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>"))
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(cls.PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        bpe.add_special_tokens(list(cls.SPECIAL))
        return bpe

    @staticmethod
    def clean(text: str) -> str:
        """open_clip's cleaning: mojibake fixed, HTML entities decoded, whitespace collapsed, lower case."""
        import ftfy

        return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split()).lower()

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(self.clean(text), add_special_tokens=False).ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        tokens = np.zeros((len(texts), self.context_length), np.int64)
        for i, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot][: self.context_length]
            ids[-1] = self.eot
            tokens[i, : len(ids)] = ids
        return tokens


def _text_module(model):
    """`model.encode_text` as a module of its own, for the export."""
    import torch

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    return Text()


def _read_card(key: dict) -> ModelCard | None:
    path = cached_file(key, ".card.json")
    try:
        card = json.loads(path.read_text())
        card = ModelCard(Preprocess(**{**card["preprocess"], "mean": tuple(card["preprocess"]["mean"]),
                                      "std": tuple(card["preprocess"]["std"])}),
                         card["dim"], card["context_length"], card["tokenizer"] and str(path.with_name(card["tokenizer"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: made again from the model
    return card if card.tokenizer is None or os.path.exists(card.tokenizer) else None


def _native_bf16(device: str) -> bool:
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX512_BF16 or AMX
    except (AttributeError, RuntimeError):  # a private probe: without it, stay on the safe side
        return False


def _create(open_clip, model: str, pretrained: str | None):
    import torch

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
    import torch

    initialisers = {name: fn for name, fn in vars(torch.nn.init).items()
                    if name.endswith("_") and not name.startswith("_") and callable(fn)}
    for name in initialisers:
        setattr(torch.nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, fn in initialisers.items():
            setattr(torch.nn.init, name, fn)


def _unchanged(tensor, *args, **kwargs):
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
