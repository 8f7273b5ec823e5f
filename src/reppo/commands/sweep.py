"""`reppo sweep`: its flags, the dry run, the table of outcomes; the sweep itself is
`reppo.experiments.sweep`."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from reppo.commands.arguments import count_argument, jobs_argument
from reppo.errors import UserError
from reppo.experiments.suites import ALGOS, BASELINE_PRESETS, REPPO, SUITES
from reppo.experiments.sweep.execute import (
    INTERRUPTED,
    Outcome,
    execute,
    sigterm_as_interrupt,
)
from reppo.experiments.sweep.outdir import (
    check_out_dir,
    record_invocation,
    sweep_lock,
)
from reppo.experiments.sweep.plan import (
    PlannedRun,
    inspect,
    plan,
    resume_command,
    start_command,
)
from reppo.experiments.sweep.settings import Echo, Settings, resolve
from reppo.experiments.sweep.slurm import SlurmOptions, require_submitit, submit
from reppo.experiments.sweep.slurm import dry_run as slurm_dry_run

# ---- the command line ------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    suites = ", ".join(f"{s.name} ({len(s.tasks)} tasks)" for s in SUITES.values())
    parser.description = (
        "Train every task (x variant) of a suite x K seeds, one child process per run, into "
        "OUT/<method>/<task>. Rerunning the same command resumes the sweep; docs/experiments.md "
        "describes the suites, the layout and the resumption rules."
    )
    parser.add_argument("--suite", required=True, help=f"the suite: {suites}")
    parser.add_argument("--seeds", type=int, required=True, metavar="K",
                        help="seeds per task: S..S+K-1, S the first seed (below)")
    parser.add_argument("--first-seed", type=int, default=None, metavar="S",
                        help="the first seed (default: the suite's, 0, or 100 for the "
                             "evaluation suite cpu-eval, which refuses seeds below 100)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="sweep directory (new, empty, or a sweep to resume)")
    parser.add_argument("--algo", choices=ALGOS, default=REPPO,
                        help="algorithm (default reppo; the baselines Brax PPO and SAC and "
                             "FastTD3 run the Playground DM Control suites, maniskill-ppo "
                             "the maniskill suite); several algos may share one --out")
    parser.add_argument("--steps", type=count_argument, default=None, metavar="N",
                        help="env steps per run and seed (default: the suite's budget)")
    parser.add_argument("--tasks", default=None, metavar="A,B",
                        help="only these tasks of the suite (comma-separated)")
    parser.add_argument("--variants", default=None, metavar="A,B",
                        help="ablation suites: only these methods (e.g. paper,paper-no-kl)")
    parser.add_argument("--preset", default=None,
                        help="REPPO preset (default: the suite's), or the baseline preset "
                             f"({', '.join(BASELINE_PRESETS)}; each baseline has some: "
                             "docs/baselines.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="a config field for every run (repeatable), e.g. --set "
                             "eval_interval_steps=1e6")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would run, and the commands, without running them")
    parser.add_argument("--jobs", type=jobs_argument, default=1, metavar="N|auto",
                        help="local launcher: runs at once, each on its own share of the CPU "
                             "cores (default 1). On a CPU one run keeps one core busy, so "
                             "'auto' (one per core; 1 where there is an NVIDIA GPU) finishes a "
                             "sweep sooner; each run takes 1-3 GB of memory")
    slurm = parser.add_argument_group(
        "SLURM", "--launcher slurm submits the runs as a job array through submitit (pip "
        "install \"reppo[slurm]\") and returns; rerun the command to submit what is left")
    slurm.add_argument("--launcher", choices=("local", "slurm"), default="local",
                       help="local: child processes here, --jobs at a time (default); "
                            "slurm: one SLURM job per run")
    slurm.add_argument("--slurm-partition", default=None, metavar="NAME")
    slurm.add_argument("--slurm-account", default=None, metavar="NAME")
    slurm.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES",
                       help="time limit of each job (default 1440)")
    slurm.add_argument("--slurm-gpus", type=int, default=1, metavar="N",
                       help="GPUs of each job (default 1)")
    slurm.add_argument("--slurm-cpus", type=int, default=8, metavar="N",
                       help="CPU cores of each job (default 8)")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None, metavar="GB")
    slurm.add_argument("--slurm-parallel", type=int, default=64, metavar="N",
                       help="jobs of the array running at once (default 64)")


# ---- the outcome table, the dry run and the command ------------------------------------------


def format_table(outcomes: list[Outcome]) -> str:
    from reppo.runs import format_duration

    rows = [("run", "status", "final return", "wall time")]
    for o in outcomes:
        ret = "-" if o.final_return is None else f"{o.final_return:.1f}"
        wall = "-" if o.wall_time is None else format_duration(o.wall_time)
        rows.append((o.run.name, o.status, ret, wall))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _describe(settings: Settings, runs: list[PlannedRun]) -> str:
    methods = ", ".join(m.label for m in settings.methods)
    per = "seeds batched in one process" if settings.batched_seeds else "one seed each"
    return (
        f"sweep {settings.suite.name} ({settings.algo}): {len(settings.tasks)} task(s) x "
        f"{len(settings.methods)} method(s) [{methods}] x {settings.seeds} seed(s) "
        f"({_seed_text(settings.seed_range)}), "
        f"{settings.steps:,} env steps each -> {len(runs)} run(s), {per}, in {settings.out}"
    )


def _seed_text(seeds: tuple[int, ...]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def dry_run(settings: Settings, runs: list[PlannedRun], echo: Echo) -> int:
    """Print what each run would do, and its command; changes nothing."""
    for run in runs:
        state = inspect(run, settings)
        if state.action == "skip":
            echo(f"{run.name}: skip (finished)")
        elif state.action == "mismatch":
            echo(f"{run.name}: not run: {state.reason}")
        elif state.action == "running":
            echo(f"{run.name}: left alone: {state.reason}")
        elif state.action == "resume":
            echo(f"{run.name}: resume: {shlex.join(resume_command(run))}")
        else:
            if state.action == "restart":
                echo(f"{run.name}: unfinished and {state.reason}: would be moved to "
                     f"{run.run_dir.name}.partial-<time>")
            echo(f"{run.name}: {state.action}: {shlex.join(start_command(run, settings))}")
    return 0


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    for name in ("slurm_time", "slurm_cpus", "slurm_parallel"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.slurm_gpus < 0:
        raise UserError("--slurm-gpus must be 0 or more")
    if getattr(args, "jobs", 1) != 1:
        raise UserError("--jobs sets the local launcher's runs at once; with --launcher slurm "
                        "use --slurm-parallel N")
    return SlurmOptions(
        partition=args.slurm_partition, account=args.slurm_account, time_min=args.slurm_time,
        gpus_per_node=args.slurm_gpus, cpus_per_task=args.slurm_cpus,
        mem_gb=args.slurm_mem_gb, array_parallelism=args.slurm_parallel,
    )


def _run_on_slurm(args: argparse.Namespace, settings: Settings, runs: list[PlannedRun],
                  echo: Echo) -> int:
    options = slurm_options(args)
    if args.dry_run:
        return slurm_dry_run(settings, runs, echo, options)
    require_submitit()
    settings.out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(settings.out):
        existing = check_out_dir(settings)
        record_invocation(settings, existing)
        return submit(settings, runs, echo, options)


def run(args: argparse.Namespace) -> int:
    def echo(line: str) -> None:
        print(line, flush=True)

    settings = resolve(args)
    existing = check_out_dir(settings)
    runs = plan(settings)
    echo(_describe(settings, runs))
    if getattr(args, "launcher", "local") == "slurm":
        return _run_on_slurm(args, settings, runs, echo)
    if args.dry_run:
        return dry_run(settings, runs, echo)
    settings.out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(settings.out), sigterm_as_interrupt():
        existing = check_out_dir(settings)  # again, now that no other sweep can change it
        record_invocation(settings, existing)
        outcomes, interrupted = execute(settings, runs, echo, jobs=args.jobs)
    echo("")
    echo(format_table(outcomes))
    failed = [o for o in outcomes if not o.ok]
    counts = f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished"
    if interrupted:
        echo(f"{counts}; interrupted: run the same command again to resume")
        return INTERRUPTED
    if failed:
        echo(f"{counts}; {len(failed)} did not (their logs are beside their run dirs); run "
             "the same command again to retry them")
        return 1
    echo(f"{counts}")
    return 0
