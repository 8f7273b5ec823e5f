"""One writer per run directory: a second `train` on a directory being written is refused."""

from __future__ import annotations

import os
import socket

import pytest

from reppo.loop.runner import train
from reppo.runs import RunDirError, read_metrics
from reppo.runs.lock import LOCK_FILE, RunLock
from tests.fakes import ScriptedTrainer


def _quiet(_line):
    pass


def _snapshot(directory):
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
    with RunLock.acquire(tmp_path):
        holder = (tmp_path / LOCK_FILE).read_text()
        assert str(os.getpid()) in holder and socket.gethostname() in holder
        with pytest.raises(RunDirError, match=rf"pid {os.getpid()} on host"):
            RunLock.acquire(tmp_path)
    # Released: the next writer gets it, and the file is left empty.
    assert (tmp_path / LOCK_FILE).read_text() == ""
    RunLock.acquire(tmp_path).release()


def test_resume_of_a_run_being_written_is_refused_and_changes_nothing(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config, run, echo=_quiet, trainer=ScriptedTrainer(tiny_config))
    before = _snapshot(run)
    # Another process writing the run:
    with RunLock.acquire(run), pytest.raises(RunDirError, match="being written by pid"):
        train(tiny_config.replace(total_steps=1024), run, resume=True, echo=_quiet,
              trainer=ScriptedTrainer(tiny_config))
    assert _snapshot(run) == before  # config.json (the longer budget) and metrics untouched


def test_the_lock_is_held_while_training_and_released_after(tmp_path, tiny_config):
    run = tmp_path / "run"
    seen = []

    def echo(line):
        if not seen:  # after the first chunk: the run is being written
            with pytest.raises(RunDirError, match="being written"):
                RunLock.acquire(run)
            seen.append(line)

    train(tiny_config, run, echo=echo, trainer=ScriptedTrainer(tiny_config))
    assert seen
    RunLock.acquire(run).release()
    # An extension under the lock rewrites config.json after restoring, then trains on.
    longer = tiny_config.replace(total_steps=1024)
    result = train(longer, run, resume=True, echo=_quiet, trainer=ScriptedTrainer(longer))
    assert result.env_steps == 1024
    assert [r["env_steps"] for r in read_metrics(run)][-1] == 1024


def test_a_held_lock_is_seen_without_taking_it(tmp_path):
    from reppo.runs.lock import live_writer

    assert live_writer(tmp_path) is None  # never locked: no lock file
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock.acquire(tmp_path):
        holder = (tmp_path / LOCK_FILE).read_bytes()
        assert live_writer(tmp_path).startswith(f"pid {os.getpid()} on host")
        assert (tmp_path / LOCK_FILE).read_bytes() == holder
    assert live_writer(tmp_path) is None  # released: a stale file holds no process
    RunLock.acquire(tmp_path).release()
