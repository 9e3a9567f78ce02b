"""Online segmenter: per-frame relevance logits in, highlight segments and their live events out.

Per query, each frame's logit is normalised against that query's running history (blended with a prior,
so the first frames work too), optionally averaged over a lookahead window, and segments are opened and
closed with hysteresis, a minimum length and gap merging. In budget mode the thresholds follow a
running quantile instead, so a chosen fraction of the time is kept.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from cliplive.stream.events import HighlightEvent, Segment, segment_id

EPS = 1e-9  # seconds: slack for float timestamps (0.1 + 0.2 != 0.3)
STD_FLOOR = 1e-3  # logits: keeps z finite when a query's history is constant
BUDGET_CLOSE_FACTOR = 1.25  # budget mode closes at the (1 - 1.25 R) quantile: some hysteresis, kept time ~1.1 R
RECENT_INTERVALS = 64  # frame intervals kept to guess the last frame's duration at close()


@dataclass(frozen=True)
class SegmenterConfig:
    open_threshold: float = 1.0  # normalised score (z) to open a segment: 1 std above the query's running mean
    close_threshold: float = 0.0  # hysteresis: stays open until z drops below this (the query's running mean)
    min_length: float = 1.0  # seconds; shorter candidates never become segments
    merge_gap: float = 1.0  # seconds; a segment that re-opens within this gap continues (same id)
    lookahead: float = 0.0  # seconds; 0 = fully causal. >0: decide about t once frames up to t + lookahead arrived
    budget: float | None = None  # fraction of time to keep (e.g. 0.15); when set, thresholds adapt to it
    prior_mean: float = -2.0  # prior of the background relevance logit ...
    prior_std: float = 1.0
    prior_weight: float = 10.0  # ... worth this many frames of history (5 s at 2 fps)
    update_interval: float = 1.0  # seconds; at most one `update` event per open segment per interval

    def __post_init__(self):
        if self.close_threshold > self.open_threshold:
            raise ValueError("close_threshold must not exceed open_threshold")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError("budget must be a fraction in (0, 1]")
        if min(self.min_length, self.merge_gap, self.lookahead, self.prior_weight, self.update_interval) < 0:
            raise ValueError("lengths, intervals and prior_weight must not be negative")
        if self.prior_std <= 0:
            raise ValueError("prior_std must be positive")


class RunningStats:
    """Per-query mean and std of every logit seen (Welford), blended with a prior worth `weight` frames."""

    def __init__(self, size: int, prior_mean: float, prior_std: float, weight: float):
        self.prior_mean, self.prior_std, self.weight = prior_mean, prior_std, weight
        self.count = 0
        self.mean = np.zeros(size)
        self.m2 = np.zeros(size)

    def add(self, x: np.ndarray) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the mixture of prior pseudo-frames and history (call after at least one add)."""
        w, n = self.weight, self.count
        mean = (w * self.prior_mean + n * self.mean) / (w + n)
        spread = w * (self.prior_std**2 + (self.prior_mean - mean) ** 2) + self.m2 + n * (self.mean - mean) ** 2
        return mean, np.sqrt(np.maximum(spread / (w + n), STD_FLOOR**2))


class RunningQuantile:
    """Quantiles of every value seen: a sorted list (hours of 2 fps frames are a few MB)."""

    def __init__(self, seed: list[float]):
        self.values = sorted(seed)

    def add(self, x: float) -> None:
        bisect.insort(self.values, x)

    def __call__(self, q: float) -> float:
        """Linear interpolation between order statistics, as numpy's default."""
        pos = min(max(q, 0.0), 1.0) * (len(self.values) - 1)
        low = int(pos)
        high = min(low + 1, len(self.values) - 1)
        return self.values[low] + (pos - low) * (self.values[high] - self.values[low])


def prior_max_z(queries: int, weight: float) -> list[float]:
    """Pseudo-history for budget mode: evenly spaced quantiles of the max of `queries` standard normals.

    That is what max_q z looks like while logits follow the prior, so budget thresholds are sensible from
    the first frame and move to the video's own distribution as frames arrive.
    """
    count = round(weight)
    return [NormalDist().inv_cdf(((i + 0.5) / count) ** (1 / queries)) for i in range(count)]


def probability(logit: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * logit))  # sigmoid without overflow


@dataclass
class _Track:
    """One query's segment in the making: a candidate, then a segment (id set), maybe closed in its merge gap."""

    start: float
    best_score: float  # peak probability of its frames
    best_t: float
    id: str | None = None  # set once it lasted min_length
    closed_at: float | None = None  # set while closed, waiting to see if it re-opens within merge_gap
    reported_at: float = -math.inf  # media time of its last new/update event
    reported_score: float = -math.inf  # the score that event carried


class OnlineSegmenter:
    """Turns a stream of per-frame relevance logits (one per query) into highlight events."""

    def __init__(self, queries: list[str], config: SegmenterConfig = SegmenterConfig(), stream: str = "file"):
        if not queries:
            raise ValueError("no queries")
        self.queries, self.config, self.stream = list(queries), config, stream
        self._stats = RunningStats(len(queries), config.prior_mean, config.prior_std, config.prior_weight)
        self._budget = (
            None if config.budget is None else RunningQuantile(prior_max_z(len(queries), config.prior_weight))
        )
        self._pending: deque[tuple[float, np.ndarray]] = deque()  # frames not decided yet (the lookahead)
        self._past: deque[tuple[float, np.ndarray]] = deque()  # decided frames still inside a lookahead window
        self._tracks: list[_Track | None] = [None] * len(queries)
        self._segments: list[Segment] = []
        self._intervals: deque[float] = deque(maxlen=RECENT_INTERVALS)
        self._last_t: float | None = None
        self._count = 0
        self._closed = False

    @property
    def last_time(self) -> float | None:
        """Media time of the last frame pushed."""
        return self._last_t

    @property
    def segments(self) -> list[Segment]:
        """All finished segments so far, in start order."""
        return list(self._segments)

    def push(self, t: float, relevance: np.ndarray) -> list[HighlightEvent]:
        """One sampled frame: media time `t` (increasing) and one relevance logit per query."""
        if self._closed:
            raise RuntimeError("push() after close()")
        t, relevance = float(t), np.asarray(relevance, dtype=np.float64)
        if relevance.shape != (len(self.queries),):
            raise ValueError(f"relevance has shape {relevance.shape}, expected ({len(self.queries)},)")
        if not np.isfinite(relevance).all():
            raise ValueError("relevance is not finite")  # one NaN would poison the running statistics for good
        if self._last_t is not None:
            if t <= self._last_t:
                raise ValueError(f"timestamps must increase: {t} after {self._last_t}")
            self._intervals.append(t - self._last_t)
        self._last_t = t
        self._stats.add(relevance)
        self._pending.append((t, relevance))
        events: list[HighlightEvent] = []
        while self._pending and self._pending[0][0] + self.config.lookahead <= t + EPS:
            events += self._decide()
        return events

    def close(self, t_end: float | None = None) -> list[HighlightEvent]:
        """End of stream: decide the frames still in the lookahead, then end every segment.

        Open segments end at `t_end` (default: the last frame's time plus the recent median frame interval).
        """
        self._closed = True
        events: list[HighlightEvent] = []
        while self._pending:
            events += self._decide()
        if self._last_t is None:
            return events
        if t_end is None:
            t_end = self._last_t + (float(np.median(self._intervals)) if self._intervals else 0.0)
        t_end = max(t_end, self._last_t)  # a container's duration may stop short of the last frame's time
        for q, track in enumerate(self._tracks):
            if track is not None and track.closed_at is None:
                events += self._close_track(q, t_end)
            if self._tracks[q] is not None:
                events.append(self._end(q))
        return events

    def _decide(self) -> list[HighlightEvent]:
        """Decide about the oldest pending frame, from the mean logit over [t - L, t + L]."""
        t, raw = self._pending.popleft()
        lookahead = self.config.lookahead
        while self._past and self._past[0][0] < t - lookahead - EPS:
            self._past.popleft()
        ahead = itertools.takewhile(lambda f: f[0] <= t + lookahead + EPS, self._pending)
        window = [r for _, r in self._past] + [raw] + [r for _, r in ahead]
        self._past.append((t, raw))
        # Normalising is affine, so the mean logit's z equals the mean of the frames' z (current stats).
        mean, std = self._stats.mean_std()
        z = (np.mean(window, axis=0) - mean) / std
        open_threshold, close_threshold = self._thresholds(z)
        scores = probability(raw)
        events: list[HighlightEvent] = []
        for q in range(len(self.queries)):
            events += self._step(q, t, float(z[q]), float(scores[q]), open_threshold, close_threshold)
        return events

    def _thresholds(self, z: np.ndarray) -> tuple[float, float]:
        """Open and close thresholds for a decided frame (in budget mode, after adding it to the history)."""
        if self._budget is None:
            return self.config.open_threshold, self.config.close_threshold
        # Any query's segment counts as kept time, so the quantiles are of the per-frame max over queries.
        self._budget.add(float(z.max()))
        budget = self.config.budget
        return self._budget(1 - budget), self._budget(1 - BUDGET_CLOSE_FACTOR * budget)

    def _step(
        self, q: int, t: float, z: float, score: float, open_at: float, close_below: float
    ) -> list[HighlightEvent]:
        """Query q's hysteresis state machine, one decided frame."""
        config = self.config
        track = self._tracks[q]
        events: list[HighlightEvent] = []
        if track is not None and track.closed_at is not None:
            if z >= open_at and t - track.closed_at <= config.merge_gap + EPS:
                track.closed_at = None  # re-opened within the gap: the same segment goes on
            elif t - track.closed_at >= config.merge_gap - EPS:
                events.append(self._end(q))
                track = None
            else:
                return events
        if track is None:
            if z < open_at:
                return events
            track = self._tracks[q] = _Track(start=t, best_score=score, best_t=t)
        elif z < close_below:
            return events + self._close_track(q, t)
        elif score > track.best_score:
            track.best_score, track.best_t = score, t
        if track.id is None:
            if t - track.start >= config.min_length - EPS:
                events.append(self._confirm(q, t))
        elif track.best_score > track.reported_score and t - track.reported_at >= config.update_interval - EPS:
            events.append(self._report(q, "update", t))
        return events

    def _close_track(self, q: int, t: float) -> list[HighlightEvent]:
        """Query q's open track ends at t (exclusive): drop it if too short, else hold it for the merge gap."""
        track = self._tracks[q]
        events: list[HighlightEvent] = []
        if track.id is None:
            if t - track.start < self.config.min_length - EPS:
                self._tracks[q] = None
                return events
            events.append(self._confirm(q, t))
        track.closed_at = t
        if self.config.merge_gap <= 0:
            events.append(self._end(q))
        return events

    def _confirm(self, q: int, t: float) -> HighlightEvent:
        self._count += 1
        self._tracks[q].id = segment_id(self.stream, self._count)
        return self._report(q, "new", t)

    def _report(self, q: int, kind: str, t: float) -> HighlightEvent:
        track = self._tracks[q]
        track.reported_at, track.reported_score = t, track.best_score
        return self._event(kind, q, track)

    def _end(self, q: int) -> HighlightEvent:
        track = self._tracks[q]
        self._tracks[q] = None
        segment = Segment(track.start, track.closed_at, track.best_score, self.queries[q], q, track.best_t, track.id)
        bisect.insort(self._segments, segment, key=lambda s: s.start)
        return self._event("end", q, track, end=track.closed_at)

    def _event(self, kind: str, q: int, track: _Track, end: float | None = None) -> HighlightEvent:
        return HighlightEvent(
            kind, track.id, self.stream, track.start, end, track.best_score, self.queries[q], q, track.best_t
        )
