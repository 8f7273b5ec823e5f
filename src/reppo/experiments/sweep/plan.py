"""The plan of a sweep and the state of its run directories.

`plan` turns `Settings` into `PlannedRun`s (methods x tasks x seeds, each with its run dir and
the child command that starts or resumes it); `inspect` reads what a run dir holds and decides
what the sweep does with the run: start, skip (finished), resume from its latest checkpoint,
restart (moved aside by `move_aside`), refuse (another run is in the dir) or leave it alone (a
live process still writes it). Nothing here starts a process.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.experiments.suites import REPPO, Suite, Variant, default_eval_interval
from reppo.experiments.sweep.settings import Settings

# ---- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One child process of the sweep: a method on a task for one seed or all of them."""

    method: Variant
    algo: str
    task: str
    seeds: tuple[int, ...]
    run_dir: Path

    @property
    def name(self) -> str:
        parts = [self.method.label, self.task]
        if self.run_dir.name != task_dir_name(self.task):
            parts.append(self.run_dir.name)
        return "/".join(parts)

    @property
    def seed_text(self) -> str:
        if len(self.seeds) == 1:
            return f"seed {self.seeds[0]}"
        return f"seeds {self.seeds[0]}-{self.seeds[-1]}"

    @property
    def prefix(self) -> str:
        return f"[{self.method.label} {self.task} {self.seed_text}]"

    @property
    def log_path(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"

    def experiment(self, suite: Suite) -> dict[str, Any]:
        return {
            "suite": suite.name,
            "method": self.method.label,
            "task": self.task,
            "algo": self.algo,
            "variant": self.method.variant,
            "preset": self.method.preset,
            "seeds": list(self.seeds),
        }


def task_dir_name(task: str) -> str:
    """The directory of a task's runs: the name itself, with the ':' of a module-qualified
    name (my_envs:Maze) written as '__' so that it is a portable directory name."""
    return task.replace(":", "__")


def plan(settings: Settings) -> list[PlannedRun]:
    """Every run of the sweep, in order: methods, then tasks, then seeds."""
    runs = []
    for method in settings.methods:
        for task in settings.tasks:
            base = settings.out / method.label / task_dir_name(task)
            if settings.batched_seeds:
                runs.append(PlannedRun(method, settings.algo, task, settings.seed_range, base))
            else:
                runs.extend(
                    PlannedRun(method, settings.algo, task, (seed,), base / f"seed{seed}")
                    for seed in settings.seed_range
                )
    return runs


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def start_command(run: PlannedRun, settings: Settings) -> list[str]:
    """The child command that starts `run` from scratch."""
    if run.algo != REPPO:
        command = [
            sys.executable, "-m", "reppo.cli", "baseline", "--algo", run.algo,
            "--env", run.task, "--seed", str(run.seeds[0]), "--steps", str(settings.steps),
            "--run-dir", str(run.run_dir), "--preset", run.method.preset,
        ]
    else:
        command = [
            sys.executable, "-m", "reppo.cli", "train", "--preset", run.method.preset,
            "--backend", settings.suite.backend, "--env", run.task,
            "--seed", str(run.seeds[0]), "--num-seeds", str(len(run.seeds)),
            "--total-steps", str(settings.steps), "--run-dir", str(run.run_dir),
        ]
        if "eval_interval_steps" not in settings.overrides:
            # The baselines' cadence, so that every algorithm's curve has the same resolution.
            interval = default_eval_interval(settings.steps)
            command += ["--eval-interval-steps", str(interval)]
    for name, value in settings.overrides.items():
        command += ["--" + name.replace("_", "-"), _flag_value(value)]
    return command


def resume_command(run: PlannedRun) -> list[str]:
    return [sys.executable, "-m", "reppo.cli", "train", "--resume", str(run.run_dir)]


# ---- the state of a run directory ------------------------------------------------------------


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def final_eval(run_dir: Path) -> tuple[float | None, int | None, float | None]:
    """(return, env steps) of the last evaluation record, and the run's wall time so far."""
    from reppo.runs.directory import RunDir
    from reppo.runs.metrics import EVAL_RETURN

    records = RunDir(run_dir).records()
    wall = records[-1].get("wall_time") if records else None
    evals = [r for r in records if r.get(EVAL_RETURN) is not None]
    if not evals:
        return None, None, wall
    return evals[-1][EVAL_RETURN], evals[-1].get("env_steps"), wall


def is_finished(run_dir: Path) -> bool:
    """Whether the run is finished (`RunDir.is_finished`)."""
    from reppo.runs.directory import RunDir

    return RunDir(run_dir).is_finished()


@dataclass(frozen=True)
class RunState:
    action: str  # "start", "skip", "resume", "restart", "mismatch" or "running"
    reason: str = ""


def _mismatch(run: PlannedRun, settings: Settings, config: dict[str, Any]) -> list[str]:
    """The fields in which an existing run's config differs from the planned run."""
    expected: dict[str, Any] = {
        "env": run.task, "seed": run.seeds[0], "total_steps": settings.steps,
        "algo": None if run.algo == REPPO else run.algo,
    }
    if run.algo == REPPO:
        expected["num_seeds"] = len(run.seeds)
        expected["backend"] = settings.suite.backend
    return [k for k, v in expected.items() if config.get(k, 1 if k == "num_seeds" else None) != v]


def inspect(run: PlannedRun, settings: Settings) -> RunState:
    """What the sweep does with `run`, given what its directory holds."""
    from reppo.runs.directory import RunDir
    from reppo.runs.rundir import CONFIG_FILE

    d, run_dir = run.run_dir, RunDir(run.run_dir)
    if not d.exists():
        return RunState("start")
    if not d.is_dir():
        return RunState("mismatch", f"{d} is a file, not a run directory; move it away")
    from reppo.runs.lock import live_writer

    writer = live_writer(d)
    if writer is not None:
        # A run still training (e.g. the child of a sweep that was killed): whatever its files
        # say now, they are not its last word, and moving or resuming it would race it.
        return RunState("running", f"still running: {writer} writes it")
    if not run_dir.holds_run():
        if not any(d.iterdir()):
            return RunState("start")
        return RunState("restart", f"it holds no {CONFIG_FILE}")
    config = run_dir.config_or_none()
    if config is None:
        return RunState("restart", f"its {CONFIG_FILE} is unreadable")
    differ = _mismatch(run, settings, config)
    if differ:
        return RunState(
            "mismatch",
            f"{d} holds another run (its config differs in {', '.join(differ)}); move it away",
        )
    if run_dir.is_finished():
        return RunState("skip", "finished")
    if run.algo != REPPO:
        return RunState("restart", "a baseline run cannot continue from its files")
    if not run_dir.has_checkpoint():
        return RunState("restart", "it stopped before its first checkpoint")
    return RunState("resume")


def move_aside(run_dir: Path) -> Path:
    """Rename an unfinished run dir to `<dir>.partial-<time>` (never replacing anything)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir.with_name(f"{run_dir.name}.partial-{stamp}"), 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.partial-{stamp}-{n}")
    run_dir.rename(target)
    return target


def write_experiment(run: PlannedRun, suite: Suite) -> None:
    """experiment.json in the run dir, once the child has created it; never overwritten."""
    from reppo.runs.directory import RunDir

    RunDir(run.run_dir).write_experiment(run.experiment(suite))
