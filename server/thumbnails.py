"""The last few scored frames of a stream, for highlight thumbnails.

`RecentFrames` observes a pipeline stream (`cliplive.stream.pipeline.Observer`) and keeps the frames the
encoder saw, already scaled to its input size, so a thumbnail costs no extra decoding. Only a few
seconds are kept (a highlight's best frame is reported within about a second of being seen, plus the
segmenter's lookahead), so memory stays at `seconds * fps` frames per stream.
"""

from __future__ import annotations

import io
import math
from collections import deque

import numpy as np
from PIL import Image

from cliplive.stream.pipeline import ScoredFrame
from cliplive.stream.source import Frame

KEEP_SECONDS = 10.0


class RecentFrames:
    def __init__(self, fps: float, seconds: float = KEEP_SECONDS):
        self.frames: deque[Frame] = deque(maxlen=math.ceil(fps * seconds) + 1)

    def __call__(self, scored: ScoredFrame) -> None:
        self.frames.append(scored.frame)

    def nearest(self, t: float) -> Frame | None:
        """The kept frame closest to media time `t`."""
        return min(self.frames, key=lambda f: abs(f.t - t), default=None)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
