"""Tests of reppo.analysis.stats against values computed by hand, and of its rliable mode,
performance profiles and probability of improvement against the `rliable` package itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from reppo.analysis import curves as learning_curves
from reppo.analysis import profiles as score_profiles
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
    out = learning_curves.step_interpolate([10, 20, 30], [1.0, 2.0, 3.0], [5, 10, 15, 30, 40])
    np.testing.assert_array_equal(out, [np.nan, 1.0, 1.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="increasing"):
        learning_curves.step_interpolate([10, 10], [1.0, 2.0], [10])


def test_common_grid_spans_where_every_run_has_a_value():
    curves = [[([10, 20, 40], [0, 0, 0])], [([20, 30], [0, 0]), ([5, 30, 50], [0, 0, 0])]]
    np.testing.assert_array_equal(learning_curves.common_grid(curves, 3), [20.0, 25.0, 30.0])
    with pytest.raises(ValueError, match="do not overlap"):
        learning_curves.common_grid([[([1, 2], [0, 0])], [([5, 6], [0, 0])]], 3)


def test_curve_statistic_by_hand():
    # Task 1: one run, task 2: two runs; grid 10, 20.
    curves = [
        [([10, 20], [0.0, 1.0])],
        [([10, 20], [0.5, 0.5]), ([5, 15], [0.1, 0.3])],
    ]
    c = learning_curves.curve_statistic(curves, [10, 20], "mean", reps=300, seed=0)
    # At 10: (0 + (0.5 + 0.1)/2) / 2 = 0.15; at 20: (1 + (0.5 + 0.3)/2) / 2 = 0.7.
    np.testing.assert_allclose(c.value, [0.15, 0.7])
    assert np.all(c.low <= c.value) and np.all(c.value <= c.high)
    # Task 2's runs hold 0.5 and 0.1 at 10: a resample of both averages 0.1, 0.3 or 0.5
    # (probability 1/4, 1/2, 1/4), so the band's ends are the two extremes.
    np.testing.assert_allclose(c.low[0], (0 + 0.1) / 2)
    np.testing.assert_allclose(c.high[0], (0 + 0.5) / 2)


def test_reliable_flags_need_the_rest_of_the_run_above_tau():
    # Crosses at index 1, falls back at 2, crosses again at 3 and stays: reliable from 3 on.
    flags = learning_curves.reliable_flags([0.5, 0.95, 0.8, 0.92, 0.97], tau=0.9)
    np.testing.assert_array_equal(flags, [False, False, False, True, True])
    # Ends below tau: never reliable, though it was above tau most of the time.
    np.testing.assert_array_equal(
        learning_curves.reliable_flags([0.95, 0.99, 0.85], tau=0.9), [False, False, False]
    )
    # Exactly tau counts as reached.
    np.testing.assert_array_equal(learning_curves.reliable_flags([0.9, 1.0], tau=0.9), [True, True])


def test_reliable_performance_fraction_of_runs_on_a_grid():
    steps = [1, 2, 3, 4]
    runs = [
        (steps, [0.5, 0.95, 0.8, 0.92]),  # reliable from step 4
        (steps, [0.95, 0.96, 0.97, 0.99]),  # reliable throughout
        (steps, [0.95, 0.2, 0.3, 0.4]),  # never
        (steps, [0.1, 0.91, 0.93, 0.95]),  # reliable from step 2
    ]
    c = learning_curves.reliable_performance([runs], [1, 2, 3, 4], tau=0.9, reps=500, seed=0)
    np.testing.assert_allclose(c.value, [1 / 4, 2 / 4, 2 / 4, 3 / 4])
    # Monotone: once reliable, a run stays reliable.
    assert np.all(np.diff(c.value) >= 0)
    assert np.all((c.low >= 0) & (c.high <= 1))


# ---- the rliable mode, against rliable itself ------------------------------------------------

# Run x task shapes: N = 230 (the paper's 23 tasks x 10 seeds) and 21 are not multiples of 4,
# 20 and 24 are; one run per task and one task are the edge cases.
SHAPES = [(10, 23), (7, 3), (4, 5), (8, 3), (1, 6), (3, 1), (5, 2)]


def _rliable():
    """rliable's metrics and library modules (a dev dependency; a failure, not a skip)."""
    try:
        from rliable import library, metrics
    except Exception as e:  # arch (rliable's dependency) fails with TypeError on pandas >= 3
        pytest.fail(f"rliable cannot be imported ({type(e).__name__}: {e}); install the dev "
                    "extra: pip install -e '.[dev]'")
    return library, metrics


def _scores(shape, seed=0):
    """Random scores in [0, 1.2] (some above the optimality-gap target) with ties."""
    m = np.random.default_rng(seed).uniform(0.0, 1.2, size=shape)
    m[0, 0] = m[-1, -1]  # a tie across tasks
    m.flat[m.size // 2] = 1.0  # a score at gamma exactly
    return m


def _rliable_statistics(metrics):
    return {
        "iqm": metrics.aggregate_iqm,
        "median": metrics.aggregate_median,
        "mean": metrics.aggregate_mean,
        "optimality_gap": metrics.aggregate_optimality_gap,
    }


@pytest.mark.parametrize("shape", SHAPES)
def test_rliable_mode_point_estimates_equal_rliable(shape):
    _, metrics = _rliable()
    m = _scores(shape)
    per_task = [m[:, t] for t in range(m.shape[1])]  # the same scores as a list of tasks
    for name, fn in _rliable_statistics(metrics).items():
        expected = float(fn(m))
        assert stats.aggregate(m, name, mode="rliable") == pytest.approx(expected, rel=1e-12,
                                                                          abs=1e-15), name
        assert stats.aggregate(per_task, name, mode="rliable") == pytest.approx(
            expected, rel=1e-12, abs=1e-15), name
    assert stats.iqm(m, mode="rliable") == pytest.approx(trim_mean(m.ravel(), 0.25), rel=1e-12)
    assert stats.optimality_gap(m, 0.8, mode="rliable") == pytest.approx(
        float(metrics.aggregate_optimality_gap(m, 0.8)), rel=1e-12)


def test_rliable_iqm_by_hand():
    # 5 scores: int(1.25) = 1 cut from each end, mean(0, 1, 1) = 2/3; weighted mode: 0.7.
    assert stats.iqm([[0, 0, 1, 1, 1]], mode="rliable") == pytest.approx(2 / 3)
    assert stats.iqm([[0, 0, 1, 1, 1]]) == pytest.approx(0.7)
    # 3 runs x 2 tasks: sorted .1 .3 .6 .8 .9 .95, int(1.5) = 1 cut: mean(.3, .6, .8, .9).
    m = np.array([[0.9, 0.8], [0.6, 0.95], [0.3, 0.1]])
    assert stats.iqm(m, mode="rliable") == pytest.approx(0.65)
    # The median of the task means .6 and .61667, not the pooled median (.6 + .8) / 2.
    assert stats.median(m, mode="rliable") == pytest.approx((0.6 + 1.85 / 3) / 2)
    assert stats.median(m) == pytest.approx(0.7)


@pytest.mark.parametrize("shape", [(10, 23), (7, 3)])
def test_rliable_mode_intervals_agree_with_rliable(shape):
    library, metrics = _rliable()
    m = _scores(shape, seed=1)
    fns = _rliable_statistics(metrics)
    np.random.seed(0)  # rliable's resampling draws from numpy's global generator
    points, intervals = library.get_interval_estimates(
        {"a": m}, lambda x: np.array([fns[name](x) for name in stats.STATISTICS]), reps=2000
    )
    ours = stats.bootstrap_statistics(m, reps=2000, seed=1, mode="rliable")
    for i, name in enumerate(stats.STATISTICS):
        low, high = intervals["a"][:, i]
        e = ours[name]
        assert e.value == pytest.approx(points["a"][i], rel=1e-12, abs=1e-15)
        assert e.low <= e.value <= e.high and low <= e.value <= high, name
        # Different generators, the same distribution: the ends agree to a fraction of the
        # width (they differ by ~5% with 2000 resamples each).
        tol = 0.25 * (high - low)
        assert abs(e.low - low) <= tol and abs(e.high - high) <= tol, (name, e, low, high)


@pytest.mark.parametrize("shape", [(10, 23), (7, 3), (1, 6)])
@pytest.mark.parametrize("task_means", [False, True])
def test_performance_profile_equals_rliable(shape, task_means):
    library, _ = _rliable()
    m = _scores(shape, seed=2)
    # Thresholds on a grid and at scores exactly (the profile counts scores strictly above).
    taus = np.concatenate([np.linspace(0.0, 1.2, 25), m[:2, 0], [m.mean(axis=0)[0]]])
    np.random.seed(0)
    profiles, intervals = library.create_performance_profile(
        {"a": m}, taus, use_score_distribution=not task_means, reps=2000
    )
    c = score_profiles.performance_profile(m, taus, reps=2000, seed=1, mode="rliable",
                                  task_means=task_means)
    np.testing.assert_array_equal(c.grid, taus)
    np.testing.assert_allclose(c.value, profiles["a"], rtol=0, atol=1e-12)
    # A percentile interval need not contain the point estimate where the profile is at an
    # edge (every task mean above tau: resamples can only fall below), so check the bounds.
    assert np.all((c.low >= 0) & (c.low <= c.high) & (c.high <= 1))
    low, high = intervals["a"]
    # A fraction moves in steps of 1/N (1/T for task means): allow one step and 25% of width.
    step = 1.0 / (m.shape[1] if task_means else m.size)
    tol = 0.25 * (high - low) + step + 1e-12
    assert np.all(np.abs(c.low - low) <= tol) and np.all(np.abs(c.high - high) <= tol)
    # The weighted mode is the same profile when every task has equally many runs.
    weighted = score_profiles.performance_profile(m, taus, reps=200, task_means=task_means)
    np.testing.assert_allclose(weighted.value, profiles["a"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shapes", [((10, 23), (12, 23)), ((7, 3), (5, 3)), ((3, 1), (3, 1))])
def test_probability_of_improvement_equals_rliable(shapes):
    library, metrics = _rliable()
    x, y = _scores(shapes[0], seed=3), _scores(shapes[1], seed=4)
    y[0, 0] = x[1, 0]  # a tie between the methods
    if x.shape == y.shape:
        y[:, 0] = x[:, 0]  # identical runs: rliable's special case, 1/2
    expected = float(metrics.probability_of_improvement(x, y))
    np.random.seed(0)
    points, intervals = library.get_interval_estimates(
        # rliable runs one scipy test per task and resample: 300 resamples for 23 tasks (its
        # interval ends then move by ~5% of the width from seed to seed), 2000 for few tasks,
        # where the statistic takes few values and 300 resamples move the ends more.
        {"xy": [x, y]}, metrics.probability_of_improvement,
        reps=300 if x.shape[1] > 5 else 2000,
    )
    e = score_profiles.probability_of_improvement(x, y, reps=2000, seed=1)
    assert e.value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert e.value == pytest.approx(points["xy"], rel=1e-12)
    assert 0.0 <= e.low <= e.value <= e.high <= 1.0
    low, high = np.ravel(intervals["xy"])
    tol = 0.25 * (high - low) + 1e-12
    assert abs(e.low - low) <= tol and abs(e.high - high) <= tol, (e, low, high)
    # P(Y > X) = 1 - P(X > Y): ties count one half either way.
    reverse = score_profiles.probability_of_improvement(y, x, reps=100)
    assert reverse.value == pytest.approx(1.0 - e.value, rel=1e-12)


def test_probability_of_improvement_by_hand():
    # Task A: X [.9, .6, .3] vs Y [.4, .2]: .9 and .6 beat both, .3 beats .2: 5 of 6 pairs.
    # Task B: X [.5] vs Y [.5]: a tie, 1/2. Mean over tasks (5/6 + 1/2) / 2 = 2/3.
    x = [np.array([0.9, 0.6, 0.3]), np.array([0.5])]
    y = [np.array([0.4, 0.2]), np.array([0.5])]
    e = score_profiles.probability_of_improvement(x, y, reps=500, seed=0)
    assert e.value == pytest.approx(2 / 3)
    assert e.low <= e.value <= e.high
    # Task B never moves (one run each); task A resamples to between 0 (all .3 vs all .4)...
    assert e.low >= 0.25 and e.high <= 0.75 + 1e-12
    with pytest.raises(ValueError, match="X has 2 tasks and Y 1"):
        score_profiles.probability_of_improvement(x, y[:1])


def test_probability_of_improvement_resamples_both_methods():
    # X one run of .5, Y [.2, .8]: a resample of Y is (.2, .2), (.2, .8) or (.8, .8), with
    # P(X > Y) 1, 1/2 or 0 (probability 1/4, 1/2, 1/4): the interval spans [0, 1]. It would
    # collapse to 1/2 if Y's runs were not resampled; the same with the roles swapped.
    fixed, varying = [np.array([0.5])], [np.array([0.2, 0.8])]
    e = score_profiles.probability_of_improvement(fixed, varying, reps=1000, seed=0)
    assert (e.value, e.low, e.high) == (0.5, 0.0, 1.0)
    e = score_profiles.probability_of_improvement(varying, fixed, reps=1000, seed=0)
    assert (e.value, e.low, e.high) == (0.5, 0.0, 1.0)


def test_performance_profile_by_hand():
    # Task A [0, .4] (weight 1/4 each), task B [.8] (1/2); strictly above tau.
    scores = [np.array([0.0, 0.4]), np.array([0.8])]
    c = score_profiles.performance_profile(scores, [0.0, 0.4, 0.8], reps=200)
    np.testing.assert_allclose(c.value, [0.25 + 0.5, 0.5, 0.0])
    # Task means .2 and .8: above 0 both, above .4 only B, above .8 none.
    c = score_profiles.performance_profile(scores, [0.0, 0.4, 0.8], reps=200, task_means=True)
    np.testing.assert_allclose(c.value, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="taus"):
        score_profiles.performance_profile(scores, [])


def test_modes_differ_unless_the_score_count_is_a_multiple_of_four():
    # 10 x 23 = 230 and 7 x 3 = 21 scores: whole-score trimming (rliable) and fractional
    # trimming (weighted) give different IQMs; mean and optimality gap are the same.
    for shape in [(10, 23), (7, 3)]:
        m = _scores(shape, seed=5)
        assert abs(stats.iqm(m, mode="rliable") - stats.iqm(m)) > 1e-6, shape
        for name in ("mean", "optimality_gap"):
            assert stats.aggregate(m, name, mode="rliable") == pytest.approx(
                stats.aggregate(m, name), rel=1e-12), (shape, name)
    # 4 x 5 = 20 and 8 x 3 = 24: the IQMs agree.
    for shape in [(4, 5), (8, 3)]:
        m = _scores(shape, seed=6)
        assert stats.iqm(m, mode="rliable") == pytest.approx(stats.iqm(m), rel=1e-12), shape
        # The medians are defined differently (of task means vs of pooled runs) ...
        assert stats.median(m, mode="rliable") != pytest.approx(stats.median(m))
    # ... and agree only with one run per task, where a task's mean is its run.
    m = _scores((1, 6), seed=7)
    assert stats.median(m, mode="rliable") == pytest.approx(stats.median(m))


def test_both_modes_draw_the_same_resamples():
    # 8 x 3 scores: every statistic but the median is the same function in both modes, so
    # the same resamples give the same intervals.
    m = _scores((8, 3), seed=8)
    weighted = stats.bootstrap_statistics(m, reps=300, seed=4)
    rliable = stats.bootstrap_statistics(m, reps=300, seed=4, mode="rliable")
    for name in ("iqm", "mean", "optimality_gap"):
        assert rliable[name].low == pytest.approx(weighted[name].low, rel=1e-12)
        assert rliable[name].high == pytest.approx(weighted[name].high, rel=1e-12)


def test_rliable_curve_statistic_is_trim_mean_at_every_grid_point():
    rng = np.random.default_rng(9)
    steps = [10, 20, 30]
    curves = [[(steps, rng.uniform(size=3)) for _ in range(7)] for _ in range(3)]
    c = learning_curves.curve_statistic(curves, steps, "iqm", reps=200, seed=0, mode="rliable")
    for g in range(3):
        column = [y[g] for task in curves for _, y in task]
        assert c.value[g] == pytest.approx(trim_mean(column, 0.25), rel=1e-12)
    assert np.all(c.low <= c.value) and np.all(c.value <= c.high)
    weighted = learning_curves.curve_statistic(curves, steps, "iqm", reps=200, seed=0)
    assert np.all(np.abs(weighted.value - c.value) > 1e-9)  # 21 runs: not a multiple of 4


def test_rliable_mode_refuses_unequal_run_counts():
    scores = [np.array([0.1, 0.2, 0.3]), np.array([0.5]), np.array([0.4, 0.6, 0.7])]
    message = r"3 runs: tasks 0, 2; 1 run: task 1\).*mode='weighted'"
    for call in (
        lambda: stats.iqm(scores, mode="rliable"),
        lambda: stats.bootstrap_statistics(scores, reps=10, mode="rliable"),
        lambda: score_profiles.performance_profile(scores, [0.5], reps=10, mode="rliable"),
        lambda: learning_curves.curve_statistic(
            [[([1], [v]) for v in task] for task in scores], [1], "iqm", reps=10, mode="rliable"
        ),
    ):
        with pytest.raises(stats.UnequalRunCounts, match=message) as info:
            call()
        assert isinstance(info.value, ValueError)
    with pytest.raises(stats.UnequalRunCounts) as info:
        stats.mean(scores, mode="rliable")
    assert info.value.counts == (3, 1, 3)
    # The weighted mode takes them.
    assert stats.mean(scores) == pytest.approx((0.2 + 0.5 + (0.4 + 0.6 + 0.7) / 3) / 3)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown mode 'scipy'; choose one of weighted, rliable"):
        stats.iqm([[1.0]], mode="scipy")
