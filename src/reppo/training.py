"""The training loop shared by both backends: chunks of iterations driven from Python.

A backend supplies a `Trainer` (`reppo.jax.train.JaxTrainer`, `reppo.torch.train.TorchTrainer`)
that owns the algorithm; this loop owns everything else: the run directory, logging, the
evaluation and checkpoint cadence, the non-finite stop and the clean stop on Ctrl-C (saving a
checkpoint of the last completed chunk). All randomness lives in the trainer's state, so
chunking, evaluating and resuming do not change what is learned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reppo.config import Config
from reppo.runs import (
    MetricsLogger,
    RunDirError,
    atomic_write_json,
    create_run_dir,
    format_progress,
    latest_checkpoint,
    open_run_dir,
    plot_learning_curve,
    read_metrics,
    truncate_metrics,
)
from reppo.runs.lock import RunLock
from reppo.runs.rundir import CONFIG_FILE
from reppo.runs.versions import collect_versions


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, parameter or observation."""


@dataclass
class EvalReport:
    """Evaluation of every seed: arrays of shape (num_seeds, episodes).

    `returns` are the deterministic policy's (action tanh(mean)); `stochastic_returns`, where
    given, the sampling policy's on the same episodes (the same initial states).
    """

    returns: np.ndarray
    success_once: np.ndarray | None = None  # tasks with a success condition (ManiSkill)
    success_at_end: np.ndarray | None = None
    stochastic_returns: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eval/return_mean": float(self.returns.mean()),
            "eval/return_std": float(self.returns.std()),
            "eval/return_per_seed": [float(x) for x in self.returns.mean(axis=1)],
            "eval/episodes": int(self.returns.size),
        }
        if self.stochastic_returns is not None:
            out["eval/stochastic_return_mean"] = float(self.stochastic_returns.mean())
            out["eval/stochastic_return_std"] = float(self.stochastic_returns.std())
        if self.success_once is not None:
            out["eval/success_once"] = float(self.success_once.mean())
        if self.success_at_end is not None:
            out["eval/success_at_end"] = float(self.success_at_end.mean())
        return out


class Trainer(Protocol):
    """What a backend provides to the loop. Metrics arrays have shape (num_seeds, iterations);
    names starting with `finite/` are booleans checked and not logged."""

    config: Config
    compile_seconds: float

    def init_state(self) -> Any: ...

    def iteration_of(self, state: Any) -> int: ...

    def run_chunk(self, state: Any, num_iterations: int) -> tuple[Any, dict[str, np.ndarray]]: ...

    def evaluate(self, state: Any) -> EvalReport: ...

    def save(self, run_dir: Path, state: Any, wall_time: float) -> Path: ...

    def restore(self, path: Path) -> tuple[Any, dict[str, Any]]: ...

    def device_description(self) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    iterations: int
    wall_time: float
    interrupted: bool = False
    eval_returns: np.ndarray | None = None  # (num_seeds, episodes)
    compile_seconds: float = 0.0
    sps: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_return_mean(self) -> float:
        return float(np.mean(self.eval_returns)) if self.eval_returns is not None else math.nan


def make_trainer(config: Config) -> Trainer:
    if config.backend == "torch":
        from reppo.torch.train import TorchTrainer

        return TorchTrainer(config)
    from reppo.jax.train import JaxTrainer

    return JaxTrainer(config)


def summarize(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """Chunk metrics (num_seeds, iterations) -> scalars: means, and last values of temps."""
    record = {}
    for name, values in metrics.items():
        if name.startswith("finite/"):
            continue
        values = values[:, -1] if name.startswith("temp/") else values
        finite = values[np.isfinite(values)]
        record[name] = float(np.mean(finite)) if finite.size else math.nan
    return record


def check_finite(metrics: dict[str, np.ndarray], first_iteration: int, config: Config) -> None:
    flags = {k.removeprefix("finite/"): v for k, v in metrics.items() if k.startswith("finite/")}
    if not flags:
        return
    bad = ~np.stack([np.asarray(v, bool) for v in flags.values()])  # (flags, seeds, iters)
    if not bad.any():
        return
    where = np.argwhere(bad)
    _, seed, it = where[np.argmin(where[:, 2])]
    what = [name for name, ok in flags.items() if not ok[seed, it]]
    raise NonFiniteError(
        f"non-finite {', '.join(what)} at iteration {first_iteration + it + 1} "
        f"(seed {config.seed + seed}); training stopped and the last checkpoint is kept. "
        "Try lower learning rates (--actor-lr/--critic-lr) or check the environment."
    )


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    trainer: Trainer | None = None,
) -> TrainResult:
    """Train (or resume) a run in `run_dir`; returns when done, interrupted or failed.

    The run directory has one writer: this call holds its lock (`reppo.runs.lock`) from before
    anything is written until it returns, and refuses a directory another process writes.
    Resuming with a changed `config` (a longer budget, other logging) rewrites `config.json`
    only once the checkpoint has been restored.
    """
    run_dir = Path(run_dir)
    locks: list[RunLock] = []  # the run directory's lock, once taken
    if resume:
        open_run_dir(run_dir)  # a clear error for a directory that is not a run
        if latest_checkpoint(run_dir) is None:
            raise RunDirError(
                f"{run_dir}: no checkpoint to resume from (the run stopped before its first "
                "one); start it again with `reppo train --run-dir NEW_DIR`"
            )
        locks.append(RunLock.acquire(run_dir))
    try:
        return _train_locked(config, run_dir, resume, echo, trainer, locks)
    finally:
        for lock in locks:
            lock.release()


def _train_locked(
    config: Config,
    run_dir: Path,
    resume: bool,
    echo: Callable[[str], None],
    trainer: Trainer | None,
    locks: list[RunLock],
) -> TrainResult:
    trainer = trainer or make_trainer(config)
    wall_offset = 0.0
    if resume:
        path = latest_checkpoint(run_dir)
        state, metadata = trainer.restore(path)
        saved = open_run_dir(run_dir)
        if saved != config.to_dict():
            # The run is extended or logged differently from now on: config.json says so, so
            # a later plain `--resume` (e.g. after Ctrl-C) continues the extended run.
            changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
            atomic_write_json(run_dir / CONFIG_FILE, config.to_dict())
            echo(f"updated {run_dir / CONFIG_FILE}: {', '.join(changed)}")
        if metadata["iteration"] >= config.num_iterations:
            echo(
                f"{run_dir} already holds {metadata['env_steps']:,} env steps of "
                f"{config.total_steps:,}; extend it with `--resume {run_dir} --total-steps N`"
            )
        wall_offset = float(metadata.get("wall_time", 0.0))
        truncate_metrics(run_dir, metadata["env_steps"])
        echo(f"resuming {run_dir} from {path.name} ({metadata['env_steps']:,} env steps)")
    else:
        state = trainer.init_state()
        create_run_dir(run_dir, config.to_dict(), collect_versions(trainer.device_description()))
        locks.append(RunLock.acquire(run_dir))

    logger = MetricsLogger(
        run_dir,
        tensorboard=config.tensorboard,
        wandb=config.wandb,
        wandb_project=config.wandb_project,
        config=config.to_dict(),
    )
    per_iteration = config.steps_per_iteration
    chunk_size = max(1, config.log_interval_steps // per_iteration)
    iteration = trainer.iteration_of(state)
    start_time = time.perf_counter()
    last_eval: float | None = None
    eval_returns = None
    interrupted = False
    history: list[dict[str, Any]] = []
    sps = 0.0
    title = f"REPPO ({config.backend}) on {config.env}"

    def wall() -> float:
        return wall_offset + time.perf_counter() - start_time

    def run_eval(record: dict[str, Any]) -> None:
        nonlocal last_eval, eval_returns
        report = trainer.evaluate(state)
        eval_returns = report.returns
        last_eval = float(report.returns.mean())
        record.update(report.record())

    try:
        while iteration < config.num_iterations:
            n = min(chunk_size, config.num_iterations - iteration)
            compile_before = trainer.compile_seconds
            t0 = time.perf_counter()
            new_state, metrics = trainer.run_chunk(state, n)
            elapsed = time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
            check_finite(metrics, iteration, config)
            state = new_state
            previous_steps = iteration * per_iteration
            iteration += n
            env_steps = iteration * per_iteration
            sps = n * per_iteration * config.num_seeds / max(elapsed, 1e-9)
            record = {
                "env_steps": env_steps,
                "iteration": iteration,
                "wall_time": wall(),
                "sps": sps,
                **summarize(metrics),
            }
            interval = config.eval_interval_steps
            if interval and env_steps // interval > previous_steps // interval:
                run_eval(record)
            if iteration >= config.num_iterations and "eval/return_mean" not in record:
                run_eval(record)
            record["wall_time"] = wall()
            logger.log(record)
            history.append(record)
            echo(format_progress(record, config.total_steps, last_eval, config.num_seeds))
            ckpt = config.checkpoint_interval_steps
            if iteration >= config.num_iterations or (
                env_steps // ckpt > previous_steps // ckpt
            ):
                trainer.save(run_dir, state, wall())
            if "eval/return_mean" in record:
                plot_learning_curve(read_metrics(run_dir), run_dir / "learning_curve.png", title)
    except KeyboardInterrupt:
        interrupted = True
        path = trainer.save(run_dir, state, wall())
        echo(f"\ninterrupted: saved {path.name}; continue with `reppo train --resume {run_dir}`")
    finally:
        logger.close()

    plot_learning_curve(read_metrics(run_dir), run_dir / "learning_curve.png", title)
    return TrainResult(
        run_dir=run_dir,
        env_steps=iteration * per_iteration,
        iterations=iteration,
        wall_time=wall(),
        interrupted=interrupted,
        eval_returns=eval_returns,
        compile_seconds=trainer.compile_seconds,
        sps=sps,
        history=history,
    )
