"""`reppo tune`: a hyperparameter search over a suite with Optuna, resumable.

Each trial draws values of the searched config fields (`reppo.experiments.tune_space`) with
Optuna's TPE sampler, trains the suite's tasks x K seeds with them as a small sweep
(`reppo.experiments.tune_trial`: the same child processes, logs, resumption and `--jobs` as
`reppo sweep`), and scores the normalized IQM over tasks and seeds; a median pruner stops a
trial whose score at a rung of the budget falls below the median of the finished trials there.

Layout of `--out OUT`::

    OUT/tune.json        the search's settings (checked on every rerun) and its invocations
    OUT/study.db         the Optuna study (SQLite): every trial's values, rung scores, state
    OUT/base.json        the config every trial starts from (the preset, without per-task
                         settings), as a preset file
    OUT/trials/<NNNN>/   trial NNNN: a sweep directory (sweep.json, reppo/<task>/, logs)
    OUT/trials.csv       one row per trial: state, score, rung scores, task scores, values
    OUT/trials.md        the same, best first
    OUT/best.json        the best finished trial's config, a preset file (`--preset FILE`)

Running the same command again resumes the search: a trial that was interrupted continues
from its runs' checkpoints, and new trials are drawn until `--trials` have ended (finished,
pruned or failed); a larger `--trials` extends a search. Different settings in the same OUT are
refused, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.errors import UserError
from reppo.experiments.suites import SUITES
from reppo.experiments.sweep_settings import Echo, Settings

TUNE_FILE, LOCK_FILE, STUDY_FILE = "tune.json", "tune.lock", "study.db"
BASE_FILE, BEST_FILE, TRIALS_DIR = "base.json", "best.json", "trials"
TABLE_CSV, TABLE_MD = "trials.csv", "trials.md"
STUDY_NAME = "reppo-tune"
PRUNERS = ("median", "none")
# The settings a rerun in the same OUT must repeat (tune.json); --trials and --jobs may change.
_FIXED = ("suite", "tasks", "seeds", "first_seed", "steps", "preset", "base_config",
          "overrides", "space", "pruner", "rungs", "startup_trials", "prune_after",
          "sampler_seed")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from reppo.experiments.sweep import count_argument, jobs_argument

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


# ---- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneSettings:
    sweep: Settings  # the suite, tasks, seeds, budget and fixed --set values of every trial
    base_config: dict[str, Any]  # what every trial starts from (OUT/base.json)
    space: Any  # tune_space.SearchSpace
    trials: int
    pruner: str
    rungs: int
    startup_trials: int
    prune_after: int
    sampler_seed: int
    jobs: int
    out: Path
    preset_name: str
    space_path: Path

    @property
    def rung_steps(self) -> tuple[int, ...]:
        from reppo.experiments.tune_trial import rung_steps

        return rung_steps(self.sweep.steps, self.rungs) if self.pruner != "none" else ()

    def record(self) -> dict[str, Any]:
        """What tune.json holds of these settings (in JSON form)."""
        record = {
            "suite": self.sweep.suite.name, "tasks": list(self.sweep.tasks),
            "seeds": self.sweep.seeds, "first_seed": self.sweep.first_seed,
            "steps": self.sweep.steps, "preset": self.preset_name,
            "base_config": self.base_config, "overrides": self.sweep.overrides,
            "space": self.space.as_dict(), "pruner": self.pruner, "rungs": self.rungs,
            "startup_trials": self.startup_trials, "prune_after": self.prune_after,
            "sampler_seed": self.sampler_seed,
        }
        return json.loads(json.dumps(record))

    def command(self) -> str:
        """The canonical `reppo tune` command of these settings."""
        s = self.sweep
        parts = ["reppo", "tune", "--suite", s.suite.name, "--space", str(self.space_path),
                 "--trials", str(self.trials), "--seeds", str(s.seeds), "--out", str(self.out),
                 "--first-seed", str(s.first_seed), "--steps", str(s.steps)]
        if s.tasks != s.suite.tasks:
            parts += ["--tasks", ",".join(s.tasks)]
        parts += ["--preset", self.preset_name]
        for name, value in s.overrides.items():
            parts += ["--set", f"{name}={value}"]
        parts += ["--pruner", self.pruner, "--rungs", str(self.rungs), "--startup-trials",
                  str(self.startup_trials), "--prune-after", str(self.prune_after),
                  "--sampler-seed", str(self.sampler_seed)]
        return shlex.join(parts)


def resolve(args: argparse.Namespace) -> TuneSettings:
    """Check every argument (and the space file against the preset) before anything is
    written."""
    from reppo.experiments.sweep_settings import resolve as resolve_sweep
    from reppo.experiments.tune_space import load_space
    from reppo.presets import get_preset

    suite = SUITES.get(args.suite)
    if suite is not None and suite.is_evaluation:
        tuning = [s.name for s in SUITES.values() if s.role == "tuning"]
        raise UserError(
            f"--suite {suite.name} is an evaluation suite: its tasks and seeds report settings "
            f"chosen elsewhere, and a search on them would leave nothing fresh to report on; "
            f"tune on {' or '.join(tuning)} (or your own tasks), then evaluate the winner once "
            f"with `reppo sweep --suite {suite.name} --preset OUT/best.json`"
        )
    if suite is not None and suite.variants:
        raise UserError(f"--suite {suite.name} compares ablation variants; a search tunes one "
                        "method: use a suite without variants, e.g. cpu-smoke")
    for name in ("trials", "seeds", "rungs"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("startup_trials", "prune_after"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got "
                            f"{getattr(args, name)}")
    if args.pruner != "none" and args.rungs < 2:
        raise UserError("--rungs 1 leaves the pruner nothing to compare before the end; give "
                        "--rungs 2 or more, or --pruner none")
    sweep = resolve_sweep(argparse.Namespace(
        suite=args.suite, seeds=args.seeds, out=args.out / TRIALS_DIR, algo="reppo",
        steps=args.steps, tasks=args.tasks, variants=None, preset=args.preset,
        overrides=args.overrides, first_seed=args.first_seed,
    ))
    assert sweep.preset is not None
    # Every trial starts from the preset as one config for every task: the preset file it
    # writes holds no per-task settings, so the trials must not train with any either.
    base = get_preset(sweep.preset)
    start = base.replace(**sweep.overrides)
    space = load_space(args.space, start)
    overlap = sorted(set(space.names) & set(sweep.overrides))
    if overlap:
        raise UserError(f"{', '.join(overlap)} is both searched (--space) and fixed (--set); "
                        "drop one")
    settings = TuneSettings(
        sweep=sweep, base_config=json.loads(json.dumps(base.to_dict())), space=space,
        trials=args.trials, pruner=args.pruner, rungs=args.rungs,
        startup_trials=args.startup_trials, prune_after=args.prune_after,
        sampler_seed=args.sampler_seed, jobs=args.jobs, out=args.out,
        preset_name=sweep.preset, space_path=args.space,
    )
    _check_rungs(settings, start)
    return settings


def _check_rungs(settings: TuneSettings, start: Any) -> None:
    """With pruning, every run must have evaluated before the first rung."""
    from reppo.experiments.suites import default_eval_interval

    rungs = settings.rung_steps
    if not rungs:
        return
    interval = settings.sweep.overrides.get("eval_interval_steps",
                                            default_eval_interval(settings.sweep.steps))
    per_iteration = start.steps_per_iteration
    # The loop evaluates at the end of the first iteration that reaches the interval.
    first_eval = -(-interval // per_iteration) * per_iteration if interval else None
    if first_eval is None or first_eval > rungs[0]:
        raise UserError(
            f"the first rung is at {rungs[0]:,} env steps but the runs evaluate every "
            f"{interval:,} (an iteration is {per_iteration:,}), first at "
            f"{first_eval or settings.sweep.steps:,}: the pruner would have no score there; "
            "give fewer --rungs, a larger --steps, or --set eval_interval_steps=N with N at "
            "most the first rung"
        )


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError('reppo tune needs Optuna: pip install "reppo[tune]" (or pip install '
                        "optuna)") from None
    return optuna


# ---- the search directory --------------------------------------------------------------------


def _read_record(out: Path) -> dict[str, Any] | None:
    path = out / TUNE_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pick a directory")
    if not path.exists():
        if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise UserError(f"--out {out} holds files but no {TUNE_FILE}, so it is not a "
                            "search; nothing was changed; pick a new or empty directory")
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise UserError(f"{path} is unreadable or not a JSON object; repair it or pick "
                        "another --out")
    return record


def check_out_dir(settings: TuneSettings) -> dict[str, Any] | None:
    """OUT's tune.json (None for a new search), or a UserError where it holds another."""
    record = _read_record(settings.out)
    if record is None:
        return None
    new = settings.record()
    diffs = []
    for key in _FIXED:
        if record.get(key) != new[key]:
            if key == "base_config":
                changed = sorted(k for k in set(record.get(key) or {}) | set(new[key])
                                 if (record.get(key) or {}).get(k) != new[key].get(k))
                diffs.append(f"the preset {new['preset']} has changed since: "
                             f"{', '.join(changed)}")
            elif key == "space":
                diffs.append(f"the search space differs (there: {record.get(key)}; now: "
                             f"{new[key]})")
            else:
                diffs.append(f"{key} {record.get(key)!r} there, {new[key]!r} now")
    if diffs:
        raise UserError(
            f"{settings.out} holds a search with other settings ({'; '.join(diffs)}); nothing "
            "was changed; rerun with its settings to resume it, or pick another --out"
        )
    return record


def _record_invocation(settings: TuneSettings, existing: dict[str, Any] | None) -> None:
    from reppo.experiments.sweep_outdir import now_stamp
    from reppo.preset_files import write_preset_file
    from reppo.runs import atomic_write_json

    invocation = {"command": settings.command(), "date": now_stamp(), "trials": settings.trials,
                  "jobs": settings.jobs}
    if existing is None:
        settings.out.mkdir(parents=True, exist_ok=True)
        from reppo.config import Config

        write_preset_file(
            settings.out / BASE_FILE, Config.from_dict(settings.base_config),
            f"the config every trial of the search in this directory starts from: preset "
            f"{settings.preset_name} without per-task settings", overwrite=True,
        )
        record = {**settings.record(), "invocations": [invocation]}
    else:
        record = {**existing, "invocations": [*existing.get("invocations", []), invocation]}
    atomic_write_json(settings.out / TUNE_FILE, record)


# ---- the study -------------------------------------------------------------------------------


def open_study(settings: TuneSettings) -> Any:
    """The search's Optuna study in OUT/study.db, created or loaded."""
    optuna = require_optuna()
    import numpy as np

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(settings.out / STUDY_FILE).resolve()}"
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.prune_after,
                                             n_warmup_steps=0)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    # Seeded by the trials so far as well: a resumed search must not redraw the random
    # start-up values of the trials it already has.
    seed = int(np.random.SeedSequence([settings.sampler_seed, len(study.trials)])
               .generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed,
                                               n_startup_trials=settings.startup_trials)
    return study


def _ended(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.FAIL))


def _from_base(settings: TuneSettings) -> Settings:
    """The search's sweep settings with OUT/base.json as the preset of every run."""
    from reppo.experiments.suites import REPPO, Variant

    base = str((settings.out / BASE_FILE).resolve())
    return dataclasses.replace(settings.sweep, preset=base, methods=(Variant(REPPO, base, None),))


def _trial_dir(settings: TuneSettings, number: int) -> Path:
    return settings.out / TRIALS_DIR / f"{number:04d}"


def _values_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_one_trial(settings: TuneSettings, study: Any, trial: Any, echo: Echo) -> str:
    """Run (or continue) one trial and tell the study its outcome; returns its state."""
    from optuna.trial import TrialState

    from reppo.config import ConfigError
    from reppo.experiments.tune_trial import (
        COMPLETE,
        FAILED,
        INTERRUPTED,
        PRUNED,
        run_trial,
        trial_settings,
    )

    params = settings.space.suggest(trial)
    number = trial.number
    out = _trial_dir(settings, number)
    trial.set_user_attr("dir", str(out.relative_to(settings.out)))
    echo(f"trial {number}: {_values_text(params)}")
    base = _from_base(settings)
    try:
        sweep = trial_settings(base, out, params)
    except (ConfigError, UserError) as err:
        trial.set_user_attr("failure", f"no valid config: {err}")
        study.tell(trial, state=TrialState.FAIL)
        echo(f"trial {number}: failed: no valid config: {err}")
        return FAILED
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    reported = dict(frozen.intermediate_values)  # the rungs an interrupted attempt scored

    def report(value: float, step: int) -> bool:
        trial.report(value, step)
        prune = trial.should_prune()
        echo(f"trial {number} at {step:,} env steps: IQM {value:.3f}"
             + (" -> pruned" if prune else ""))
        return prune

    result = run_trial(sweep, settings.rung_steps, echo, jobs=settings.jobs, report=report,
                       reported=reported)
    if result.state == INTERRUPTED:
        return INTERRUPTED
    trial.set_user_attr("task_scores", result.task_scores)
    if result.wall_time is not None:
        trial.set_user_attr("wall_time", result.wall_time)
    if result.state == COMPLETE:
        study.tell(trial, result.score)
        echo(f"trial {number}: IQM {result.score:.3f} ({_task_text(result.task_scores)})")
    elif result.state == PRUNED:
        trial.set_user_attr("pruned", result.reason)
        study.tell(trial, state=TrialState.PRUNED)
        echo(f"trial {number}: {result.reason}")
    else:
        trial.set_user_attr("failure", result.reason)
        study.tell(trial, state=TrialState.FAIL)
        echo(f"trial {number}: failed: {result.reason}")
    return result.state


def _task_text(scores: dict[str, float]) -> str:
    return ", ".join(f"{task} {score:.3f}" for task, score in scores.items())


# ---- the outputs -----------------------------------------------------------------------------


def trial_rows(settings: TuneSettings, study: Any) -> tuple[list[str], list[list[Any]]]:
    """The table of every trial: (header, rows) in trial order."""
    rungs = settings.rung_steps
    tasks = list(settings.sweep.tasks)
    names = list(settings.space.names)
    header = (["trial", "state", "score"] + [f"score@{s}" for s in rungs]
              + [f"{t} score" for t in tasks] + names + ["wall_time_s", "note"])
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        score = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        task_scores = t.user_attrs.get("task_scores", {})
        note = t.user_attrs.get("failure") or t.user_attrs.get("pruned") or ""
        rows.append(
            [t.number, state, score] + [t.intermediate_values.get(s) for s in rungs]
            + [task_scores.get(task) for task in tasks] + [t.params.get(n) for n in names]
            + [t.user_attrs.get("wall_time"), note]
        )
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_outputs(settings: TuneSettings, study: Any) -> Path | None:
    """trials.csv, trials.md and (once a trial has finished) best.json; the best's path."""
    from optuna.trial import TrialState

    from reppo.config import Config
    from reppo.preset_files import write_preset_file
    from reppo.runs.rundir import atomic_write_bytes

    header, rows = trial_rows(settings, study)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    atomic_write_bytes(settings.out / TABLE_CSV, text.getvalue().encode())

    order = {"complete": 0, "pruned": 1, "fail": 2, "running": 3}
    ranked = sorted(rows, key=lambda r: (order.get(r[1], 4), -(r[2] if r[2] is not None
                                                                else float("-inf"))))
    lines = [
        f"# Trials of `{settings.command()}`", "",
        f"Score: the normalized IQM over {len(settings.sweep.tasks)} task(s) x "
        f"{settings.sweep.seeds} seed(s) (seeds {settings.sweep.first_seed}-"
        f"{settings.sweep.first_seed + settings.sweep.seeds - 1}), "
        f"{settings.sweep.steps:,} env steps per run; finished trials first, best first. "
        "These scores selected the winner: they are biased upwards, and only a re-evaluation "
        "on fresh seeds (and tasks) measures it.", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(v).replace("|", "/") for v in row) + " |"
              for row in ranked]
    atomic_write_bytes(settings.out / TABLE_MD, ("\n".join(lines) + "\n").encode())

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not finished:
        return None
    best = max(finished, key=lambda t: t.value)
    config = Config.from_dict(settings.base_config).replace(
        **settings.sweep.overrides, **settings.space.typed(best.params),
        backend=settings.sweep.suite.backend, total_steps=settings.sweep.steps,
    )
    sweep = settings.sweep
    description = (
        f"reppo tune: trial {best.number} of the search in {settings.out} "
        f"({len(finished)} finished trials), normalized IQM {best.value:.3f} on "
        f"{sweep.suite.name} ({', '.join(sweep.tasks)}; seeds {sweep.first_seed}-"
        f"{sweep.first_seed + sweep.seeds - 1}; {sweep.steps:,} env steps). The best of a "
        "search scores higher than it will on fresh seeds: evaluate it on fresh seeds and "
        "tasks before trusting it (docs/experiments.md)."
    )
    write_preset_file(settings.out / BEST_FILE, config, description, overwrite=True)
    return settings.out / BEST_FILE


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
    from reppo.experiments.sweep_plan import plan, start_command

    example = dataclasses.replace(_from_base(settings), out=_trial_dir(settings, 0))
    echo("the runs of a trial (values of the searched fields are added to each command):")
    for run in plan(example):
        echo("  " + shlex.join(start_command(run, example)))
    return 0


def run(args: argparse.Namespace) -> int:
    from reppo.experiments.sweep_execute import INTERRUPTED, sigterm_as_interrupt
    from reppo.experiments.sweep_outdir import sweep_lock
    from reppo.experiments.tune_trial import INTERRUPTED as TRIAL_INTERRUPTED

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
        _record_invocation(settings, existing)
        study = open_study(settings)
        try:
            interrupted = _search(settings, study, echo) == TRIAL_INTERRUPTED
        except KeyboardInterrupt:
            interrupted = True
        best = write_outputs(settings, study)
    ended = len(_ended(study))
    echo("")
    echo(f"{ended} of {settings.trials} trials ended; table: {settings.out / TABLE_MD}")
    if best is not None:
        top = max(study.get_trials(deepcopy=False, states=(_complete(),)), key=lambda t: t.value)
        echo(f"best: trial {top.number}, IQM {top.value:.3f}: {_values_text(top.params)}")
        echo(f"its config: {best} (reppo train --preset {best}); evaluate it on fresh seeds "
             "before trusting the score")
    if interrupted:
        echo("interrupted: run the same command again to resume")
        return INTERRUPTED
    return 0


def _complete() -> Any:
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def _search(settings: TuneSettings, study: Any, echo: Echo) -> str | None:
    """Continue any trial an earlier invocation left running, then draw new ones until
    `settings.trials` have ended; returns INTERRUPTED when stopped."""
    import optuna
    from optuna.trial import TrialState

    from reppo.experiments.tune_trial import INTERRUPTED

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        echo(f"trial {frozen.number}: continuing (interrupted before)")
        # Optuna has no public call that reopens a running trial; its Trial is built from
        # the study and the trial's id like this inside Study.ask.
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if run_one_trial(settings, study, trial, echo) == INTERRUPTED:
            return INTERRUPTED
        write_outputs(settings, study)
    while len(_ended(study)) < settings.trials:
        trial = study.ask()
        if run_one_trial(settings, study, trial, echo) == INTERRUPTED:
            return INTERRUPTED
        write_outputs(settings, study)
    return None
