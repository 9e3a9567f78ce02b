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

    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames (H, W, 3), any sizes -> float32 (N, 3, size, size).

        open_clip's own transform, without torch: PIL's resize (antialiased), then the centre crop torchvision
        takes. Frames that a decoder already scaled to the right shortest side skip the resize.
        """
        out = np.empty((len(frames), 3, self.size, self.size), np.float32)
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            if min(frame.shape[:2]) != self.size:
                frame = self._resized(frame)
            height, width = frame.shape[:2]
            top, left = round((height - self.size) / 2.0), round((width - self.size) / 2.0)  # as torchvision's CenterCrop
            out[i] = frame[top : top + self.size, left : left + self.size].transpose(2, 0, 1)
        out /= 255.0
        out -= np.asarray(self.mean, np.float32)[:, None, None]
        out /= np.asarray(self.std, np.float32)[:, None, None]
        return out

    def _resized(self, frame: np.ndarray) -> np.ndarray:
        """Shortest side to `size`, the long one scaled and truncated as torchvision's Resize does."""
        from PIL import Image

        height, width = frame.shape[:2]
        shape = (self.size, int(self.size * width / height)) if height <= width else (int(self.size * height / width), self.size)
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(shape[::-1], resample))


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
        """Shortest side decoders should scale frames to (they do it far cheaper than a resize here)."""
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
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, 3, S, S) -> (N, dim) float32 embeddings, not yet normalised."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Validated sentences -> (N, dim) float32 embeddings, not yet normalised."""


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
