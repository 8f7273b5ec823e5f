"""Performance profiles and the probability of improvement (Agarwal et al. 2021, rliable's
definitions), with stratified-bootstrap intervals from `reppo.analysis.stats`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from reppo.analysis.stats import (
    RLIABLE,
    WEIGHTED,
    CurveEstimate,
    Estimate,
    TaskScores,
    as_task_scores,
    check_bootstrap_args,
    check_equal_counts,
    check_mode,
    percentile_interval,
    stratified_resample,
)

# ---- performance profiles and probability of improvement ----------------------------------


def _profile_fn(
    taus: np.ndarray, mode: str, counts: Sequence[int], task_means: bool
) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """The profile at every tau as a function of per-task (..., n_t) arrays: (..., G)."""
    if check_mode(mode) == RLIABLE:
        check_equal_counts(counts)
    num_tasks = len(counts)

    def above(x: np.ndarray) -> np.ndarray:  # (..., n) -> (..., G): how many runs exceed tau
        return (x[..., :, None] > taus).sum(axis=-2)

    if task_means:
        # The fraction of tasks whose mean score exceeds tau: the same in both modes.
        return lambda tasks: sum(
            (t.mean(axis=-1)[..., None] > taus).astype(float) for t in tasks
        ) / num_tasks
    if mode == RLIABLE:
        total = sum(counts)
        # Integer counts over N, as rliable's mean of the (score > tau) matrix.
        return lambda tasks: sum(above(t) for t in tasks) / total
    return lambda tasks: sum(
        above(t) / (num_tasks * t.shape[-1]) for t in tasks
    )


def performance_profile(
    scores: TaskScores,
    taus: ArrayLike,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    mode: str = WEIGHTED,
    task_means: bool = False,
) -> CurveEstimate:
    """The fraction of runs with a score above each threshold in `taus`, with stratified
    bootstrap bands (rliable's score distribution; `grid` of the result is `taus`).

    Weighted mode: every task weighted equally; rliable mode: the plain fraction of runs
    (equal run counts needed). `task_means=True`: the fraction of tasks whose mean score is
    above tau instead (rliable's average score distribution).
    """
    check_bootstrap_args(reps, confidence)
    tasks = as_task_scores(scores)
    grid = np.asarray(taus, dtype=float).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)):
        raise ValueError(f"taus must be a non-empty list of finite thresholds, got {taus!r}")
    fn = _profile_fn(grid, mode, [len(t) for t in tasks], task_means)
    rng = np.random.default_rng(seed)
    low, high = percentile_interval(fn(stratified_resample(tasks, reps, rng)), confidence)
    return CurveEstimate(grid, np.asarray(fn(tasks), dtype=float), low, high)


def _p_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 for runs x (..., n) and y (..., m), over the leading axes."""
    xs, ys = x[..., :, None], y[..., None, :]
    wins = (xs > ys).sum(axis=(-2, -1)) + 0.5 * (xs == ys).sum(axis=(-2, -1))
    return wins / (x.shape[-1] * y.shape[-1])


def probability_of_improvement(
    scores_x: TaskScores,
    scores_y: TaskScores,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> Estimate:
    """P(X > Y): the mean over tasks of the probability that a run of X scores above a run of
    Y on that task, ties counting 1/2, with a stratified bootstrap percentile interval.

    Task t of `scores_x` is compared with task t of `scores_y`; the run counts may differ
    between the methods and between tasks. The runs of X and of Y are resampled independently,
    within each task. P(Y > X) = 1 - P(X > Y).
    """
    check_bootstrap_args(reps, confidence)
    x_tasks, y_tasks = as_task_scores(scores_x), as_task_scores(scores_y)
    if len(x_tasks) != len(y_tasks):
        raise ValueError(
            f"X has {len(x_tasks)} tasks and Y {len(y_tasks)}: compare the methods on the "
            "same tasks, in the same order"
        )

    def fn(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> np.ndarray:
        return np.mean([_p_greater(x, y) for x, y in zip(xs, ys, strict=True)], axis=0)

    rng = np.random.default_rng(seed)
    resampled_x = stratified_resample(x_tasks, reps, rng)
    resampled_y = stratified_resample(y_tasks, reps, rng)
    low, high = percentile_interval(fn(resampled_x, resampled_y), confidence)
    return Estimate(float(fn(x_tasks, y_tasks)), float(low), float(high))


