"""KTS, knapsack and the protocol's shot selection on hand-worked cases."""

from __future__ import annotations

import itertools

import numpy as np

from cliplive.models.shots import kts, knapsack, select_shots, shot_bounds


def blocks(lengths, dim=16, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(lengths), dim))
    x = np.concatenate([np.repeat(centres[i : i + 1], n, axis=0) for i, n in enumerate(lengths)])
    return x + noise * rng.normal(size=x.shape)


def test_kts_finds_exactly_the_block_boundaries():
    np.testing.assert_array_equal(kts(blocks([30, 50, 20]), max_change_points=10), [30, 80])
    np.testing.assert_array_equal(kts(blocks([5, 5, 5, 5], seed=3), max_change_points=8), [5, 10, 15])


def test_kts_prefers_no_cut_on_one_block_and_handles_tiny_inputs():
    assert kts(blocks([40]), max_change_points=5).size == 0
    assert kts(np.ones((1, 4)), 3).size == 0
    assert kts(blocks([30, 30]), 0).size == 0


def test_kts_min_segment_forbids_short_shots():
    features = blocks([20, 2, 20])
    np.testing.assert_array_equal(kts(features, max_change_points=5), [20, 22])
    cps = kts(features, max_change_points=5, min_segment=5)
    assert len(cps) >= 1 and np.diff(np.concatenate([[0], cps, [42]])).min() >= 5
    assert kts(blocks([3, 3]), max_change_points=5, min_segment=4).size == 0  # no two shots of 4 fit in 6


def test_kts_matches_exhaustive_search_of_the_cpd_auto_objective():
    # cpd_auto: least mean within-segment scatter + vmax * m / (2n) * (log(n / m) + 1), over all cuttings.
    rng = np.random.default_rng(1)
    for _ in range(40):
        n, m, lmin = int(rng.integers(2, 9)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        vmax = float(rng.choice([0.05, 0.3, 1.0]))
        x = rng.normal(size=(n, 3)) + 2 * rng.normal(size=3)
        assert list(kts(x, m, vmax, lmin)) == exhaustive_kts(x, m, vmax, lmin)


def exhaustive_kts(features, max_change_points, vmax, min_segment):
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    n = len(x)

    def scatter(a, b):
        gram = x[a:b] @ x[a:b].T
        return np.trace(gram) - gram.sum() / (b - a)

    best_cost, best = np.inf, []
    for m in range(max_change_points + 1):
        for points in itertools.combinations(range(1, n), m):
            edges = [0, *points, n]
            if min(np.diff(edges)) < min_segment:
                continue
            penalty = vmax * m / (2 * n) * (np.log(n / m) + 1) if m else 0.0
            cost = sum(scatter(a, b) for a, b in zip(edges, edges[1:])) / n + penalty
            if cost < best_cost - 1e-12:
                best_cost, best = cost, list(points)
    return best


def test_kts_on_long_sequences_pools_first_and_stays_close():
    cps = kts(blocks([4000, 3000]), max_change_points=4)
    assert len(cps) == 1 and abs(int(cps[0]) - 4000) <= 3


def test_shot_bounds():
    np.testing.assert_array_equal(shot_bounds(np.array([3, 7]), 10), [[0, 3], [3, 7], [7, 10]])
    np.testing.assert_array_equal(shot_bounds(np.array([], int), 4), [[0, 4]])


def test_knapsack_is_exact_where_greedy_by_ratio_fails():
    # Ratios 6, 5, 4: greedy takes items 0 and 1 (value 160, weight 30); the optimum is 1 and 2 (220, 50).
    assert knapsack([60, 100, 120], [10, 20, 30], 50) == [1, 2]
    assert knapsack([1, 2, 3], [4, 5, 6], 3) == []
    assert knapsack([5, 4, 3], [1, 1, 1], 0) == []
    assert knapsack([3, 3], [2, 2], 4) == [0, 1]


def test_knapsack_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    for _ in range(30):
        count = int(rng.integers(1, 8))
        values, weights, capacity = rng.uniform(0, 1, count), rng.integers(1, 10, count), int(rng.integers(0, 25))
        chosen = knapsack(values, weights, capacity)
        assert weights[chosen].sum() <= capacity
        best = max(values[list(s)].sum() for k in range(count + 1) for s in itertools.combinations(range(count), k)
                   if weights[list(s)].sum() <= capacity)
        assert values[chosen].sum() == best


def test_select_shots_keeps_the_best_shots_within_the_budget():
    scores = np.array([0.1] * 10 + [0.9] * 5 + [0.2] * 10 + [0.8] * 5 + [0.5] * 70)
    shots = shot_bounds(np.array([10, 15, 25, 30]), 100)
    keep = select_shots(scores, shots, budget=0.15)
    assert keep.sum() <= 15
    np.testing.assert_array_equal(np.flatnonzero(keep), list(range(10, 15)) + list(range(25, 30)))
    assert not select_shots(scores, shots, budget=0.0).any()
    flat = select_shots(np.ones(20), shot_bounds(np.array([5, 10, 15]), 20), budget=0.5)
    assert flat.sum() == 10  # equal scores: any shots, exactly filling the budget
    assert not select_shots(np.array([0.7]), shot_bounds(np.array([], int), 1), budget=0.15).any()  # 0 frames fit
    assert select_shots(np.array([0.7]), shot_bounds(np.array([], int), 1), budget=1.0).all()


def test_shot_summary_segments_have_the_online_segments_keys(h264_with_audio, tiny_clip):
    """`--shots` and online summaries list segments of one shape (README: Summary JSON), ids included."""
    from cliplive.stream.segmenter import SegmenterConfig
    from cliplive.stream.summarize import SummaryRequest, summarize

    anything = SegmenterConfig(open_threshold=-50, close_threshold=-50, min_length=0.0, min_score=0.0)  # random weights: open at once
    request = SummaryRequest(str(h264_with_audio), ["a test pattern"], budget=None, segmenter=anything)
    online = summarize(request, tiny_clip)["segments"]
    shots = summarize(SummaryRequest(str(h264_with_audio), ["a test pattern"], shots=True), tiny_clip)["segments"]
    assert online and shots
    assert {frozenset(s) for s in shots} == {frozenset(s) for s in online} == {frozenset(online[0])}
    assert [s["id"] for s in shots] == [f"{h264_with_audio.name}-{i}" for i in range(1, len(shots) + 1)]
