"""Stop requests from Ctrl-C (SIGINT) and SIGTERM, turned into a flag the training loop polls.

Python's default Ctrl-C raises KeyboardInterrupt wherever the main thread happens to be. Inside
JAX that can be a garbage-collection callback, where the exception is printed ("Exception
ignored in _xla_gc_callback") and dropped, so training went on to the end; and SIGTERM (a
cluster's preemption, `docker stop`) killed the process with no checkpoint. While a
`StopSignals` is active, the first SIGINT or SIGTERM only sets `requested`: the loop saves a
checkpoint at the next point where it can (after the current compilation, chunk or
evaluation) and returns. A second signal stops the process at once, by the signal's default
action, without saving (the checkpoints already on disk are complete files).

A run's start-up (choosing the preset, checking the env) is covered too: a `StopSignals` is
entered before it, and the training loop's own one, entered inside it, joins it, so a signal
at any point from the start stops the run.

A run also outlives the reader of its output (`outliving_its_reader`): when a sweep is killed,
or a pipe into `head` ends, the next progress line would raise BrokenPipeError (Python ignores
SIGPIPE, so the write fails instead of killing the process) and end the run with status 1,
without its last checkpoint. Within the block such a write sends the rest of the output to
the null device and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# Exit statuses a shell reports for a process stopped by these signals (128 + number).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: catch SIGINT/SIGTERM as a stop request while training runs.

    `on_first(name)` is called (from the signal handler) when the first signal arrives, e.g.
    to print that the run is stopping. Outside the main thread (training started from a
    worker thread), signal handlers cannot be installed; the context then does nothing and
    `requested` stays False.

    Entered while another is active, it joins that one instead of installing handlers of its
    own: a signal that came before is already `requested`, and the first signal is announced
    by the innermost active one's `on_first` that is not None.
    """

    _stack: list[StopSignals] = []  # the active ones, outermost (the handlers') first

    def __init__(self, on_first: Callable[[str], None] | None = None) -> None:
        self.on_first = on_first
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._outer: StopSignals | None = None

    @property
    def signum(self) -> int | None:
        return self._outer.signum if self._outer is not None else self._signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signum, 1) if self.signum is not None else 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is not None:
            # Second signal: stop now. Restore the default action and deliver it again.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._signum = signum
        announcers = [s.on_first for s in StopSignals._stack if s.on_first is not None]
        announce = announcers[-1] if announcers else self.on_first
        if announce is not None:
            announce(signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        if StopSignals._stack:
            self._outer = StopSignals._stack[0]
        else:
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        StopSignals._stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in StopSignals._stack:
            StopSignals._stack.remove(self)
        if self._outer is not None:
            self._signum, self._outer = self._outer.signum, None
            return
        for sig, previous in self._previous.items():
            # None: the handler was not installed from Python; the default is the safe choice.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


def raise_if_stop_requested() -> None:
    """Raise KeyboardInterrupt here, in plain Python code, when an active `StopSignals` holds a
    stop request. For loops that cannot save and resume (the baselines): each calls it at the
    points where it can stop, and stops there reliably, which a KeyboardInterrupt raised by
    Python's default handler, often inside JAX, does not."""
    if StopSignals._stack and StopSignals._stack[0].requested:
        raise KeyboardInterrupt(StopSignals._stack[0].name)


def start_up_signals(echo: Callable[[str], None]) -> StopSignals:
    """The `StopSignals` of a run's start-up (choosing its config, checking its env), entered
    before it: a signal there stops the run before training starts, with nothing written; the
    training loop's own `StopSignals` joins it and announces later signals its way."""

    def announce(name: str) -> None:
        with contextlib.suppress(RuntimeError):  # a print interrupted by the signal itself
            echo(f"\n{name}: stopping before training starts; {name} again stops at once")

    return StopSignals(on_first=announce)


# ---- output whose reader is gone ----------------------------------------------------------------


def _to_null_device(failed: int, fds: tuple[int, ...]) -> None:
    """Point the file descriptor `failed`, and those of `fds` open on the same pipe, at the
    null device: nobody reads them any more."""
    try:
        pipe = os.fstat(failed)
    except OSError:
        pipe = None
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in {failed, *fds}:
            with contextlib.suppress(OSError):
                if fd == failed or (pipe is not None and os.path.samestat(os.fstat(fd), pipe)):
                    os.dup2(null, fd)
    finally:
        os.close(null)


class _OutlivingStream:
    """A text stream (sys.stdout or sys.stderr) whose writes never fail because the reader of
    its pipe is gone; everything else is the stream's own."""

    def __init__(self, stream: Any, fds: tuple[int, ...]) -> None:
        self._stream = stream
        self._fds = fds

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # no file descriptor: nothing to redirect
            return
        _to_null_device(fd, self._fds)
        # What the stream still buffers goes to the null device now, so that no later flush
        # (the interpreter's last one included) meets the closed pipe again.
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _fd_of(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def outliving_its_reader() -> Iterator[None]:
    """Within the block, a print to stdout or stderr whose reader has gone (a killed sweep, a
    closed pipe) is dropped, with every later one, instead of raising BrokenPipeError."""
    saved = sys.stdout, sys.stderr
    fds = tuple(fd for fd in map(_fd_of, saved) if fd is not None)
    sys.stdout, sys.stderr = (_OutlivingStream(stream, fds) for stream in saved)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _OutlivingStream):
            sys.stdout = saved[0]
        if isinstance(sys.stderr, _OutlivingStream):
            sys.stderr = saved[1]
