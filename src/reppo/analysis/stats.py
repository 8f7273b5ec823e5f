"""Aggregate statistics of normalized scores, with stratified bootstrap confidence intervals.

Everything is numpy; the definitions follow Agarwal et al. (2021), "Deep reinforcement learning
at the edge of the statistical precipice", which the REPPO paper uses for its aggregate figures,
with the conventions below written out because they change the numbers.

Scores. The input is a set of normalized scores, one per run, grouped by task: either a matrix
of shape (runs, tasks) or a list of per-task 1-D arrays when tasks have different numbers of
runs. All four aggregates are functionals of one pooled distribution in which every task carries
the same total mass 1/T, split equally among its n_t runs (weight 1 / (T * n_t) per score). With
equally many runs per task this is the plain pooled sample; with unequal counts a task with
more seeds does not count for more.

Quantile function. Sort the pooled scores x_1 <= ... <= x_N with weights w_i and cumulative
weights c_i = w_1 + ... + w_i (c_0 = 0); score x_i occupies the interval (c_{i-1}, c_i] of the
quantile axis, so the quantile function is Q(u) = x_i for c_{i-1} < u <= c_i.

* IQM (interquartile mean) = 2 * integral of Q(u) over [0.25, 0.75]: the mean of the middle
  50% of the mass. A score whose interval straddles 0.25 or 0.75 counts with the fraction of
  its interval inside. For N = 8 equal scores [1..8] that is the mean of [3, 4, 5, 6] = 4.5;
  for N = 5, x_2 and x_4 count with weight 0.15 / 0.5 = 0.3 each and x_3 with 0.4. This equals
  `scipy.stats.trim_mean(x, 0.25)` (and rliable's IQM) whenever N is a multiple of 4; otherwise
  scipy drops whole scores (floor(N/4) from each end) and the two differ, e.g. [0, 0, 1, 1, 1]:
  ours 0.7, scipy 2/3. The fractional convention makes the IQM change continuously as scores
  are added, and it extends to unequal weights.
* median = (Q(0.5 from below) + Q(0.5 from above)) / 2, which is `np.median` for equal weights.
* mean = sum_i w_i x_i, the mean over tasks of the per-task mean.
* optimality gap = sum_i w_i max(0, gamma - x_i), gamma = 1 by default: how far below the
  target the scores fall on average, with scores above it not compensating.

Two modes. The above is the "weighted" mode, the default of every function here. The
"rliable" mode reproduces the numbers of the `rliable` package (Agarwal et al. 2021,
rliable.metrics), which takes a (runs, tasks) matrix and so needs equally many runs n on every
task (UnequalRunCounts, a ValueError, otherwise); with N = n * T scores:

* IQM = `scipy.stats.trim_mean(scores, 0.25)` over all N scores: sort them, drop int(N / 4)
  whole scores from each end, average the rest. For N a multiple of 4 this is the weighted
  IQM; otherwise the two differ (N = 230, the paper's 23 tasks x 10 seeds: rliable cuts 57
  scores from each end and averages the middle 116; the weighted IQM cuts 57.5, so the 114
  middle scores count fully and the two next to them count half).
* median = the median over tasks of the per-task mean score (rliable's `aggregate_median`),
  not the median of the pooled runs: the two modes' medians generally differ once tasks have
  more than one run (they agree with one run per task).
* mean = the mean over tasks of the per-task mean (the same as the weighted mean).
* optimality gap = gamma - mean(min(score, gamma)) (the same as the weighted one).

Both modes draw the same resamples from the same seed; only the statistic differs.

Performance profile (rliable's `create_performance_profile`, score distributions): at each
threshold tau, the fraction of runs with a score strictly above tau (weighted mode: every task
weighted equally; rliable mode: the plain fraction of the N runs); with `task_means=True`, the
fraction of tasks whose mean score is above tau (rliable's average score distributions).

Probability of improvement (rliable's `probability_of_improvement`): P(X > Y) = the mean over
tasks of the per-task probability that a random run of X scores above a random run of Y, ties
counting 1/2 (the Mann-Whitney U statistic over n_x * n_y). X and Y must cover the same tasks,
in the same order; their run counts may differ. It needs no weights, so it is the same in both
modes; its interval resamples the runs of X and of Y independently, within each task.

Confidence intervals. The stratified bootstrap resamples, independently for every task, that
task's n_t runs with replacement (so every resample keeps the per-task run counts), recomputes
the statistic, and reports the (1-c)/2 and (1+c)/2 quantiles (linear interpolation, numpy's
default) of the `reps` resampled values: a percentile interval. A task with a single run
contributes the same score to every resample, so with one run per task the interval collapses
to the point estimate: the bootstrap measures run-to-run variability only, and cannot invent
it where there is one run.

Curves. A run is a step function of its evaluations: at step s its value is that of the last
evaluation at or before s (undefined before its first one). Aggregates over time evaluate that
step function on a grid and bootstrap every grid point with the same resampled runs.

Reliable performance (REPPO paper, section 4.3): a run is reliably performant at evaluation k
when its score is >= tau at evaluation k and at every later evaluation of the run. Read "once
performance reaches tau and afterwards never falls below it" with "afterwards" meaning up to the
end of training: the backward-looking reading ("reached tau and not fallen below since") would
just be "the current score is >= tau", since the latest evaluation alone satisfies it. Each
run's indicator therefore only switches from 0 to 1, at the start of its final stretch above
tau, and it depends on how long the run was trained: a run that would drop after its last
evaluation still counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

STATISTICS: tuple[str, ...] = ("iqm", "median", "mean", "optimality_gap")
WEIGHTED, RLIABLE = "weighted", "rliable"
# How scores are aggregated over tasks and runs (module docstring): "weighted" gives every task
# the same weight whatever its run count; "rliable" reproduces the rliable package's numbers.
MODES: tuple[str, ...] = (WEIGHTED, RLIABLE)
STATISTIC_LABELS: dict[str, str] = {
    "iqm": "IQM",
    "median": "median",
    "mean": "mean",
    "optimality_gap": "optimality gap",
}
# Tolerance on cumulative weights, which are sums of floats such as 1/3.
_EPS = 1e-9

TaskScores = Sequence[ArrayLike] | np.ndarray
# One run's curve: (x, y) arrays of equal length, x increasing (env steps or wall time).
RunCurve = tuple[ArrayLike, ArrayLike]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class CurveEstimate:
    """A statistic at each point of `grid`, with pointwise confidence bands."""

    grid: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


class UnequalRunCounts(ValueError):
    """Tasks with different numbers of runs, given to the rliable mode, which needs a
    (runs, tasks) matrix. `counts` holds the run count of every task, in order."""

    def __init__(self, counts: Sequence[int]):
        self.counts = tuple(int(n) for n in counts)
        by_count: dict[int, list[int]] = {}
        for t, n in enumerate(self.counts):
            by_count.setdefault(n, []).append(t)
        groups = "; ".join(
            f"{n} run{'s' if n != 1 else ''}: task{'s' if len(ts) > 1 else ''} "
            f"{', '.join(map(str, ts))}"
            for n, ts in sorted(by_count.items(), reverse=True)
        )
        super().__init__(
            "the rliable mode needs the same number of runs on every task (rliable takes a "
            f"(runs, tasks) matrix), but the tasks have different counts ({groups}); use "
            "mode='weighted', which weighs every task equally whatever its run count, or give "
            "every task the same number of runs"
        )


# ---- input ------------------------------------------------------------------------------------


def as_task_scores(scores: TaskScores) -> list[np.ndarray]:
    """Per-task 1-D float arrays from a (runs, tasks) matrix or a list of per-task arrays.

    Only a numpy array is read as a (runs, tasks) matrix; any other sequence is a list with one
    entry per task, so `[[1, 2, 3]]` is one task with three runs.
    Raises ValueError for no tasks, a task without runs, or non-finite scores.
    """
    if isinstance(scores, np.ndarray):
        if scores.ndim != 2:
            raise ValueError(
                f"a score matrix must have shape (runs, tasks), got shape {scores.shape}; pass "
                "a list of per-task arrays for tasks with different numbers of runs"
            )
        tasks = [np.asarray(scores[:, t], dtype=float) for t in range(scores.shape[1])]
    else:
        tasks = [np.asarray(task, dtype=float).reshape(-1) for task in scores]
    if not tasks:
        raise ValueError("no tasks: need at least one task with at least one run")
    for t, task in enumerate(tasks):
        if task.size == 0:
            raise ValueError(f"task {t} has no runs; drop it or add its runs")
        if not np.all(np.isfinite(task)):
            raise ValueError(f"task {t} has non-finite scores: {task.tolist()}")
    return tasks


def check_mode(mode: str) -> str:
    """`mode` if it is one of `MODES`, else ValueError."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_equal_counts(counts: Sequence[int]) -> None:
    """UnequalRunCounts unless every task has the same number of runs (the rliable mode)."""
    if len(set(counts)) > 1:
        raise UnequalRunCounts(counts)


def _weights(counts: Sequence[int]) -> np.ndarray:
    """Weights 1 / (T * n_t), in pooled order, that give every task mass 1/T."""
    return np.concatenate([np.full(n, 1.0 / (len(counts) * n)) for n in counts])


# ---- weighted statistics over the last axis (batched over the leading axes) -----------------


def _sorted(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, axis=-1, kind="stable")
    x = np.take_along_axis(values, order, axis=-1)
    w = np.broadcast_to(weights, values.shape)
    return x, np.take_along_axis(w, order, axis=-1)


def _iqm(values: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    x, w = _sorted(values, weights)
    upper = np.cumsum(w, axis=-1)
    lower = upper - w
    inside = np.clip(np.minimum(upper, 0.75) - np.maximum(lower, 0.25), 0.0, None)
    return (inside * x).sum(axis=-1) / inside.sum(axis=-1)


def _median(values: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    x, w = _sorted(values, weights)
    upper = np.cumsum(w, axis=-1)
    # Q(0.5 from below): the first score whose interval reaches 0.5; from above: the first
    # whose interval extends past it. They differ only when 0.5 is a boundary between two.
    below = np.argmax(upper >= 0.5 - _EPS, axis=-1)
    above = np.argmax(upper > 0.5 + _EPS, axis=-1)
    take = np.take_along_axis
    return 0.5 * (take(x, below[..., None], -1)[..., 0] + take(x, above[..., None], -1)[..., 0])


def _mean(values: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    return (values * weights).sum(axis=-1)


def _optimality_gap(values: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    return (np.maximum(gamma - values, 0.0) * weights).sum(axis=-1)


_KERNELS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "iqm": _iqm,
    "median": _median,
    "mean": _mean,
    "optimality_gap": _optimality_gap,
}


def _kernel(statistic: str) -> Callable[[np.ndarray, np.ndarray, float], np.ndarray]:
    try:
        return _KERNELS[statistic]
    except KeyError:
        raise ValueError(
            f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}"
        ) from None


# ---- rliable statistics of (..., runs, tasks) matrices (batched over the leading axes) ------


def _rliable_iqm(matrix: np.ndarray, gamma: float) -> np.ndarray:
    # scipy.stats.trim_mean(x, 0.25) on the N scores: int(0.25 * N) whole scores are cut from
    # each end (0.25 * N is exact in floating point, so int() is the floor of N / 4).
    flat = matrix.reshape(*matrix.shape[:-2], -1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return np.sort(flat, axis=-1)[..., cut:n - cut].mean(axis=-1)


def _rliable_median(matrix: np.ndarray, gamma: float) -> np.ndarray:
    # rliable's aggregate_median: the median over tasks of the per-task mean score.
    return np.median(matrix.mean(axis=-2), axis=-1)


def _rliable_mean(matrix: np.ndarray, gamma: float) -> np.ndarray:
    return matrix.mean(axis=-2).mean(axis=-1)


def _rliable_optimality_gap(matrix: np.ndarray, gamma: float) -> np.ndarray:
    return gamma - np.minimum(matrix, gamma).mean(axis=(-2, -1))


_RLIABLE_KERNELS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "iqm": _rliable_iqm,
    "median": _rliable_median,
    "mean": _rliable_mean,
    "optimality_gap": _rliable_optimality_gap,
}


def statistic_fn(
    statistic: str, mode: str, counts: Sequence[int], gamma: float
) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """The statistic as a function of per-task arrays of shape (..., n_t), runs last, batched
    over the leading axes (a point estimate for 1-D arrays, resamples for (reps, n_t))."""
    kernel = _kernel(statistic)
    if check_mode(mode) == WEIGHTED:
        weights = _weights(counts)
        return lambda tasks: kernel(np.concatenate(tasks, axis=-1), weights, gamma)
    check_equal_counts(counts)
    rliable_kernel = _RLIABLE_KERNELS[statistic]
    # np.stack(..., axis=-1) lays the tasks out as rliable's (runs, tasks) matrix.
    return lambda tasks: rliable_kernel(np.stack(tasks, axis=-1), gamma)


# ---- point estimates --------------------------------------------------------------------------


def aggregate(
    scores: TaskScores, statistic: str, *, gamma: float = 1.0, mode: str = WEIGHTED
) -> float:
    """One of `STATISTICS` of the scores in `mode` (see the module docstring for both)."""
    tasks = as_task_scores(scores)
    return float(statistic_fn(statistic, mode, [len(t) for t in tasks], gamma)(tasks))


def iqm(scores: TaskScores, *, mode: str = WEIGHTED) -> float:
    """Interquartile mean: with fractional weights at the 25% and 75% cuts ("weighted"), or
    `scipy.stats.trim_mean(scores, 0.25)` over all runs and tasks ("rliable")."""
    return aggregate(scores, "iqm", mode=mode)


def median(scores: TaskScores, *, mode: str = WEIGHTED) -> float:
    """Median of the pooled scores, every task weighted equally ("weighted"), or the median
    over tasks of the per-task mean ("rliable")."""
    return aggregate(scores, "median", mode=mode)


def mean(scores: TaskScores, *, mode: str = WEIGHTED) -> float:
    """Mean over tasks of the per-task mean score."""
    return aggregate(scores, "mean", mode=mode)


def optimality_gap(scores: TaskScores, gamma: float = 1.0, *, mode: str = WEIGHTED) -> float:
    """Mean of max(0, gamma - score), every task weighted equally."""
    return aggregate(scores, "optimality_gap", gamma=gamma, mode=mode)


# ---- stratified bootstrap ---------------------------------------------------------------------


def check_bootstrap_args(reps: int, confidence: float) -> None:
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def resample_indices(
    counts: Sequence[int], reps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """For every task, `reps` resamples of its run indices drawn with replacement: a list of
    integer arrays of shape (reps, n_t), one per task (the stratification)."""
    return [rng.integers(0, n, size=(reps, n)) for n in counts]


def stratified_resample(
    scores: TaskScores, reps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`reps` stratified bootstrap resamples of the scores: one (reps, n_t) array per task,
    whose every row holds n_t scores drawn with replacement from that task's runs only."""
    tasks = as_task_scores(scores)
    indices = resample_indices([len(t) for t in tasks], reps, rng)
    return [task[idx] for task, idx in zip(tasks, indices, strict=True)]


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


def bootstrap_statistics(
    scores: TaskScores,
    statistics: Sequence[str] = STATISTICS,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    gamma: float = 1.0,
    mode: str = WEIGHTED,
) -> dict[str, Estimate]:
    """Point estimates and stratified-bootstrap percentile intervals of several statistics.

    All statistics are computed on the same resamples, so their intervals are consistent with
    each other, and both modes draw the same resamples for the same seed. `seed` is an int or
    a numpy Generator. In the rliable mode every task needs the same number of runs.
    """
    check_bootstrap_args(reps, confidence)
    tasks = as_task_scores(scores)
    counts = [len(t) for t in tasks]
    fns = {name: statistic_fn(name, mode, counts, gamma) for name in statistics}
    rng = np.random.default_rng(seed)
    resampled = stratified_resample(tasks, reps, rng)
    out = {}
    for name, fn in fns.items():
        low, high = percentile_interval(fn(resampled), confidence)
        out[name] = Estimate(float(fn(tasks)), float(low), float(high))
    return out


def bootstrap_ci(
    scores: TaskScores,
    statistic: str,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    gamma: float = 1.0,
    mode: str = WEIGHTED,
) -> Estimate:
    """One statistic with its stratified bootstrap percentile interval."""
    return bootstrap_statistics(
        scores, (statistic,), reps=reps, confidence=confidence, seed=seed, gamma=gamma,
        mode=mode,
    )[statistic]
