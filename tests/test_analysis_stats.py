"""Tests of reppo.analysis.stats against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from reppo.analysis import stats

# ---- point estimates --------------------------------------------------------------------------


def test_iqm_of_one_to_eight_is_mean_of_middle_four():
    # 8 equal weights of 1/8: [1, 2] below 25%, [7, 8] above 75%; mean(3, 4, 5, 6) = 4.5.
    assert stats.iqm([np.arange(1, 9)]) == pytest.approx(4.5)
    # The same scores as a (runs, tasks) matrix pool to the same sample.
    matrix = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=float)
    assert stats.iqm(matrix) == pytest.approx(4.5)


def test_iqm_fractional_weights_at_the_cuts():
    # 5 scores, each 0.2 of the mass: x2 in (0.2, 0.4] keeps 0.15, x3 0.2, x4 0.15 (of 0.5).
    assert stats.iqm([[1, 2, 3, 4, 100]]) == pytest.approx((2 * 0.15 + 3 * 0.2 + 4 * 0.15) / 0.5)
    # Where scipy drops whole scores the two conventions differ: (0*.15 + 1*.2 + 1*.15)/.5.
    assert stats.iqm([[0, 0, 1, 1, 1]]) == pytest.approx(0.7)
    assert trim_mean([0, 0, 1, 1, 1], 0.25) == pytest.approx(2 / 3)


def test_iqm_equals_scipy_trim_mean_when_n_divisible_by_four():
    x = np.random.default_rng(3).normal(size=(6, 2))  # 12 scores
    assert stats.iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25))


def test_median_mean_and_optimality_gap():
    assert stats.median([np.arange(1, 9)]) == pytest.approx(4.5)
    assert stats.median([[5, 1, 3]]) == pytest.approx(3.0)
    assert stats.mean([[0.5, 1.2, 0.9, 1.0]]) == pytest.approx(0.9)
    # max(0, 1 - x): 0.5, 0, 0.1, 0 -> mean 0.15; above-target scores do not compensate.
    assert stats.optimality_gap([[0.5, 1.2, 0.9, 1.0]]) == pytest.approx(0.15)
    assert stats.optimality_gap([[0.5, 1.2, 0.9, 1.0]], gamma=0.8) == pytest.approx(0.3 / 4)


def test_tasks_with_unequal_run_counts_weigh_equally():
    # Task A has two runs (weight 1/4 each), task B one (weight 1/2).
    scores = [np.array([0.0, 0.4]), np.array([0.8])]
    assert stats.mean(scores) == pytest.approx((0.2 + 0.8) / 2)
    # Sorted: 0 on (0, .25], .4 on (.25, .5], .8 on (.5, 1]: IQM (.4*.25 + .8*.25) / .5.
    assert stats.iqm(scores) == pytest.approx(0.6)
    # 0.5 is the boundary between .4 and .8: the median is their midpoint.
    assert stats.median(scores) == pytest.approx(0.6)
    assert stats.optimality_gap(scores) == pytest.approx(0.25 * 1 + 0.25 * 0.6 + 0.5 * 0.2)


@pytest.mark.parametrize(
    "bad, match",
    [([], "no tasks"), ([[1.0], []], "task 1 has no runs"), ([[np.nan]], "non-finite"),
     (np.zeros(3), "shape")],
)
def test_bad_scores_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        stats.iqm(bad)


def test_unknown_statistic_raises():
    with pytest.raises(ValueError, match="unknown statistic 'max'"):
        stats.aggregate([[1.0]], "max")


# ---- stratified bootstrap ---------------------------------------------------------------------


def test_one_run_per_task_collapses_to_the_point_estimate():
    scores = np.array([[0.2, 0.9, 0.5]])  # 1 run x 3 tasks
    for name, e in stats.bootstrap_statistics(scores, reps=200).items():
        point = stats.aggregate(scores, name)
        assert e.value == pytest.approx(point)
        assert e.low == pytest.approx(point) and e.high == pytest.approx(point)


def test_stratified_resample_keeps_per_task_counts_and_membership():
    scores = [np.array([1.0, 2.0, 3.0]), np.array([10.0]), np.array([20.0, 30.0])]
    resampled = stats.stratified_resample(scores, reps=50, rng=np.random.default_rng(0))
    assert [r.shape for r in resampled] == [(50, 3), (50, 1), (50, 2)]
    assert set(np.unique(resampled[0])) <= {1.0, 2.0, 3.0}
    assert np.all(resampled[1] == 10.0)
    assert set(np.unique(resampled[2])) <= {20.0, 30.0}


def test_bootstrap_mean_takes_only_stratified_values():
    # A = [0, 1] resamples to a mean of 0, .5 or 1 (prob 1/4, 1/2, 1/4); B = [10] always 10.
    # The overall mean is (A + 10) / 2 in {5, 5.25, 5.5}; a pooled (unstratified) bootstrap
    # would also produce resamples with three 10s or none.
    scores = [np.array([0.0, 1.0]), np.array([10.0])]
    e = stats.bootstrap_ci(scores, "mean", reps=2000, seed=1)
    assert e.value == pytest.approx(5.25)
    # Each of the extremes has probability 1/4 > 2.5%, so the interval spans exactly them.
    assert (e.low, e.high) == (pytest.approx(5.0), pytest.approx(5.5))


def test_ci_contains_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(7)
    scores = rng.uniform(0.0, 1.0, size=(10, 4))
    first = stats.bootstrap_statistics(scores, reps=500, seed=3)
    again = stats.bootstrap_statistics(scores, reps=500, seed=3)
    assert first == again
    for e in first.values():
        assert e.low <= e.value <= e.high
        assert e.low < e.high


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reps"):
        stats.bootstrap_ci([[1.0]], "mean", reps=0)
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci([[1.0]], "mean", confidence=1.0)


# ---- curves -----------------------------------------------------------------------------------


def test_step_interpolate_takes_last_point_at_or_before():
    out = stats.step_interpolate([10, 20, 30], [1.0, 2.0, 3.0], [5, 10, 15, 30, 40])
    np.testing.assert_array_equal(out, [np.nan, 1.0, 1.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="increasing"):
        stats.step_interpolate([10, 10], [1.0, 2.0], [10])


def test_common_grid_spans_where_every_run_has_a_value():
    curves = [[([10, 20, 40], [0, 0, 0])], [([20, 30], [0, 0]), ([5, 30, 50], [0, 0, 0])]]
    np.testing.assert_array_equal(stats.common_grid(curves, 3), [20.0, 25.0, 30.0])
    with pytest.raises(ValueError, match="do not overlap"):
        stats.common_grid([[([1, 2], [0, 0])], [([5, 6], [0, 0])]], 3)


def test_curve_statistic_by_hand():
    # Task 1: one run, task 2: two runs; grid 10, 20.
    curves = [
        [([10, 20], [0.0, 1.0])],
        [([10, 20], [0.5, 0.5]), ([5, 15], [0.1, 0.3])],
    ]
    c = stats.curve_statistic(curves, [10, 20], "mean", reps=300, seed=0)
    # At 10: (0 + (0.5 + 0.1)/2) / 2 = 0.15; at 20: (1 + (0.5 + 0.3)/2) / 2 = 0.7.
    np.testing.assert_allclose(c.value, [0.15, 0.7])
    assert np.all(c.low <= c.value) and np.all(c.value <= c.high)
    # Task 2's runs hold 0.5 and 0.1 at 10: a resample of both averages 0.1, 0.3 or 0.5
    # (probability 1/4, 1/2, 1/4), so the band's ends are the two extremes.
    np.testing.assert_allclose(c.low[0], (0 + 0.1) / 2)
    np.testing.assert_allclose(c.high[0], (0 + 0.5) / 2)


def test_reliable_flags_need_the_rest_of_the_run_above_tau():
    # Crosses at index 1, falls back at 2, crosses again at 3 and stays: reliable from 3 on.
    flags = stats.reliable_flags([0.5, 0.95, 0.8, 0.92, 0.97], tau=0.9)
    np.testing.assert_array_equal(flags, [False, False, False, True, True])
    # Ends below tau: never reliable, though it was above tau most of the time.
    np.testing.assert_array_equal(
        stats.reliable_flags([0.95, 0.99, 0.85], tau=0.9), [False, False, False]
    )
    # Exactly tau counts as reached.
    np.testing.assert_array_equal(stats.reliable_flags([0.9, 1.0], tau=0.9), [True, True])


def test_reliable_performance_fraction_of_runs_on_a_grid():
    steps = [1, 2, 3, 4]
    runs = [
        (steps, [0.5, 0.95, 0.8, 0.92]),  # reliable from step 4
        (steps, [0.95, 0.96, 0.97, 0.99]),  # reliable throughout
        (steps, [0.95, 0.2, 0.3, 0.4]),  # never
        (steps, [0.1, 0.91, 0.93, 0.95]),  # reliable from step 2
    ]
    c = stats.reliable_performance([runs], [1, 2, 3, 4], tau=0.9, reps=500, seed=0)
    np.testing.assert_allclose(c.value, [1 / 4, 2 / 4, 2 / 4, 3 / 4])
    # Monotone: once reliable, a run stays reliable.
    assert np.all(np.diff(c.value) >= 0)
    assert np.all((c.low >= 0) & (c.high <= 1))
