"""Writing a report's summary.md (`write_summary`): the statistics mode, notes, aggregate
metrics and per-task results per family, probabilities of improvement, ablations, the
published reference, the figures and the runs used and skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reppo.analysis.report.model import CONFIDENCE, Options, Report
from reppo.analysis.report.tables import write_text

if TYPE_CHECKING:
    from reppo.analysis.stats import Estimate

# ---- writing summary.md -------------------------------------------------------------------------


def _fmt(e: Estimate, digits: int) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines + [""]


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


def _end_success_section(report: Report, family: str, methods: Sequence[str]) -> list[str]:
    """ManiSkill3: the final success at the episodes' last step, where the runs recorded it."""
    from reppo.analysis.runs import family_title

    results = {(t.task, t.method): t for t in report.task_results if t.family == family}
    if not any(t.final_success_at_end is not None for t in results.values()):
        return []
    rows = []
    for task in report.tasks[family]:
        row: list[Any] = [task]
        for m in methods:
            t = results.get((task, m))
            est = None if t is None else t.final_success_at_end
            row.append("—" if est is None else f"{_fmt(est, 3)} (n={t.n_runs})")
        rows.append(row)
    return ["", f"## {family_title(family)}: final success rate (success_at_end) per task", "",
            "The fraction of evaluation episodes in success at their last step: mean over runs "
            f"[{CONFIDENCE:.0%} bootstrap interval] (n runs).", "",
            *_table(["task", *methods], rows)]


def _improvement_section(report: Report, family: str) -> list[str]:
    from reppo.analysis.runs import family_title

    pairs = {(i.method_x, i.method_y): i for i in report.improvements if i.family == family}
    if not pairs:
        return []
    methods = list(dict.fromkeys(m for pair in pairs for m in pair))
    rows = [[x, *("—" if (x, y) not in pairs else _fmt(pairs[x, y].probability, 3)
                  for y in methods)] for x in methods]
    partial = any(i.n_tasks < len(report.tasks[family]) for i in pairs.values())
    lines = [f"## {family_title(family)}: probability of improvement", "",
             "P(row > column): the mean over tasks of the probability that a run of the row's "
             "method ends with a higher normalized score than a run of the column's, ties "
             f"counting 1/2 [{CONFIDENCE:.0%} stratified bootstrap interval]."
             + (" Each pair is compared on the tasks both methods cover (n_tasks in "
                "probability_of_improvement.csv)." if partial else ""), ""]
    return lines + _table(["P(row > column)", *methods], rows)


def write_summary(
    report: Report, out: Path, opts: Options, command: str, figures: Sequence[Path]
) -> Path:
    """summary.md: what was compared and how, then per family its aggregates, per-task
    results, success at the end, improvement and ablations; the published reference, the
    figures, and every run used or skipped."""
    lines = _header(report, opts, command)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    for family in report.families:
        lines += _family_sections(report, family, opts)
    if opts.reference:
        lines += _reference_section(report)
    lines += ["## Figures", ""]
    lines += [f"- [{p.relative_to(out)}]({p.relative_to(out).as_posix()})" for p in figures]
    lines += _runs_sections(report)
    path = out / "summary.md"
    write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _header(report: Report, opts: Options, command: str) -> list[str]:
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    return [
        "# REPPO report", "",
        f"Generated {date} by `{command}` (reppo {_version()}).", "",
        f"{len(report.runs)} runs of {len(report.methods)} methods on "
        f"{sum(len(t) for t in report.tasks.values())} tasks; {len(report.skipped)} run "
        "directories skipped (listed at the end). Scores: DM Control return / 1000, ManiSkill3 "
        "success rate (success_once), any other task its raw return (a family of its own). "
        f"Intervals: {CONFIDENCE:.0%} percentile intervals of a "
        f"stratified bootstrap over runs ({opts.reps} resamples, seed {opts.seed}). A run's "
        "final result is its last evaluation. Definitions: docs/report.md.", "",
        f"Statistics mode: {report.stats_mode} ({report.stats_reason}). "
        + _MODE_TEXT[report.stats_mode], "",
    ]


def _family_sections(report: Report, family: str, opts: Options) -> list[str]:
    from reppo.analysis.runs import family_title, score_name
    from reppo.analysis.stats import STATISTIC_LABELS, STATISTICS

    title = family_title(family)
    lines = [f"## {title}: aggregate metrics", "",
             f"Final score ({score_name(family)}); optimality gap: lower is better.", ""]
    lines += _table(
        ["method", "tasks", "runs", *(STATISTIC_LABELS[s] for s in STATISTICS)],
        [[a.method, a.n_tasks, a.n_runs,
          *(_fmt(a.estimates[s], 3) if s in a.estimates else "-" for s in STATISTICS)]
         for a in report.aggregates if a.family == family],
    )
    methods = [m for m in report.methods
               if any(t.method == m and t.family == family for t in report.task_results)]
    lines += _per_task_section(report, family, methods, opts)
    lines += _end_success_section(report, family, methods)
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
    return lines


def _per_task_section(
    report: Report, family: str, methods: Sequence[str], opts: Options
) -> list[str]:
    """Each task's final return (ManiSkill3: success rate) per method, and on DM Control the
    published figure beside them where asked."""
    from reppo.analysis.reference import REPPO, format_published, published_return
    from reppo.analysis.runs import DM_CONTROL, MANISKILL, family_title

    is_mani = family == MANISKILL
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
    return [f"## {family_title(family)}: {what} per task", "",
            f"Mean over runs [{CONFIDENCE:.0%} bootstrap interval] (n runs).", "",
            *_table(header, rows)]


def _runs_sections(report: Report) -> list[str]:
    lines = ["", f"## Runs used ({len(report.runs)})", ""]
    lines += _table(
        ["run", "method", "task", "seed", "final env steps", "final return", "final score"],
        [[r.name, r.method, r.task, r.seed, f"{r.final_steps:,}", f"{r.final_return:.1f}",
          f"{r.final_score:.3f}"] for r in report.runs],
    )
    lines += [f"## Runs skipped ({len(report.skipped)})", ""]
    lines += [f"- `{s.path}`: {s.reason}" for s in report.skipped] or ["None."]
    return lines


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reppo")
    except PackageNotFoundError:
        return "unknown"
