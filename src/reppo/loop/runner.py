"""The training loop shared by both backends: chunks of iterations driven from Python.

A backend supplies a `Trainer` (`reppo.jax.train.JaxTrainer`, `reppo.torch.train.TorchTrainer`)
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
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config
from reppo.loop.callbacks import Callback, StopTraining
from reppo.loop.checkpointing import checkpoint_write_error, load_arrays, read_state, save_state
from reppo.loop.chunks import (
    check_finite,
    chunk_length,
    crossed,
    divergence_warning,
    divergent_metrics,
    remaining_evals,
    summarize,
)
from reppo.loop.processes import from_leader, launched_processes, on_leader
from reppo.loop.seam import EvalReport, NonFiniteError, SingleProcess, Trainer, TrainResult
from reppo.runs import (
    MetricsLogger,
    RunDir,
    atomic_write_json,
    create_run_dir,
    format_duration,
    format_progress,
    latest_checkpoint,
    open_run_dir,
    plot_learning_curve,
    read_metrics,
    truncate_metrics,
)
from reppo.runs.checkpoint import best_record, forget_best_after, mark_best_checkpoint
from reppo.runs.lock import RunLock
from reppo.runs.metrics import EVAL_RETURN, take_last_record
from reppo.runs.outputs import WRITE_ERRNOS
from reppo.runs.rundir import CONFIG_FILE, check_run_dir_free
from reppo.runs.signals import StopSignals
from reppo.runs.versions import collect_versions

__all__ = [
    "Callback", "EvalReport", "NonFiniteError", "StopTraining", "TrainResult", "Trainer",
    "chunk_length", "launched_processes", "make_trainer", "train",
]


def make_trainer(config: Config) -> Trainer:
    if config.backend == "torch":
        from reppo.torch.train import TorchTrainer

        return TorchTrainer(config)
    from reppo.jax.train import JaxTrainer

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
        return _loop(config, run_dir, echo, trainer, state, wall_offset, stop, created=False,
                     callbacks=callbacks, processes=processes)
    if processes.any_of(stop.requested):
        echo(f"{stop.name} before training started: nothing was written to {run_dir}")
        return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                           interrupted=True, stop_signal=stop.signum)
    state = trainer.init_state()
    create_run_dir(run_dir, config.to_dict(), collect_versions(trainer.device_description()))
    locks.append(RunLock.acquire(run_dir))
    try:
        return _loop(config, run_dir, echo, trainer, state, wall_offset, stop, created=True,
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
            return _loop(config, run_dir, _silent, trainer, state,
                         float(metadata.get("wall_time", 0.0)), stop, created=False,
                         processes=processes)
        if processes.any_of(stop.requested):
            return TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0,
                               interrupted=True, stop_signal=stop.signum)
        state = trainer.init_state()
        return _loop(config, run_dir, _silent, trainer, state, 0.0, stop, created=True,
                     processes=processes)


def _silent(line: str) -> None:
    del line


def _loop(
    config: Config,
    run_dir: Path,
    echo: Callable[[str], None],
    trainer: Trainer,
    state: Any,
    wall_offset: float,
    stop: StopSignals,
    created: bool,
    callbacks: tuple[Callback, ...] = (),
    processes: Any = None,
) -> TrainResult:
    processes = processes or SingleProcess()
    leader = processes.index == 0
    iteration = trainer.iteration_of(state)
    # A run stopped during its last chunk kept that chunk's training but not its final
    # evaluation, without which it is not finished: resuming it makes only that evaluation.
    evaluate_end = not created and iteration >= config.num_iterations and processes.share(
        not RunDir(run_dir).is_finished() if leader else None
    )
    end_record = take_last_record(run_dir, iteration * config.steps_per_iteration) if (
        evaluate_end and leader
    ) else None
    if not created and iteration >= config.num_iterations and not evaluate_end:
        echo(
            f"{run_dir} already holds {iteration * config.steps_per_iteration:,} env steps of "
            f"{config.total_steps:,}; extend it with `--resume {run_dir} --total-steps N`"
        )
    logger = MetricsLogger(
        run_dir,
        tensorboard=config.tensorboard,
        wandb=config.wandb,
        wandb_project=config.wandb_project,
        config=config.to_dict(),
    ) if leader else None
    per_iteration = config.steps_per_iteration
    final_steps = config.num_iterations * per_iteration
    chunk_size = max(1, config.log_interval_steps // per_iteration)
    start_time = time.perf_counter()
    eval_returns = None
    interrupted = False
    history: list[dict[str, Any]] = []
    sps = 0.0
    eval_seconds: float | None = None
    best = best_record(run_dir) if leader else None
    # Every process decides alike whether an evaluation is the best so far (and saves).
    best_return = processes.share(best["eval_return_mean"] if best else -math.inf)
    warned_divergence = False
    title = f"REPPO ({config.backend}) on {config.env}"
    # A resumed run's progress lines show its latest evaluation from the start.
    last_eval: float | None = next(
        (r[EVAL_RETURN] for r in reversed(read_metrics(run_dir))
         if EVAL_RETURN in r),
        None,
    ) if leader else None
    saved_at = None if created else iteration  # the iteration of the newest checkpoint
    stopped_by_callback = False
    agreed_stop = False

    def stopping() -> bool:
        if processes.count > 1:
            return agreed_stop
        return stop.requested or stopped_by_callback

    def agree_on_stopping() -> None:
        """With several processes: whether any wants to stop, the same on all (collective,
        so every process calls it at the same points)."""
        nonlocal agreed_stop
        if processes.count > 1:
            agreed_stop = processes.any_of(stop.requested or stopped_by_callback)

    def call_back(record: dict[str, Any]) -> None:
        nonlocal stopped_by_callback
        for callback in callbacks if leader else ():
            try:
                answer = callback(dict(record))
                wants_stop = isinstance(answer, (bool, np.bool_)) and bool(answer)
            except StopTraining:
                wants_stop = True
            stopped_by_callback = stopped_by_callback or wants_stop

    def wall() -> float:
        return wall_offset + time.perf_counter() - start_time

    def save() -> Path | None:
        nonlocal saved_at
        if leader:
            try:
                path = save_state(trainer, run_dir, state, wall())
            except OSError as err:
                if err.errno not in WRITE_ERRNOS:
                    raise
                raise checkpoint_write_error(run_dir, iteration * per_iteration, err,
                                              created) from None
        else:
            trainer.state_arrays(state)  # collective: the leader gathers every process's state
            path = None
        saved_at = iteration
        return path

    def run_eval(record: dict[str, Any]) -> None:
        nonlocal last_eval, eval_returns, eval_seconds
        t0 = time.perf_counter()
        report = trainer.evaluate(state)
        seconds = time.perf_counter() - t0
        # The first evaluation also compiles: the fastest one so far predicts the rest.
        eval_seconds = seconds if eval_seconds is None else min(eval_seconds, seconds)
        eval_returns = report.returns
        last_eval = float(report.returns.mean())
        record.update(report.record())

    agree_on_stopping()
    for name in ("eval_interval_steps", "checkpoint_interval_steps"):
        interval = getattr(config, name)
        if 0 < interval < per_iteration or (interval > 0 and interval % per_iteration):
            # An iteration is the smallest unit: say where the cadence really falls.
            echo(
                f"  note: {name}={interval:,} is not a multiple of one iteration "
                f"({per_iteration:,} env steps); each one happens at the end of the iteration "
                "that reaches it"
            )
    for line in getattr(trainer, "setup_lines", ()):
        echo(f"  {line}")
    try:
        if evaluate_end:
            echo(f"  the last chunk ({final_steps:,} env steps) was trained but not evaluated: "
                 "evaluating it")
            record = {**(end_record or {}), "env_steps": iteration * per_iteration,
                      "iteration": iteration}
            run_eval(record)
            record["wall_time"] = wall()
            if logger is not None:
                logger.log(record)
            history.append(record)
            if leader:
                echo(format_progress(record, final_steps, last_eval, config.num_seeds))
            call_back(record)
            if record[EVAL_RETURN] > best_return:
                best_return = record[EVAL_RETURN]
                path = latest_checkpoint(run_dir) if leader else None
                if path is not None:
                    mark_best_checkpoint(path, best_return)
        prepare = getattr(trainer, "prepare", None)
        if prepare is not None and iteration < config.num_iterations and not stopping():
            echo(f"  compiling the training program ({chunk_size} iterations per call)...")
            before = trainer.compile_seconds
            prepare(state, chunk_size)
            echo(f"  compiled in {format_duration(trainer.compile_seconds - before)}")
        while iteration < config.num_iterations and not stopping():
            n = chunk_length(config, iteration, chunk_size)
            compile_before = trainer.compile_seconds
            t0 = time.perf_counter()
            new_state, metrics = trainer.run_chunk(state, n)
            elapsed = time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
            try:
                check_finite(metrics, iteration, config)
            except NonFiniteError as err:
                kept = latest_checkpoint(run_dir) if leader else None
                tail = (
                    f"the last checkpoint, {kept.name}, is kept" if kept is not None
                    else "no checkpoint had been written" + (
                        f", so {run_dir} is removed" if created else ""
                    )
                )
                raise NonFiniteError(
                    f"{err}; {tail}. Try lower learning rates (--actor-lr/--critic-lr) or "
                    "check the environment."
                ) from None
            state = new_state
            agree_on_stopping()
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
            final = iteration >= config.num_iterations
            if not stopping() and (
                crossed(config.eval_interval_steps, previous_steps, env_steps) or final
            ):
                run_eval(record)
            record["wall_time"] = wall()
            if logger is not None:
                logger.log(record)
            history.append(record)
            evals_left = remaining_evals(config, env_steps)
            extra = evals_left * eval_seconds if eval_seconds is not None else None
            extra = 0.0 if evals_left == 0 else extra
            if leader:
                echo(format_progress(record, final_steps, last_eval, config.num_seeds,
                                     extra_seconds=extra))
            divergent = divergent_metrics(record)
            if divergent and not warned_divergence and leader:
                warned_divergence = True
                echo(divergence_warning(divergent, env_steps, run_dir))
            call_back(record)
            agree_on_stopping()
            evaluated = EVAL_RETURN in record
            is_best = evaluated and record[EVAL_RETURN] > best_return
            if (
                final or stopping() or is_best
                or crossed(config.checkpoint_interval_steps, previous_steps, env_steps)
            ):
                path = save()
                if is_best:
                    best_return = record[EVAL_RETURN]
                    if path is not None:
                        mark_best_checkpoint(path, best_return)
            if evaluated and leader:
                plot_learning_curve(read_metrics(run_dir), run_dir / "learning_curve.png", title)
        # A stop during the last chunk skipped the final evaluation: the run is as unfinished
        # as one stopped earlier (and `--resume` makes that evaluation).
        unevaluated_end = (iteration >= config.num_iterations and bool(history)
                           and EVAL_RETURN not in history[-1])
        if stopping() and (iteration < config.num_iterations or unevaluated_end):
            interrupted = True
            if saved_at != iteration:
                path = save()
            else:
                path = latest_checkpoint(run_dir) if leader else None
            if stop.requested:
                name = stop.name
            elif stopped_by_callback:
                name = "stopped by a callback"
            else:
                name = "stopped by another process"
            if path is not None:
                echo(f"\n{name}: saved {path.name}; continue with `reppo train --resume "
                     f"{run_dir}`")
    except KeyboardInterrupt:
        # Ctrl-C outside the signal handler's reach (training driven from another thread, or
        # a KeyboardInterrupt raised by other code): the state of the last completed chunk.
        interrupted = True
        if processes.count > 1:
            # Saving is collective, and the other processes are not at this point.
            echo("\ninterrupted: not saved (several processes); continue from the last "
                 f"checkpoint with `reppo train --resume {run_dir}`")
        else:
            path = save()
            echo(f"\ninterrupted: saved {path.name}; continue with `reppo train --resume "
                 f"{run_dir}`")
    finally:
        if logger is not None:
            logger.close()

    if leader:
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
        stop_signal=stop.signum,
    )
