"""The embedding space every encoder maps into, in numpy only (the research data reads and writes features
without torch): unit vectors, and how CLIP's cosines in it calibrate to relevance logits."""

from __future__ import annotations

import numpy as np

# Zero-shot calibration of CLIP: relevance logit = scale * cosine + bias, 0 being the decision boundary.
# CLIP cosines between a frame and an unrelated caption sit near 0.15-0.2, a matching one near 0.3: a
# logit of 25 * (cos - 0.25) puts the boundary between them. Also the scorer's and the h5 files' default.
CLIP_CALIBRATION: tuple[float, float] = (25.0, -6.25)


def unit(x) -> np.ndarray:
    """Vectors (along the last axis) scaled to length 1; zero vectors stay zero. A torch tensor comes back
    as a float32 array, an array keeps its dtype."""
    x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)  # a tensor: any dtype, device
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
