"""One trial of `reppo tune`: a small sweep of the suite with the trial's config, trained in
rungs so that the pruner can stop it early, and its score.

A trial's runs are those of `reppo sweep` (the same plan, child commands, logs, resumption and
`--jobs`), in OUT/trials/<number>/, itself a sweep directory that `reppo sweep` and `reppo
report` read. With pruning, the runs train to the first rung (a fraction of the budget), are
paused there (asked to stop as on Ctrl-C: each saves a checkpoint), the trial's score at that
step is reported to the pruner, and unless it prunes the trial the runs resume to the next
rung, and so on to the budget. Pausing and resuming do not change what a run learns (the
training loop's guarantee), and every run keeps the whole budget in its config, so a learning
rate schedule decays as in an uninterrupted run.

The score: every run's normalized score (DM Control: return / 1000; `reppo.analysis.runs`),
aggregated over tasks and seeds by the interquartile mean (`reppo.analysis.stats.iqm`, every
task weighted equally), at the final evaluation; at a rung, of the last evaluation at or
before the rung (the step function `reppo report` draws).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.experiments.sweep.plan import PlannedRun
from reppo.experiments.sweep.settings import Echo, Settings

COMPLETE, PRUNED, FAILED, INTERRUPTED = "complete", "pruned", "failed", "interrupted"


@dataclass(frozen=True)
class TrialResult:
    state: str  # COMPLETE, PRUNED, FAILED or INTERRUPTED
    score: float | None = None  # the final score (complete) or the last rung's (pruned)
    task_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    reason: str = ""  # why it failed or was pruned
    wall_time: float | None = None  # seconds of training, summed over the trial's runs


def rung_steps(budget: int, rungs: int) -> tuple[int, ...]:
    """The env steps at which a trial is scored for the pruner: after 1/R, ..., (R-1)/R of
    the budget (none for R = 1)."""
    return tuple(budget * r // rungs for r in range(1, rungs))


def latest_steps(run_dir: Path) -> int:
    """The env steps of the run's latest metrics record (0 before its first)."""
    from reppo.runs.directory import RunDir

    records = RunDir(run_dir).records() if run_dir.is_dir() else []
    steps = [r.get("env_steps") for r in records]
    return max((s for s in steps if isinstance(s, int)), default=0)


def _reached(run: PlannedRun, step: int) -> bool:
    from reppo.experiments.sweep.plan import is_finished

    return run.run_dir.is_dir() and (is_finished(run.run_dir) or latest_steps(run.run_dir) >= step)


def score_at(runs: list[PlannedRun], step: int | None) -> tuple[float, dict[str, float]]:
    """(IQM of the normalized scores over tasks and seeds, mean score per task) at `step`, or
    at the final evaluation for None. Raises ValueError where a run has no score there."""
    import numpy as np

    from reppo.analysis.curves import step_interpolate
    from reppo.analysis.runs import RunSkipped, load_run_dir
    from reppo.analysis.stats import iqm

    per_task: dict[str, list[float]] = {}
    for run in runs:
        try:
            loaded = load_run_dir(run.run_dir, finished_only=step is None)
        except RunSkipped as err:
            raise ValueError(f"{run.run_dir}: {err}") from None
        for seed_run in loaded:
            if step is None:
                value = seed_run.final_score
            else:
                value = float(step_interpolate(seed_run.env_steps, seed_run.scores, [step])[0])
                if not np.isfinite(value):
                    raise ValueError(f"{run.run_dir} has no evaluation at or before {step:,} "
                                     "env steps")
            per_task.setdefault(run.task, []).append(value)
    scores = [np.array(values) for values in per_task.values()]
    return iqm(scores), {task: float(np.mean(v)) for task, v in per_task.items()}


def _wall_time(runs: list[PlannedRun]) -> float | None:
    from reppo.experiments.sweep.plan import final_eval

    walls = [final_eval(run.run_dir)[2] for run in runs if run.run_dir.is_dir()]
    walls = [w for w in walls if isinstance(w, (int, float))]
    return float(sum(walls)) if walls else None


def run_trial(
    settings: Settings,
    rungs: tuple[int, ...],
    echo: Echo,
    *,
    jobs: int,
    report: Callable[[float, int], bool],
    reported: dict[int, float],
) -> TrialResult:
    """Train the trial's runs rung by rung to the budget; `report(score, step)` is called at
    each rung not yet in `reported` (scores of an earlier, interrupted attempt) and returns
    whether to prune."""
    from reppo.experiments.sweep.execute import execute
    from reppo.experiments.sweep.outdir import check_out_dir, record_invocation
    from reppo.experiments.sweep.plan import plan

    settings.out.mkdir(parents=True, exist_ok=True)
    record_invocation(settings, check_out_dir(settings))
    runs = plan(settings)
    for target in (*rungs, settings.steps):
        final = target == settings.steps
        todo = [run for run in runs if not (_reached(run, target) if not final
                                            else _is_finished(run))]
        if todo:
            def pause(run: PlannedRun, target: int = target) -> Callable[[], bool]:
                return lambda: latest_steps(run.run_dir) >= target

            outcomes, interrupted = execute(settings, todo, echo, jobs=jobs,
                                            pause=None if final else pause)
            if interrupted:
                return TrialResult(INTERRUPTED)
            failed = [o for o in outcomes if not o.ok]
            if failed:
                what = "; ".join(f"{o.run.name}: {o.status} (log: {o.run.log_path})"
                                 for o in failed)
                return TrialResult(FAILED, reason=what, wall_time=_wall_time(runs))
        if final:
            break
        if target in reported:
            continue
        try:
            value, per_task = score_at(runs, target)
        except ValueError as err:
            return TrialResult(FAILED, reason=str(err), wall_time=_wall_time(runs))
        if report(value, target):
            return TrialResult(PRUNED, value, per_task,
                               reason=f"pruned at {target:,} env steps",
                               wall_time=_wall_time(runs))
    try:
        value, per_task = score_at(runs, None)
    except ValueError as err:
        return TrialResult(FAILED, reason=str(err), wall_time=_wall_time(runs))
    return TrialResult(COMPLETE, value, per_task, wall_time=_wall_time(runs))


def _is_finished(run: PlannedRun) -> bool:
    from reppo.experiments.sweep.plan import is_finished

    return run.run_dir.is_dir() and is_finished(run.run_dir)


def trial_settings(base: Settings, out: Path, params: dict[str, Any]) -> Settings:
    """The sweep of one trial: the search's settings with the trial's values; a ConfigError
    (or UserError) where they make no valid config."""
    from reppo.presets import get_preset

    overrides = {**base.overrides, **params}
    settings = dataclasses.replace(base, out=out, overrides=overrides)
    assert base.preset is not None
    for task in settings.tasks:
        get_preset(base.preset).replace(
            env=task, backend=base.suite.backend, seed=base.first_seed,
            num_seeds=settings.seeds_per_process, total_steps=settings.steps, **overrides,
        )
    return settings
