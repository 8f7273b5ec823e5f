"""`reppo report`: figures and tables comparing methods across the run directories given.

    reppo report runs/dmc-sweep runs/baselines --out reports/dmc --reference

reads every finished run under the given directories (see `reppo.analysis.runs`), groups them by
method and task, and writes into the (new or empty) report directory:

* ``curves/<task>.png``: per task, the mean over runs with a 95% bootstrap band of every method
  vs env steps and vs wall time;
* ``aggregates_<family>.png`` / ``aggregates.csv``: IQM, median, mean and optimality gap of the
  final normalized scores, with 95% stratified bootstrap intervals, per method;
* ``sample_efficiency_<family>.png`` / ``.csv``: the IQM over tasks and runs vs env steps;
* ``reliable_performance_<family>.png`` / ``.csv``: the fraction of reliably performant runs;
* ``ablations_<family>.png`` / ``ablations.csv``: final IQM per ablation variant and batch size,
  only for runs whose experiment.json names a variant;
* ``performance_profile_<family>.png`` / ``performance_profile.csv``: the fraction of runs whose
  final normalized score exceeds tau, over a grid of tau, per method;
* ``probability_of_improvement.csv`` (and a table in summary.md): P(X > Y) of the final scores
  for every pair of methods of a family;
* ``summary.md`` and ``summary.csv``: per-task final results, aggregates, the runs used and
  skipped, the command line and the date.

A family is a benchmark (DM Control or ManiSkill3); aggregates are never pooled across the two,
as the paper reports them separately. `--stats` picks how scores are aggregated (see
`reppo.analysis.stats`): "rliable" reproduces the rliable package's numbers and is the default
(`auto`) for reports of the paper's suites, "weighted" weighs every task equally whatever its
run count. docs/report.md defines every quantity. This module imports numpy and matplotlib
only inside `run`, so `reppo --help` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reppo.cli import UserError

if TYPE_CHECKING:
    from reppo.analysis.runs import Run, RunSet, Skipped
    from reppo.analysis.stats import CurveEstimate, Estimate

CONFIDENCE = 0.95
MIN_REPS = 100
AUTO = "auto"
# The suites of `reppo sweep` whose reports follow the paper (and rliable) by default.
PAPER_SUITES: tuple[str, ...] = ("dmc23", "maniskill", "ablations")
PROFILE_POINTS = 101  # thresholds of a performance profile, from 0 to max(1, best score)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="run directories, or directories searched recursively for them")
    parser.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR",
                        help="directory to write the report into; must not exist yet or be "
                             "empty (nothing is ever overwritten)")
    parser.add_argument("--tau", type=float, default=0.9,
                        help="normalized-score threshold of the reliable-performance curve "
                             "(default 0.9, as in the paper)")
    parser.add_argument("--reps", type=int, default=2000,
                        help="bootstrap resamples per confidence interval (default 2000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap resampling (default 0)")
    parser.add_argument("--reference", action="store_true",
                        help="add the paper's published final returns, marked 'published'")
    parser.add_argument("--steps-grid", type=int, default=50, metavar="N",
                        help="points of the env-step and wall-time grids of the curves "
                             "(default 50)")
    parser.add_argument("--stats", choices=(AUTO, "weighted", "rliable"), default=AUTO,
                        help="how scores are aggregated: 'rliable' reproduces the rliable "
                             "package (IQM = scipy.stats.trim_mean over runs x tasks; needs "
                             "equally many runs per task), 'weighted' weighs every task "
                             "equally whatever its run count; 'auto' (default): rliable for "
                             f"runs of the paper suites ({', '.join(PAPER_SUITES)}), weighted "
                             "otherwise or when run counts differ")


# ---- what the report holds --------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """The final evaluations of one method's runs on one task."""

    family: str
    task: str
    method: str
    n_runs: int
    final_steps: int  # the smallest final env-step count among the runs
    final_return: Estimate
    final_score: Estimate


@dataclass(frozen=True)
class Aggregate:
    """One method's aggregate statistics over the tasks of one family."""

    family: str
    method: str
    n_tasks: int
    n_runs: int
    estimates: dict[str, Estimate]


@dataclass(frozen=True)
class AblationBar:
    family: str
    transitions_per_iteration: int | None
    variant: str
    methods: tuple[str, ...]
    n_tasks: int
    n_runs: int
    iqm: Estimate


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) of the final normalized scores of two methods on the tasks both cover."""

    family: str
    method_x: str
    method_y: str
    n_tasks: int
    n_runs_x: int
    n_runs_y: int
    probability: Estimate


@dataclass
class Report:
    """Everything `reppo report` computes, before any of it is written."""

    runs: list[Run]
    skipped: list[Skipped]
    methods: list[str]
    families: list[str]
    tasks: dict[str, list[str]]  # family -> its tasks
    task_results: list[TaskResult]
    aggregates: list[Aggregate]
    sample_efficiency: dict[str, dict[str, CurveEstimate]]  # family -> method -> IQM curve
    reliable: dict[str, dict[str, CurveEstimate]]
    task_curves: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # task -> (by steps, by time)
    ablations: list[AblationBar]
    notes: list[str] = field(default_factory=list)
    stats_mode: str = "weighted"  # the aggregation mode used (reppo.analysis.stats.MODES)
    stats_reason: str = ""  # why: the option, or what `auto` found
    stats_fallback: str | None = None  # `auto`'s note when unequal run counts forced weighted
    profiles: dict[str, dict[str, CurveEstimate]] = field(default_factory=dict)
    improvements: list[Improvement] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    tau: float = 0.9
    reps: int = 2000
    seed: int = 0
    grid_points: int = 50
    reference: bool = False
    stats: str = AUTO  # "auto", "weighted" or "rliable"


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
        ))
    return out


def _final_scores(group: Sequence[Run]) -> list[list[float]]:
    """Per task (in task order), the final normalized scores of the runs."""
    return [[r.final_score for r in g] for g in _group(group, "task").values()]


def _aggregates(runs: Sequence[Run], opts: Options, mode: str) -> list[Aggregate]:
    from reppo.analysis.stats import bootstrap_statistics

    out = []
    for (family, method), group in _group(runs, "family", "method").items():
        per_task = _final_scores(group)
        estimates = bootstrap_statistics(per_task, reps=opts.reps, confidence=CONFIDENCE,
                                         seed=opts.seed, mode=mode)
        out.append(Aggregate(family, method, len(per_task), len(group), estimates))
    return out


def _profiles(runs: Sequence[Run], opts: Options, mode: str) -> dict[str, dict[str, Any]]:
    """Per family and method: the performance profile of the final normalized scores, on
    PROFILE_POINTS thresholds from 0 to max(1, the family's best score)."""
    import numpy as np

    from reppo.analysis.stats import performance_profile

    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for (family,), family_runs in _group(runs, "family").items():
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
    from reppo.analysis.stats import Estimate, probability_of_improvement

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
    from reppo.analysis.stats import common_grid, curve_statistic, reliable_performance

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
        reliable[family][method] = reliable_performance(curves, grid, opts.tau, mode=mode,
                                                        **kw)
    return dict(iqm), dict(reliable)


def _timed(run: Run) -> bool:
    import numpy as np

    t = run.wall_time
    return bool(np.all(np.isfinite(t)) and np.all(np.diff(t) > 0))


def _task_curves(
    runs: Sequence[Run], opts: Options, notes: list[str]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per task: {method: mean curve or None} vs env steps and vs wall time (seconds)."""
    from reppo.analysis.stats import common_grid, curve_statistic

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
                ("env steps", [[(r.env_steps, r.raw) for r in group]], by_steps),
                ("wall time", [[(r.wall_time, r.raw) for r in timed]], by_time),
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
    notes = []
    for (family,), group in _group(runs, "family").items():
        tasks_of = {m: {r.task for r in g} for (m,), g in _group(group, "method").items()}
        if len({frozenset(t) for t in tasks_of.values()}) > 1:
            sizes = ", ".join(f"{m} {len(t)}" for m, t in tasks_of.items())
            notes.append(f"Methods cover different {family} tasks ({sizes} tasks): their "
                         "aggregates are over different task sets and not directly comparable.")
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

    from reppo.analysis.runs import EXPERIMENT_FILE

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
        found.append(_describe_counts(f"variant {variant} at {_tpi_label(tpi)} ({family})",
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
    )


# ---- writing ----------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    from reppo.runs.rundir import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"), overwrite=False)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "task"


def _g(value: float) -> str:
    """A float for CSV: full precision, no trailing noise."""
    return f"{value:.10g}"


def _fmt(e: Estimate, digits: int) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _curve_rows(family: str, curves: dict[str, CurveEstimate], *extra: Any) -> list[list[Any]]:
    return [
        [family, method, _g(x), _g(v), _g(lo), _g(hi), *extra]
        for method, c in curves.items()
        for x, v, lo, hi in zip(c.grid, c.value, c.low, c.high, strict=True)
    ]


def _tpi_label(tpi: int | None) -> str:
    return "unknown batch" if tpi is None else f"{tpi:,} transitions / iteration"


def write_figures(report: Report, out: Path, opts: Options) -> list[Path]:
    from reppo.analysis import plots
    from reppo.analysis.reference import REPPO, published_return
    from reppo.analysis.runs import DM_CONTROL, FAMILY_TITLES, MANISKILL

    colors = plots.method_colors(report.methods)
    family_of = {r.task: r.family for r in report.runs}
    written = []
    for task, (by_steps, by_time) in report.task_curves.items():
        ylabel = "success rate (success_once)" if family_of[task] == MANISKILL else "return"
        reference = None
        published = published_return(task) if family_of[task] == DM_CONTROL else None
        if opts.reference and published is not None:
            reference = (published.final_return, f"{REPPO}, final")
        written.append(plots.plot_task_curves(
            task, ylabel, by_steps, by_time, colors, out / "curves" / f"{_safe_name(task)}.png",
            reference=reference,
        ))
    for family in report.families:
        title = FAMILY_TITLES[family]
        estimates = {a.method: a.estimates for a in report.aggregates if a.family == family}
        written.append(plots.plot_aggregates(
            f"{title}: final normalized score (95% stratified bootstrap CIs)", estimates, colors,
            out / f"aggregates_{family}.png",
        ))
        if report.sample_efficiency.get(family):
            written.append(plots.plot_curves(
                f"{title}: sample efficiency", "IQM of normalized score",
                report.sample_efficiency[family], colors,
                out / f"sample_efficiency_{family}.png",
            ))
        if report.reliable.get(family):
            written.append(plots.plot_curves(
                f"{title}: reliable performance (tau = {opts.tau:g})",
                "fraction of runs reliably >= tau", report.reliable[family], colors,
                out / f"reliable_performance_{family}.png", ylim=(-0.02, 1.02),
            ))
        if report.profiles.get(family):
            written.append(plots.plot_profiles(
                f"{title}: performance profile\nfinal normalized scores ({report.stats_mode} "
                "statistics, 95% stratified bootstrap CIs)", report.profiles[family], colors,
                out / f"performance_profile_{family}.png",
            ))
        bars = [b for b in report.ablations if b.family == family]
        if bars:
            tpis = list(dict.fromkeys(b.transitions_per_iteration for b in bars))
            groups = [
                (_tpi_label(tpi),
                 [(b.variant, b.iqm) for b in bars if b.transitions_per_iteration == tpi])
                for tpi in tpis
            ]
            written.append(plots.plot_ablations(
                f"{title}\nablations (95% stratified bootstrap CIs)", groups,
                out / f"ablations_{family}.png",
            ))
    return written


def write_tables(report: Report, out: Path, opts: Options) -> list[Path]:
    from reppo.analysis.reference import AUTHORS_CODE_RUNS, REPPO, REPPO_FINAL_RETURNS
    from reppo.analysis.runs import DM_CONTROL, SCORE_NAMES

    rows: list[list[Any]] = [
        ["measured", t.family, t.task, t.method, t.n_runs, t.final_steps,
         _g(t.final_return.value), _g(t.final_return.low), _g(t.final_return.high),
         SCORE_NAMES[t.family], _g(t.final_score.value), _g(t.final_score.low),
         _g(t.final_score.high)]
        for t in report.task_results
    ]
    if opts.reference:
        rows += [
            ["published", DM_CONTROL, p.task, REPPO, "", "", _g(p.final_return), "", "",
             SCORE_NAMES[DM_CONTROL], _g(p.final_return / 1000.0), "", ""]
            for p in REPPO_FINAL_RETURNS
        ]
        rows += [
            ["reference", DM_CONTROL, r.task, r.method, len(r.final_returns), r.env_steps,
             _g(r.mean), "", "", SCORE_NAMES[DM_CONTROL], _g(r.mean / 1000.0), "", ""]
            for r in AUTHORS_CODE_RUNS
        ]
    _write_csv(out / "summary.csv", [
        "source", "family", "task", "method", "n_runs", "final_env_steps",
        "final_return_mean", "final_return_ci_low", "final_return_ci_high", "score",
        "final_score_mean", "final_score_ci_low", "final_score_ci_high",
    ], rows)
    _write_csv(out / "aggregates.csv", [
        "family", "method", "statistic", "value", "ci_low", "ci_high", "n_tasks", "n_runs",
        "confidence", "reps",
    ], [
        [a.family, a.method, stat, _g(e.value), _g(e.low), _g(e.high), a.n_tasks, a.n_runs,
         CONFIDENCE, opts.reps]
        for a in report.aggregates for stat, e in a.estimates.items()
    ])
    written = [out / "summary.csv", out / "aggregates.csv"]
    header = ["family", "method", "env_steps", "{}", "ci_low", "ci_high"]
    se_rows = [r for f, c in report.sample_efficiency.items() for r in _curve_rows(f, c)]
    if se_rows:
        _write_csv(out / "sample_efficiency.csv", [h.format("iqm") for h in header], se_rows)
        written.append(out / "sample_efficiency.csv")
    rel_rows = [r for f, c in report.reliable.items() for r in _curve_rows(f, c, opts.tau)]
    if rel_rows:
        _write_csv(out / "reliable_performance.csv",
                   [h.format("fraction") for h in header] + ["tau"], rel_rows)
        written.append(out / "reliable_performance.csv")
    if report.ablations:
        _write_csv(out / "ablations.csv", [
            "family", "transitions_per_iteration", "variant", "methods", "n_tasks", "n_runs",
            "iqm", "ci_low", "ci_high",
        ], [
            [b.family, "" if b.transitions_per_iteration is None else b.transitions_per_iteration,
             b.variant, ";".join(b.methods), b.n_tasks, b.n_runs, _g(b.iqm.value),
             _g(b.iqm.low), _g(b.iqm.high)]
            for b in report.ablations
        ])
        written.append(out / "ablations.csv")
    profile_rows = [
        [family, method, _g(tau), _g(v), _g(lo), _g(hi)]
        for family, curves in report.profiles.items() for method, c in curves.items()
        for tau, v, lo, hi in zip(c.grid, c.value, c.low, c.high, strict=True)
    ]
    if profile_rows:
        _write_csv(out / "performance_profile.csv",
                   ["family", "method", "tau", "fraction", "ci_low", "ci_high"], profile_rows)
        written.append(out / "performance_profile.csv")
    if report.improvements:
        _write_csv(out / "probability_of_improvement.csv", [
            "family", "method_x", "method_y", "probability", "ci_low", "ci_high", "n_tasks",
            "n_runs_x", "n_runs_y", "confidence", "reps",
        ], [
            [i.family, i.method_x, i.method_y, _g(i.probability.value), _g(i.probability.low),
             _g(i.probability.high), i.n_tasks, i.n_runs_x, i.n_runs_y, CONFIDENCE, opts.reps]
            for i in report.improvements
        ])
        written.append(out / "probability_of_improvement.csv")
    return written


def _reference_section(report: Report) -> list[str]:
    from reppo.analysis.reference import (
        AUTHORS_CODE_RUNS,
        NOTES,
        PAPER_DMC_TASKS,
        SOURCE,
        SUITE_MEAN_RETURNS,
    )
    from reppo.analysis.runs import DM_CONTROL

    lines = ["## Published reference", "",
             f"Source: {SOURCE}. Other hardware, seeds and code; shown for orientation, not "
             "included in any statistic above.", ""]
    rows: list[list[Any]] = [[f"{m} (published)", f"{v:.0f}", "23 of 23"]
                             for m, v in SUITE_MEAN_RETURNS.items()]
    by_method: dict[str, dict[str, float]] = defaultdict(dict)
    for t in report.task_results:
        if t.task in PAPER_DMC_TASKS:
            by_method[t.method][t.task] = t.final_return.value
    dmc_methods = sorted({t.method for t in report.task_results if t.family == DM_CONTROL})
    for method in dmc_methods:
        covered = by_method.get(method, {})
        mean = (f"{sum(covered.values()) / len(covered):.1f}"
                if len(covered) == len(PAPER_DMC_TASKS) else "—")
        rows.append([f"{method} (measured)", mean, f"{len(covered)} of {len(PAPER_DMC_TASKS)}"])
    lines += ["Mean final return over the paper's 23 DM Control tasks (measured only when a "
              "method covers all 23):", ""]
    lines += _table(["method", "23-task mean final return", "tasks"], rows)
    lines += [f"- {note}" for note in NOTES] + [""]
    lines += ["The authors' released code run at our settings (final deterministic evaluation "
              "per seed; a like-for-like reference for the runs above):", ""]
    lines += _table(
        ["task", "method", "settings", "env steps", "seeds", "final return per seed", "mean",
         "episodes per seed"],
        [[r.task, r.method, r.settings, f"{r.env_steps:,}", " / ".join(map(str, r.seeds)),
          " / ".join(f"{x:.0f}" for x in r.final_returns), f"{r.mean:.1f}", r.episodes]
         for r in AUTHORS_CODE_RUNS],
    )
    return lines


_MODE_TEXT = {
    "rliable": "The aggregates are those of the rliable package (Agarwal et al. 2021): IQM = "
               "scipy.stats.trim_mean(scores, 0.25) over all runs and tasks (int(N/4) whole "
               "scores cut from each end), median = the median over tasks of the per-task mean "
               "score.",
    "weighted": "Every task weighs equally whatever its run count: the IQM counts the scores at "
                "the 25% and 75% cuts fractionally, and the median is that of the pooled runs "
                "(with equal run counts and a multiple of 4 scores the IQM equals rliable's).",
}


def _improvement_section(report: Report, family: str) -> list[str]:
    from reppo.analysis.runs import FAMILY_TITLES

    pairs = {(i.method_x, i.method_y): i for i in report.improvements if i.family == family}
    if not pairs:
        return []
    methods = list(dict.fromkeys(m for pair in pairs for m in pair))
    rows = [[x, *("—" if (x, y) not in pairs else _fmt(pairs[x, y].probability, 3)
                  for y in methods)] for x in methods]
    partial = any(i.n_tasks < len(report.tasks[family]) for i in pairs.values())
    lines = [f"## {FAMILY_TITLES[family]}: probability of improvement", "",
             "P(row > column): the mean over tasks of the probability that a run of the row's "
             "method ends with a higher normalized score than a run of the column's, ties "
             f"counting 1/2 [{CONFIDENCE:.0%} stratified bootstrap interval]."
             + (" Each pair is compared on the tasks both methods cover (n_tasks in "
                "probability_of_improvement.csv)." if partial else ""), ""]
    return lines + _table(["P(row > column)", *methods], rows)


def write_summary(
    report: Report, out: Path, opts: Options, command: str, figures: Sequence[Path]
) -> Path:
    from reppo.analysis.reference import REPPO, format_published, published_return
    from reppo.analysis.runs import DM_CONTROL, FAMILY_TITLES, MANISKILL, SCORE_NAMES
    from reppo.analysis.stats import STATISTIC_LABELS, STATISTICS

    date = datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        "# REPPO report", "",
        f"Generated {date} by `{command}` (reppo {_version()}).", "",
        f"{len(report.runs)} runs of {len(report.methods)} methods on "
        f"{sum(len(t) for t in report.tasks.values())} tasks; {len(report.skipped)} run "
        "directories skipped (listed at the end). Scores: DM Control return / 1000, ManiSkill3 "
        f"success rate (success_once). Intervals: {CONFIDENCE:.0%} percentile intervals of a "
        f"stratified bootstrap over runs ({opts.reps} resamples, seed {opts.seed}). A run's "
        "final result is its last evaluation. Definitions: docs/report.md.", "",
        f"Statistics mode: {report.stats_mode} ({report.stats_reason}). "
        + _MODE_TEXT[report.stats_mode], "",
    ]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    for family in report.families:
        title = FAMILY_TITLES[family]
        lines += [f"## {title}: aggregate metrics", "",
                  f"Final normalized score ({SCORE_NAMES[family]}); optimality gap: lower is "
                  "better.", ""]
        lines += _table(
            ["method", "tasks", "runs", *(STATISTIC_LABELS[s] for s in STATISTICS)],
            [[a.method, a.n_tasks, a.n_runs, *(_fmt(a.estimates[s], 3) for s in STATISTICS)]
             for a in report.aggregates if a.family == family],
        )
        is_mani = family == MANISKILL
        methods = [m for m in report.methods
                   if any(t.method == m and t.family == family for t in report.task_results)]
        show_ref = opts.reference and family == DM_CONTROL
        header = ["task", *methods] + ([REPPO] if show_ref else [])
        results = {(t.task, t.method): t for t in report.task_results}
        rows = []
        for task in report.tasks[family]:
            row: list[Any] = [task]
            for m in methods:
                t = results.get((task, m))
                if t is None:
                    row.append("—")
                    continue
                est = t.final_score if is_mani else t.final_return
                row.append(f"{_fmt(est, 3 if is_mani else 1)} (n={t.n_runs})")
            if show_ref:
                p = published_return(task)
                row.append("—" if p is None else format_published(p))
            rows.append(row)
        what = "final success rate (success_once)" if is_mani else "final return"
        lines += [f"## {title}: {what} per task", "",
                  f"Mean over runs [{CONFIDENCE:.0%} bootstrap interval] (n runs).", ""]
        lines += _table(header, rows)
        lines += _improvement_section(report, family)
        bars = [b for b in report.ablations if b.family == family]
        if bars:
            lines += [f"## {title}: ablations", "",
                      "IQM of the final normalized score per variant and batch size.", ""]
            lines += _table(
                ["transitions / iteration", "variant", "tasks", "runs", "IQM"],
                [["—" if b.transitions_per_iteration is None
                  else f"{b.transitions_per_iteration:,}", b.variant, b.n_tasks, b.n_runs,
                  _fmt(b.iqm, 3)] for b in bars],
            )
    if opts.reference:
        lines += _reference_section(report)
    lines += ["## Figures", ""]
    lines += [f"- [{p.relative_to(out)}]({p.relative_to(out).as_posix()})" for p in figures]
    lines += ["", f"## Runs used ({len(report.runs)})", ""]
    lines += _table(
        ["run", "method", "task", "seed", "final env steps", "final return", "final score"],
        [[r.name, r.method, r.task, r.seed, f"{r.final_steps:,}", f"{r.final_return:.1f}",
          f"{r.final_score:.3f}"] for r in report.runs],
    )
    lines += [f"## Runs skipped ({len(report.skipped)})", ""]
    lines += [f"- `{s.path}`: {s.reason}" for s in report.skipped] or ["None."]
    path = out / "summary.md"
    _write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reppo")
    except PackageNotFoundError:
        return "unknown"


# ---- the command ------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> Options:
    if not 0.0 < args.tau <= 1.0:
        raise UserError(f"--tau must be in (0, 1] (a normalized score), got {args.tau}")
    if args.reps < MIN_REPS:
        raise UserError(f"--reps must be >= {MIN_REPS} for percentile intervals to mean "
                        f"anything, got {args.reps}")
    if args.steps_grid < 2:
        raise UserError(f"--steps-grid must be >= 2, got {args.steps_grid}")
    return Options(tau=args.tau, reps=args.reps, seed=args.seed, grid_points=args.steps_grid,
                   reference=args.reference, stats=args.stats)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory that does not exist yet")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} already exists and is not empty; choose another report "
                        "directory (nothing was written)")


def _command_line(args: argparse.Namespace) -> str:
    words = ["reppo", "report", *(str(d) for d in args.dirs), "--out", str(args.out),
             "--tau", f"{args.tau:g}", "--reps", str(args.reps), "--seed", str(args.seed),
             "--steps-grid", str(args.steps_grid), "--stats", args.stats]
    return shlex.join(words + (["--reference"] if args.reference else []))


def run(args: argparse.Namespace) -> int:
    from reppo.analysis.runs import load_runs

    opts = _options(args)
    _check_out_dir(args.out)

    def warn(skipped: Skipped) -> None:
        print(f"reppo: warning: skipping {skipped.path}: {skipped.reason}", file=sys.stderr)

    runset = load_runs(args.dirs, on_skip=warn)
    report = build_report(runset, opts)
    if report.stats_fallback:
        print(f"reppo: note: {report.stats_fallback}", file=sys.stderr)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {args.out}: {e.strerror or e}") from None
    try:
        figures = write_figures(report, args.out, opts)
        write_tables(report, args.out, opts)
        write_summary(report, args.out, opts, _command_line(args), figures)
    except FileExistsError as e:
        raise UserError(f"{e.filename or e} appeared in --out {args.out} while the report "
                        "was being written; choose another report directory") from None
    n_tasks = sum(len(t) for t in report.tasks.values())
    print(f"report of {len(report.runs)} runs ({len(report.methods)} methods, {n_tasks} tasks) "
          f"written to {args.out}; {len(report.skipped)} run directories skipped")
    return 0
