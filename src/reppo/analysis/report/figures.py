"""Writing a report's figures (`write_figures`): per-task curves, and per family the aggregates,
sample efficiency, reliable performance, performance profiles and ablations. matplotlib loads
inside `reppo.analysis.plots`, when a figure is drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

from reppo.analysis.report.model import Options, Report, tpi_label

# ---- writing figures ----------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "task"


def write_figures(report: Report, out: Path, opts: Options) -> list[Path]:
    from reppo.analysis import plots
    from reppo.analysis.reference import REPPO, published_return
    from reppo.analysis.runs import DM_CONTROL, MANISKILL, family_title, is_raw, score_name

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
    for task, (by_steps, by_time) in report.end_success_curves.items():
        written.append(plots.plot_task_curves(
            task, "success rate (success_at_end)", by_steps, by_time, colors,
            out / "curves" / f"{_safe_name(task)}_success_at_end.png",
        ))
    for family in report.families:
        title = family_title(family)
        score = score_name(family) if is_raw(family) else "normalized score"
        stem = _safe_name(family)
        estimates = {a.method: a.estimates for a in report.aggregates if a.family == family}
        written.append(plots.plot_aggregates(
            f"{title}: final {score} (95% stratified bootstrap CIs)", estimates, colors,
            out / f"aggregates_{stem}.png",
        ))
        if report.sample_efficiency.get(family):
            written.append(plots.plot_curves(
                f"{title}: sample efficiency", f"IQM of {score}",
                report.sample_efficiency[family], colors,
                out / f"sample_efficiency_{stem}.png",
            ))
        if report.reliable.get(family):
            written.append(plots.plot_curves(
                f"{title}: reliable performance (tau = {opts.tau:g})",
                "fraction of runs reliably >= tau", report.reliable[family], colors,
                out / f"reliable_performance_{stem}.png", ylim=(-0.02, 1.02),
            ))
        if report.profiles.get(family):
            written.append(plots.plot_profiles(
                f"{title}: performance profile\nfinal normalized scores ({report.stats_mode} "
                "statistics, 95% stratified bootstrap CIs)", report.profiles[family], colors,
                out / f"performance_profile_{stem}.png",
            ))
        bars = [b for b in report.ablations if b.family == family]
        if bars:
            tpis = list(dict.fromkeys(b.transitions_per_iteration for b in bars))
            groups = [
                (tpi_label(tpi),
                 [(b.variant, b.iqm) for b in bars if b.transitions_per_iteration == tpi])
                for tpi in tpis
            ]
            written.append(plots.plot_ablations(
                f"{title}\nablations (95% stratified bootstrap CIs)", groups,
                out / f"ablations_{stem}.png",
            ))
    return written
