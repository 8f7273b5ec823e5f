"""Running the planned runs of a sweep: one child process each, in turn.

`launch` runs one child command with its output echoed (with the run's prefix) and appended to
its log, and passes a Ctrl-C on to the child; `execute` skips, starts, resumes or restarts every
run as its directory says, carrying on past failures. `_sigterm_as_interrupt` makes a SIGTERM
to the sweep stop it like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from reppo.experiments.sweep_outdir import _now
from reppo.experiments.sweep_plan import (
    PlannedRun,
    final_eval,
    inspect,
    is_finished,
    move_aside,
    resume_command,
    start_command,
    write_experiment,
)
from reppo.experiments.sweep_settings import Echo, Settings

# Exit status of a process stopped by Ctrl-C (what `reppo train` returns after checkpointing).
INTERRUPTED = 130


# ---- launching a child -----------------------------------------------------------------------


def _pump(proc: subprocess.Popen[str], prefix: str, log: TextIO, echo: Echo,
          on_line: Callable[[], None] | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        log.write(line + "\n")
        log.flush()
        echo(f"{prefix} {line}")
        if on_line is not None:
            on_line()


def launch(command: list[str], *, prefix: str, log_path: Path, echo: Echo,
           on_line: Callable[[], None] | None = None) -> int:
    """Run `command`, echoing and logging its output; returns its exit status.

    The child gets its own session, so a Ctrl-C at the terminal reaches this process alone:
    it then sends the child one SIGINT (on which `reppo train` saves a checkpoint and exits)
    and waits for it, a second Ctrl-C kills it, and the KeyboardInterrupt propagates.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {_now()} $ {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=env, start_new_session=os.name == "posix",
        )
        try:
            _pump(proc, prefix, log, echo, on_line)
            return proc.wait()
        except KeyboardInterrupt:
            echo(f"{prefix} stopping: the run saves a checkpoint when its current chunk ends "
                 "(Ctrl-C again to kill it)")
            try:
                proc.send_signal(signal.SIGINT)
                _pump(proc, prefix, log, echo, None)
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
                echo(f"{prefix} killed")
            log.write(f"# {_now()} sweep interrupted; exit status {proc.returncode}\n")
            raise


# ---- running the sweep -----------------------------------------------------------------------


@dataclass
class Outcome:
    run: PlannedRun
    status: str
    ok: bool
    final_return: float | None = None
    wall_time: float | None = None


def _outcome(run: PlannedRun, status: str, ok: bool) -> Outcome:
    ret, _, wall = final_eval(run.run_dir) if run.run_dir.is_dir() else (None, None, None)
    return Outcome(run, status, ok, ret, wall)


def _run_one(run: PlannedRun, settings: Settings, head: str, echo: Echo) -> Outcome:
    """Skip, start, resume or restart one run, as its directory says."""
    state = inspect(run, settings)
    if state.action == "skip":
        echo(f"{head}: finished before, skipped")
        write_experiment(run, settings.suite)
        return _outcome(run, "skipped (finished)", True)
    if state.action == "mismatch":
        echo(f"{head}: not run: {state.reason}")
        return Outcome(run, "failed (other run in dir)", False)
    if state.action == "restart":
        moved = move_aside(run.run_dir)
        echo(f"{head}: unfinished and {state.reason}: moved to {moved.name}, starting again")
    elif state.action == "resume":
        echo(f"{head}: resuming from its latest checkpoint")
    else:
        echo(f"{head}: starting")
    resume = state.action == "resume"
    command = resume_command(run) if resume else start_command(run, settings)
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        code = launch(command, prefix=run.prefix, log_path=run.log_path, echo=echo,
                      on_line=lambda: write_experiment(run, settings.suite))
    except OSError as err:
        echo(f"{head}: could not start {command[0]}: {err}")
        return Outcome(run, "failed (could not start)", False)
    finally:
        write_experiment(run, settings.suite)
    if code == 0 and is_finished(run.run_dir):
        return _outcome(run, "resumed" if resume else "done", True)
    if code == 0:
        status = "failed (ended unfinished)"
    elif code == INTERRUPTED:
        status = "interrupted"
    else:
        status = f"failed (exit {code})"
    echo(f"{head}: {status}; its output is in {run.log_path}")
    return _outcome(run, status, False)


def execute(settings: Settings, runs: list[PlannedRun], echo: Echo) -> tuple[list[Outcome], bool]:
    """Every run in turn, carrying on past failures; (outcomes, stopped by Ctrl-C)."""
    outcomes: list[Outcome] = []
    for i, run in enumerate(runs):
        try:
            outcomes.append(_run_one(run, settings, f"[{i + 1}/{len(runs)}] {run.name}", echo))
        except KeyboardInterrupt:
            outcomes.append(_outcome(run, "interrupted", False))
            outcomes += [Outcome(r, "not started", False) for r in runs[i + 1:]]
            return outcomes, True
    return outcomes, False


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the sweep stops it like Ctrl-C, so no child is left running unattended."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
