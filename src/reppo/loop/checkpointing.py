"""The training loop's checkpoints: what `reppo.loop.runner` writes and reads through a backend.

A backend only turns its state into named arrays and back (`Trainer.state_arrays`,
`Trainer.load_state`); the metadata beside the arrays (backend, env steps, iteration, wall time,
seeds, policy sizes, config) is built here, once for both backends, and the same checks apply
to both on restore.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from reppo.loop.seam import StateMismatchError, Trainer
from reppo.runs import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint


def checkpoint_metadata(trainer: Trainer, iteration: int, wall_time: float) -> dict[str, Any]:
    config = trainer.config
    obs_size, action_size = trainer.policy_sizes()
    return {
        "backend": trainer.backend,
        "env_steps": iteration * config.steps_per_iteration,
        "iteration": iteration,
        "wall_time": wall_time,
        "num_seeds": config.num_seeds,
        # A policy loads from these without building (or even knowing) the env.
        "obs_size": obs_size,
        "action_size": action_size,
        "config": config.to_dict(),
    }


def save_state(trainer: Trainer, run_dir: Path, state: Any, wall_time: float) -> Path:
    """Write `state` as the run's newest checkpoint (pruning to `keep_checkpoints`)."""
    metadata = checkpoint_metadata(trainer, trainer.iteration_of(state), wall_time)
    return save_checkpoint(run_dir, metadata["env_steps"], trainer.state_arrays(state), metadata,
                           keep=trainer.config.keep_checkpoints)


def restore_state(trainer: Trainer, path: Path) -> tuple[Any, dict[str, Any]]:
    """(state, metadata) of the checkpoint at `path`, refused with a CheckpointError naming the
    fix if another backend wrote it or its arrays do not fit the trainer's config."""
    arrays, metadata = read_state(trainer, path)
    return load_arrays(trainer, path, arrays, metadata), metadata


def read_state(trainer: Trainer, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays and metadata of the checkpoint at `path`, refused with a CheckpointError if
    another backend wrote it (the first half of `restore_state`)."""
    arrays, metadata = load_checkpoint(path)
    written_by = metadata.get("backend", "jax")
    if written_by != trainer.backend:
        raise CheckpointError(
            f"{path}: written by the {written_by} backend; resume it with --backend "
            f"{written_by} (either backend can eval or export it)"
        )
    return arrays, metadata


def load_arrays(
    trainer: Trainer, path: Path, arrays: dict[str, Any], metadata: dict[str, Any]
) -> Any:
    """The trainer's state from the checkpoint arrays `read_state` gave (the second half of
    `restore_state`); a CheckpointError where they do not fit the trainer's config."""
    try:
        return trainer.load_state(arrays, int(metadata["iteration"]))
    except StateMismatchError as err:
        raise CheckpointError(
            f"{path}: does not match this run's config ({err}); was it written by another "
            "version or config? Delete it to resume from an earlier checkpoint."
        ) from None


def checkpoint_write_error(
    run_dir: Path, env_steps: int, err: OSError, created: bool
) -> CheckpointError:
    """A one-line error for a checkpoint the file system refused (full, read-only), saying
    what is kept and how to go on."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space there"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable"
    else:
        fix = "check the disk"
    kept = latest_checkpoint(run_dir)
    if kept is not None:
        then = (f"{kept.name} is kept; continue with `reppo train --resume {run_dir}` once it "
                "is fixed")
    else:
        then = "no checkpoint had been written" + (
            f", so {run_dir} is removed; run the same command again once it is fixed"
            if created else ""
        )
    return CheckpointError(
        f"cannot write the checkpoint at {env_steps:,} env steps in {run_dir / 'checkpoints'} "
        f"({err.strerror or err}): {fix}. {then}"
    )
