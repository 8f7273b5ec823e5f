"""RunDir: the run-directory contract (files, finished, experiment record, resume rule)."""

from __future__ import annotations

import json

import pytest

from reppo.config import ConfigError
from reppo.runs import RunDir, RunDirError, atomic_write_json
from reppo.runs.metrics import EVAL_RETURN
from tests.conftest import TINY


def _run(tmp_path, evaluations=(), total_steps=1000):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    atomic_write_json(run.config_file, TINY.replace(total_steps=total_steps).to_dict())
    lines = [{"env_steps": s, EVAL_RETURN: r} for s, r in evaluations]
    run.metrics_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_file_names_are_the_contract(tmp_path):
    run = RunDir(tmp_path)
    assert [p.name for p in (run.config_file, run.versions_file, run.metrics_file,
                             run.experiment_file, run.checkpoint_dir)] == [
        "config.json", "versions.json", "metrics.jsonl", "experiment.json", "checkpoints"]


@pytest.mark.parametrize(("evaluations", "finished"), [
    ((), False),
    (((500, 1.0),), False),
    (((500, 1.0), (1000, 2.0)), True),
    (((500, 1.0), (1024, 2.0)), True),  # a budget rounded up to whole iterations
])
def test_a_run_is_finished_when_its_last_evaluation_reaches_the_budget(tmp_path, evaluations,
                                                                       finished):
    run = _run(tmp_path, evaluations)
    assert run.is_finished() is finished
    assert run.holds_run() and not run.has_checkpoint()


def test_a_directory_without_a_readable_config_is_not_finished(tmp_path):
    run = _run(tmp_path, ((1000, 1.0),))
    run.config_file.write_text("{not json")
    assert run.config_or_none() is None and not run.is_finished()
    assert not RunDir(tmp_path / "missing").is_finished()


def test_the_experiment_record_is_written_once_and_never_overwritten(tmp_path):
    assert not RunDir(tmp_path / "none").write_experiment({"suite": "x"})  # no run yet
    run = _run(tmp_path)
    assert run.write_experiment({"suite": "cpu-smoke"})
    assert not run.write_experiment({"suite": "other"})
    assert run.experiment() == {"suite": "cpu-smoke"}


def test_the_resume_rule_keeps_config_json_describing_the_run(tmp_path):
    run = _run(tmp_path)
    saved = TINY.replace(total_steps=1000)
    assert run.resumed_config(None) == saved
    longer = saved.replace(total_steps=4000, eval_episodes=8)
    assert run.resumed_config(longer) == longer
    with pytest.raises(ConfigError, match="cannot change num_envs, seed when resuming"):
        run.resumed_config(saved.replace(seed=3, num_envs=16))
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir(tmp_path / "missing").resumed_config(None)


def test_the_loop_applies_the_resume_rule_for_python_callers(tmp_path):
    from reppo.loop import runner as training

    run = _run(tmp_path)
    with pytest.raises(ConfigError, match="cannot change seed"):
        training.train(TINY.replace(total_steps=1000, seed=5), run.path, resume=True)
    from reppo.runs.lock import LOCK_FILE

    # Refused before the lock is taken or anything is written.
    assert not (run.path / LOCK_FILE).exists() and run.config_or_none()["seed"] == TINY.seed
