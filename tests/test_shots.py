"""KTS, knapsack and the protocol's shot selection on hand-worked cases."""

from __future__ import annotations

import numpy as np

from cliplive.stream.shots import kts, knapsack, select_shots, shot_bounds


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


def test_select_shots_keeps_the_best_shots_within_the_budget():
    scores = np.array([0.1] * 10 + [0.9] * 5 + [0.2] * 10 + [0.8] * 5 + [0.5] * 70)
    shots = shot_bounds(np.array([10, 15, 25, 30]), 100)
    keep = select_shots(scores, shots, budget=0.15)
    assert keep.sum() <= 15
    np.testing.assert_array_equal(np.flatnonzero(keep), list(range(10, 15)) + list(range(25, 30)))
    assert not select_shots(scores, shots, budget=0.0).any()
    flat = select_shots(np.ones(20), shot_bounds(np.array([5, 10, 15]), 20), budget=0.5)
    assert flat.sum() == 10  # equal scores: any shots, exactly filling the budget
