"""Which encoder (and scorer checkpoint) to load, and the one factory that loads them.

`EncoderSpec` is the only description of that choice: the command line's encoder options are generated
from its fields (`cliplive.server.options`), the config file's `[encoder]` table validates into it
(`cliplive.server.config`), and `create_encoder` / `load_scorer` are the only code that turns one into
models. This module imports neither torch nor numpy, so that building the CLI's parser stays cheap; a
model's own module loads when the factory asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from cliplive.models.encoder import Encoder
    from cliplive.models.zero_shot import FrameScorer

EncoderKind = Literal["clip", "conse"]
Precision = Literal["auto", "fp32", "bf16", "int8"]
Backend = Literal["auto", "torch", "onnxruntime"]
ENCODER_KINDS: tuple[str, ...] = get_args(EncoderKind)
PRECISIONS: tuple[str, ...] = get_args(Precision)
BACKENDS: tuple[str, ...] = get_args(Backend)


def _about(help_text: str, minimum: int | None = None, maximum: int | None = None) -> dict:
    """A field's metadata: its help (the CLI's, and the config file's documentation) and integer bounds."""
    return {"help": help_text, "min": minimum, "max": maximum}


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder to load (and the scorer that goes with it). Frozen: change one with dataclasses.replace."""

    kind: EncoderKind = field(default="clip", metadata=_about("clip (open_clip) or conse (the embedded offline fallback)"))
    model: str = field(default="ViT-B-32", metadata=_about("open_clip model name or model config .json (clip only)"))
    pretrained: str = field(default="openai", metadata=_about(
        "open_clip pretrained tag or local checkpoint file (clip only); 'random' only for tests"))
    precision: Precision = field(default="auto", metadata=_about(
        "CLIP image tower precision; auto: int8 (onnxruntime) where its embeddings stay within cosine 0.999 of fp32 on "
        "real frames (checked once), else bf16 where the hardware computes it natively, else fp32"))
    backend: Backend = field(default="auto", metadata=_about(
        "image tower inference: torch, onnxruntime (an ONNX export, made once and cached), or auto: torch for bf16, "
        "else onnxruntime where installed"))
    checkpoint: str | None = field(default=None, metadata=_about("a trained scorer checkpoint (unset: the zero-shot scorer)"))
    max_batch: int = field(default=16, metadata=_about("frames encoded together in one batch", 1, 256))
    threads: int | None = field(default=None, metadata=_about("intra-op threads of torch and ONNX Runtime (unset: their own choice)", 1, 1024))

    def __post_init__(self) -> None:
        # ValueError: what pydantic turns into a config file's error. The CLI's options check the same
        # choices and bounds while parsing, so from there these never fire.
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ENCODER_KINDS)}, not {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "onnxruntime" and self.precision == "bf16":
            raise ValueError("the onnxruntime backend runs fp32 or int8 (its CPU kernels have no bf16): use --backend torch for bf16")
        if self.backend == "torch" and self.precision == "int8":
            raise ValueError("int8 runs on the onnxruntime backend: use --backend onnxruntime or auto")
        for f in fields(self):
            value, low, high = getattr(self, f.name), f.metadata.get("min"), f.metadata.get("max")
            if value is not None and low is not None and not low <= value <= high:
                raise ValueError(f"{f.name} must be between {low} and {high}, not {value}")


def create_encoder(spec: EncoderSpec = EncoderSpec()) -> Encoder:
    """The encoder a spec names; only the asked-for encoder's packages are imported."""
    if spec.kind == "clip":
        from cliplive.models.clip import ClipEncoder

        return ClipEncoder(spec.model, spec.pretrained, precision=spec.precision, backend=spec.backend, threads=spec.threads)
    from cliplive.models.conse import ConseEncoder

    return ConseEncoder(backend=spec.backend, threads=spec.threads)


def load_scorer(spec: EncoderSpec, encoder: Encoder) -> FrameScorer:
    """The spec's trained scorer, checked against `encoder` (CheckpointError if it does not fit), or the
    zero-shot scorer (numpy: no torch) when the spec names no checkpoint."""
    if not spec.checkpoint:
        from cliplive.models.zero_shot import ZeroShotScorer

        return ZeroShotScorer(encoder.dim, encoder.calibration)
    from cliplive.models import scorer

    return scorer.load(spec.checkpoint, encoder_name=encoder.name, dim=encoder.dim)
