"""Computing a report from loaded runs (`build_report`): per-task final results, aggregates,
performance profiles, probabilities of improvement, curves and ablation bars, the notes about
what the numbers cannot support, and the choice of statistics mode (`resolve_stats`).

numpy and `reppo.analysis.stats` are imported inside the functions, so that `reppo --help`
stays fast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reppo.analysis.report.model import (
    CONFIDENCE,
    PAPER_SUITES,
    AblationBar,
    Aggregate,
    Improvement,
    Options,
    Report,
    TaskResult,
    tpi_label,
)
from reppo.errors import UserError

if TYPE_CHECKING:
    from reppo.analysis.runs import Run, RunSet
    from reppo.analysis.stats import CurveEstimate

PROFILE_POINTS = 101  # thresholds of a performance profile, from 0 to max(1, best score)


# ---- computing ----------------------------------------------------------------------------------


def _sort_key(value: Any) -> tuple[int, Any]:
    """Orders group keys: numbers by value (largest batch first), then strings, then None."""
    if isinstance(value, (int, float)):
        return (0, -value)
    return (1, value) if isinstance(value, str) else (2, "")


def _group(runs: Sequence[Run], *keys: str) -> dict[tuple[Any, ...], list[Run]]:
    """Runs grouped by the values of the attributes `keys`, in a deterministic order."""
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(getattr(run, k) for k in keys)].append(run)
    return dict(sorted(groups.items(), key=lambda kv: tuple(_sort_key(k) for k in kv[0])))


def _task_results(runs: Sequence[Run], opts: Options) -> list[TaskResult]:
    from reppo.analysis.stats import bootstrap_ci

    out = []
    for (family, task, method), group in _group(runs, "family", "task", "method").items():
        kw = dict(reps=opts.reps, confidence=CONFIDENCE, seed=opts.seed)
        out.append(TaskResult(
            family=family, task=task, method=method, n_runs=len(group),
            final_steps=min(r.final_steps for r in group),
            final_return=bootstrap_ci([[r.final_return for r in group]], "mean", **kw),
            final_score=bootstrap_ci([[r.final_score for r in group]], "mean", **kw),
            final_success_at_end=None if any(r.success_at_end is None for r in group) else
            bootstrap_ci([[float(r.success_at_end[-1]) for r in group]], "mean", **kw),
        ))
    return out


def _final_scores(group: Sequence[Run]) -> list[list[float]]:
    """Per task (in task order), the final normalized scores of the runs."""
    return [[r.final_score for r in g] for g in _group(group, "task").values()]


def _aggregates(runs: Sequence[Run], opts: Options, mode: str) -> list[Aggregate]:
    from reppo.analysis.runs import is_raw
    from reppo.analysis.stats import bootstrap_statistics

    out = []
    for (family, method), group in _group(runs, "family", "method").items():
        per_task = _final_scores(group)
        estimates = bootstrap_statistics(per_task, reps=opts.reps, confidence=CONFIDENCE,
                                         seed=opts.seed, mode=mode)
        if is_raw(family):
            # The gap to a score of 1 means nothing for returns of an unknown scale.
            estimates.pop("optimality_gap", None)
        out.append(Aggregate(family, method, len(per_task), len(group), estimates))
    return out


def _profiles(runs: Sequence[Run], opts: Options, mode: str) -> dict[str, dict[str, Any]]:
    """Per family and method: the performance profile of the final normalized scores, on
    PROFILE_POINTS thresholds from 0 to max(1, the family's best score)."""
    import numpy as np

    from reppo.analysis.profiles import performance_profile
    from reppo.analysis.runs import is_raw

    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for (family,), family_runs in _group(runs, "family").items():
        if is_raw(family):  # thresholds on raw returns of an unknown scale mean nothing
            continue
        top = max(1.0, max(r.final_score for r in family_runs))
        taus = np.linspace(0.0, top, PROFILE_POINTS)
        for (method,), group in _group(family_runs, "method").items():
            out[family][method] = performance_profile(
                _final_scores(group), taus, reps=opts.reps, confidence=CONFIDENCE,
                seed=opts.seed, mode=mode,
            )
    return dict(out)


def _improvements(runs: Sequence[Run], opts: Options) -> list[Improvement]:
    """P(X > Y) for every ordered pair of methods of a family, on the tasks both cover. The
    pair (Y, X) is 1 - (X, Y), from the same resamples."""
    from reppo.analysis.profiles import probability_of_improvement
    from reppo.analysis.stats import Estimate

    out = []
    for (family,), family_runs in _group(runs, "family").items():
        by_method = {m: _group(g, "task") for (m,), g in _group(family_runs, "method").items()}
        methods = list(by_method)
        for i, x in enumerate(methods):
            for y in methods[i + 1:]:
                common = [t for t in by_method[x] if t in by_method[y]]
                if not common:
                    continue
                xs = [[r.final_score for r in by_method[x][t]] for t in common]
                ys = [[r.final_score for r in by_method[y][t]] for t in common]
                e = probability_of_improvement(xs, ys, reps=opts.reps, confidence=CONFIDENCE,
                                               seed=opts.seed)
                nx, ny = sum(map(len, xs)), sum(map(len, ys))
                out.append(Improvement(family, x, y, len(common), nx, ny, e))
                out.append(Improvement(family, y, x, len(common), ny, nx,
                                       Estimate(1.0 - e.value, 1.0 - e.high, 1.0 - e.low)))
    return out


def _score_curves(group: Sequence[Run]) -> list[list[tuple[Any, Any]]]:
    return [[(r.env_steps, r.scores) for r in g] for g in _group(group, "task").values()]


def _aggregate_curves(
    runs: Sequence[Run], opts: Options, notes: list[str], mode: str
) -> tuple[dict[str, dict[str, CurveEstimate]], dict[str, dict[str, CurveEstimate]]]:
    """Per family and method: the IQM curve and the reliable-performance curve."""
    from reppo.analysis.curves import common_grid, curve_statistic, reliable_performance
    from reppo.analysis.runs import is_raw

    iqm: dict[str, dict[str, CurveEstimate]] = defaultdict(dict)
    reliable: dict[str, dict[str, CurveEstimate]] = defaultdict(dict)
    kw = dict(reps=opts.reps, confidence=CONFIDENCE, seed=opts.seed)
    for (family, method), group in _group(runs, "family", "method").items():
        curves = _score_curves(group)
        try:
            grid = common_grid(curves, opts.grid_points)
        except ValueError as e:
            notes.append(f"No aggregate curves for {method} ({family}): {e}.")
            continue
        iqm[family][method] = curve_statistic(curves, grid, "iqm", mode=mode, **kw)
        if not is_raw(family):  # tau is a normalized score
            reliable[family][method] = reliable_performance(curves, grid, opts.tau, mode=mode,
                                                            **kw)
    return dict(iqm), dict(reliable)


def _timed(run: Run) -> bool:
    import numpy as np

    t = run.wall_time
    return bool(np.all(np.isfinite(t)) and np.all(np.diff(t) > 0))


def _task_curves(
    runs: Sequence[Run], opts: Options, notes: list[str],
    value: Callable[[Run], Any] = lambda r: r.raw,
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per task: {method: mean curve of `value` or None} vs env steps and vs wall time
    (seconds)."""
    from reppo.analysis.curves import common_grid, curve_statistic

    kw = dict(reps=opts.reps, confidence=CONFIDENCE, seed=opts.seed)
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for (task,), task_runs in _group(runs, "task").items():
        by_steps: dict[str, Any] = {}
        by_time: dict[str, Any] = {}
        for (method,), group in _group(task_runs, "method").items():
            timed = [r for r in group if _timed(r)]
            if 0 < len(timed) < len(group):
                notes.append(f"{len(group) - len(timed)} of {len(group)} {method} runs on {task} "
                             "have no increasing wall times; its wall-time curve uses the rest.")
            for axis, curves, target in (
                ("env steps", [[(r.env_steps, value(r)) for r in group]], by_steps),
                ("wall time", [[(r.wall_time, value(r)) for r in timed]], by_time),
            ):
                target[method] = None
                if not curves[0]:
                    continue  # no run of this method recorded wall times
                try:
                    grid = common_grid(curves, opts.grid_points)
                except ValueError as e:
                    notes.append(f"No {axis} curve for {method} on {task}: {e}.")
                    continue
                target[method] = curve_statistic(curves, grid, "mean", **kw)
        out[task] = (by_steps, by_time)
    return out


def _ablation_groups(runs: Sequence[Run]) -> dict[tuple[Any, ...], list[Run]]:
    variant_runs = [r for r in runs if r.variant is not None]
    return _group(variant_runs, "family", "transitions_per_iteration", "variant")


def _ablations(runs: Sequence[Run], opts: Options, mode: str) -> list[AblationBar]:
    from reppo.analysis.stats import bootstrap_ci

    out = []
    for (family, tpi, variant), group in _ablation_groups(runs).items():
        per_task = _final_scores(group)
        out.append(AblationBar(
            family=family, transitions_per_iteration=tpi, variant=variant,
            methods=tuple(sorted({r.method for r in group})), n_tasks=len(per_task),
            n_runs=len(group),
            iqm=bootstrap_ci(per_task, "iqm", reps=opts.reps, confidence=CONFIDENCE,
                             seed=opts.seed, mode=mode),
        ))
    return out


def _coverage_notes(runs: Sequence[Run]) -> list[str]:
    """Warnings about comparisons the numbers cannot support on their own."""
    from reppo.analysis.runs import family_title, is_raw

    notes = []
    for (family,), group in _group(runs, "family").items():
        tasks_of = {m: {r.task for r in g} for (m,), g in _group(group, "method").items()}
        if len({frozenset(t) for t in tasks_of.values()}) > 1:
            sizes = ", ".join(f"{m} {len(t)}" for m, t in tasks_of.items())
            notes.append(f"Methods cover different {family} tasks ({sizes} tasks): their "
                         "aggregates are over different task sets and not directly comparable.")
    single = [f"{method} on {task}" for (method, task), group
              in _group(runs, "method", "task").items() if len(group) == 1]
    if single:
        notes.append(f"One run only: {', '.join(single)}. A bootstrap over one run has no "
                     "spread, so the intervals of these results (and of aggregates made of "
                     "them alone) have zero width; train more seeds before reading them.")
    for family in sorted({r.family for r in runs}):
        if is_raw(family):
            notes.append(f"{family_title(family)}: no optimality gap, performance profile or "
                         "reliable-performance curve, which need a known normalization.")
    for (method, task), group in _group(runs, "method", "task").items():
        budgets = sorted({r.total_steps for r in group})
        if len(budgets) > 1:
            notes.append(f"{method} on {task}: runs trained for different total_steps "
                         f"({', '.join(f'{b:,}' for b in budgets)}); their final scores are "
                         "pooled as they are.")
    return notes


def _experiment_suite(path: Path) -> str | None:
    """The "suite" of a run directory's experiment.json (written by `reppo sweep`), or None."""
    import json

    from reppo.runs.directory import EXPERIMENT_FILE

    try:
        suite = json.loads((path / EXPERIMENT_FILE).read_text(encoding="utf-8")).get("suite")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return suite if isinstance(suite, str) else None


def _describe_counts(label: str, group: Sequence[Run]) -> str | None:
    """`label: 10 runs on 22 tasks, 9 runs on HopperHop`, or None when the counts are equal."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for (task,), g in _group(group, "task").items():
        by_count[len(g)].append(task)
    if len(by_count) < 2:
        return None
    common = max(by_count, key=lambda n: (len(by_count[n]), n))
    parts = [f"{n} run{'s' if n != 1 else ''} on "
             + (f"{len(by_count[n])} tasks" if n == common and len(by_count[n]) > 3
                else ", ".join(by_count[n]))
             for n in sorted(by_count, reverse=True)]
    return f"{label}: {', '.join(parts)}"


def unequal_run_counts(runs: Sequence[Run]) -> list[str]:
    """Every group aggregated over tasks (a method in a family, an ablation variant at a batch
    size) whose tasks have different numbers of runs, described with its counts."""
    found = []
    for (family, method), group in _group(runs, "family", "method").items():
        found.append(_describe_counts(f"{method} ({family})", group))
    for (family, tpi, variant), group in _ablation_groups(runs).items():
        found.append(_describe_counts(f"variant {variant} at {tpi_label(tpi)} ({family})",
                                      group))
    return [f for f in found if f is not None]


def resolve_stats(runs: Sequence[Run], choice: str) -> tuple[str, str, str | None]:
    """(mode, reason, fallback note) for `--stats choice`: `auto` is rliable when every run
    comes from a paper suite and the counts allow it, weighted otherwise. Raises UserError for
    `rliable` with unequal run counts."""
    from reppo.analysis.stats import RLIABLE, WEIGHTED

    if choice == WEIGHTED:
        return WEIGHTED, "--stats weighted", None
    unequal = unequal_run_counts(runs)
    if choice == RLIABLE:
        if unequal:
            raise UserError(
                "--stats rliable needs the same number of runs on every task of a method "
                f"(rliable takes a runs x tasks matrix), but {'; '.join(unequal)}; pass "
                "--stats weighted (every task weighs equally whatever its run count), or "
                "report only as many runs per task as every task has"
            )
        return RLIABLE, "--stats rliable", None
    suites = {path: _experiment_suite(path) for path in {r.path for r in runs}}
    outside = [r for r in runs if suites[r.path] not in PAPER_SUITES]
    if outside:
        return WEIGHTED, (f"--stats auto: {len(outside)} of {len(runs)} runs are not from a "
                          f"paper suite ({', '.join(PAPER_SUITES)})"), None
    found = sorted({suites[r.path] for r in runs}, key=PAPER_SUITES.index)
    if unequal:
        note = ("--stats auto used the weighted statistics, not rliable's, although every run "
                f"is from a paper suite ({', '.join(found)}): rliable needs the same number "
                f"of runs on every task of a method, but {'; '.join(unequal)}. Pass --stats "
                "weighted to silence this note.")
        return WEIGHTED, "--stats auto: paper suites, but unequal run counts (see Notes)", note
    return RLIABLE, f"--stats auto: every run is from the paper suites ({', '.join(found)})", None


def build_report(runset: RunSet, opts: Options) -> Report:
    """Compute every table and curve of a report from loaded runs."""
    runs = runset.runs
    mode, reason, fallback = resolve_stats(runs, opts.stats)
    notes = ([fallback] if fallback else []) + _coverage_notes(runs)
    sample_efficiency, reliable = _aggregate_curves(runs, opts, notes, mode)
    tasks: dict[str, list[str]] = defaultdict(list)
    for family, task in sorted({(r.family, r.task) for r in runs}):
        tasks[family].append(task)
    return Report(
        runs=runs,
        skipped=runset.skipped,
        methods=sorted({r.method for r in runs}),
        families=sorted(tasks),
        tasks=dict(tasks),
        task_results=_task_results(runs, opts),
        aggregates=_aggregates(runs, opts, mode),
        sample_efficiency=sample_efficiency,
        reliable=reliable,
        task_curves=_task_curves(runs, opts, notes),
        ablations=_ablations(runs, opts, mode),
        notes=notes,
        stats_mode=mode,
        stats_reason=reason,
        stats_fallback=fallback,
        profiles=_profiles(runs, opts, mode),
        improvements=_improvements(runs, opts),
        end_success_curves=_task_curves(
            [r for r in runs if r.success_at_end is not None], opts, [],
            lambda r: r.success_at_end,
        ),
    )
