"""Writing a report's CSV tables (`write_tables`: summary.csv, aggregates.csv and the curve,
ablation, profile and improvement tables), and the file-writing helpers the other writers
share: nothing is ever overwritten.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reppo.analysis.report.model import CONFIDENCE, Options, Report
from reppo.envs.catalog import FAMILIES

if TYPE_CHECKING:
    from reppo.analysis.stats import CurveEstimate

# ---- writing tables -----------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    from reppo.runs.rundir import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"), overwrite=False)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _g(value: float) -> str:
    """A float for CSV: full precision, no trailing noise."""
    return f"{value:.10g}"


def _curve_rows(family: str, curves: dict[str, CurveEstimate], *extra: Any) -> list[list[Any]]:
    return [
        [family, method, _g(x), _g(v), _g(lo), _g(hi), *extra]
        for method, c in curves.items()
        for x, v, lo, hi in zip(c.grid, c.value, c.low, c.high, strict=True)
    ]


def write_tables(report: Report, out: Path, opts: Options) -> list[Path]:
    from reppo.analysis.reference import AUTHORS_CODE_RUNS, REPPO, REPPO_FINAL_RETURNS
    from reppo.analysis.runs import DM_CONTROL, score_name

    rows: list[list[Any]] = [
        ["measured", t.family, t.task, t.method, t.n_runs, t.final_steps,
         _g(t.final_return.value), _g(t.final_return.low), _g(t.final_return.high),
         score_name(t.family), _g(t.final_score.value), _g(t.final_score.low),
         _g(t.final_score.high)]
        for t in report.task_results
    ]
    if opts.reference:
        dmc_max = FAMILIES[DM_CONTROL].max_return
        assert dmc_max is not None
        rows += [
            ["published", DM_CONTROL, p.task, REPPO, "", "", _g(p.final_return), "", "",
             score_name(DM_CONTROL), _g(p.final_return / dmc_max), "", ""]
            for p in REPPO_FINAL_RETURNS
        ]
        rows += [
            ["reference", DM_CONTROL, r.task, r.method, len(r.final_returns), r.env_steps,
             _g(r.mean), "", "", score_name(DM_CONTROL), _g(r.mean / dmc_max), "", ""]
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
