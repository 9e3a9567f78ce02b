"""The encoder interface: frames, texts and reference images into one L2-normalised embedding space.

Everything crosses this boundary as numpy float32 so that a remote batched service (e.g. a Ray actor)
can implement the same interface without sharing torch tensors.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cliplive.models.embedding import unit
from cliplive.models.errors import InputError, Unavailable

log = logging.getLogger(__name__)


class EncoderUnavailable(Unavailable):
    """The encoder's weights or packages cannot be had; the message says what to do instead."""


@dataclass(frozen=True)
class Preprocess:
    """What a model expects: shortest side resized to `size` (then centre-cropped square), normalised."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __call__(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames (H, W, 3), any sizes -> float tensor (N, 3, size, size).

        Resizing runs on uint8 tensors with antialiasing, which is how torchvision matches PIL, so the
        result equals open_clip's PIL transform up to rounding. Frames that a decoder already scaled to
        the right shortest side skip the resize.
        """
        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        out = torch.empty(len(frames), 3, self.size, self.size)
        for i, frame in enumerate(frames):
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
            if min(x.shape[-2:]) != self.size:
                x = TF.resize(x, self.size, interpolation=mode, antialias=True)
            out[i] = TF.center_crop(x, [self.size, self.size])
        out.div_(255.0)
        return TF.normalize(out, self.mean, self.std, inplace=True)


class Encoder(ABC):
    """Frames, sentences and reference images -> unit vectors in one space of `dim` dimensions."""

    name: str
    dim: int
    preprocess: Preprocess
    # Zero-shot calibration: relevance logit = scale * cosine + bias, with 0 the nominal decision
    # boundary. Each encoder's cosines live on a different scale, so the scorer starts from these.
    calibration: tuple[float, float]
    # Reference images: the same form for a frame against a reference image. Two images' embeddings are far
    # closer than an image's and a sentence's, so unrelated pictures would match under `calibration`.
    image_calibration: tuple[float, float]

    def __init__(self) -> None:
        self._text_cache: dict[str, np.ndarray] = {}

    @property
    def image_size(self) -> int:
        """Shortest side decoders should scale frames to (they do it far cheaper than a tensor resize)."""
        return self.preprocess.size

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames (H, W, 3) -> (N, dim) float32, L2-normalised, one batch."""
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return unit(self._encode_pixels(self.preprocess(frames)))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Sentences -> (N, dim) float32, L2-normalised; cached, since queries repeat for every frame."""
        texts = [check_sentence(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            for text, vec in zip(missing, unit(self._encode_texts(missing))):
                self._text_cache[text] = vec
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Reference image files -> (N, dim) float32, L2-normalised."""
        return self.encode_frames([read_image(p) for p in paths])

    @abstractmethod
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, S, S) -> (N, dim) embeddings, not yet normalised."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Validated sentences -> (N, dim) embeddings, not yet normalised."""


def check_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    if not text:
        raise InputError("empty sentence: a sentence needs at least one word")
    return text


def read_image(path: str | Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"reference image not found: {path}") from None
    except (UnidentifiedImageError, OSError):
        raise InputError(f"reference image is not a readable image: {path}") from None
