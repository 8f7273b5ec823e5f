"""`reppo tune`: its flags, the dry run and the summary it prints; the search itself is
`reppo.experiments.tune`."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

from reppo.commands.arguments import count_argument, jobs_argument
from reppo.experiments.suites import SUITES
from reppo.experiments.sweep.settings import Echo
from reppo.experiments.tune.search import (
    LOCK_FILE,
    PRUNERS,
    TABLE_MD,
    TuneSettings,
    best_trial,
    check_out_dir,
    ended_trials,
    open_study,
    record_invocation,
    require_optuna,
    resolve,
    search,
    sweep_settings,
    trial_dir,
    values_text,
    write_outputs,
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    tuning = ", ".join(s.name for s in SUITES.values() if not s.is_evaluation and not s.variants)
    parser.description = (
        "Search config values with Optuna (TPE sampler, median pruner on the evaluation curve) "
        "for the best normalized IQM over a suite's tasks x K seeds; resumable. Writes the "
        "study, a table of trials and the best config as a preset file, OUT/best.json, for "
        "`reppo train --preset OUT/best.json`. docs/experiments.md says how to read a search: "
        "re-evaluate its winner on fresh seeds (and tasks) before trusting it."
    )
    parser.add_argument("--suite", required=True,
                        help=f"the suite to tune on: {tuning} (never an evaluation suite)")
    parser.add_argument("--space", type=Path, required=True, metavar="FILE",
                        help="the search space: a TOML or JSON file with one table per config "
                             "field, [field] with low, high (log, step) or choices "
                             "(docs/experiments.md)")
    parser.add_argument("--trials", type=int, required=True, metavar="N",
                        help="trials to end (finished, pruned or failed), over every run of "
                             "this command in OUT")
    parser.add_argument("--seeds", type=int, required=True, metavar="K",
                        help="seeds per task and trial: S..S+K-1 (S: --first-seed)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="search directory (new, empty, or a search to resume)")
    parser.add_argument("--first-seed", type=int, default=None, metavar="S",
                        help="the first seed (default: the suite's, 0)")
    parser.add_argument("--steps", type=count_argument, default=None, metavar="N",
                        help="env steps per run of a trial (default: the suite's budget)")
    parser.add_argument("--tasks", default=None, metavar="A,B",
                        help="only these tasks of the suite (comma-separated)")
    parser.add_argument("--preset", default=None,
                        help="the preset trials start from (default: the suite's): a name or "
                             "a preset file; its per-task settings are not applied")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="a config field fixed for every trial (repeatable)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="median: stop a trial whose score at a rung is below the median "
                             "of the finished trials' scores there (default); none: train every "
                             "trial to the end")
    parser.add_argument("--rungs", type=int, default=3, metavar="R",
                        help="with a pruner: score trials after 1/R, ..., (R-1)/R of the "
                             "budget (default 3; each rung pauses and resumes every run once)")
    parser.add_argument("--startup-trials", type=int, default=10, metavar="N",
                        help="trials drawn at random before TPE models the results (default 10)")
    parser.add_argument("--prune-after", type=int, default=5, metavar="N",
                        help="finished trials before the pruner stops any (default 5)")
    parser.add_argument("--sampler-seed", type=int, default=0, metavar="S",
                        help="seed of the sampler's draws (default 0)")
    parser.add_argument("--jobs", type=jobs_argument, default=1, metavar="N|auto",
                        help="runs of a trial at once, each on its own share of the CPU cores, "
                             "as `reppo sweep --jobs` (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the search's settings and first trial's commands; write "
                             "nothing")


# ---- the command -----------------------------------------------------------------------------


def _describe(settings: TuneSettings) -> list[str]:
    s = settings.sweep
    seeds = f"seeds {s.first_seed}-{s.first_seed + s.seeds - 1}"
    lines = [
        f"tune {s.suite.name}: {len(s.tasks)} task(s) [{', '.join(s.tasks)}] x {s.seeds} "
        f"seed(s) ({seeds}), {s.steps:,} env steps per run, {settings.trials} trial(s), from "
        f"preset {settings.preset_name}"
        + (f" with {', '.join(f'{k}={v}' for k, v in s.overrides.items())}"
           if s.overrides else ""),
        "searching: " + "; ".join(settings.space.describe()),
    ]
    if settings.rung_steps:
        lines.append(f"pruning: median, after {settings.prune_after} finished trials, at "
                     + ", ".join(f"{r:,}" for r in settings.rung_steps) + " env steps")
    else:
        lines.append("pruning: none")
    lines.append(f"sampler: TPE (seed {settings.sampler_seed}), "
                 f"{settings.startup_trials} random trial(s) first; results in {settings.out}")
    return lines


def dry_run(settings: TuneSettings, echo: Echo) -> int:
    from reppo.experiments.sweep.plan import plan, start_command

    example = dataclasses.replace(sweep_settings(settings), out=trial_dir(settings, 0))
    echo("the runs of a trial (values of the searched fields are added to each command):")
    for run in plan(example):
        echo("  " + shlex.join(start_command(run, example)))
    return 0


def run(args: argparse.Namespace) -> int:
    from reppo.experiments.sweep.execute import INTERRUPTED, sigterm_as_interrupt
    from reppo.experiments.sweep.outdir import sweep_lock
    from reppo.experiments.tune.trial import INTERRUPTED as TRIAL_INTERRUPTED

    def echo(line: str) -> None:
        print(line, flush=True)

    settings = resolve(args)
    require_optuna()
    existing = check_out_dir(settings)
    for line in _describe(settings):
        echo(line)
    if args.dry_run:
        return dry_run(settings, echo)
    settings.out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(settings.out, LOCK_FILE, "reppo tune"), sigterm_as_interrupt():
        existing = check_out_dir(settings)  # again, now that no other search can change it
        record_invocation(settings, existing)
        study = open_study(settings)
        try:
            interrupted = search(settings, study, echo) == TRIAL_INTERRUPTED
        except KeyboardInterrupt:
            interrupted = True
        best = write_outputs(settings, study)
    ended = len(ended_trials(study))
    echo("")
    echo(f"{ended} of {settings.trials} trials ended; table: {settings.out / TABLE_MD}")
    if best is not None:
        top = best_trial(study)
        echo(f"best: trial {top.number}, IQM {top.value:.3f}: {values_text(top.params)}")
        echo(f"its config: {best} (reppo train --preset {best}); evaluate it on fresh seeds "
             "before trusting the score")
    if interrupted:
        echo("interrupted: run the same command again to resume")
        return INTERRUPTED
    return 0


