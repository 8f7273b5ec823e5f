"""The loop of one run: train a chunk, evaluate if due, log, save if due, stop when asked.

`RunLoop.run` is the whole loop; each step is a method below it. The run directory is already
open and locked, the trainer built and its state created or restored (`reppo.loop.runner`).
With several processes only the leader (process 0) writes, prints and calls the callbacks;
every process makes the same collective calls (evaluation, saving, agreeing on a stop) at the
same points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config
from reppo.loop.callbacks import Callback, StopTraining
from reppo.loop.checkpointing import checkpoint_write_error, save_state
from reppo.loop.chunks import (
    check_finite,
    chunk_length,
    compiled_chunk_iterations,
    crossed,
    divergence_warning,
    divergent_metrics,
    first_log_before_first_eval,
    joined,
    remaining_evals,
    summarize,
)
from reppo.loop.seam import EvalReport, NonFiniteError, SingleProcess, Trainer, TrainResult
from reppo.runs import (
    MetricsLogger,
    RunDir,
    format_duration,
    format_progress,
    latest_checkpoint,
    plot_learning_curve,
    read_metrics,
)
from reppo.runs.checkpoint import best_record, mark_best_checkpoint
from reppo.runs.metrics import EVAL_RETURN, take_last_record
from reppo.runs.outputs import WRITE_ERRNOS
from reppo.runs.signals import StopSignals


def run_loop(
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
    """Train `state` in `run_dir` to the end of the budget, or until stopped."""
    return RunLoop(config, run_dir, echo, trainer, state, wall_offset, stop, created,
                   callbacks, processes).run()


class RunLoop:
    def __init__(
        self, config: Config, run_dir: Path, echo: Callable[[str], None], trainer: Trainer,
        state: Any, wall_offset: float, stop: StopSignals, created: bool,
        callbacks: tuple[Callback, ...] = (), processes: Any = None,
    ) -> None:
        self.config, self.run_dir, self.echo, self.trainer = config, run_dir, echo, trainer
        self.state, self.stop, self.created, self.callbacks = state, stop, created, callbacks
        self.processes = processes or SingleProcess()
        self.leader = self.processes.index == 0
        self.iteration = trainer.iteration_of(state)
        self.per_iteration = config.steps_per_iteration
        self.final_steps = config.num_iterations * self.per_iteration
        # The compiled program's chunk: fixed by the iteration's batch, not by any cadence.
        self.capacity = compiled_chunk_iterations(config)
        # Chunks trained since the last log record: their metrics and training seconds.
        self.unlogged: list[dict[str, np.ndarray]] = []
        self.unlogged_seconds = 0.0
        self.title = f"REPPO ({config.backend}) on {config.env}"
        self.wall_offset, self.start_time = wall_offset, time.perf_counter()
        # Before the logger opens metrics.jsonl: taking back its last record rewrites it.
        self.end_unevaluated = self._is_end_unevaluated()
        self.end_record = take_last_record(run_dir, self.iteration * self.per_iteration) if (
            self.end_unevaluated and self.leader) else None
        self.logger = MetricsLogger(
            run_dir, tensorboard=config.tensorboard, wandb=config.wandb,
            wandb_project=config.wandb_project, config=config.to_dict(),
        ) if self.leader else None
        self.history: list[dict[str, Any]] = []
        self.eval_returns: Any = None
        self.eval_seconds: float | None = None
        self.sps = 0.0
        self.interrupted = self.warned_divergence = False
        self.stopped_by_callback = self.agreed_stop = False
        self.saved_at = None if created else self.iteration  # the newest checkpoint's
        best = best_record(run_dir) if self.leader else None
        # Every process decides alike whether an evaluation is the best so far (and saves).
        self.best_return = self.processes.share(best["eval_return_mean"] if best else -math.inf)
        # A resumed run's progress lines show its latest evaluation from the start.
        self.last_eval: float | None = next(
            (r[EVAL_RETURN] for r in reversed(read_metrics(run_dir)) if EVAL_RETURN in r), None,
        ) if self.leader else None

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.agree_on_stopping()
        self._describe_setup()
        try:
            if self.end_unevaluated:
                self._evaluate_the_trained_end()
            self._compile()
            self._time_an_evaluation()
            while self.iteration < self.config.num_iterations and not self.stopping():
                self._train_one_chunk()
            if self.stopping() and not self._finished():
                self._save_and_say_how_to_resume()
        except KeyboardInterrupt:
            self._save_after_a_keyboard_interrupt()
        finally:
            if self.logger is not None:
                self.logger.close()
        self._plot()
        return self._result()

    def _train_one_chunk(self) -> None:
        n = chunk_length(self.config, self.iteration, self.capacity)
        previous_steps = self.iteration * self.per_iteration
        compile_before = self.trainer.compile_seconds
        t0 = time.perf_counter()
        new_state, metrics = self.trainer.run_chunk(self.state, n)
        elapsed = time.perf_counter() - t0 - (self.trainer.compile_seconds - compile_before)
        self._check_finite(metrics)
        self.state = new_state
        self.agree_on_stopping()
        self.iteration += n
        self.unlogged.append(metrics)
        self.unlogged_seconds += elapsed
        env_steps = self.iteration * self.per_iteration
        final = self.iteration >= self.config.num_iterations
        evaluating = not self.stopping() and (
            crossed(self.config.eval_interval_steps, previous_steps, env_steps) or final)
        record: dict[str, Any] = {}
        if evaluating or final or self.stopping() or crossed(
            self.config.log_interval_steps, previous_steps, env_steps
        ):
            record = self._take_record()
            if evaluating:
                self.evaluate(record)
            self._log(record, eta=True)
            self._warn_once_on_divergence(record)
            self.call_back(record)
            self.agree_on_stopping()
        is_best = EVAL_RETURN in record and record[EVAL_RETURN] > self.best_return
        if final or self.stopping() or is_best or crossed(
            self.config.checkpoint_interval_steps, previous_steps, env_steps
        ):
            path = self.save()
            if is_best:
                self._mark_best(record[EVAL_RETURN], path)
        if EVAL_RETURN in record and self.leader:
            self._plot()

    # ---- the steps -----------------------------------------------------------------------

    def _take_record(self) -> dict[str, Any]:
        """The log record of the chunks trained since the last one (their metrics joined)."""
        metrics = joined(self.unlogged)
        iterations = next(iter(metrics.values())).shape[1] if metrics else 0
        self.sps = (iterations * self.per_iteration * self.config.num_seeds
                    / max(self.unlogged_seconds, 1e-9))
        self.unlogged, self.unlogged_seconds = [], 0.0
        return {"env_steps": self.iteration * self.per_iteration, "iteration": self.iteration,
                "wall_time": self.wall(), "sps": self.sps, **summarize(metrics)}

    def stopping(self) -> bool:
        if self.processes.count > 1:
            return self.agreed_stop
        return self.stop.requested or self.stopped_by_callback

    def agree_on_stopping(self) -> None:
        """With several processes: whether any wants to stop, the same on all (collective,
        so every process calls it at the same points)."""
        if self.processes.count > 1:
            self.agreed_stop = self.processes.any_of(
                self.stop.requested or self.stopped_by_callback)

    def call_back(self, record: dict[str, Any]) -> None:
        for callback in self.callbacks if self.leader else ():
            try:
                answer = callback(dict(record))
                wants_stop = isinstance(answer, (bool, np.bool_)) and bool(answer)
            except StopTraining:
                wants_stop = True
            self.stopped_by_callback = self.stopped_by_callback or wants_stop

    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.start_time

    def save(self) -> Path | None:
        path = None
        if self.leader:
            try:
                path = save_state(self.trainer, self.run_dir, self.state, self.wall())
            except OSError as err:
                if err.errno not in WRITE_ERRNOS:
                    raise
                raise checkpoint_write_error(self.run_dir, self.iteration * self.per_iteration,
                                             err, self.created) from None
        else:
            self.trainer.state_arrays(self.state)  # collective: the leader gathers every state
        self.saved_at = self.iteration
        return path

    def evaluate(self, record: dict[str, Any]) -> None:
        report = self._timed_evaluation()
        self.eval_returns = report.returns
        self.last_eval = float(report.returns.mean())
        record.update(report.record())

    def _log(self, record: dict[str, Any], *, eta: bool) -> None:
        record["wall_time"] = self.wall()
        if self.logger is not None:
            self.logger.log(record)
        self.history.append(record)
        if not self.leader:
            return
        extra: float | None = 0.0  # the seconds still to spend in evaluations, if known
        if eta:
            evals_left = remaining_evals(self.config, record["env_steps"])
            extra = 0.0 if evals_left == 0 else (
                None if self.eval_seconds is None else evals_left * self.eval_seconds)
        self.echo(format_progress(record, self.final_steps, self.last_eval,
                                  self.config.num_seeds, extra_seconds=extra))

    def _mark_best(self, best_return: float, path: Path | None) -> None:
        self.best_return = best_return
        if path is not None:
            mark_best_checkpoint(path, best_return)

    def _check_finite(self, metrics: Any) -> None:
        try:
            check_finite(metrics, self.iteration, self.config)
        except NonFiniteError as err:
            kept = latest_checkpoint(self.run_dir) if self.leader else None
            tail = (
                f"the last checkpoint, {kept.name}, is kept" if kept is not None
                else "no checkpoint had been written" + (
                    f", so {self.run_dir} is removed" if self.created else "")
            )
            raise NonFiniteError(
                f"{err}; {tail}. Try lower learning rates (--actor-lr/--critic-lr) or "
                "check the environment."
            ) from None

    def _warn_once_on_divergence(self, record: dict[str, Any]) -> None:
        divergent = divergent_metrics(record)
        if divergent and not self.warned_divergence and self.leader:
            self.warned_divergence = True
            self.echo(divergence_warning(divergent, record["env_steps"], self.run_dir))

    # ---- the start and the end -----------------------------------------------------------

    def _is_end_unevaluated(self) -> bool:
        """A run stopped during its last chunk kept that chunk's training but not its final
        evaluation, without which it is not finished: resuming it makes only that evaluation."""
        at_end = not self.created and self.iteration >= self.config.num_iterations
        unevaluated = at_end and self.processes.share(
            not RunDir(self.run_dir).is_finished() if self.leader else None)
        if at_end and not unevaluated:
            self.echo(
                f"{self.run_dir} already holds {self.iteration * self.per_iteration:,} env "
                f"steps of {self.config.total_steps:,}; extend it with `--resume "
                f"{self.run_dir} --total-steps N`"
            )
        return bool(unevaluated)

    def _describe_setup(self) -> None:
        for name in ("eval_interval_steps", "checkpoint_interval_steps"):
            interval = getattr(self.config, name)
            if interval > 0 and (interval < self.per_iteration or interval % self.per_iteration):
                # An iteration is the smallest unit: say where the cadence really falls.
                self.echo(
                    f"  note: {name}={interval:,} is not a multiple of one iteration "
                    f"({self.per_iteration:,} env steps); each one happens at the end of the "
                    "iteration that reaches it"
                )
        for line in getattr(self.trainer, "setup_lines", ()):
            self.echo(f"  {line}")

    def _evaluate_the_trained_end(self) -> None:
        env_steps = self.iteration * self.per_iteration
        self.echo(f"  the last chunk ({self.final_steps:,} env steps) was trained but not "
                  "evaluated: evaluating it")
        record = {**(self.end_record or {}), "env_steps": env_steps, "iteration": self.iteration}
        self.evaluate(record)
        self._log(record, eta=False)
        self.call_back(record)
        if record[EVAL_RETURN] > self.best_return:
            self._mark_best(record[EVAL_RETURN],
                            latest_checkpoint(self.run_dir) if self.leader else None)

    def _compile(self) -> None:
        prepare = getattr(self.trainer, "prepare", None)
        if prepare is None or self.iteration >= self.config.num_iterations or self.stopping():
            return
        self.echo(f"  compiling the training program (up to {self.capacity} iterations per "
                  "call)...")
        before = self.trainer.compile_seconds
        prepare(self.state, self.capacity)
        self.echo(f"  compiled in {format_duration(self.trainer.compile_seconds - before)}")

    def _time_an_evaluation(self) -> None:
        """Evaluate the starting policy once, unrecorded, when a progress line will come before
        the first evaluation: its ETA then counts the evaluations to come (every evaluation
        runs the same episodes, so this one's time predicts theirs)."""
        steps = self.iteration * self.per_iteration
        if self.stopping() or self.eval_seconds is not None or remaining_evals(
            self.config, steps) == 0 or not first_log_before_first_eval(self.config, steps):
            return
        self._timed_evaluation()
        took = self.eval_seconds
        self.echo(f"  an evaluation takes {'under 1s' if took < 1 else format_duration(took)}")

    def _timed_evaluation(self) -> EvalReport:
        compile_before = self.trainer.compile_seconds
        t0 = time.perf_counter()
        report = self.trainer.evaluate(self.state)
        # Compiling the evaluation program is a one-off: the fastest run predicts the rest.
        seconds = time.perf_counter() - t0 - (self.trainer.compile_seconds - compile_before)
        self.eval_seconds = seconds if self.eval_seconds is None else min(self.eval_seconds,
                                                                          seconds)
        return report

    def _finished(self) -> bool:
        """Trained to the end and evaluated there: a stop during the last chunk skipped the
        final evaluation, which leaves the run as unfinished as one stopped earlier."""
        return self.iteration >= self.config.num_iterations and not (
            self.history and EVAL_RETURN not in self.history[-1])

    def _save_and_say_how_to_resume(self) -> None:
        self.interrupted = True
        if self.saved_at != self.iteration:
            path = self.save()
        else:
            path = latest_checkpoint(self.run_dir) if self.leader else None
        if self.stop.requested:
            name = self.stop.name
        elif self.stopped_by_callback:
            name = "stopped by a callback"
        else:
            name = "stopped by another process"
        if path is not None:
            self.echo(f"\n{name}: saved {path.name}; continue with `reppo train --resume "
                      f"{self.run_dir}`")

    def _save_after_a_keyboard_interrupt(self) -> None:
        # Ctrl-C outside the signal handler's reach (training driven from another thread, or
        # a KeyboardInterrupt raised by other code): the state of the last completed chunk.
        self.interrupted = True
        if self.processes.count > 1:
            # Saving is collective, and the other processes are not at this point.
            self.echo("\ninterrupted: not saved (several processes); continue from the last "
                      f"checkpoint with `reppo train --resume {self.run_dir}`")
            return
        path = self.save()
        self.echo(f"\ninterrupted: saved {path.name}; continue with `reppo train --resume "
                  f"{self.run_dir}`")

    def _plot(self) -> None:
        if self.leader:
            plot_learning_curve(read_metrics(self.run_dir), self.run_dir / "learning_curve.png",
                                self.title)

    def _result(self) -> TrainResult:
        return TrainResult(
            run_dir=self.run_dir, env_steps=self.iteration * self.per_iteration,
            iterations=self.iteration, wall_time=self.wall(), interrupted=self.interrupted,
            eval_returns=self.eval_returns, compile_seconds=self.trainer.compile_seconds,
            sps=self.sps, history=self.history, stop_signal=self.stop.signum,
        )
