"""The zero-shot scorer in numpy, and the interface every frame scorer gives a stream.

An untrained `CausalScorer` (`cliplive.models.scorer.zero_shot`) starts its residual heads at zero, so its
relevance is exactly the encoder's calibrated cosine and its aggregate score the max over queries: its
transformer's output reaches neither. `ZeroShotScorer` computes that directly (tests/test_scorer.py checks
they agree): microseconds a frame instead of a transformer step, and no torch in a process that has no
trained scorer to run.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cliplive.models.shots import ShotPrior


class FrameScorer(Protocol):
    """What a stream's Highlighter needs of a scorer: one frame at a time, over a state it keeps."""

    shot_prior: ShotPrior | None  # its training videos' shots, for a stream to rank its first shots against

    def init_state(self) -> Any: ...

    def score_frame(self, state: Any, frame: np.ndarray, queries: np.ndarray,
                    cosine_map: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """A frame (D,) and queries (Q, D), unit vectors; `cosine_map` (2, Q) each query's gain and offset onto
        sentences' scale (None: all are sentences) -> relevance logits (Q,) and the aggregate logit. May
        update `state` in place."""
        ...


class ZeroShotScorer:
    """Relevance = scale * cosine + bias (the encoder's calibration), aggregate = the max over queries."""

    shot_prior = None  # untrained: no training videos

    def __init__(self, dim: int, calibration: tuple[float, float]):
        self.dim = dim
        self.scale, self.bias = np.float32(calibration[0]), np.float32(calibration[1])

    def init_state(self) -> None:
        return None

    def score_frame(self, state: None, frame: np.ndarray, queries: np.ndarray,
                    cosine_map: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        cosine = queries @ np.asarray(frame, np.float32)
        if cosine_map is not None:
            cosine = cosine_map[0] * cosine + cosine_map[1]
        relevance = (self.scale * cosine + self.bias).astype(np.float32)
        return relevance, float(relevance.max())
