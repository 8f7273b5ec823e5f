"""The training loop under faults: signals in every phase, failures before the first
checkpoint, missing packages and occupied directories refused before any setup, divergence,
and chunks that end where evaluations and checkpoints fall due.

The loop's tests drive it with the scripted trainer of tests/fakes.py (no simulator, no
algorithm); the JAX trainer's own behaviour under the loop (one compiled program for every
chunk length) is an end-to-end test on the still env."""

import contextlib
import errno
import importlib
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reppo.jax.trainer import JaxTrainer
from reppo.loop import chunks, run_loop
from reppo.loop import runner as training
from reppo.loop.chunks import COMPILED_CHUNK_STEPS, compiled_chunk_iterations
from reppo.loop.runner import NonFiniteError, chunk_length, train
from reppo.runs import (
    MetricsError,
    RunDirError,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
)
from reppo.runs.checkpoint import best_checkpoint, best_record, checkpoint_step
from reppo.runs.progress import format_progress
from tests.fakes import ScriptedTrainer, scripted_backend, still_env


def _quiet(_line):
    pass


def _steps(run: Path) -> list[int]:
    return [checkpoint_step(p) for p in list_checkpoints(run)]


# ---- signals ----------------------------------------------------------------------------------


def _signalling(method, signum):
    """`method` that first sends `signum` to this process (as a user's Ctrl-C or a
    scheduler's SIGTERM arriving while it runs)."""

    def wrapper(self, *args, **kwargs):
        os.kill(os.getpid(), signum)
        return method(self, *args, **kwargs)

    return wrapper


def test_ctrl_c_during_compilation_stops_after_it_with_a_checkpoint(
    tmp_path, tiny_config, monkeypatch
):
    monkeypatch.setattr(ScriptedTrainer, "prepare",
                        _signalling(ScriptedTrainer.prepare, signal.SIGINT))
    lines: list[str] = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite started in the background
    result = train(tiny_config, tmp_path / "run", echo=lines.append,
                   trainer=ScriptedTrainer(tiny_config))
    assert result.interrupted and result.stop_signal == signal.SIGINT
    assert result.env_steps == 0
    # No chunk ran after the stop request; the initial state is saved, so --resume works.
    assert _steps(tmp_path / "run") == [0]
    assert read_metrics(tmp_path / "run") == []
    assert any("SIGINT: stopping at the next safe point" in line for line in lines)
    assert any(f"continue with `reppo train --resume {tmp_path / 'run'}`" in line
               for line in lines)
    # The handler is gone once train returns.
    assert signal.getsignal(signal.SIGINT) is before
    monkeypatch.undo()
    resumed = train(tiny_config, tmp_path / "run", resume=True, echo=_quiet,
                    trainer=ScriptedTrainer(tiny_config))
    assert not resumed.interrupted and resumed.env_steps == tiny_config.total_steps


def test_sigterm_during_a_chunk_saves_that_chunk_and_skips_the_evaluation(
    tmp_path, tiny_config, monkeypatch
):
    config = tiny_config.replace(eval_interval_steps=256)
    monkeypatch.setattr(
        ScriptedTrainer, "run_chunk", _signalling(ScriptedTrainer.run_chunk, signal.SIGTERM)
    )
    trainer = ScriptedTrainer(config)
    result = train(config, tmp_path / "run", echo=_quiet, trainer=trainer)
    assert result.interrupted and result.stop_signal == signal.SIGTERM
    assert result.env_steps == 256  # the chunk under way when the signal came completed
    assert _steps(tmp_path / "run") == [256]
    # Stopping does not wait for an evaluation.
    assert [state for call, state in trainer.calls if call == "evaluate"] == []
    assert [r["env_steps"] for r in read_metrics(tmp_path / "run")] == [256]


def test_ctrl_c_during_an_evaluation_stops_when_it_ends(tmp_path, tiny_config, monkeypatch):
    config = tiny_config.replace(eval_interval_steps=256)
    monkeypatch.setattr(
        ScriptedTrainer, "evaluate", _signalling(ScriptedTrainer.evaluate, signal.SIGINT)
    )
    result = train(config, tmp_path / "run", echo=_quiet, trainer=ScriptedTrainer(config))
    assert result.interrupted
    assert result.env_steps == 256
    assert _steps(tmp_path / "run") == [256]
    (record,) = read_metrics(tmp_path / "run")
    assert math.isfinite(record["eval/return_mean"])  # the evaluation under way is kept


def _signalling_in_the_last_chunk(signum):
    """`ScriptedTrainer.run_chunk` that sends `signum` while the run's last chunk runs."""
    original = ScriptedTrainer.run_chunk

    def run_chunk(self, state, n):
        if state + n >= self.config.num_iterations:
            os.kill(os.getpid(), signum)
        return original(self, state, n)

    return run_chunk


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_last_chunk_leaves_a_run_that_resume_finishes(
    tmp_path, tiny_config, monkeypatch, sig
):
    from reppo.runs.directory import RunDir

    run = tmp_path / "run"
    monkeypatch.setattr(ScriptedTrainer, "run_chunk", _signalling_in_the_last_chunk(sig))
    lines: list[str] = []
    result = train(tiny_config, run, echo=lines.append, trainer=ScriptedTrainer(tiny_config))
    # The last chunk's training is kept, but without its final evaluation the run is not
    # finished: it says it was stopped, like a stop in any other chunk.
    assert result.interrupted and result.stop_signal == sig
    assert result.env_steps == tiny_config.total_steps and result.eval_returns is None
    assert _steps(run) == [256, 512]
    assert not RunDir(run).is_finished()
    name = signal.Signals(sig).name
    assert f"\n{name}: saved ckpt_000000000512.safetensors; continue with `reppo train " \
           f"--resume {run}`" in lines
    monkeypatch.undo()
    # --resume makes the final evaluation only (no training), as the last chunk's record.
    trainer = ScriptedTrainer(tiny_config)
    lines.clear()
    resumed = train(tiny_config, run, resume=True, echo=lines.append, trainer=trainer)
    assert not resumed.interrupted and resumed.eval_returns is not None
    assert [call for call, _ in trainer.calls] == ["evaluate"]
    assert RunDir(run).is_finished()
    records = read_metrics(run)
    assert [r["env_steps"] for r in records] == [256, 512]
    assert "eval/return_mean" in records[-1] and "temp/alpha" in records[-1]
    assert not any("already holds" in line for line in lines)
    # Now finished: another --resume has nothing left to do.
    again = ScriptedTrainer(tiny_config)
    train(tiny_config, run, resume=True, echo=_quiet, trainer=again)
    assert again.calls == []


def test_cli_exit_status_after_a_signal_in_the_last_chunk(tmp_path, monkeypatch, capsys):
    from reppo import cli
    from tests.conftest import TINY, tiny_flags

    scripted_backend(monkeypatch)
    monkeypatch.setattr(ScriptedTrainer, "run_chunk",
                        _signalling_in_the_last_chunk(signal.SIGTERM))
    run = tmp_path / "run"
    with still_env() as name:
        code = cli.main(["train", "--preset", "cpu", *tiny_flags(TINY.replace(env=name)),
                         "--run-dir", str(run)])
        out = capsys.readouterr().out
        assert code == 143
        assert "final evaluation" not in out
        assert "SIGTERM: saved ckpt_000000000512.safetensors" in out
        monkeypatch.undo()
        scripted_backend(monkeypatch)
        assert cli.main(["train", "--resume", str(run)]) == 0
    assert "final evaluation: return" in capsys.readouterr().out


def test_cli_exit_status_says_which_signal_stopped_the_run(tmp_path, monkeypatch, capsys):
    from reppo import cli
    from tests.conftest import TINY, tiny_flags

    scripted_backend(monkeypatch)
    monkeypatch.setattr(
        ScriptedTrainer, "run_chunk", _signalling(ScriptedTrainer.run_chunk, signal.SIGTERM)
    )
    with still_env() as name:
        code = cli.main(["train", "--preset", "cpu", *tiny_flags(TINY.replace(env=name)),
                         "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 143
    assert "final evaluation" not in out
    assert "SIGTERM: saved ckpt_000000000256.safetensors" in out


def _dropping_a_ctrl_c(function):
    """`function` during which a Ctrl-C arrives and its KeyboardInterrupt is dropped, as JAX
    drops one raised in its garbage-collection callback ("Exception ignored in
    _xla_gc_callback") while it starts or compiles."""

    def wrapper(*args, **kwargs):
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("phase", ["reppo.commands.train:_new_config", "reppo.api:_check_env"],
                         ids=["preset", "env-check"])
def test_ctrl_c_during_start_up_stops_the_run(tmp_path, monkeypatch, capsys, phase):
    from reppo import cli
    from tests.conftest import TINY, tiny_flags

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite started in the background
    built = scripted_backend(monkeypatch)
    module, name = phase.split(":")
    owner = importlib.import_module(module)
    monkeypatch.setattr(owner, name, _dropping_a_ctrl_c(getattr(owner, name)))
    run = tmp_path / "run"
    with still_env() as env:
        code = cli.main(["train", "--preset", "cpu", *tiny_flags(TINY.replace(env=env)),
                         "--run-dir", str(run)])
    out = capsys.readouterr().out
    assert code == 130
    assert built == []  # stopped before the trainer was built
    assert not run.exists()
    assert f"SIGINT before training started: nothing was written to {run}" in out
    assert signal.getsignal(signal.SIGINT) is before


_TWICE = textwrap.dedent(
    """
    import os, signal, sys, time
    from reppo.runs.signals import StopSignals

    with StopSignals(on_first=lambda name: print("first", name, flush=True)) as stop:
        os.kill(os.getpid(), signal.{sig})
        assert stop.requested
        print("still running", flush=True)
        os.kill(os.getpid(), signal.{sig})
        time.sleep(5)
        print("not stopped", flush=True)
    """
)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_second_signal_stops_the_process_at_once(sig):
    proc = subprocess.run(
        [sys.executable, "-c", _TWICE.format(sig=sig)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.split("\n")[:2] == [f"first {sig}", "still running"], proc.stderr
    assert "not stopped" not in proc.stdout
    assert proc.returncode == -getattr(signal, sig)



# Stands in for `reppo train` (its command with the training replaced): one progress line
# while the reader listens, and the rest after it closed the pipe, on stdout and stderr.
_OUTLIVES_ITS_READER = textwrap.dedent(
    """
    import argparse, sys, time
    from pathlib import Path
    from reppo.commands import train

    here = Path(sys.argv[1])

    def training(args, stop):
        print("1/3 chunks", flush=True)
        while not (here / "closed").exists():
            time.sleep(0.05)
        for line in ("2/3 chunks", "3/3 chunks"):
            print(line, flush=True)
        print("a warning", file=sys.stderr, flush=True)
        (here / "trained").write_text("to the end")
        return 0

    train._train = training
    sys.exit(train.run(argparse.Namespace()))
    """
)


def test_a_run_whose_output_closes_trains_on(tmp_path):
    # A sweep killed with SIGKILL closes its runs' stdout: a run must not die at its next
    # progress line.
    proc = subprocess.Popen([sys.executable, "-c", _OUTLIVES_ITS_READER, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "1/3 chunks\n"
        proc.stdout.close()
        (tmp_path / "closed").touch()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert (tmp_path / "trained").read_text() == "to the end"


# ---- nothing written before what can be checked is checked ------------------------------------


def _no_trainer(*_args, **_kwargs):
    raise AssertionError("the trainer was built before the check")


def test_missing_wandb_is_refused_before_setup_and_writes_nothing(
    tmp_path, tiny_config, monkeypatch
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    monkeypatch.setattr(training, "make_trainer", _no_trainer)
    with pytest.raises(MetricsError, match="--wandb needs the wandb package"):
        train(tiny_config.replace(wandb=True), tmp_path / "run", echo=_quiet)
    assert not (tmp_path / "run").exists()


def test_an_occupied_run_dir_is_refused_before_setup(tmp_path, tiny_config, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    monkeypatch.setattr(training, "make_trainer", _no_trainer)
    with pytest.raises(RunDirError, match="is not empty"):
        train(tiny_config, run, echo=_quiet)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_an_unwritable_parent_is_refused_before_setup(tmp_path, tiny_config, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(training, "make_trainer", _no_trainer)
    with pytest.raises(RunDirError, match="not a writable directory"):
        train(tiny_config, blocker / "run", echo=_quiet)


@pytest.mark.parametrize("where", ["occupied", "under-a-file"])
def test_an_unusable_run_dir_is_refused_before_the_env_check(tmp_path, monkeypatch, capsys, where):
    from reppo import api, cli
    from tests.conftest import tiny_flags

    def env_check(config):
        raise AssertionError("the env was checked before the run directory")

    monkeypatch.setattr(api, "_check_env", env_check)
    monkeypatch.setattr(training, "make_trainer", _no_trainer)
    if where == "occupied":
        run = tmp_path / "run"
        run.mkdir()
        (run / "notes.txt").write_text("mine")
    else:
        (tmp_path / "file").write_text("")
        run = tmp_path / "file" / "run"
    code = cli.main(["train", "--preset", "cpu", *tiny_flags(), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("reppo: error: ") and err.count("\n") == 1, err
    assert ("is not empty" if where == "occupied" else "not a writable directory") in err


def test_non_finite_first_iteration_leaves_no_dead_directory(tmp_path, tiny_config):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        train(tiny_config, run, echo=_quiet, trainer=ScriptedTrainer(tiny_config, non_finite_at=1))
    message = str(err.value)
    assert "last checkpoint" not in message
    assert f"no checkpoint had been written, so {run} is removed" in message
    assert not run.exists()
    # The same command can run again (here with sane settings).
    again = train(tiny_config, run, echo=_quiet, trainer=ScriptedTrainer(tiny_config))
    assert again.env_steps == tiny_config.total_steps


def test_non_finite_after_a_checkpoint_names_the_checkpoint_kept(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config.replace(total_steps=256), run, echo=_quiet,
          trainer=ScriptedTrainer(tiny_config))
    # Iteration 3 (the first of the resumed run, 128 env steps each) is not finite.
    exploding = ScriptedTrainer(tiny_config, non_finite_at=3)
    with pytest.raises(NonFiniteError, match=r"the last checkpoint, ckpt_000000000256"):
        train(tiny_config, run, resume=True, echo=_quiet, trainer=exploding)
    assert run.is_dir() and _steps(run) == [256]


# ---- a full disk ------------------------------------------------------------------------------


def _full_disk_after(saves: int, real):
    """`save_state` that writes `saves` checkpoints, then finds the disk full."""
    done = []

    def save_state(*args, **kwargs):
        if len(done) >= saves:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done.append(1)
        return real(*args, **kwargs)

    return save_state


def test_a_full_disk_during_a_checkpoint_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from reppo import cli
    from tests.conftest import TINY, tiny_flags

    scripted_backend(monkeypatch)
    monkeypatch.setattr(run_loop, "save_state", _full_disk_after(1, run_loop.save_state))
    run = tmp_path / "run"
    with still_env() as name:
        code = cli.main(["train", "--preset", "cpu", *tiny_flags(TINY.replace(env=name)),
                         "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("reppo: error: ") and err.count("\n") == 1, err
    assert "cannot write the checkpoint at 512 env steps" in err
    assert "No space left on device" in err and "free some space" in err
    assert f"ckpt_000000000256.safetensors is kept; continue with `reppo train --resume {run}`" \
        in err
    assert _steps(run) == [256]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_at_the_first_checkpoint_leaves_no_run(tmp_path, tiny_config, monkeypatch):
    from reppo.runs import CheckpointError

    monkeypatch.setattr(run_loop, "save_state", _full_disk_after(0, run_loop.save_state))
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=f"no checkpoint had been written, so {run} is "
                                              "removed"):
        train(tiny_config, run, echo=_quiet, trainer=ScriptedTrainer(tiny_config))
    assert not run.exists()


# ---- chunks, compilation and progress -----------------------------------------------------------


def test_chunks_end_where_evaluations_and_checkpoints_fall_due(tiny_config):
    # 128 env steps per iteration; logs every 4 iterations.
    config = tiny_config.replace(
        total_steps=128 * 10, log_interval_steps=512, eval_interval_steps=300,
        checkpoint_interval_steps=1000,
    )
    lengths, it = [], 0
    while it < config.num_iterations:
        n = chunk_length(config, it, 4)
        lengths.append(n)
        it += n
    ends = np.cumsum(lengths) * 128
    # Evaluations are due at 300, 600, 900, 1200 -> the first iteration ends past each.
    for due in (300, 600, 900, 1200, 1000):
        assert min(e for e in ends if e >= due) - due < 128
    assert ends[-1] == 1280 and max(lengths) <= 4


def test_evaluations_happen_at_the_promised_cadence(tmp_path, tiny_config):
    # Chunks of two iterations (256 env steps), evaluations every three (384): each
    # evaluation comes at the iteration that reaches it, not at the next log point.
    config = tiny_config.replace(total_steps=128 * 9, eval_interval_steps=384)
    lines: list[str] = []
    train(config, tmp_path / "run", echo=lines.append, trainer=ScriptedTrainer(config))
    evals = [r["env_steps"] for r in read_metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert evals == [384, 768, 1152]
    assert not any("note: eval_interval_steps" in line for line in lines)
    # A cadence that is not a whole number of iterations is said to be rounded.
    lines.clear()
    rounded = config.replace(eval_interval_steps=300, total_steps=384)
    train(rounded, tmp_path / "b", echo=lines.append, trainer=ScriptedTrainer(rounded))
    assert any("note: eval_interval_steps=300 is not a multiple of one iteration (128 env "
               "steps)" in line for line in lines)
    evals = [r["env_steps"] for r in read_metrics(tmp_path / "b") if "eval/return_mean" in r]
    assert evals == [384]


@pytest.fixture
def still(tiny_config):
    with still_env(episode_length=50) as name:
        yield tiny_config.replace(env=name)


@pytest.mark.e2e
def test_a_short_last_chunk_reuses_the_compiled_program(tmp_path, still):
    # Three iterations in chunks of two: the last chunk runs one iteration of the same
    # program, and learns exactly what one-iteration chunks learn.
    config = still.replace(total_steps=384, checkpoint_interval_steps=10_000)
    trainer = JaxTrainer(config)
    lines: list[str] = []
    train(config, tmp_path / "a", trainer=trainer, echo=lines.append)
    assert list(trainer._chunks) == [compiled_chunk_iterations(config)]
    assert sum("compiled in" in line for line in lines) == 1
    # Another log cadence is the same compiled program, run in chunks of one iteration.
    one_by_one = config.replace(log_interval_steps=128)
    other = JaxTrainer(one_by_one)
    train(one_by_one, tmp_path / "b", trainer=other, echo=_quiet)
    assert list(other._chunks) == list(trainer._chunks)
    assert [r["env_steps"] for r in read_metrics(tmp_path / "b")] == [128, 256, 384]
    a, _ = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    b, _ = load_checkpoint(list_checkpoints(tmp_path / "b")[-1])
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_compiled_chunk_depends_on_no_cadence_and_no_budget(tiny_config):
    # Everything a resumed run may change leaves the compiled program as it was.
    base = compiled_chunk_iterations(tiny_config)
    for changed in (dict(log_interval_steps=128), dict(log_interval_steps=10**7),
                    dict(eval_interval_steps=384), dict(checkpoint_interval_steps=128),
                    dict(total_steps=10**7)):
        assert compiled_chunk_iterations(tiny_config.replace(**changed)) == base, changed
    assert base == COMPILED_CHUNK_STEPS // tiny_config.steps_per_iteration
    assert compiled_chunk_iterations(tiny_config.replace(num_envs=16)) == base // 2


def test_a_log_cadence_longer_than_the_compiled_chunk_logs_at_its_cadence(
    tmp_path, tiny_config, monkeypatch
):
    # A compiled chunk of two iterations (256 env steps) and a log line every five: each
    # record covers the five iterations since the last one, and nothing is logged between.
    monkeypatch.setattr(chunks, "COMPILED_CHUNK_STEPS", 256)
    config = tiny_config.replace(total_steps=128 * 10, log_interval_steps=640,
                                 checkpoint_interval_steps=10_000)
    trainer = ScriptedTrainer(config, metrics=lambda its: {"loss/x": its.astype(float)})
    train(config, tmp_path / "run", echo=_quiet, trainer=trainer)
    assert trainer.calls[0] == ("prepare", 2)
    assert [n for call, n in trainer.calls if call == "run_chunk"] == [2, 2, 1, 2, 2, 1]
    records = read_metrics(tmp_path / "run")
    assert [r["env_steps"] for r in records] == [640, 1280]
    assert [r["loss/x"] for r in records] == [3.0, 8.0]  # means of iterations 1-5 and 6-10
    assert all(r["sps"] > 0 for r in records)


def test_a_trainers_setup_lines_come_before_training(tmp_path, tiny_config):
    # The torch trainer says which device and how many CPU threads it uses.
    trainer = ScriptedTrainer(tiny_config)
    trainer.setup_lines = ["torch on cpu, 1 CPU thread (OMP_NUM_THREADS=N for more)"]
    lines: list[str] = []
    train(tiny_config, tmp_path / "run", echo=lines.append, trainer=trainer)
    at = lines.index("  torch on cpu, 1 CPU thread (OMP_NUM_THREADS=N for more)")
    assert at < next(i for i, line in enumerate(lines) if "compiling" in line)


def test_eta_counts_the_evaluations_to_come():
    record = {"env_steps": 100, "sps": 10.0}
    assert "ETA 10s + evals" in format_progress(record, 200, None, extra_seconds=None)
    assert "ETA 40s" in format_progress(record, 200, None, extra_seconds=30.0)
    assert "+ evals" not in format_progress({"env_steps": 200, "sps": 10.0}, 200, None,
                                            extra_seconds=None)


class _SlowEvaluations(ScriptedTrainer):
    """Evaluations that take a measurable time, training that takes none."""

    def evaluate(self, state):
        import time

        time.sleep(0.3)
        return super().evaluate(state)


def test_the_first_eta_counts_evaluations_before_the_first_one(tmp_path, tiny_config):
    # Progress lines every 256 env steps, evaluations every 768 and at the end (1,024): the
    # first line comes before any evaluation, yet its ETA counts both that are to come.
    config = tiny_config.replace(total_steps=1024, eval_interval_steps=768,
                                 checkpoint_interval_steps=10_000)
    trainer = _SlowEvaluations(config)
    lines: list[str] = []
    train(config, tmp_path / "run", echo=lines.append, trainer=trainer)
    assert "  an evaluation takes under 1s" in lines
    first = next(line for line in lines if line.startswith("  256/1.02k"))
    assert "+ evals" not in first and "ETA 1s" in first  # two evaluations of 0.3 s
    # The timing evaluation came before training and is not recorded.
    assert [call for call, _ in trainer.calls[:2]] == ["prepare", "evaluate"]
    assert trainer.calls[1] == ("evaluate", 0)
    evals = [r["env_steps"] for r in read_metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert evals == [768, 1024]


class _EvaluationCompiledOnFirstUse(ScriptedTrainer):
    """The first evaluation builds its program (1 s, counted as compile time, as the JAX
    trainer counts it); evaluations after it take no time."""

    def evaluate(self, state):
        import time

        if not any(call == "evaluate" for call, _ in self.calls):
            time.sleep(1.0)
            self.compile_seconds += 1.0
        return super().evaluate(state)


def test_the_eta_leaves_out_the_evaluation_programs_build(tmp_path, tiny_config):
    # A sweep's cadence (an evaluation at every progress line): the first line's ETA counts
    # the nine evaluations to come at what an evaluation takes, not at what the first one
    # took with its program's build (which once made a sweep's first ETA several times long).
    config = tiny_config.replace(total_steps=1280, eval_interval_steps=128,
                                 log_interval_steps=128, checkpoint_interval_steps=10_000)
    lines: list[str] = []
    train(config, tmp_path / "run", echo=lines.append,
          trainer=_EvaluationCompiledOnFirstUse(config))
    first = next(line for line in lines if line.startswith("  128/1.28k"))
    assert "ETA 0s" in first, first


def test_no_timing_evaluation_where_an_evaluation_comes_first(tmp_path, tiny_config):
    # A sweep's cadence: evaluations at least as often as progress lines, so the first ETA
    # already knows their time; and a run with no evaluation left (resuming its end) needs none.
    config = tiny_config.replace(eval_interval_steps=256)
    trainer = ScriptedTrainer(config)
    train(config, tmp_path / "run", echo=_quiet, trainer=trainer)
    assert [state for call, state in trainer.calls if call == "evaluate"] == [2, 4]


def test_progress_shows_the_rounded_budget(tmp_path, tiny_config):
    # 300 steps round up to 3 iterations of 128: the last line says 384/384 (100%), not 128%.
    lines: list[str] = []
    config = tiny_config.replace(total_steps=300)
    train(config, tmp_path / "run", echo=lines.append, trainer=ScriptedTrainer(config))
    assert any("384/384 (100%)" in line for line in lines), lines


# ---- divergence and the best checkpoint ---------------------------------------------------------


def test_divergence_is_warned_and_the_best_checkpoint_survives_pruning(tmp_path, tiny_config):
    config = tiny_config.replace(
        total_steps=128 * 8, log_interval_steps=128, eval_interval_steps=128,
        checkpoint_interval_steps=128, keep_checkpoints=1,
    )
    lines: list[str] = []
    train(config, tmp_path / "run", trainer=ScriptedTrainer(config), echo=lines.append)
    warnings = [line for line in lines if "warning: training looks divergent" in line]
    assert len(warnings) == 1  # once, not at every chunk
    assert "temp/alpha = 5e+24" in warnings[0] and "at 640 env steps" in warnings[0]
    assert "ckpt_000000000384.safetensors (eval 100.0 at 384 steps)" in warnings[0]
    # keep_checkpoints=1 keeps the latest, and the best (iteration 3) besides it.
    assert _steps(tmp_path / "run") == [384, 1024]
    assert best_checkpoint(tmp_path / "run").name == "ckpt_000000000384.safetensors"
    assert best_record(tmp_path / "run")["eval_return_mean"] == 100.0


def test_resuming_before_the_best_forgets_it(tmp_path, tiny_config):
    config = tiny_config.replace(
        total_steps=128 * 8, log_interval_steps=128, eval_interval_steps=128,
        checkpoint_interval_steps=128, keep_checkpoints=10,
    )
    run = tmp_path / "run"
    train(config, run, trainer=ScriptedTrainer(config), echo=_quiet)
    for path in list_checkpoints(run):
        if checkpoint_step(path) > 256:
            path.unlink()
    train(config, run, resume=True, trainer=ScriptedTrainer(config), echo=_quiet)
    assert best_record(run)["env_steps"] == 384  # found again by the resumed run
    assert best_checkpoint(run) is not None
