"""Online segmenter: per-frame relevance logits in, highlight segments and their live events out.

Per query, each frame's logit is normalised against that query's running history (blended with a prior,
so the first frames work too). Whether a frame is inside a highlight is a two-state decision: being on
earns the frame's normalised score minus a threshold, and every switch on or off costs a fixed amount.
With lookahead L the decision about t takes the best on/off path over the frames buffered up to t + L,
starting from the state already decided, and keeps its first step (fixed-lag Viterbi); with L = 0 that is
plain hysteresis. The future places boundaries and judges whole stretches instead of blurring the scores.
Segments then get a minimum length, gap merging and an absolute gate on the calibrated probability.

Budget mode keeps a share of the time. The kept time never passes BUDGET_RANGE's upper share of the time
elapsed plus PACE_HORIZON seconds, so that a budget spent on the first minute's matches does not leave every
later moment unannounced; over a stream of known duration (a file) it also stays within BUDGET_RANGE of
budget x duration, the best-matching query filling the time still needed to reach the lower bound near the
end. Each query not kept yet has `min_length` seconds of that room held for it, so that a first sentence that
matches all along does not leave the others unannounced. Frame by frame, a query keeps the frames whose
calibrated probability reaches MATCH (the calibration's own boundary), as long as the budget has room: on the
synthetic benchmark that is 4-15 F1 points above hysteresis at running quantiles of z (docs/reproduce.md).
With a lookahead and the frames' embeddings, budget mode decides by shots instead, as a summary's budget
is best spent (the knapsack of the summarization protocol, online): shot cuts come from KTS over the
frames of the last SHOT_CONTEXT seconds and the lookahead; at each cut the whole shot is decided, and that
decision holds until the next cut. A shot is kept when its value per second of budget (its mean
probability over its buffered frames, divided by its length, or by the time buffered while its end is not
in sight) reaches the level at which the shots seen so far, best first, would fill the budget's share.
A shot whose end is not in sight and of which less than SHOT_EVIDENCE seconds are buffered is too little
known to be judged whole: its frames are decided one by one, as without a lookahead, so that a short
lookahead is never worse than none.
The first shots have too few others to rank against. A trained scorer's checkpoint brings the shots its
training videos gave at each lookahead (`models.shots.ShotPrior`): the level at which they fill the
budget's share is worth SHOT_PRIOR_WEIGHT shots of the stream's own ranking. Without it, each of the first
SHOT_WARMUP shots is kept when its mean probability reaches MATCH. A matching shot left for its low value
still gets `min_length` seconds from its first matching frame once the budget has that room, and whole shots
leave the last `min_length` seconds of the budget's room to these, so that no matching moment goes
unannounced. On the synthetic benchmark, deciding by shots (the prior level included) lifts F1 at 8 s by 4-12
points over deciding frame by frame (docs/reproduce.md).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from cliplive.models.shots import ShotPrior, fill_level, shot_change_points
from cliplive.stream.events import HighlightEvent, Segment, segment_id

EPS = 1e-9  # seconds: slack for float timestamps (0.1 + 0.2 != 0.3)
STD_FLOOR = 1e-3  # logits: keeps z finite when a query's history is constant
BUDGET_RANGE = (0.9, 1.1)  # stream of known duration: kept time stays within these multiples of budget x duration
# Unknown end: a kept-time surplus or deficit of budget x this many seconds moves the level e-fold, and the
# kept time stays under BUDGET_RANGE's upper share of (elapsed + this many seconds).
PACE_HORIZON = 20.0
PACE_LIMITS = (0.25, 4.0)  # how far pacing may scale the level of a shot ranking
RECENT_INTERVALS = 64  # frame intervals kept to guess the last frame's duration at close()
SHOT_CONTEXT = 20.0  # seconds of decided frames that online shot cuts look back over (KTS is quadratic in frames)
MATCH = 0.5  # budget mode: probability at which a frame, or a shot's mean, matches (the calibration's own boundary)
SHOT_EVIDENCE = 4.0  # seconds of a shot buffered (or all of it) before it is judged whole
SHOT_WARMUP = 10  # shots seen before their values per second rank a new one; until then its probability decides
SHOT_PRIOR_WEIGHT = 5.0  # shots of the stream's own ranking that the level of a `ShotPrior` is worth


@dataclass(frozen=True)
class SegmenterConfig:
    open_threshold: float = 1.0  # normalised score (z) above which a segment opens: 1 std above the query's running mean
    close_threshold: float = 0.0  # hysteresis: stays open while z is above this (the query's running mean)
    min_length: float = 1.0  # seconds; shorter candidates never become segments
    merge_gap: float = 1.0  # seconds; a segment that re-opens within this gap continues (same id)
    lookahead: float = 0.0  # seconds; 0 = fully causal. >0: decide about t once frames up to t + lookahead arrived
    budget: float | None = None  # fraction of time to keep (e.g. 0.15); when set, thresholds adapt to it
    prior_mean: float = -2.0  # prior of the background relevance logit ...
    prior_std: float = 1.0
    prior_weight: float = 10.0  # ... worth this many frames of history (5 s at 2 fps)
    update_interval: float = 1.0  # seconds; at most one `update` event per open segment per interval
    min_score: float = 0.5  # absolute gate: a segment is reported only once its peak calibrated probability reaches this (0.5: the calibration's own boundary)

    def __post_init__(self):
        if self.close_threshold > self.open_threshold:
            raise ValueError("close_threshold must not exceed open_threshold")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError("budget must be a fraction in (0, 1]")
        if min(self.min_length, self.merge_gap, self.lookahead, self.prior_weight, self.update_interval) < 0:
            raise ValueError("lengths, intervals and prior_weight must not be negative")
        if not 0 <= self.min_score < 1:
            raise ValueError("min_score must be a probability in [0, 1)")
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

    def z(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits x (..., queries) normalised two ways (call after at least one add): against the mixture of
        prior pseudo-frames and history, and against the history's own mean with the prior's spread only."""
        w, n = self.weight, self.count
        mean = (w * self.prior_mean + n * self.mean) / (w + n)
        spread = w * (self.prior_std**2 + (self.prior_mean - mean) ** 2) + self.m2 + n * (self.mean - mean) ** 2
        own_spread = w * self.prior_std**2 + self.m2
        std, own_std = (np.sqrt(np.maximum(s / (w + n), STD_FLOOR**2)) for s in (spread, own_spread))
        return (x - mean) / std, (x - self.mean) / own_std


def probability(logit: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * logit))  # sigmoid without overflow


def passes_gate(logits: np.ndarray, min_score: float) -> np.ndarray:
    """Which logits are matches by the absolute gate: probability >= `min_score`; none with the gate off (0)."""
    return probability(logits) >= min_score if min_score > 0 else np.zeros(np.shape(logits), bool)


def first_states(gain: np.ndarray, switch_cost: float, state: np.ndarray) -> np.ndarray:
    """The first frame's state on the best on/off path over the buffered frames.

    gain (frames, queries): what being on earns each frame; every change of state costs `switch_cost`;
    state (queries,): the state before the first frame, already decided. Dynamic programming backwards:
    best[s] = the best total of the frames from here on when this frame is in state s.
    """
    best_off = np.zeros(gain.shape[1])
    best_on = np.zeros(gain.shape[1])
    for row in gain[::-1]:
        best_off, best_on = np.maximum(best_off, best_on - switch_cost), row + np.maximum(best_on, best_off - switch_cost)
    return best_on - switch_cost * ~state > best_off - switch_cost * state


@dataclass
class _Track:
    """One query's segment in the making: a candidate, then a segment (id set), maybe closed in its merge gap."""

    start: float
    best_score: float  # peak probability of its frames
    best_t: float
    id: str | None = None  # set once it lasted min_length and its peak reached min_score
    closed_at: float | None = None  # set while closed, waiting to see if it re-opens within merge_gap
    reported_at: float = -math.inf  # media time of its last new/update event
    reported_score: float = -math.inf  # the score that event carried


class OnlineSegmenter:
    """Turns a stream of per-frame relevance logits (one per query) into highlight events."""

    def __init__(
        self, queries: list[str], config: SegmenterConfig = SegmenterConfig(), stream: str = "file", duration: float | None = None,
        shot_prior: ShotPrior | None = None,
    ):
        """`duration`: media time at which the stream ends, when known (a file): budget mode then holds the
        kept time within BUDGET_RANGE of the budget over the whole stream; otherwise it paces against the
        time elapsed. `shot_prior`: the scorer's training videos' shots, which decisions by shots rank the
        first shots against (module docstring)."""
        if not queries:
            raise ValueError("no queries")
        if duration is not None and duration <= 0:
            raise ValueError("duration must be positive")
        self.queries, self.config, self.stream, self.duration = list(queries), config, stream, duration
        # At the budget itself, not the share paced for: a level that follows the pacing swings the kept time
        # and cost 8-12 F1 points live on the synthetic benchmark.
        self._prior_level = (shot_prior.level(config.budget, config.lookahead)
                             if shot_prior is not None and config.budget is not None and config.lookahead > 0 else None)
        self._stats = RunningStats(len(queries), config.prior_mean, config.prior_std, config.prior_weight)
        self._pending: deque[tuple[float, np.ndarray, np.ndarray | None]] = deque()  # undecided frames (the lookahead)
        self._by_shots: bool | None = None  # decide by shots (budget, lookahead, embeddings): set at the first frame
        self._context: deque[tuple[float, np.ndarray]] = deque()  # decided frames' embeddings, last SHOT_CONTEXT s
        self._shot_values: list[tuple[float, float]] = []  # (-value per second, seconds) of the shots seen: best first
        self._on = np.zeros(len(queries), dtype=bool)  # each query's decided state of the last decided frame
        # By shots: whether the shot's end was in sight at its cut, and whether it is decided frame by frame (too
        # little of it known); per query, whether it is kept whole, or left but for a teaser still to come at its
        # first matching frame, and when that teaser ends.
        self._shot_end_unseen = False
        self._shot_by_frame = False
        self._shot_kept = np.zeros(len(queries), dtype=bool)
        self._shot_teaser = np.zeros(len(queries), dtype=bool)
        self._teaser_until = np.full(len(queries), -np.inf)
        self._first_t: float | None = None  # time of the first decided frame
        self._first_kept_at = np.full(len(queries), np.inf)  # budget mode: each query's first kept frame
        self._kept = 0.0  # seconds of ended segments (their union, as they end in time order) ...
        self._kept_until = -math.inf  # ... up to here
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
    def shot_values(self) -> list[tuple[float, float]]:
        """(value per second, seconds) of every shot decided so far (decisions by shots), best first."""
        return [(-negative_value, seconds) for negative_value, seconds in self._shot_values]

    @property
    def segments(self) -> list[Segment]:
        """All finished segments so far, in start order."""
        return list(self._segments)

    def push(self, t: float, relevance: np.ndarray, embedding: np.ndarray | None = None) -> list[HighlightEvent]:
        """One sampled frame: media time `t` (increasing), one relevance logit per query and, optionally, the
        frame's embedding (budget mode with a lookahead then decides by shots: module docstring)."""
        if self._closed:
            raise RuntimeError("push() after close()")
        t, relevance = float(t), np.asarray(relevance, dtype=np.float64)
        if relevance.shape != (len(self.queries),):
            raise ValueError(f"relevance has shape {relevance.shape}, expected ({len(self.queries)},)")
        if not np.isfinite(relevance).all():
            raise ValueError("relevance is not finite")  # one NaN would poison the running statistics for good
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"timestamps must increase: {t} after {self._last_t}")
        if self._by_shots is None:
            self._by_shots = embedding is not None and self.config.budget is not None and self.config.lookahead > 0
        if self._by_shots:
            if embedding is None:
                raise ValueError("an embedding is needed with every frame once the first frame came with one")
            embedding = np.asarray(embedding, dtype=np.float64)
            if self._pending and embedding.shape != self._pending[-1][2].shape or not np.isfinite(embedding).all():
                raise ValueError(f"embedding of shape {embedding.shape} is not finite or not like the frames' before")
        if self._last_t is not None:
            self._intervals.append(t - self._last_t)
        self._last_t = t
        self._stats.add(relevance)
        self._pending.append((t, relevance, embedding if self._by_shots else None))
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
            t_end = self._last_t + self._frame_interval()
        t_end = max(t_end, self._last_t)  # a container's duration may stop short of the last frame's time
        for q, track in enumerate(self._tracks):
            if track is not None and track.closed_at is None:
                events += self._close_track(q, t_end)
            if self._tracks[q] is not None:
                events.append(self._end(q))
        return events

    def _normalised(self, raw: np.ndarray) -> np.ndarray:
        """z of buffered logits (frames, queries) against the current statistics.

        A frame must stand out against the prior and against the stream's own frames alike, so that nothing
        opens merely because the running mean is still the prior (the first seconds of a stream, a
        background far from the prior). Only a frame that passes the absolute gate (min_score > 0) is
        judged against the prior alone: a true match may open a stream before it has a history.
        """
        against_prior, against_history = self._stats.z(raw)
        return np.where(passes_gate(raw, self.config.min_score), against_prior, np.minimum(against_prior, against_history))

    def _decide(self) -> list[HighlightEvent]:
        """Decide about the oldest pending frame: from the best on/off path over every buffered frame, in budget
        mode by its probability or by its shot."""
        t, raw, embedding = self._pending[0]
        if self._first_t is None:
            self._first_t = t
        if self.config.budget is None:
            z = self._normalised(np.array([r for _, r, _ in self._pending]))
            self._on = first_states(z - (self.config.open_threshold + self.config.close_threshold) / 2,
                                    (self.config.open_threshold - self.config.close_threshold) / 2, self._on)
        elif self._by_shots:
            self._on = self._held_to_budget(t, raw, self._shot_states(t))
            self._context.append((t, embedding))
            while self._context[0][0] < t - SHOT_CONTEXT - EPS:
                self._context.popleft()
        else:
            self._on = self._held_to_budget(t, raw, probability(raw) >= MATCH)
        self._pending.popleft()
        scores = probability(raw)
        events: list[HighlightEvent] = []
        for q in range(len(self.queries)):
            events += self._step(q, t, bool(self._on[q]), float(scores[q]))
        return events

    def _level(self, t: float) -> float:
        """The share of time to keep: the budget; with no known end, scaled by how far the kept time is behind
        or ahead of budget x elapsed time."""
        level = self.config.budget
        if self.duration is None:
            surplus = self._kept_time(t) - level * (t - self._first_t)
            level *= float(np.clip(math.exp(-surplus / (level * PACE_HORIZON)), *PACE_LIMITS))
        return level

    def _shot_states(self, t: float) -> np.ndarray:
        """Budget mode by shots: at a cut, how each query decides the shot that starts at t (module docstring);
        else that decision holds. The shot ends at the next cut among the buffered frames, or is known up to the
        last of them (to the stream's end at close())."""
        times = [u for u, _ in self._context] + [u for u, _, _ in self._pending]
        first = len(self._context)  # t's place in the window
        end_t = times[-1] + self._frame_interval()
        cuts = shot_change_points(np.array([e for _, e in self._context] + [e for _, _, e in self._pending]),
                                  end_t - times[0])
        if not first or first in cuts:
            later = cuts[cuts > first]
            stop = int(later[0]) if len(later) else len(times)
            match = probability(np.array([r for _, r, _ in self._pending][: stop - first])).mean(axis=0)
            seconds = (times[stop] if stop < len(times) else end_t) - t
            value = match / max(seconds, EPS)
            seen = len(self._shot_values)
            if self._prior_level is not None:
                on = value >= (SHOT_PRIOR_WEIGHT * self._prior_level + seen * self._value_level(t)) / (SHOT_PRIOR_WEIGHT + seen)
            else:
                on = match >= MATCH if seen < SHOT_WARMUP else value >= self._value_level(t)
            bisect.insort(self._shot_values, (-float(value.max()), seconds))
            self._shot_end_unseen = stop == len(times) and not self._closed
            self._shot_by_frame = self._shot_end_unseen and seconds < SHOT_EVIDENCE - EPS
            self._shot_kept = on
            # A matching shot too long for its value is still announced: min_length seconds from its first
            # matching frame, the shortest a segment can be (an alert needs it; the budget is better spent on
            # shorter shots).
            self._shot_teaser = ~on & (match >= MATCH)
            self._teaser_until[:] = -np.inf
        else:
            self._shot_kept &= self._on  # a kept shot the budget cut short stays cut
        room = self._upper_bound(t) - self._kept_time(t)  # seconds the budget may still keep
        if self._shot_end_unseen and room < self._frame_interval() + self.config.min_length - EPS:
            self._shot_kept[:] = False  # a shot kept before its end was in sight leaves the last min_length s to teasers
        matching = probability(self._pending[0][1]) >= MATCH
        # A teaser starts once the budget has its min_length of room: the paced bound grows as time passes.
        starts = self._shot_teaser & matching & (room >= self.config.min_length - EPS)
        self._teaser_until[starts] = t + self.config.min_length
        self._shot_teaser &= ~starts
        return matching if self._shot_by_frame else self._shot_kept | (t < self._teaser_until - EPS)

    def _value_level(self, t: float) -> float:
        """The value per second at which the shots seen so far, best first, fill the budget's share of their time
        (the greedy knapsack's last pick)."""
        return fill_level(self.shot_values, self._level(t))

    def _upper_bound(self, t: float) -> float:
        """Most seconds the budget may have kept by t: its upper share of the time elapsed plus PACE_HORIZON, and
        of the stream's duration where known."""
        high = BUDGET_RANGE[1] * self.config.budget * (t - self._first_t + PACE_HORIZON)
        return high if self.duration is None else min(high, BUDGET_RANGE[1] * self.config.budget * (self.duration - self._first_t))

    def _held_to_budget(self, t: float, raw: np.ndarray, on: np.ndarray) -> np.ndarray:
        """The decided states, within the budget's range: nothing more is kept once the upper bound is reached,
        less the room held for the queries not kept yet, and over a known duration, once only the time needed to
        reach the lower bound is left, the best-matching query is kept (the user summaries of the protocol fill
        their budget too)."""
        kept = self._kept_time(t)
        upper = self._upper_bound(t) - self._frame_interval() + EPS  # most kept time before t that leaves room for t
        if kept > upper:
            return np.zeros_like(on)
        low = BUDGET_RANGE[0] * self.config.budget * (self.duration - self._first_t) if self.duration is not None else 0.0
        unkept = np.isinf(self._first_kept_at)
        if self.duration is not None and not on.any() and kept + (self.duration - t) < low:
            on = raw >= raw.max()
        else:
            # Each query not yet kept has min_length seconds of the room held for it, and its first min_length
            # seconds may use them: a stream whose first sentence matches all along still announces the others.
            reserve = self.config.min_length * (unkept.sum() - unkept)
            on = on & ((t < self._first_kept_at + self.config.min_length - EPS) | (kept <= upper - reserve))
        self._first_kept_at[on & unkept] = t
        return on

    def _frame_interval(self) -> float:
        """How long a frame lasts: the recent median interval between frames (0 before a second one)."""
        return float(np.median(self._intervals)) if self._intervals else 0.0

    def _kept_time(self, t: float) -> float:
        """Seconds kept before t: the ended segments, and the longest of the tracks still open or in their gap."""
        kept_open = max(
            (min(t, track.closed_at if track.closed_at is not None else t) - max(track.start, self._kept_until)
             for track in self._tracks if track is not None),
            default=0.0,
        )
        return self._kept + max(kept_open, 0.0)

    def _step(self, q: int, t: float, on: bool, score: float) -> list[HighlightEvent]:
        """Query q's segment life cycle, one decided frame."""
        config = self.config
        track = self._tracks[q]
        events: list[HighlightEvent] = []
        if track is not None and track.closed_at is not None:
            if on and t - track.closed_at <= config.merge_gap + EPS:
                track.closed_at = None  # re-opened within the gap: the same segment goes on
            elif t - track.closed_at >= config.merge_gap - EPS:
                events.append(self._end(q))
                track = None
            else:
                return events
        if track is None:
            if not on:
                return events
            track = self._tracks[q] = _Track(start=t, best_score=score, best_t=t)
        elif not on:
            return events + self._close_track(q, t)
        elif score > track.best_score:
            track.best_score, track.best_t = score, t
        if track.id is None:
            if t - track.start >= config.min_length - EPS and track.best_score >= config.min_score:
                events.append(self._confirm(q, t))
        elif track.best_score > track.reported_score and t - track.reported_at >= config.update_interval - EPS:
            events.append(self._report(q, "update", t))
        return events

    def _close_track(self, q: int, t: float) -> list[HighlightEvent]:
        """Query q's open track ends at t (exclusive): drop a candidate too short or below the gate, else hold
        the segment for the merge gap."""
        track = self._tracks[q]
        events: list[HighlightEvent] = []
        if track.id is None:
            if t - track.start < self.config.min_length - EPS or track.best_score < self.config.min_score:
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
        self._kept += max(0.0, segment.end - max(segment.start, self._kept_until))
        self._kept_until = max(self._kept_until, segment.end)
        bisect.insort(self._segments, segment, key=lambda s: s.start)
        return self._event("end", q, track, end=track.closed_at)

    def _event(self, kind: str, q: int, track: _Track, end: float | None = None) -> HighlightEvent:
        return HighlightEvent(
            kind, track.id, self.stream, track.start, end, track.best_score, self.queries[q], q, track.best_t
        )
