"""`RunDir`: one owner for the run-directory contract that training, sweeps, reports and the API
all read: the file names, when a run is finished (by the metric names of `reppo.runs.metrics`), the
experiment record a sweep adds, the refusal of an occupied directory, and the resume rule.

The low-level writing (atomic files, creating and opening a directory) is `reppo.runs.rundir`;
this type names what the files mean. Framework-free, like all of `reppo.runs`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.config import RESUMABLE_FIELDS, Config, ConfigError, frozen_changes
from reppo.runs.checkpoint import (
    CHECKPOINT_DIR,
    POLICY_ONLY,
    CheckpointError,
    comparable_value,
    latest_checkpoint,
    no_checkpoint_message,
    read_checkpoint_metadata,
)
from reppo.runs.metrics import EVAL_RETURN, METRICS_FILE, read_metrics
from reppo.runs.rundir import (
    CONFIG_FILE,
    VERSIONS_FILE,
    RunDirError,
    atomic_write_json,
    check_run_dir_free,
    open_run_dir,
)

# What a sweep (or any caller) records beside a run: suite, method, task, variant (never
# overwritten once written).
EXPERIMENT_FILE = "experiment.json"



def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunDir:
    """A run directory (it need not exist yet)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    # ---- the files ----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def versions_file(self) -> Path:
        return self.path / VERSIONS_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def experiment_file(self) -> Path:
        return self.path / EXPERIMENT_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def holds_run(self) -> bool:
        """Whether the directory holds a run (its config.json), finished or not."""
        return self.config_file.is_file()

    def config(self) -> dict[str, Any]:
        """The run's config.json; RunDirError naming the fix when it cannot be read."""
        return open_run_dir(self.path)

    def config_or_none(self) -> dict[str, Any] | None:
        """The run's config.json, or None when it is missing or unreadable (for scans)."""
        config = _read_json(self.config_file)
        return config if isinstance(config, dict) else None

    # ---- what the metrics say -----------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def evaluations(self) -> list[dict[str, Any]]:
        """The evaluation records, in the order written."""
        return [r for r in self.records() if r.get(EVAL_RETURN) is not None]

    def last_evaluation(self) -> dict[str, Any] | None:
        evaluations = self.evaluations()
        return evaluations[-1] if evaluations else None

    def is_finished(self) -> bool:
        """Finished: the last evaluation is at or past the config's `total_steps` (what a sweep
        skips and a report reads; an unfinished run is resumed or skipped)."""
        config = self.config_or_none()
        total = config.get("total_steps") if config else None
        if not isinstance(total, int) or isinstance(total, bool):
            return False
        last = self.last_evaluation()
        steps = last.get("env_steps") if last else None
        return isinstance(steps, int) and steps >= total

    def has_checkpoint(self) -> bool:
        return latest_checkpoint(self.path) is not None

    # ---- the experiment record ----------------------------------------------------------------
    def experiment(self) -> dict[str, Any] | None:
        record = _read_json(self.experiment_file)
        return record if isinstance(record, dict) else None

    def write_experiment(self, record: dict[str, Any]) -> bool:
        """Write experiment.json once the run exists; never overwrite one. True if written."""
        if not self.holds_run() or self.experiment_file.exists():
            return False
        with contextlib.suppress(FileExistsError):
            atomic_write_json(self.experiment_file, record, overwrite=False)
            return True
        return False

    # ---- starting and resuming ----------------------------------------------------------------
    def check_free(self, config: dict[str, Any]) -> None:
        """RunDirError unless a fresh run can start here (see `rundir.check_run_dir_free`)."""
        check_run_dir_free(self.path, config)

    def resumed_config(self, config: Config | None) -> Config:
        """The config a resumed run continues with: its own (`config` None), or `config` where
        that changes only the fields a resumed run may change (`RESUMABLE_FIELDS`); anything
        else would make config.json stop describing the run, and is refused."""
        saved = Config.from_dict(self.config())
        if config is None:
            return saved
        frozen = frozen_changes(saved, config)
        if frozen:
            raise ConfigError(
                f"cannot change {', '.join(frozen)} when resuming {self.path} (it would not be "
                "the same run); start a new run instead. Changeable: "
                f"{', '.join(sorted(RESUMABLE_FIELDS))}"
            )
        return config

    def check_resume(self, config: Config) -> Path:
        """The checkpoint a resume with `config` (already past `resumed_config`) continues
        from, after the checks that need only its header, made before the run's slow setup:
        a RunDirError for a directory with no checkpoint or holding a saved policy, which has
        no training state. A header that cannot be read is left to the full load, which names
        the damage and the fix."""
        path = latest_checkpoint(self.path)
        if path is None:
            raise RunDirError(no_checkpoint_message(self.path, "resume from"))
        try:
            metadata = read_checkpoint_metadata(path)
        except CheckpointError:
            return path
        if metadata.get(POLICY_ONLY):
            raise RunDirError(
                f"{self.path} holds a policy saved with Policy.save, without the training state "
                "(critic, optimizers) a run continues from, so it cannot be resumed; resume the "
                "run it came from, or train a new run with its config: `reppo train --preset "
                f"{self.config_file} --run-dir NEW_DIR`"
            )
        stored = metadata.get("config")
        if isinstance(stored, dict):
            self._check_config_is_the_checkpoints(stored, path)
        held = metadata.get("env_steps")
        budget = config.num_iterations * config.steps_per_iteration
        if isinstance(held, int) and budget < held:
            # Training on would do nothing, and rewriting config.json with the smaller budget
            # would make it disagree with the checkpoints and metrics the run holds.
            raise ConfigError(
                f"{self.path} already holds {held:,} env steps ({path.name}), more than "
                f"total_steps {config.total_steps:,}: a run is not shortened, and nothing was "
                f"changed; resume with --total-steps of at least {held:,} to extend it, or "
                f"evaluate it as it is (`reppo eval {self.path}`)"
            )
        return path

    def _check_config_is_the_checkpoints(self, stored: dict[str, Any], path: Path) -> None:
        """Refuse a config.json edited away from the config its latest checkpoint was trained
        with (stored in the checkpoint) outside the fields a resumed run may change: resuming
        would go on with settings the run was not trained with, and config.json would no
        longer describe the run. Fields the checkpoint does not store are not compared."""
        current = Config.from_dict(self.config()).to_dict()
        edited = [
            f"{name} (config.json: {json.dumps(current[name])}, checkpoint: "
            f"{json.dumps(stored[name])})"
            for name in current
            if name in stored and name not in RESUMABLE_FIELDS
            and comparable_value(name, current[name]) != comparable_value(name, stored[name])
        ]
        if edited:
            raise CheckpointError(
                f"{self.config_file} differs from the config checkpoint {path} was trained with "
                f"in {', '.join(edited)}; nothing was changed: restore the checkpoint's values "
                "to resume (a resumed run may change only "
                f"{', '.join(sorted(RESUMABLE_FIELDS))}), or train a new run with the edited "
                f"config: `reppo train --preset {self.config_file} --run-dir NEW_DIR`"
            )
