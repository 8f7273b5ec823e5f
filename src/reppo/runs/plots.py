"""The learning curve of a run: evaluation returns vs environment steps and vs wall time.

Drawn with matplotlib's object API on an Agg canvas rather than pyplot, so that no global
backend is switched and no window is ever opened (training runs on headless machines).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from reppo.runs.metrics import (
    EVAL_RETURN,
    EVAL_RETURN_STD,
    EVAL_STOCHASTIC_RETURN,
    EVAL_STOCHASTIC_RETURN_STD,
)
from reppo.runs.rundir import atomic_write_bytes

RETURN_KEY = EVAL_RETURN
STD_KEY = EVAL_RETURN_STD
STOCHASTIC_RETURN_KEY = EVAL_STOCHASTIC_RETURN
STOCHASTIC_STD_KEY = EVAL_STOCHASTIC_RETURN_STD
# (mean key, std key, label) of each evaluation curve; labelled unless it is the only curve
# and the deterministic one.
_CURVES = (
    (RETURN_KEY, STD_KEY, "deterministic policy (tanh of the mean)"),
    (STOCHASTIC_RETURN_KEY, STOCHASTIC_STD_KEY, "stochastic policy"),
)

Point = tuple[float, float | None, float, float]


def _as_float(value: Any) -> float | None:
    """A finite float from a number, or the mean of a list of numbers (one per seed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        items = [v for v in (_as_float(x) for x in value) if v is not None]
        return sum(items) / len(items) if items else None
    return None


def _eval_points(
    records: list[dict[str, Any]], mean_key: str = RETURN_KEY, std_key: str = STD_KEY
) -> list[Point]:
    """(env_steps, wall_time or None, mean, std) of each evaluation, ordered by env_steps."""
    points = []
    for record in records:
        if not isinstance(record, dict):
            continue
        steps, mean = _as_float(record.get("env_steps")), _as_float(record.get(mean_key))
        if steps is None or mean is None:
            continue
        std = _as_float(record.get(std_key)) or 0.0
        points.append((steps, _as_float(record.get("wall_time")), mean, std))
    return sorted(points, key=lambda p: p[0])


def draw_curves(
    ax: Any,
    xs: list[float],
    means: list[float],
    stds: list[float],
    xlabel: str,
    label: str | None = None,
    color: str | None = None,
) -> None:
    ax.plot(xs, means, marker="o", markersize=3, linewidth=1.5, label=label, color=color)
    if any(stds):
        lo = [m - s for m, s in zip(means, stds, strict=True)]
        hi = [m + s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(xs, lo, hi, alpha=0.25, linewidth=0, color=color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("evaluation return")
    ax.grid(True, alpha=0.3)


def _no_data(ax: Any, xlabel: str, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlabel(xlabel)
    ax.set_xticks([])
    ax.set_yticks([])


def _panel(
    ax: Any,
    curves: list[tuple[list[Point], str | None, str]],
    x_of: Any,
    xlabel: str,
    empty: str,
) -> None:
    """Draw every curve's points that `x_of` gives an x for; a legend for labelled curves."""
    drawn = 0
    for points, label, color in curves:
        placed = [(x_of(p), p) for p in points]
        placed = [(x, p) for x, p in placed if x is not None]
        if not placed:
            continue
        draw_curves(
            ax,
            [x for x, _ in placed],
            [p[2] for _, p in placed],
            [p[3] for _, p in placed],
            xlabel,
            label=label,
            color=color,
        )
        drawn += 1
    if not drawn:
        _no_data(ax, xlabel, empty)
    elif any(label for _, label, _ in curves):
        ax.legend(loc="best", fontsize="small")


def plot_learning_curve(
    records: list[dict[str, Any]], out_png: str | os.PathLike[str], title: str
) -> Path:
    """Write a two-panel PNG: `eval/return_mean` (± `eval/return_std`) vs env steps and vs
    wall time in minutes, and beside it, where the records have it,
    `eval/stochastic_return_mean` (± `eval/stochastic_return_std`), the return of the sampling
    policy. With no evaluations yet the panels say so; never raises for empty or partial
    records. The file is replaced atomically, so a viewer never sees half a PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [r for r in (records or []) if isinstance(r, dict)]
    curves = []
    for index, (mean_key, std_key, label) in enumerate(_CURVES):
        points = _eval_points(records, mean_key, std_key)
        if points:
            curves.append((points, label, f"C{index}"))
    if [label for _, label, _ in curves] == [_CURVES[0][2]]:
        # Only the deterministic return (older runs): one curve, no legend, as before.
        curves = [(curves[0][0], None, curves[0][2])]
    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_steps, ax_time = fig.subplots(1, 2)
    fig.suptitle(title)

    if curves:
        _panel(ax_steps, curves, lambda p: p[0], "environment steps", "no evaluation yet")
        _panel(
            ax_time,
            curves,
            lambda p: None if p[1] is None else p[1] / 60.0,
            "wall time (minutes)",
            "no wall time recorded",
        )
    else:
        _no_data(ax_steps, "environment steps", "no evaluation yet")
        _no_data(ax_time, "wall time (minutes)", "no evaluation yet")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, buffer.getvalue())
