"""`reppo report`: its flags, its output directory and what it prints; the report itself is
`reppo.analysis.report`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reppo.analysis.report.build import build_report
from reppo.analysis.report.figures import write_figures
from reppo.analysis.report.model import AUTO, PAPER_SUITES, Options
from reppo.analysis.report.summary import write_summary
from reppo.analysis.report.tables import write_tables
from reppo.errors import UserError
from reppo.runs.rundir import check_output_directory

if TYPE_CHECKING:
    from reppo.analysis.runs import Skipped


MIN_REPS = 100


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
    check_output_directory(out, "--out", advice="choose another report directory")


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
