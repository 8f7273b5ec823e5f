"""The figures of `reppo report`, drawn from statistics computed in `reppo.analysis.stats`.

Like `reppo.runs.plots`, every figure uses matplotlib's object API on an Agg canvas, never
pyplot's global state, so nothing switches backends or opens windows. Files are written with
`overwrite=False`: a report never replaces a file that is already there. matplotlib is imported
inside the functions, keeping `import reppo.analysis.plots` cheap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reppo.analysis.stats import STATISTIC_LABELS, STATISTICS, CurveEstimate, Estimate
from reppo.runs.progress import format_count
from reppo.runs.rundir import atomic_write_bytes

Color = Any  # anything matplotlib accepts as a color


def method_colors(methods: Sequence[str]) -> dict[str, Color]:
    """One color per method, the same in every figure of a report."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as a PNG at `path`; FileExistsError if something is already there."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, buffer.getvalue(), overwrite=False)


def _steps_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_count(value, 1)))


def _draw_curve(ax: Any, curve: CurveEstimate, color: Color, label: str, x_scale: float) -> None:
    # A run's value is a step function of its evaluations (the last one at or before x), and
    # so is every statistic of such values: draw steps, not lines between grid points.
    x = curve.grid * x_scale
    marker = "o" if len(x) == 1 else None
    ax.plot(x, curve.value, color=color, label=label, linewidth=1.8, marker=marker,
            drawstyle="steps-post")
    ax.fill_between(x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0, step="post")
    # The last value is a zero-width step; mark it.
    ax.plot(x[-1:], curve.value[-1:], color=color, marker="o", markersize=3)


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _panel(
    ax: Any,
    curves: dict[str, CurveEstimate | None],
    colors: dict[str, Color],
    xlabel: str,
    ylabel: str,
    x_scale: float,
    empty_text: str,
) -> bool:
    drawn = False
    for method, curve in curves.items():
        if curve is not None:
            _draw_curve(ax, curve, colors[method], method, x_scale)
            drawn = True
    ax.set_xlabel(xlabel)
    if drawn:
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    else:
        _no_data(ax, empty_text)
    return drawn


def plot_task_curves(
    task: str,
    ylabel: str,
    by_steps: dict[str, CurveEstimate | None],
    by_time: dict[str, CurveEstimate | None],
    colors: dict[str, Color],
    out: str | os.PathLike[str],
    *,
    reference: tuple[float, str] | None = None,
) -> Path:
    """One task: the mean over runs (95% bootstrap band) of every method vs env steps and vs
    wall time in minutes. `reference` = (value, label) adds a dashed horizontal line."""
    fig = _figure(11, 4)
    ax_steps, ax_time = fig.subplots(1, 2)
    fig.suptitle(task)
    drawn = _panel(ax_steps, by_steps, colors, "environment steps", ylabel, 1.0, "no overlap")
    if drawn:
        _steps_axis(ax_steps)
    _panel(ax_time, by_time, colors, "wall time (minutes)", ylabel, 1 / 60,
           "no wall time recorded")
    if reference is not None:
        for ax in (ax_steps, ax_time):
            ax.axhline(reference[0], color="black", linestyle="--", linewidth=1,
                       label=reference[1])
    handles, labels = ax_steps.get_legend_handles_labels()
    if handles:
        ax_steps.legend(handles, labels, fontsize="small")
    return save_figure(fig, out)


def plot_aggregates(
    title: str,
    estimates: dict[str, dict[str, Estimate]],
    colors: dict[str, Color],
    out: str | os.PathLike[str],
) -> Path:
    """IQM, median, mean and optimality gap per method: the 95% interval as a bar, the point
    estimate as a black tick (Agarwal et al. 2021, figure 2 style)."""
    methods = list(estimates)
    stats = [s for s in STATISTICS if all(s in estimates[m] for m in methods)]
    fig = _figure(3.2 * len(stats), 0.8 + 0.45 * len(methods))
    axes = fig.subplots(1, len(stats), sharey=True, squeeze=False)[0]
    fig.suptitle(title)
    for ax, stat in zip(axes, stats, strict=True):
        lows = [estimates[m][stat].low for m in methods]
        highs = [estimates[m][stat].high for m in methods]
        pad = max(0.05 * (max(highs) - min(lows)), 0.02)
        ax.set_xlim(min(lows) - pad, max(highs) + pad)
        for i, method in enumerate(methods):
            e = estimates[method][stat]
            ax.barh(i, max(e.high - e.low, 1e-3), left=e.low, height=0.6,
                    color=colors[method], alpha=0.75)
            ax.plot([e.value, e.value], [i - 0.3, i + 0.3], color="black", linewidth=2)
        label = STATISTIC_LABELS[stat] + (" (lower is better)" if stat == "optimality_gap" else "")
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("normalized score")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(methods)), methods)
    axes[0].invert_yaxis()
    return save_figure(fig, out)


def plot_curves(
    title: str,
    ylabel: str,
    curves: dict[str, CurveEstimate],
    colors: dict[str, Color],
    out: str | os.PathLike[str],
    *,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Aggregate curves vs env steps, one line with its 95% band per method."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    ax.set_title(title)
    if _panel(ax, dict(curves), colors, "environment steps", ylabel, 1.0, "no data"):
        _steps_axis(ax)
        ax.legend(fontsize="small")
        if ylim is not None:
            ax.set_ylim(*ylim)
    return save_figure(fig, out)


def plot_ablations(
    title: str,
    groups: list[tuple[str, list[tuple[str, Estimate]]]],
    out: str | os.PathLike[str],
    *,
    ylabel: str = "IQM of final normalized score",
) -> Path:
    """Grouped bars (paper figure 7 style): one group per batch size, one bar per variant with
    its 95% interval as an error bar. `groups` = [(group label, [(variant, estimate)])]."""
    variants = sorted({v for _, bars in groups for v, _ in bars})
    colors = method_colors(variants)
    width = 0.8 / max(len(variants), 1)
    fig = _figure(max(5.0, 1.2 + 0.5 * len(variants) * len(groups)), 4.2)
    ax = fig.subplots()
    ax.set_title(title)
    labeled: set[str] = set()
    for g, (_, bars) in enumerate(groups):
        for variant, e in bars:
            x = g - 0.4 + width * (variants.index(variant) + 0.5)
            label = None if variant in labeled else variant
            labeled.add(variant)
            ax.bar(x, e.value, width=width * 0.9, color=colors[variant], label=label)
            ax.errorbar(x, e.value, yerr=[[e.value - e.low], [e.high - e.value]],
                        color="black", capsize=3, linewidth=1)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups])
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def plot_profiles(
    title: str,
    profiles: dict[str, CurveEstimate],
    colors: dict[str, Color],
    out: str | os.PathLike[str],
) -> Path:
    """Performance profiles (Agarwal et al. 2021, figure 5 style): per method, the fraction of
    runs whose score exceeds tau against tau, with its 95% band. `grid` holds the taus."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    ax.set_title(title, fontsize="medium")
    for method, c in profiles.items():
        ax.plot(c.grid, c.value, color=colors[method], label=method, linewidth=1.8)
        ax.fill_between(c.grid, c.low, c.high, color=colors[method], alpha=0.2, linewidth=0)
    ax.set_xlabel("normalized score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if profiles:
        ax.legend(fontsize="small")
    return save_figure(fig, out)
