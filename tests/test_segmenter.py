"""The online segmenter on crafted relevance sequences: hysteresis, min length, gap merging, normalisation,
lookahead, budget mode, close(), and every segment's event life cycle."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from cliplive.stream.events import HighlightEvent
from cliplive.stream.segmenter import OnlineSegmenter, SegmenterConfig

FPS = 2.0
# A prior worth a billion frames: normalisation is frozen at z = logit, so thresholds read in logit units.
PLAIN = SegmenterConfig(prior_mean=0.0, prior_std=1.0, prior_weight=1e9)

Log = list[tuple[float | None, HighlightEvent]]  # (time of the frame whose push emitted it, or None for close())


def signal(n: int, *spans: tuple[float, float], low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """n frames at FPS: `high` inside the [start, end) spans (seconds), `low` elsewhere."""
    t = np.arange(n) / FPS
    values = np.full(n, low)
    for start, end in spans:
        values[(t >= start) & (t < end)] = high
    return values


def run(values, config: SegmenterConfig = PLAIN, times=None, t_end: float | None = None) -> tuple[OnlineSegmenter, Log]:
    """Push every frame, then close; check every segment's life cycle on the way."""
    values = np.asarray(values, float)
    values = values[:, None] if values.ndim == 1 else values
    times = np.arange(len(values)) / FPS if times is None else times
    segmenter = OnlineSegmenter([f"query {q}" for q in range(values.shape[1])], config, stream="test")
    log: Log = [(float(t), e) for t, v in zip(times, values) for e in segmenter.push(float(t), v)]
    log += [(None, e) for e in segmenter.close(t_end)]
    check_life_cycles(log, segmenter)
    return segmenter, log


def check_life_cycles(log: Log, segmenter: OnlineSegmenter) -> None:
    """Per id: one `new` first, `update`s with rising scores, exactly one `end` last; end is null until then."""
    by_id: dict[str, list[HighlightEvent]] = defaultdict(list)
    for _, event in log:
        by_id[event.id].append(event)
    for events in by_id.values():
        assert [e.type for e in events] == ["new"] + ["update"] * (len(events) - 2) + ["end"]
        assert all(e.end is None for e in events[:-1]) and events[-1].end is not None
        assert len({(e.start, e.query_index) for e in events}) == 1
        assert all(a.score < b.score for a, b in zip(events[1:-1], events[2:-1]))
    assert sorted(by_id) == sorted(s.id for s in segmenter.segments)
    assert [s.start for s in segmenter.segments] == sorted(s.start for s in segmenter.segments)


def spans(segmenter: OnlineSegmenter) -> list[tuple[int, float, float]]:
    return [(s.query_index, s.start, s.end) for s in segmenter.segments]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def interval_f1(predicted: list[tuple[float, float]], truth: list[tuple[float, float]]) -> float:
    overlap = sum(max(0.0, min(pe, te) - max(ps, ts)) for ps, pe in predicted for ts, te in truth)
    if overlap <= 0:
        return 0.0
    precision = overlap / sum(e - s for s, e in predicted)
    recall = overlap / sum(e - s for s, e in truth)
    return 2 * precision * recall / (precision + recall)


def ar_noise(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    """Autocorrelated noise, like real per-frame scores."""
    noise = np.empty(n)
    noise[0] = rng.normal(0, sd)
    for i in range(1, n):
        noise[i] = rho * noise[i - 1] + rng.normal(0, sd * math.sqrt(1 - rho**2))
    return noise


def test_step_gives_one_segment_with_new_updates_end_in_order():
    values = signal(60, (10, 15))
    values[20:30] = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.0, 4.0, 4.0, 4.0]  # rising: the best frame improves
    segmenter, log = run(values)
    assert spans(segmenter) == [(0, 10.0, 15.0)]  # [first frame above open, first frame below close)
    # new once it lasted min_length (1 s); updates at most once a second; end once merge_gap (1 s) passed.
    assert [(t, e.type) for t, e in log] == [(11.0, "new"), (12.0, "update"), (13.0, "update"), (16.0, "end")]
    new, update, last_update, end = (e for _, e in log)
    assert new.score == pytest.approx(sigmoid(2.5)) and update.score == pytest.approx(sigmoid(3.5))
    assert last_update.score == pytest.approx(sigmoid(4.0)) and last_update.best_frame_ts == 12.5
    assert (end.start, end.end, end.best_frame_ts) == (10.0, 15.0, 12.5)
    assert end.score == pytest.approx(sigmoid(4.0))
    assert (end.id, end.stream, end.query, end.query_index) == ("test-1", "test", "query 0", 0)
    assert segmenter.segments[0].id == "test-1"


def test_dip_between_close_and_open_does_not_split():
    values = signal(60, (10, 18))
    values[24:28] = 0.5  # between close (0) and open (1) for 2 s
    segmenter, log = run(values)
    assert spans(segmenter) == [(0, 10.0, 18.0)]
    assert [e.type for _, e in log].count("new") == 1


@pytest.mark.parametrize("dip_frames,merged", [(1, True), (2, True), (3, False)])
def test_dip_below_close_merges_within_merge_gap(dip_frames, merged):
    dip_end = 14 + dip_frames / FPS
    segmenter, log = run(signal(60, (10, 14), (dip_end, 20)))  # merge_gap 1 s: up to 2 frames below
    ends = [(t, e) for t, e in log if e.type == "end"]
    if merged:
        assert spans(segmenter) == [(0, 10.0, 20.0)]
        assert [t for t, _ in ends] == [21.0]  # held until merge_gap passed after the *last* close
    else:
        assert spans(segmenter) == [(0, 10.0, 14.0), (0, dip_end, 20.0)]
        assert [e.id for _, e in ends] == ["test-1", "test-2"]
        assert ends[0][0] == 15.0


def test_min_length_drops_blips_and_backdates_new():
    config = SegmenterConfig(prior_mean=0.0, prior_std=1.0, prior_weight=1e9, min_length=2.0)
    segmenter, log = run(signal(80, (5, 6.5), (20, 30)), config)  # a 1.5 s blip, a 10 s stretch
    assert spans(segmenter) == [(0, 20.0, 30.0)]
    t_new, new = log[0]
    assert (t_new, new.type, new.start) == (22.0, "new", 20.0)  # emitted once it lasted 2 s, starting at 20


def test_candidate_that_closes_at_min_length_is_kept():
    segmenter, log = run(signal(30, (5, 6)))  # two frames: [5, 6) lasts exactly min_length
    assert spans(segmenter) == [(0, 5.0, 6.0)]
    assert [(t, e.type) for t, e in log] == [(6.0, "new"), (7.0, "end")]


def test_queries_are_segmented_independently():
    values = np.stack([signal(80, (5, 10), (20, 25)), signal(80, (8, 15))], axis=1)
    segmenter, _ = run(values)
    assert spans(segmenter) == [(0, 5.0, 10.0), (1, 8.0, 15.0), (0, 20.0, 25.0)]
    assert [s.query for s in segmenter.segments] == ["query 0", "query 1", "query 0"]
    assert [s.id for s in segmenter.segments] == ["test-1", "test-2", "test-3"]  # numbered as confirmed


def test_normalisation_adapts_to_each_querys_offset():
    """Background +1 (3 above the prior) and -7 (5 below), each with a +3 bump."""
    rng = np.random.default_rng(0)
    t = np.arange(400) / FPS
    values = np.stack([1 + rng.normal(0, 0.1, 400), -7 + rng.normal(0, 0.1, 400)], axis=1)
    values[(t >= 120) & (t < 130), 0] += 3
    values[(t >= 150) & (t < 160), 1] += 3
    segmenter, _ = run(values, SegmenterConfig())
    warm_up, *found = spans(segmenter)
    # At first the prior rules: a background at logit +1 looks relevant, so the high query opens at once.
    # That segment ends once its running mean has caught up with the background (here within 100 s).
    assert warm_up[:2] == (0, 0.0) and warm_up[2] < 100
    assert found == [(0, 120.0, pytest.approx(130.0, abs=0.5)), (1, 150.0, pytest.approx(160.0, abs=0.5))]
    # Plain thresholding cannot: the high query is relevant throughout, the low one never.
    frozen, _ = run(values, SegmenterConfig(prior_weight=1e9))
    assert spans(frozen) == [(0, 0.0, 200.0)]


def noisy_bumps(seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    truth = [(40.0, 50.0), (120.0, 135.0), (200.0, 210.0)]
    return signal(600, *truth, low=-3.0, high=0.0) + rng.normal(0, 1.5, 600), truth


def test_lookahead_smooths_noise_and_waits_for_its_frames():
    values, truth = noisy_bumps()
    causal, _ = run(values, SegmenterConfig())
    smoothed, log = run(values, SegmenterConfig(lookahead=1.0))
    f1 = [interval_f1([(s.start, s.end) for s in seg.segments], truth) for seg in (causal, smoothed)]
    assert len(smoothed.segments) <= len(truth) + 1 and len(causal.segments) > 3 * len(truth)  # 4 vs 15
    assert f1[1] > f1[0] + 0.1 and f1[1] > 0.85  # 0.90 vs 0.77
    # No event is emitted before the frames its decision needs (decided frame + lookahead) arrived.
    for t, e in log:
        if t is None:
            continue
        decided = {"new": e.start + 1.0, "update": e.best_frame_ts, "end": (e.end or 0) + 1.0}[e.type]
        assert t >= decided + 1.0


def test_lookahead_decides_a_frame_once_one_at_least_lookahead_later_arrives():
    times = [0.0, 0.4, 1.1, 1.5, 2.7, 3.0, 3.2, 4.5, 6.0]  # irregular
    values = np.full(len(times), -3.0)
    values[5] = 30.0  # at 3.0; its window [t - 1, t + 1] mean lifts 2.7, 3.0 and 3.2 above open
    config = SegmenterConfig(prior_mean=0.0, prior_std=1.0, prior_weight=1e9, lookahead=1.0, min_length=0.0)
    segmenter, log = run(values, config, times=times)
    assert spans(segmenter) == [(0, 2.7, 4.5)]
    # 2.7 is decided when 4.5 (>= 3.7) arrives; the close at 4.5 only once 6.0 is decided, at close().
    assert [(t, e.type) for t, e in log] == [(4.5, "new"), (None, "end")]


@pytest.mark.parametrize("budget", [0.05, 0.15, 0.3])
def test_budget_keeps_about_that_fraction_of_time(budget):
    rng = np.random.default_rng(1)
    n = 2000
    values = np.stack([-3 + ar_noise(rng, n, 0.9, 0.5) for _ in range(2)], axis=1)
    for k, start in enumerate(rng.integers(0, n - 20, 10)):
        values[start : start + 20, k % 2] += 3
    # Fixed thresholds are ignored in budget mode: with these, nothing would ever open.
    segmenter, _ = run(values, SegmenterConfig(budget=budget, open_threshold=100.0, close_threshold=99.0))
    covered = np.zeros(n, bool)
    for s in segmenter.segments:
        covered[int(s.start * FPS) : int(s.end * FPS)] = True  # any query's segment counts as kept
    assert 0.5 * budget <= covered.mean() <= 1.5 * budget


def test_close_ends_open_segments_at_t_end():
    values = signal(16, (5, 8))  # still relevant on the last frame (7.5)
    segmenter, log = run(values)
    assert spans(segmenter) == [(0, 5.0, 8.0)]  # last frame + the median frame interval
    assert [(t, e.type) for t, e in log] == [(6.0, "new"), (None, "end")]
    segmenter, _ = run(values, t_end=9.25)
    assert spans(segmenter) == [(0, 5.0, 9.25)]


def test_close_emits_ends_held_for_the_merge_gap():
    segmenter, log = run(signal(17, (5, 8)))  # closes at 8.0, the last frame: its end is still held
    assert [(t, e.type) for t, e in log] == [(6.0, "new"), (None, "end")]
    assert spans(segmenter) == [(0, 5.0, 8.0)]


def test_close_decides_the_lookahead_frames_and_drops_short_candidates():
    values = signal(24, (10, 12), high=7.0)  # the last 2 s, still in the 2 s lookahead at close()
    config = SegmenterConfig(prior_mean=0.0, prior_std=1.0, prior_weight=1e9, lookahead=2.0)
    segmenter, log = run(values, config)
    assert [(t, e.type) for t, e in log] == [(None, "new"), (None, "end")]
    assert spans(segmenter) == [(0, 9.5, 12.0)]
    # A candidate shorter than min_length at close() is dropped without events.
    segmenter, log = run(signal(21, (10, 11)))
    assert log == [] and segmenter.segments == []


def test_close_is_final():
    segmenter = OnlineSegmenter(["q"], PLAIN)
    segmenter.push(0.0, np.array([3.0]))
    segmenter.push(0.5, np.array([3.0]))
    assert [e.type for e in segmenter.close()] == ["new", "end"]
    assert segmenter.close() == []
    with pytest.raises(RuntimeError):
        segmenter.push(2.0, np.array([3.0]))


def test_bad_input_is_refused():
    segmenter = OnlineSegmenter(["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        segmenter.push(0.0, np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        segmenter.push(0.0, np.array([0.0, np.nan]))
    segmenter.push(1.0, np.zeros(2))
    with pytest.raises(ValueError, match="increase"):
        segmenter.push(1.0, np.zeros(2))
    with pytest.raises(ValueError):
        SegmenterConfig(open_threshold=0.0, close_threshold=1.0)
    with pytest.raises(ValueError):
        SegmenterConfig(budget=1.5)


def test_highlighter_switches_queries_mid_stream_closing_open_segments():
    from cliplive.models.scorer import zero_shot
    from cliplive.stream.engine import Highlighter, Queries

    dim = 8
    basis = np.eye(dim, dtype=np.float32)
    highlighter = Highlighter(zero_shot(dim, (10.0, -5.0)), Queries(["a"], basis[:1]), SegmenterConfig(min_length=0.5))
    events = []
    for i in range(10):  # frames matching "a" exactly: a segment opens
        events += highlighter.push_embeddings([i * 0.5], basis[:1])
    assert [e.type for e in events][:1] == ["new"] and events[-1].type != "end"
    switched = highlighter.set_queries(Queries(["b"], basis[1:2]))
    assert [e.type for e in switched] == ["end"] and switched[0].end == 4.5 and switched[0].query == "a"
    later = []
    for i in range(10, 20):  # now frames matching "b"
        later += highlighter.push_embeddings([i * 0.5], basis[1:2])
    assert later and all(e.query == "b" and e.query_index == 0 for e in later)
    assert later[0].start >= 5.0  # the new sentences' segments start after the switch
