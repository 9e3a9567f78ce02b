"""Shots and budgets, as the summarization protocol (TVSum/SumMe, CLIP-It) defines them. Pure numpy.

- `kts`: Kernel Temporal Segmentation (Potapov et al., ECCV 2014): with a linear kernel on the frame
  features, split the sequence into segments of least within-segment scatter, the number of change
  points chosen by the penalised cost of the reference `cpd_auto`.
- `knapsack`: exact 0/1 knapsack.
- `select_shots`: shot score = mean frame score, weight = shot length, capacity = budget x frames.
- `fill_level` and `ShotPrior`: the greedy knapsack's last pick, and what a trained scorer's checkpoint
  records of the shots the online segmenter decided on its training videos.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cliplive.models.errors import InputError

MAX_KTS_POINTS = 3000  # longer sequences are averaged down first: the DP is quadratic in memory
SHOT_SECONDS = 2.0  # KTS may cut at most one shot per this many seconds of sampled video


def shot_change_points(features: np.ndarray, seconds: float) -> np.ndarray:
    """KTS over `features` (n, d) sampled evenly over `seconds` of video, shots of SHOT_SECONDS and up."""
    return kts(features, max(1, int(seconds / SHOT_SECONDS)))


def runs(mask: np.ndarray) -> np.ndarray:
    """(M, 2) [start, end) of the runs of True in a 1-d mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask).astype(int), [0]])))
    return edges.reshape(-1, 2)


def kts(features: np.ndarray, max_change_points: int, vmax: float = 1.0, min_segment: int = 1) -> np.ndarray:
    """Change points (sorted indices where a new segment starts) of `features` (n, d).

    No segment is shorter than `min_segment` frames (cpd_nonlin's `lmin`).
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    min_segment = max(1, int(min_segment))
    max_change_points = min(max_change_points, n // min_segment - 1)
    if max_change_points < 1:
        return np.zeros(0, dtype=int)
    step = int(np.ceil(n / MAX_KTS_POINTS))
    if step > 1:  # average consecutive frames, segment those, map back
        pooled = np.add.reduceat(x, np.arange(0, n, step)) / np.diff(np.append(np.arange(0, n, step), n))[:, None]
        pooled_points = kts(pooled, max_change_points, vmax, int(np.ceil(min_segment / step)))
        return np.unique(np.clip(pooled_points * step, 1, n - 1))
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kernel = x @ x.T
    costs, back = _segment_dp(_scatter(kernel, min_segment), max_change_points)
    # cpd_auto's model selection: mean scatter plus a penalty growing with the number of change points.
    m = np.arange(1, max_change_points + 1)
    penalty = np.concatenate([[0.0], vmax * m / (2.0 * n) * (np.log(n / m) + 1)])
    best = int(np.argmin(costs[:, n] / n + penalty))
    return _backtrack(back, best, n)


def shot_bounds(change_points: np.ndarray, n: int) -> np.ndarray:
    """(S, 2) [start, end) frame indices of the shots the change points cut [0, n) into."""
    edges = np.concatenate([[0], np.asarray(change_points, dtype=int), [n]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def knapsack(values: np.ndarray, weights: np.ndarray, capacity: int) -> list[int]:
    """Indices (sorted) of the items of greatest total value whose total weight fits `capacity`."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=int)
    capacity = int(capacity)
    if capacity <= 0 or len(values) == 0:
        return []
    best = np.zeros(capacity + 1)
    took = np.zeros((len(values), capacity + 1), dtype=bool)
    for i, (value, weight) in enumerate(zip(values, weights)):
        if weight > capacity or weight < 0:
            continue
        with_item = np.full(capacity + 1, -np.inf)
        with_item[weight:] = best[: capacity + 1 - weight] + value
        took[i] = with_item > best
        best = np.where(took[i], with_item, best)
    chosen, room = [], capacity
    for i in range(len(values) - 1, -1, -1):
        if took[i, room]:
            chosen.append(i)
            room -= weights[i]
    return sorted(chosen)


def select_shots(frame_scores: np.ndarray, shots: np.ndarray, budget: float = 0.15) -> np.ndarray:
    """The protocol's summary: a 0/1 mask over frames, whole shots chosen by knapsack within the budget."""
    scores = np.asarray(frame_scores, dtype=np.float64)
    keep = np.zeros(len(scores), dtype=bool)
    lengths = shots[:, 1] - shots[:, 0]
    values = np.array([scores[s:e].mean() if e > s else 0.0 for s, e in shots])
    for i in knapsack(values, lengths, int(np.floor(budget * len(scores)))):
        keep[shots[i, 0] : shots[i, 1]] = True
    return keep


def fill_level(shots: Iterable[tuple[float, float]], share: float) -> float:
    """The value per second at which `shots`, (value per second, seconds) best first, fill `share` of their
    time: the value of the first that no longer fits (0 when they all fit)."""
    shots = list(shots)
    room = share * sum(seconds for _, seconds in shots)
    for value, seconds in shots:
        room -= seconds
        if room < 0:
            return value
    return 0.0


Shots = list[tuple[float, float]]  # one video's shots as the online segmenter decided them: (value per second, seconds)


@dataclass(frozen=True)
class ShotPrior:
    """The shots a scorer's training videos gave the online segmenter, by lookahead: what a stream it scores
    ranks its first shots against, before it has shots of its own."""

    shots: dict[float, list[Shots]]  # lookahead (s) -> per training video, its shots

    def level(self, share: float, lookahead: float) -> float:
        """The median over the videos of the level at which each one's shots fill `share` of its time, at the
        recorded lookahead nearest `lookahead` by ratio (shots seen 8 s ahead look alike at 6 and 12 s)."""
        nearest = min(self.shots, key=lambda recorded: abs(math.log(recorded / lookahead)))
        return float(np.median([fill_level(sorted(video, reverse=True), share) for video in self.shots[nearest]]))

    def to_payload(self) -> dict:
        return {"shots": self.shots}

    @classmethod
    def from_payload(cls, payload, source: str) -> ShotPrior:
        """A prior read back from a file, checked: InputError naming `source` if it is malformed."""
        message = f"{source} has a malformed shot prior"
        try:
            shots = {float(lookahead): [[(float(value), float(seconds)) for value, seconds in video] for video in videos]
                     for lookahead, videos in payload["shots"].items()}
        except (KeyError, AttributeError, TypeError, ValueError):
            raise InputError(message) from None
        if not shots or any(lookahead <= 0 or not videos or not all(videos) for lookahead, videos in shots.items()):
            raise InputError(message)
        if not all(math.isfinite(value) and value >= 0 and 0 < seconds < math.inf
                   for videos in shots.values() for video in videos for value, seconds in video):
            raise InputError(message)
        return cls(shots)


def _scatter(kernel: np.ndarray, min_segment: int) -> np.ndarray:
    """(n+1, n+1) scatter of segment [i, j): sum of K[k, k] minus the segment's kernel sum / length;
    infinite for segments shorter than `min_segment` (or empty)."""
    n = len(kernel)
    diag = np.concatenate([[0.0], np.cumsum(np.diag(kernel))])
    block = np.zeros((n + 1, n + 1))
    block[1:, 1:] = kernel.cumsum(0).cumsum(1)
    i, j = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    length = np.maximum(j - i, 1)
    inner = block[j, j] - block[i, j] - block[j, i] + block[i, i]
    scatter = diag[j] - diag[i] - inner / length
    scatter[j - i < min_segment] = np.inf
    return scatter


def _segment_dp(scatter: np.ndarray, max_change_points: int) -> tuple[np.ndarray, np.ndarray]:
    """costs[m, j]: least scatter of frames [0, j) in m+1 segments; back[m, j]: where the last one starts."""
    n = scatter.shape[0] - 1
    costs = np.full((max_change_points + 1, n + 1), np.inf)
    back = np.zeros((max_change_points + 1, n + 1), dtype=int)
    costs[0] = scatter[0]
    for m in range(1, max_change_points + 1):
        total = costs[m - 1][:, None] + scatter  # split point i (rows) -> end j (columns)
        back[m] = np.argmin(total, axis=0)
        costs[m] = total[back[m], np.arange(n + 1)]
    return costs, back


def _backtrack(back: np.ndarray, change_points: int, n: int) -> np.ndarray:
    points, end = [], n
    for m in range(change_points, 0, -1):
        end = int(back[m, end])
        points.append(end)
    return np.array(sorted(points), dtype=int)
