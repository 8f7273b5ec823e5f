"""The learning curve of a run: evaluation return vs environment steps and vs wall time.

Drawn with matplotlib's object API on an Agg canvas rather than pyplot, so that no global
backend is switched and no window is ever opened (training runs on headless machines).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from reppo.runs.rundir import atomic_write_bytes

RETURN_KEY = "eval/return_mean"
STD_KEY = "eval/return_std"


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


def _eval_points(records: list[dict[str, Any]]) -> list[tuple[float, float | None, float, float]]:
    """(env_steps, wall_time or None, mean, std) of each evaluation, ordered by env_steps."""
    points = []
    for record in records:
        if not isinstance(record, dict):
            continue
        steps, mean = _as_float(record.get("env_steps")), _as_float(record.get(RETURN_KEY))
        if steps is None or mean is None:
            continue
        std = _as_float(record.get(STD_KEY)) or 0.0
        points.append((steps, _as_float(record.get("wall_time")), mean, std))
    return sorted(points, key=lambda p: p[0])


def _draw(ax: Any, xs: list[float], means: list[float], stds: list[float], xlabel: str) -> None:
    ax.plot(xs, means, marker="o", markersize=3, linewidth=1.5)
    if any(stds):
        lo = [m - s for m, s in zip(means, stds, strict=True)]
        hi = [m + s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(xs, lo, hi, alpha=0.25, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("evaluation return")
    ax.grid(True, alpha=0.3)


def _no_data(ax: Any, xlabel: str, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlabel(xlabel)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_learning_curve(
    records: list[dict[str, Any]], out_png: str | os.PathLike[str], title: str
) -> Path:
    """Write a two-panel PNG: `eval/return_mean` (± `eval/return_std`) vs env steps and vs
    wall time in minutes. With no evaluations yet the panels say so; never raises for empty or
    partial records. The file is replaced atomically, so a viewer never sees half a PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = _eval_points(list(records or []))
    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_steps, ax_time = fig.subplots(1, 2)
    fig.suptitle(title)

    if points:
        _draw(
            ax_steps,
            [p[0] for p in points],
            [p[2] for p in points],
            [p[3] for p in points],
            "environment steps",
        )
        timed = [p for p in points if p[1] is not None]
        if timed:
            _draw(
                ax_time,
                [p[1] / 60.0 for p in timed],
                [p[2] for p in timed],
                [p[3] for p in timed],
                "wall time (minutes)",
            )
        else:
            _no_data(ax_time, "wall time (minutes)", "no wall time recorded")
    else:
        _no_data(ax_steps, "environment steps", "no evaluation yet")
        _no_data(ax_time, "wall time (minutes)", "no evaluation yet")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, buffer.getvalue())
