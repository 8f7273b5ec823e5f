"""Statistics along learning curves: curves put on a common grid, an aggregate statistic at
every grid point with bootstrap bands, and reliable performance (the fraction of runs that
reached a threshold and never fell below it again)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from reppo.analysis.stats import (
    WEIGHTED,
    CurveEstimate,
    RunCurve,
    check_bootstrap_args,
    percentile_interval,
    resample_indices,
    statistic_fn,
)

# ---- curves -----------------------------------------------------------------------------------


def step_interpolate(x: ArrayLike, y: ArrayLike, grid: ArrayLike) -> np.ndarray:
    """The value of the last point with x <= g, for every g in `grid`; NaN before the first.

    `x` must be increasing. This is how a run's evaluations are read between evaluation steps:
    the policy last evaluated is the one that would be deployed.
    """
    x, y, grid = np.asarray(x, float), np.asarray(y, float), np.asarray(grid, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("x must be strictly increasing")
    idx = np.searchsorted(x, grid, side="right") - 1
    out = np.where(idx >= 0, y[np.clip(idx, 0, None)], np.nan)
    return out.astype(float)


def common_grid(task_curves: Sequence[Sequence[RunCurve]], num_points: int) -> np.ndarray:
    """`num_points` evenly spaced x values on which every run has a value: from the latest
    first x to the earliest last x over all runs (runs are never extrapolated past their end).

    Raises ValueError when the runs do not overlap.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    runs = [np.asarray(x, float) for task in task_curves for x, _ in task]
    if not runs or any(x.size == 0 for x in runs):
        raise ValueError("every run needs at least one point")
    start, end = max(x[0] for x in runs), min(x[-1] for x in runs)
    if start > end:
        raise ValueError(f"the runs do not overlap: the latest start {start:g} is after the "
                         f"earliest end {end:g}")
    return np.unique(np.linspace(start, end, num_points))


def _task_matrices(
    task_curves: Sequence[Sequence[RunCurve]], grid: np.ndarray
) -> list[np.ndarray]:
    """Per task, an (n_t, G) matrix of the runs' step-interpolated values on the grid."""
    if not task_curves or any(len(task) == 0 for task in task_curves):
        raise ValueError("every task needs at least one run")
    out = []
    for task in task_curves:
        out.append(np.stack([step_interpolate(x, y, grid) for x, y in task]))
    return out


def curve_statistic(
    task_curves: Sequence[Sequence[RunCurve]],
    grid: ArrayLike,
    statistic: str,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    gamma: float = 1.0,
    mode: str = WEIGHTED,
) -> CurveEstimate:
    """`statistic` over tasks and runs at every grid point, with stratified bootstrap bands.

    `task_curves[t]` is the list of task t's runs, each an (x, y) pair. Every run must have a
    value at every grid point (use `common_grid`). One set of resampled runs serves the whole
    grid, so a band is the pointwise interval of resampled curves.
    """
    check_bootstrap_args(reps, confidence)
    grid = np.asarray(grid, float)
    matrices = _task_matrices(task_curves, grid)
    if any(np.isnan(m).any() for m in matrices):
        raise ValueError("some run has no value at the start of the grid (it starts later); "
                         "build the grid with common_grid")
    counts = [len(m) for m in matrices]
    fn = statistic_fn(statistic, mode, counts, gamma)
    rng = np.random.default_rng(seed)
    indices = resample_indices(counts, reps, rng)
    value, low, high = (np.empty(len(grid)) for _ in range(3))
    for g in range(len(grid)):
        value[g] = fn([m[:, g] for m in matrices])
        low[g], high[g] = percentile_interval(
            fn([m[idx, g] for m, idx in zip(matrices, indices, strict=True)]), confidence
        )
    return CurveEstimate(grid, value, low, high)


def reliable_flags(scores: ArrayLike, tau: float = 0.9) -> np.ndarray:
    """Per evaluation of one run, whether it is reliably performant there: its score is >= tau
    there and at every later evaluation (see the module docstring for why "later")."""
    scores = np.asarray(scores, float)
    if scores.ndim != 1:
        raise ValueError(f"scores of one run must be 1-D, got shape {scores.shape}")
    # The minimum over each suffix, computed right to left.
    suffix_min = np.minimum.accumulate(scores[::-1])[::-1]
    return suffix_min >= tau


def reliable_performance(
    task_curves: Sequence[Sequence[RunCurve]],
    grid: ArrayLike,
    tau: float = 0.9,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    mode: str = WEIGHTED,
) -> CurveEstimate:
    """The fraction of runs reliably performant at each grid point, with bootstrap bands.

    Each run (an (x, normalized score) pair) is turned into its 0/1 `reliable_flags`, read
    step-wise on the grid, and averaged with every task weighted equally (the plain fraction of
    runs when tasks have equally many runs); runs are resampled within tasks.
    """
    flagged = [
        [(x, reliable_flags(y, tau).astype(float)) for x, y in task] for task in task_curves
    ]
    return curve_statistic(
        flagged, grid, "mean", reps=reps, confidence=confidence, seed=seed, mode=mode
    )
