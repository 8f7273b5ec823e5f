"""The training loop shared by both backends: chunks of iterations driven from Python.

A backend supplies a `Trainer` (`reppo.jax.trainer.JaxTrainer`, `reppo.torch.trainer.TorchTrainer`)
that owns the algorithm; this loop owns everything else: the run directory, logging, the
evaluation and checkpoint cadence, the non-finite stop and the clean stop on Ctrl-C (saving a
checkpoint of the last completed chunk). All randomness lives in the trainer's state, so
chunking, evaluating and resuming do not change what is learned.

A run trained by several processes (`torchrun`, `reppo.torch.distributed`) runs this loop in
each: process 0, the leader, does everything above; the others, followers, skip everything
that reads or writes the run directory or prints, and make the same trainer calls in the same
order (`run_chunk`, `evaluate`, `state_arrays` for each checkpoint), which are collective.
Decisions that could differ between processes (a stop request, the leader's checks, the
checkpoint to resume from, the best evaluation so far) are shared at fixed points.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reppo.config import Config
from reppo.loop.callbacks import Callback, StopTraining
from reppo.loop.checkpointing import load_arrays, read_state
from reppo.loop.chunks import (
    chunk_length,
)
from reppo.loop.processes import from_leader, launched_processes, on_leader
from reppo.loop.run_loop import run_loop
from reppo.loop.seam import EvalReport, NonFiniteError, SingleProcess, Trainer, TrainResult
from reppo.runs import (
    MetricsLogger,
    RunDir,
    atomic_write_json,
    create_run_dir,
    latest_checkpoint,
    open_run_dir,
    truncate_metrics,
)
from reppo.runs.checkpoint import forget_best_after
from reppo.runs.lock import RunLock
from reppo.runs.rundir import CONFIG_FILE, check_run_dir_free
from reppo.runs.signals import StopSignals
from reppo.runs.versions import collect_versions

__all__ = [
    "Callback", "EvalReport", "NonFiniteError", "StopTraining", "TrainResult", "Trainer",
    "chunk_length", "launched_processes", "make_trainer", "train",
]


def make_trainer(config: Config) -> Trainer:
    if config.backend == "torch":
        from reppo.torch.trainer import TorchTrainer

        return TorchTrainer(config)
    from reppo.jax.trainer import JaxTrainer

    return JaxTrainer(config)


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    trainer: Trainer | None = None,
    callbacks: Sequence[Callback] = (),
    setup: Callable[[], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run in `run_dir`; returns when done, interrupted or failed.

    Everything that can be checked without building the trainer (optional logging packages,
    a fresh run's directory being free and writable, a resumed run's checkpoint) is checked
    before the slow setup: `setup()` (the caller's own slower checks, such as the env's),
    which every process calls next, and then the trainer. The run directory has one writer:
    this call holds its lock (`reppo.runs.lock`) from before anything is written until it
    returns, and refuses a directory another process writes. Resuming with a changed
    `config` (a longer budget, other logging) rewrites `config.json` only once the
    checkpoint has been restored. A fresh run that fails before its first checkpoint removes
    the directory it created, so that the same command can simply be run again.

    Ctrl-C and SIGTERM stop the run at the next safe point (after the current compilation,
    chunk or evaluation) with a checkpoint, and the result says `interrupted`; a second
    signal stops the process at once (`reppo.runs.signals`). A stop during the last chunk
    skips the final evaluation like any other, so the run is interrupted, not finished;
    resuming it makes only that evaluation.

    Each of `callbacks` is called with a copy of every metrics record, right after it is
    logged. A callback that returns True (a bool; None or any other value goes on) or raises
    `StopTraining` stops the run there like a stop request: a checkpoint is saved and the
    result says `interrupted` (unless that record was the run's last). Every callback sees
    every record; any other exception from a callback propagates as an error of the run would.

    Several processes (`launched_processes`, or a given trainer's `processes`): only the
    leader (process 0) checks, writes and prints, calls `callbacks` and uses `echo`; a stop
    request or a callback's stop on any process stops all of them at the same iteration.
    """
    run_dir = Path(run_dir)
    processes = getattr(trainer, "processes", None) or launched_processes(config)
    if processes.index > 0:
        return _follow(config, run_dir, resume, trainer, processes, setup)
    locks: list[RunLock] = []  # the run directory's lock, once taken

    def check() -> None:
        MetricsLogger.check_available(tensorboard=config.tensorboard, wandb=config.wandb)
        if resume:
            # A clear error for a directory that is not a run, and the resume rule: a resumed
            # run changes only what RESUMABLE_FIELDS allows, so that config.json describes it.
            RunDir(run_dir).resumed_config(config)
            RunDir(run_dir).check_resume(config)
            locks.append(RunLock.acquire(run_dir))
        else:
            check_run_dir_free(run_dir, config.to_dict())

    try:
        on_leader(processes, check)
        if setup is not None:
            setup()
    except BaseException:
        for lock in locks:
            lock.release()
        raise

    def announce(name: str) -> None:
        with contextlib.suppress(RuntimeError):  # a print interrupted by the signal itself
            echo(
                f"\n{name}: stopping at the next safe point (after the current compilation, "
                f"chunk or evaluation) with a checkpoint; {name} again stops at once without one"
            )

    try:
        with StopSignals(on_first=announce) as stop:
            return _train_locked(config, run_dir, resume, echo, trainer, locks, stop,
                                 tuple(callbacks), processes)
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
    stop: StopSignals,
    callbacks: tuple[Callback, ...] = (),
    processes: Any = None,
) -> TrainResult:
    processes = processes or SingleProcess()
    # A stop requested during the start-up (the env check, under the caller's StopSignals)
    # ends a new run before the trainer is built.
    if not resume and processes.any_of(stop.requested):
        echo(f"{stop.name} before training started: nothing was written to {run_dir}")
        return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                           interrupted=True, stop_signal=stop.signum)
    trainer = trainer or make_trainer(config)
    wall_offset = 0.0
    if resume:
        path = latest_checkpoint(run_dir)
        # The followers restore from the leader's reading of the same checkpoint.
        arrays, metadata = on_leader(processes, lambda: read_state(trainer, path))
        state = load_arrays(trainer, path, arrays, metadata)
        saved = open_run_dir(run_dir)
        # A finished run whose budget is already trained has nothing to do: its config.json
        # stays as it is (a budget that merely rounds to the steps it holds changes nothing).
        done = trainer.iteration_of(state) >= config.num_iterations and RunDir(
            run_dir).is_finished()
        if saved != config.to_dict() and not done:
            # The run is extended or logged differently from now on: config.json says so, so
            # a later plain `--resume` (e.g. after Ctrl-C) continues the extended run.
            changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
            atomic_write_json(run_dir / CONFIG_FILE, config.to_dict())
            echo(f"updated {run_dir / CONFIG_FILE}: {', '.join(changed)}")
        wall_offset = float(metadata.get("wall_time", 0.0))
        truncate_metrics(run_dir, metadata["env_steps"])
        forget_best_after(run_dir, metadata["env_steps"])
        echo(f"resuming {run_dir} from {path.name} ({metadata['env_steps']:,} env steps)")
        return run_loop(config, run_dir, echo, trainer, state, wall_offset, stop, created=False,
                     callbacks=callbacks, processes=processes)
    if processes.any_of(stop.requested):
        echo(f"{stop.name} before training started: nothing was written to {run_dir}")
        return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                           interrupted=True, stop_signal=stop.signum)
    state = trainer.init_state()
    create_run_dir(run_dir, config.to_dict(), collect_versions(trainer.device_description()))
    locks.append(RunLock.acquire(run_dir))
    try:
        return run_loop(config, run_dir, echo, trainer, state, wall_offset, stop, created=True,
                     callbacks=callbacks, processes=processes)
    except BaseException:
        if latest_checkpoint(run_dir) is None:
            # Nothing of value was written (config, versions, the lock): leave no dead
            # directory that neither a rerun nor --resume could use.
            for lock in locks:
                lock.release()
            locks.clear()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _follow(
    config: Config, run_dir: Path, resume: bool, trainer: Trainer | None, processes: Any,
    setup: Callable[[], None] | None = None,
) -> TrainResult:
    """A follower's run: the leader's `train` and `_train_locked` without the run directory,
    output or callbacks, making the same shared and trainer calls in the same order."""
    from_leader(processes)  # the leader's checks of the run directory
    if setup is not None:
        setup()
    with StopSignals(on_first=_silent) as stop:  # stops quietly: the leader announces it
        if not resume and processes.any_of(stop.requested):
            return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                               interrupted=True, stop_signal=stop.signum)
        trainer = trainer or make_trainer(config)
        if resume:
            path = run_dir / "checkpoints"  # named in errors only; the leader read the file
            arrays, metadata = from_leader(processes)
            state = load_arrays(trainer, path, arrays, metadata)
            return run_loop(config, run_dir, _silent, trainer, state,
                         float(metadata.get("wall_time", 0.0)), stop, created=False,
                         processes=processes)
        if processes.any_of(stop.requested):
            return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                               interrupted=True, stop_signal=stop.signum)
        state = trainer.init_state()
        return run_loop(config, run_dir, _silent, trainer, state, 0.0, stop, created=True,
                     processes=processes)


def _silent(line: str) -> None:
    del line
