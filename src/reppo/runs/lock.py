"""One writer per run directory: an exclusive lock held for as long as a run writes.

Two processes writing one run directory lose data (the second rewrites `metrics.jsonl` by
rename, and the first one's later lines go to a deleted file). The writer therefore holds an
advisory `flock` on `DIR/.writer.lock` while it trains; a second writer is refused with a
message naming the holder. The operating system releases the lock when its holder exits, even
after `kill -9`, so a stale lock file is harmless: only a live process can hold the lock.
Readers (`reppo eval`, `reppo report`) never take it; `live_writer` tells whether a live
process holds it (a sweep's rerun leaves such a run alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from reppo.runs.rundir import RunDirError

LOCK_FILE = ".writer.lock"

try:  # POSIX; elsewhere runs are not locked (and the docs say so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    since = holder.get("since")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(
        since, (int, float)
    ) else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


def live_writer(run_dir: str | os.PathLike[str]) -> str | None:
    """Who holds the writer lock of `run_dir` ("pid N on host H, since T"), or None where no
    live process holds it. Writes nothing, and never waits."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: no run has written here with a lock
        return None
    try:
        # A shared lock is refused only while a writer holds its exclusive one; it is dropped
        # at once, so a writer starting at this very moment would be refused and can retry.
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_holder(path))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunLock:
    """The exclusive writer lock of one run directory; use `RunLock.acquire(run_dir)`."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike[str]) -> RunLock:
        """Take the lock of `run_dir` (which must exist), or raise RunDirError naming the
        process that holds it. Never waits."""
        path = Path(run_dir) / LOCK_FILE
        if fcntl is None:  # pragma: no cover
            return cls(path, None)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(
                f"cannot lock {run_dir} for writing ({e.strerror or e}); check that the "
                "directory exists and is writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"{run_dir} is being written by {_describe(_holder(path))}; one run directory "
                "takes one writer: wait for that run to end (or stop it), then resume with "
                f"`reppo train --resume {run_dir}`"
            ) from None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.time()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays, emptied: its bytes are the same
        before and after any command, so a command that failed leaves the run as it was."""
        fd, self._fd = self._fd, None
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
