"""What `reppo toy` writes about a study: the figures (returns.png, paths.png) and the tables
(toy.json, toy.csv, summary.md), each returned as bytes or text for the command to write.

matplotlib and numpy are imported inside the functions, so that `reppo --help` stays fast.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any

from reppo.experiments.toy.problem import (
    COLORS,
    DOMAIN_HIGH,
    DOMAIN_LOW,
    GLOBAL_MINIMA,
    LABELS,
    METHODS,
    OPTIMAL_RETURN,
    camel,
    distance_to_optimum,
    expected_return,
)
from reppo.experiments.toy.training import StudyResult, initial_policy

# ---- figures ----------------------------------------------------------------------------------


def _new_figure(**kwargs: Any) -> Any:
    """A figure on an Agg canvas (matplotlib's object API: no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# Returns below this are off the return axis (only a diverging estimator gets there); the
# axis says so, and toy.json has the numbers.
_RETURN_AXIS_FLOOR = -2.0


def plot_returns(result: StudyResult) -> bytes:
    """Left: expected return over iterations, mean and +-1 std band over seeds. Right: the
    distance of the policy mean to the nearer global minimum (log scale), same statistics."""
    import numpy as np

    fig = _new_figure(figsize=(11, 4.2))
    ax_ret, ax_dist = fig.subplots(1, 2)
    iters = np.arange(result.setup.iterations + 1)
    lowest, closest = math.inf, math.inf
    for method in METHODS:
        ret = result.returns[method]
        mean, std = ret.mean(axis=0), ret.std(axis=0)
        ax_ret.plot(iters, mean, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        ax_ret.fill_between(iters, mean - std, mean + std, color=COLORS[method], alpha=0.2,
                            linewidth=0)
        lowest = min(lowest, float(np.min(mean - std)))
        dist = np.asarray(distance_to_optimum(result.means[method]), np.float64)
        d_mean, d_std = dist.mean(axis=0), dist.std(axis=0)
        closest = min(closest, float(np.min(d_mean)))
        ax_dist.plot(iters, d_mean, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        ax_dist.fill_between(iters, np.maximum(d_mean - d_std, 1e-4), d_mean + d_std,
                             color=COLORS[method], alpha=0.2, linewidth=0)
    ax_ret.axhline(OPTIMAL_RETURN, color="black", linestyle="--", linewidth=1,
                   label=f"optimum {OPTIMAL_RETURN:.4f}")
    bottom = max(lowest, _RETURN_AXIS_FLOOR)
    ax_ret.set_ylim(bottom - 0.05, OPTIMAL_RETURN + 0.15)
    if lowest < _RETURN_AXIS_FLOOR:
        ax_ret.text(0.99, 0.02, f"axis cut at {_RETURN_AXIS_FLOOR:g} (lowest {lowest:.3g})",
                    transform=ax_ret.transAxes, ha="right", va="bottom", fontsize=8,
                    color="gray")
    ax_ret.set_xlabel("iteration")
    ax_ret.set_ylabel("expected return  E[-f(a)]")
    ax_ret.set_title("return (mean ± std over seeds)")
    ax_ret.legend(fontsize=8, loc="lower right" if lowest >= _RETURN_AXIS_FLOOR else "right")
    ax_ret.grid(True, alpha=0.3)
    ax_dist.set_yscale("log")
    # A band reaching zero would stretch the log axis down to its clip value; the mean curves
    # decide the range instead.
    ax_dist.set_ylim(bottom=max(0.5 * closest, 1e-4))
    ax_dist.set_xlabel("iteration")
    ax_dist.set_ylabel("distance of the mean to the optimum")
    ax_dist.set_title("distance to the optimum (mean ± std over seeds)")
    ax_dist.grid(True, alpha=0.3, which="both")
    s = result.setup
    fig.suptitle(f"Six-hump camel: {s.policy_samples} samples per iteration, step size "
                 f"{s.learning_rate:g}, {s.seeds} seeds")
    return _png(fig)


def _median_path(seed_paths: Any) -> Any:
    """The coordinate-wise median over seeds of the paths (seeds, T+1, 2). Unlike the mean it
    is not dragged around by a single diverging seed bouncing between the domain's corners."""
    import numpy as np

    return np.median(seed_paths, axis=0)


def _path_window(result: StudyResult) -> tuple[float, float, float, float]:
    """The part of the domain around the median paths and the global minimum nearest the
    start, with a margin, so that the paths are not specks on the full domain."""
    import numpy as np

    points = [np.asarray(GLOBAL_MINIMA[0])[None]] + [
        _median_path(result.means[m]) for m in METHODS
    ]
    stacked = np.concatenate(points)
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    margin = np.maximum(0.25 * (hi - lo), 0.3)
    lo = np.maximum(lo - margin, DOMAIN_LOW)
    hi = np.minimum(hi + margin, DOMAIN_HIGH)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def plot_paths(result: StudyResult) -> bytes:
    """One panel per method, over the contours of f: each seed's path of the policy mean
    (faint) with its end point (dot), the median path over seeds (bold), the start and the
    global minima."""
    import numpy as np

    x0, x1, y0, y1 = _path_window(result)
    gx, gy = np.meshgrid(np.linspace(x0, x1, 161), np.linspace(y0, y1, 161))
    values = np.asarray(camel(np.stack([gx, gy], axis=-1)), np.float64)
    levels = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 22)))
    fig = _new_figure(figsize=(10, 8.4))
    axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
    minima = np.asarray(GLOBAL_MINIMA)
    for ax, method in zip(axes, METHODS, strict=True):
        filled = ax.contourf(gx, gy, values, levels=levels, cmap="Greys_r")
        seed_paths = result.means[method]
        for path in seed_paths:
            ax.plot(path[:, 0], path[:, 1], color=COLORS[method], linewidth=0.6, alpha=0.35)
        ax.plot(seed_paths[:, -1, 0], seed_paths[:, -1, 1], "o", color=COLORS[method],
                markeredgecolor="black", markeredgewidth=0.5, markersize=4,
                label="end of each seed")
        median = _median_path(seed_paths)
        ax.plot(median[:, 0], median[:, 1], color=COLORS[method], linewidth=2.2,
                label="median over seeds")
        ax.plot(*result.setup.init_mean, "s", color="white", markeredgecolor="black",
                markersize=6, label="start")
        ax.plot(minima[:, 0], minima[:, 1], "*", color="gold", markeredgecolor="black",
                markersize=12, label="global minima")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(LABELS[method], color=COLORS[method])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    axes[0].legend(fontsize=8, loc="upper right")
    fig.colorbar(filled, ax=list(axes), shrink=0.8, label="f(x, y) (contour levels: quantiles)")
    fig.suptitle("Paths of the policy mean on the six-hump camel function "
                 f"({result.setup.seeds} seeds)")
    return _png(fig)


# ---- tables -----------------------------------------------------------------------------------

_CSV_COLUMNS = (
    "method", "label", "final_return_mean", "final_return_std", "final_return_var",
    "final_return_median", "within_run_return_var", "final_mean_action_return",
    "final_distance_mean", "final_distance_std", "final_std_mean", "gradient_variance_at_start",
)


def toy_json(result: StudyResult, summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    import numpy as np

    from reppo.runs.versions import collect_versions

    curves = {
        method: {
            "return_mean": [round(float(v), 6) for v in result.returns[method].mean(axis=0)],
            "return_std": [round(float(v), 6) for v in result.returns[method].std(axis=0)],
            "final_return_per_seed": [float(v) for v in result.returns[method][:, -1]],
        }
        for method in METHODS
    }
    return {
        "setup": dataclasses.asdict(result.setup),
        "optimal_return": OPTIMAL_RETURN,
        "global_minima": [list(p) for p in GLOBAL_MINIMA],
        "initial_return": float(np.asarray(expected_return(initial_policy(result.setup)))),
        "methods": summary,
        "labels": LABELS,
        "surrogate_fit_loss": {k: float(v.mean()) for k, v in result.surrogate_loss.items()},
        "curves": curves,
        "seconds": round(result.seconds, 2),
        "versions": collect_versions(),
    }


def toy_csv(summary: dict[str, dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for method in METHODS:
        writer.writerow({"method": method, "label": LABELS[method], **{
            k: f"{v:.6g}" for k, v in summary[method].items()
        }})
    return out.getvalue()


def summary_markdown(result: StudyResult, summary: dict[str, dict[str, float]]) -> str:
    s = result.setup
    initial = float(expected_return(initial_policy(s)))
    lines = [
        "# Toy study: Monte-Carlo vs pathwise gradients on the six-hump camel function",
        "",
        f"Maximize E[-f(a)], a ~ N(mean, diag(std^2)), from mean {tuple(s.init_mean)} and "
        f"std {s.init_std:g} (expected return {initial:.4f}; optimum {OPTIMAL_RETURN:.4f}); "
        f"{s.iterations} iterations of gradient ascent with step size {s.learning_rate:g}, "
        f"{s.policy_samples} policy samples per iteration, {s.seeds} seeds (base seed "
        f"{s.seed}); Monte-Carlo baseline: {s.mc_baseline}; surrogates fit on "
        f"{s.weak_samples} / {s.strong_samples} uniform samples"
        + (", refit for every seed." if s.surrogate_per_seed else ", shared by all seeds."),
        "",
        "| method | final return (mean ± std over seeds) | median | variance over seeds | "
        "within-run variance (2nd half) | distance to optimum | gradient variance at start |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = summary[method]
        lines.append(
            f"| {LABELS[method]} | {m['final_return_mean']:.4f} ± {m['final_return_std']:.4f} "
            f"| {m['final_return_median']:.4f} | {m['final_return_var']:.3g} "
            f"| {m['within_run_return_var']:.3g} "
            f"| {m['final_distance_mean']:.4f} ± {m['final_distance_std']:.4f} "
            f"| {m['gradient_variance_at_start']:.3g} |"
        )
    lines += [
        "",
        "Return: the exact expected return of the policy (closed form). Variance over seeds: "
        "of the final return. Within-run variance: of the return over the second half of the "
        "iterations, averaged over seeds. Gradient variance: total variance of the "
        f"{s.policy_samples}-sample gradient estimate at the start point.",
        "",
        f"Computed in {result.seconds:.1f} s.",
        "",
    ]
    return "\n".join(lines)
