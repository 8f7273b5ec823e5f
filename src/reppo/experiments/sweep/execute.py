"""Running the planned runs of a sweep: one child process each, `jobs` at a time.

`launch` runs one child command with its output echoed (with the run's prefix) and appended to
its log, passes a Ctrl-C on to the child, and (on Linux) has the child stopped if the sweep is
killed; `execute` skips, starts, resumes or restarts every run as its directory says, leaves
alone a run that a live process still writes, and carries on past failures.
`sigterm_as_interrupt` makes a SIGTERM to the sweep stop it like Ctrl-C.

Why several at a time: on a CPU one run is a chain of small operations that one core carries
as fast as two (benchmarks/results.md), so a machine's other cores only work when other runs
use them. Runs side by side get disjoint sets of the cores (`core_sets`): without that their
thread pools spin on each other's cores.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from reppo.experiments.sweep.outdir import now_stamp
from reppo.experiments.sweep.plan import (
    PlannedRun,
    final_eval,
    inspect,
    is_finished,
    move_aside,
    resume_command,
    start_command,
    write_experiment,
)
from reppo.experiments.sweep.settings import Echo, Settings

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


class Children:
    """The child processes running side by side, so that a Ctrl-C can reach every one; a
    run's own registry (with the sweep's as `parent`) lets the run alone be signalled."""

    def __init__(self, parent: Children | None = None) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self._parent = parent

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.add(proc)
        if self._parent is not None:
            self._parent.add(proc)

    def remove(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)
        if self._parent is not None:
            self._parent.remove(proc)

    def signal_all(self, how: Callable[[subprocess.Popen[str]], None]) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(OSError):
                how(proc)


def usable_cores() -> list[int]:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_sets(jobs: int, cores: list[int] | None = None) -> list[list[int] | None]:
    """`jobs` disjoint, equal shares of the usable cores, one per run slot (None for every
    slot where the cores are fewer than the jobs, or cannot be assigned on this OS)."""
    cores = usable_cores() if cores is None else cores
    if jobs < 2 or len(cores) < jobs or not hasattr(os, "sched_setaffinity"):
        return [None] * jobs
    share = len(cores) // jobs
    return [cores[i * share:(i + 1) * share] for i in range(jobs)]


# Starts a child tied to the sweep (Linux): the kernel sends it SIGTERM when the sweep's thread
# that started it ends, even by SIGKILL, and `reppo train` then saves a checkpoint and exits;
# without it, a killed sweep's runs trained on unattended and raced the sweep's rerun. Set in a
# small process that then becomes the child (the setting survives exec) rather than in
# `preexec_fn`, which is unsafe in a process with threads. Argument 1 is the sweep's pid: a
# sweep that died before the setting took hold has left the child to another parent already.
_TIED_TO_THE_SWEEP = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
if os.getppid() != int(sys.argv[1]):
    sys.exit(128 + signal.SIGTERM)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as err:
    print(f"could not start {sys.argv[2]}: {err.strerror or err}", flush=True)
    sys.exit(127)
"""


def _tied_to_this_process(command: list[str]) -> list[str]:
    """`command`, started so that it gets SIGTERM when this process dies (on Linux; elsewhere
    `command` itself)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _TIED_TO_THE_SWEEP, str(os.getpid()), *command]


def launch(command: list[str], *, prefix: str, log_path: Path, echo: Echo,
           on_line: Callable[[], None] | None = None, cores: list[int] | None = None,
           children: Children | None = None) -> int:
    """Run `command`, echoing and logging its output; returns its exit status.

    The child gets its own session, so a Ctrl-C at the terminal reaches this process alone:
    it then sends the child one SIGINT (on which `reppo train` saves a checkpoint and exits)
    and waits for it, a second Ctrl-C kills it, and the KeyboardInterrupt propagates. Runs
    side by side register in `children` (the sweep then signals them itself) and are pinned to
    `cores`, with as many compute threads for torch. On Linux the child gets SIGTERM if this
    process dies (`_TIED_TO_THE_SWEEP`), so no run outlives a killed sweep.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cores:
        env.setdefault("OMP_NUM_THREADS", str(len(cores)))
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {now_stamp()} $ {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            _tied_to_this_process(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", env=env,
            start_new_session=os.name == "posix",
        )
        if cores:
            # Set from here rather than in the child before exec, which is unsafe with threads;
            # the child starts its compute threads long after, and they inherit it.
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, cores)
        if children is not None:
            children.add(proc)
        try:
            _pump(proc, prefix, log, echo, on_line)
            return proc.wait()
        except KeyboardInterrupt:
            echo(f"{prefix} stopping: the run stops when its current chunk (a baseline: its "
                 "evaluation period) ends (Ctrl-C again to kill it)")
            try:
                proc.send_signal(signal.SIGINT)
                _pump(proc, prefix, log, echo, None)
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
                echo(f"{prefix} killed")
            log.write(f"# {now_stamp()} sweep interrupted; exit status {proc.returncode}\n")
            raise
        finally:
            if children is not None:
                children.remove(proc)


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


# `reppo tune`'s hook: given a run, a check called after each line of its output that says
# whether the run has gone far enough for now; the run is then asked to stop as on Ctrl-C (it
# saves a checkpoint) and its outcome is "paused".
PauseWatch = Callable[[PlannedRun], Callable[[], bool]]
PAUSED = "paused"
# The status of a run that a live process (not this sweep) is still writing.
RUNNING = "left alone (running)"


def _run_one(run: PlannedRun, settings: Settings, head: str, echo: Echo,
             pause: PauseWatch | None = None, **side_by_side: Any) -> Outcome:
    """Skip, start, resume or restart one run, as its directory says (`side_by_side`: the
    `cores` and `children` of a run among several at a time, for `launch`; `pause`: see
    `PauseWatch`)."""
    state = inspect(run, settings)
    if state.action == "skip":
        echo(f"{head}: finished before, skipped")
        write_experiment(run, settings.suite)
        return _outcome(run, "skipped (finished)", True)
    if state.action == "mismatch":
        echo(f"{head}: not run: {state.reason}")
        return Outcome(run, "failed (other run in dir)", False)
    if state.action == "running":
        echo(f"{head}: {state.reason}; left alone: run the same command again once it ends "
             "(or stop it first)")
        return _outcome(run, RUNNING, False)
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
    far_enough = pause(run) if pause is not None else None
    own = Children(parent=side_by_side.pop("children", None))
    paused = threading.Event()

    def on_line() -> None:
        write_experiment(run, settings.suite)
        if far_enough is not None and not paused.is_set() and far_enough():
            paused.set()
            own.signal_all(lambda p: p.send_signal(signal.SIGINT))

    try:
        code = launch(command, prefix=run.prefix, log_path=run.log_path, echo=echo,
                      on_line=on_line, children=own, **side_by_side)
    except OSError as err:
        echo(f"{head}: could not start {command[0]}: {err}")
        return Outcome(run, "failed (could not start)", False)
    finally:
        write_experiment(run, settings.suite)
    if code == 0 and is_finished(run.run_dir):
        return _outcome(run, "resumed" if resume else "done", True)
    if code == INTERRUPTED and paused.is_set() and inspect(run, settings).action == "resume":
        echo(f"{head}: paused with a checkpoint")
        return _outcome(run, PAUSED, True)
    if code == 0:
        status = "failed (ended unfinished)"
    elif code == INTERRUPTED:
        status = "interrupted"
    else:
        status = f"failed (exit {code})"
    echo(f"{head}: {status}; its output is in {run.log_path}")
    return _outcome(run, status, False)


def execute(settings: Settings, runs: list[PlannedRun], echo: Echo,
            jobs: int = 1, pause: PauseWatch | None = None) -> tuple[list[Outcome], bool]:
    """Every run, `jobs` at a time, carrying on past failures; (outcomes in the runs' order,
    stopped by Ctrl-C). `pause`: see `PauseWatch`."""
    if jobs > 1 and len(runs) > 1:
        return _execute_side_by_side(settings, runs, echo, min(jobs, len(runs)), pause)
    outcomes: list[Outcome] = []
    for i, run in enumerate(runs):
        try:
            outcomes.append(_run_one(run, settings, f"[{i + 1}/{len(runs)}] {run.name}", echo,
                                     pause))
        except KeyboardInterrupt:
            outcomes.append(_outcome(run, "interrupted", False))
            outcomes += [Outcome(r, "not started", False) for r in runs[i + 1:]]
            return outcomes, True
    return outcomes, False


def _execute_side_by_side(settings: Settings, runs: list[PlannedRun], echo: Echo,
                          jobs: int, pause: PauseWatch | None = None
                          ) -> tuple[list[Outcome], bool]:
    """`execute` with `jobs` runs at once, each slot pinned to its own cores. A Ctrl-C (or
    SIGTERM) asks every running child to save a checkpoint and stop, waits for them, and
    starts nothing more; a second one kills them."""
    lock = threading.Lock()

    def locked_echo(line: str) -> None:
        with lock:
            echo(line)

    slots: queue.Queue[list[int] | None] = queue.Queue()
    for cores in core_sets(jobs):
        slots.put(cores)
    children = Children()
    stopping = threading.Event()

    def one(i: int, run: PlannedRun) -> Outcome:
        if stopping.is_set():
            return Outcome(run, "not started", False)
        cores = slots.get()  # as many slots as workers: one is always free here
        try:
            return _run_one(run, settings, f"[{i + 1}/{len(runs)}] {run.name}", locked_echo,
                            pause, cores=cores, children=children)
        except KeyboardInterrupt:
            stopping.set()
            return _outcome(run, "interrupted", False)
        finally:
            slots.put(cores)

    interrupted = False
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep-run") as pool:
        futures: list[Future[Outcome]] = [pool.submit(one, i, r) for i, r in enumerate(runs)]
        pending = set(futures)
        while pending:
            try:
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if interrupted:
                    children.signal_all(lambda p: p.kill())
                    locked_echo("killed the running runs")
                    continue
                interrupted = True
                stopping.set()
                locked_echo("stopping: the running runs save a checkpoint when their current "
                            "chunk ends (Ctrl-C again to kill them)")
                children.signal_all(lambda p: p.send_signal(signal.SIGINT))
    return [f.result() for f in futures], interrupted or stopping.is_set()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
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
