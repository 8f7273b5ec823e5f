"""A search: its settings, its directory (tune.json, the lock, base.json), the Optuna study,
the trials it runs and the tables and best config it writes."""

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
from reppo.experiments.sweep.settings import Echo, Settings
from reppo.runs.rundir import check_output_directory

TUNE_FILE, LOCK_FILE, STUDY_FILE = "tune.json", "tune.lock", "study.db"
BASE_FILE, BEST_FILE, TRIALS_DIR = "base.json", "best.json", "trials"
TABLE_CSV, TABLE_MD = "trials.csv", "trials.md"
STUDY_NAME = "reppo-tune"
PRUNERS = ("median", "none")
# The settings a rerun in the same OUT must repeat (tune.json); --trials and --jobs may change.
_FIXED = ("suite", "tasks", "seeds", "first_seed", "steps", "preset", "base_config",
          "overrides", "space", "pruner", "rungs", "startup_trials", "prune_after",
          "sampler_seed")


# ---- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneSettings:
    sweep: Settings  # the suite, tasks, seeds, budget and fixed --set values of every trial
    base_config: dict[str, Any]  # what every trial starts from (OUT/base.json)
    space: Any  # space.SearchSpace
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
        from reppo.experiments.tune.trial import rung_steps

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
    from reppo.experiments.sweep.settings import resolve as resolve_sweep
    from reppo.experiments.tune.space import load_space
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
    if not (out.is_dir() and path.exists()):
        check_output_directory(out, "--out", record=TUNE_FILE, kind="search",
                               ignore=(LOCK_FILE,))
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


def record_invocation(settings: TuneSettings, existing: dict[str, Any] | None) -> None:
    from reppo.experiments.sweep.outdir import now_stamp
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


def ended_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.FAIL))


def sweep_settings(settings: TuneSettings) -> Settings:
    """The search's sweep settings with OUT/base.json as the preset of every run."""
    from reppo.experiments.suites import REPPO, Variant

    base = str((settings.out / BASE_FILE).resolve())
    return dataclasses.replace(settings.sweep, preset=base, methods=(Variant(REPPO, base, None),))


def trial_dir(settings: TuneSettings, number: int) -> Path:
    return settings.out / TRIALS_DIR / f"{number:04d}"


def values_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_one_trial(settings: TuneSettings, study: Any, trial: Any, echo: Echo) -> str:
    """Run (or continue) one trial and tell the study its outcome; returns its state."""
    from optuna.trial import TrialState

    from reppo.config import ConfigError
    from reppo.experiments.tune.trial import (
        COMPLETE,
        FAILED,
        INTERRUPTED,
        PRUNED,
        run_trial,
        trial_settings,
    )

    params = settings.space.suggest(trial)
    number = trial.number
    out = trial_dir(settings, number)
    trial.set_user_attr("dir", str(out.relative_to(settings.out)))
    echo(f"trial {number}: {values_text(params)}")
    base = sweep_settings(settings)
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


# ---- the search --------------------------------------------------------------------------------


def search(settings: TuneSettings, study: Any, echo: Echo) -> str | None:
    """Continue any trial an earlier invocation left running, then draw new ones until
    `settings.trials` have ended; returns INTERRUPTED when stopped."""
    import optuna
    from optuna.trial import TrialState

    from reppo.experiments.tune.trial import INTERRUPTED

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        echo(f"trial {frozen.number}: continuing (interrupted before)")
        # Optuna has no public call that reopens a running trial; its Trial is built from
        # the study and the trial's id like this inside Study.ask.
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if run_one_trial(settings, study, trial, echo) == INTERRUPTED:
            return INTERRUPTED
        write_outputs(settings, study)
    while len(ended_trials(study)) < settings.trials:
        trial = study.ask()
        if run_one_trial(settings, study, trial, echo) == INTERRUPTED:
            return INTERRUPTED
        write_outputs(settings, study)
    return None


def best_trial(study: Any) -> Any:
    """The finished trial with the highest score."""
    from optuna.trial import TrialState

    return max(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
               key=lambda t: t.value)
