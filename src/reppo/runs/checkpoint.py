"""Checkpoints: flat dicts of numpy arrays plus JSON metadata, in safetensors files.

A backend flattens its training state (parameters, optimizer state, normalizer statistics,
PRNG keys, counters) into named numpy arrays; this module only stores and verifies them.

Safetensors holds raw little-endian array bytes behind a JSON header and cannot carry code, so
loading a checkpoint never executes anything from the file (unlike pickle). On top of the
format we store, in the header's string metadata:

* ``reppo.format_version``: the layout of this module's metadata (`FORMAT_VERSION`);
* ``reppo.metadata``: the caller's metadata dict as JSON;
* ``reppo.checksum``: sha256 over that metadata and every array's name, dtype, shape and bytes,
  so a flipped bit on disk is reported instead of silently resuming from garbage.

Files are written atomically (temp file, fsync, rename), so a crash mid-save leaves the
previous checkpoints intact and at most a temp file, which `list_checkpoints` ignores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from reppo.config import ConfigError, coerce_field
from reppo.runs.rundir import atomic_write_bytes, open_run_dir

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.json"  # in CHECKPOINT_DIR: which checkpoint evaluated best (never pruned)

_NAME_RE = re.compile(r"^ckpt_(\d{12})\.safetensors$")
_KEY_VERSION = "reppo.format_version"
_KEY_METADATA = "reppo.metadata"
_KEY_CHECKSUM = "reppo.checksum"
# A real header is a few kB per thousand arrays; a huge length means the file is not ours.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_DELETE_HINT = "delete it to resume from the previous checkpoint"
# True in the metadata of a checkpoint written by `reppo.Policy.save`: it holds a policy (the
# actor and the observation statistics) and none of the training state (critic, optimizers,
# PRNG keys) that resuming needs, so it is evaluated, exported and loaded, never resumed.
POLICY_ONLY = "policy_only"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and a fix."""


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where `save_checkpoint` puts the checkpoint of `step`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{step:012d}.safetensors"


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The step encoded in a checkpoint's file name."""
    match = _NAME_RE.match(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not named like a checkpoint (ckpt_<step>.safetensors)")
    return int(match.group(1))


def _checksum(arrays: dict[str, np.ndarray], metadata_json: str) -> str:
    digest = hashlib.sha256()
    meta = metadata_json.encode()
    digest.update(struct.pack("<Q", len(meta)) + meta)
    for name in sorted(arrays):
        a = arrays[name]
        # Length-prefix each field so that no two different contents hash the same stream.
        header = json.dumps([name, a.dtype.str, list(a.shape)]).encode()
        digest.update(struct.pack("<Q", len(header)) + header)
        data = a.tobytes()
        digest.update(struct.pack("<Q", len(data)))
        digest.update(data)
    return digest.hexdigest()


def _prepare(name: str, value: Any) -> np.ndarray:
    """`value` as a C-contiguous little-endian array (what safetensors stores), copying only
    when it is not one already."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise CheckpointError(
            f"cannot checkpoint array {name!r} of dtype {a.dtype}: only bool, integer and float "
            "arrays are supported; convert it before saving"
        )
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return a if a.flags.c_contiguous else a.copy(order="C")


def _json_default(value: Any) -> Any:
    # Metadata is typically built from numpy/JAX scalars (step counters, returns).
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    arrays: dict[str, np.ndarray],
    metadata: dict[str, Any],
    keep: int,
) -> Path:
    """Write `run_dir/checkpoints/ckpt_{step:012d}.safetensors` atomically and prune old ones.

    Only after the new file is in place are older checkpoints deleted, keeping the newest `keep`
    by step; the checkpoint just written is always kept, even when it is not the newest (after
    resuming from an older checkpoint). Returns the new file's path.
    """
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    if step < 0:
        raise CheckpointError(f"step must be >= 0, got {step}")
    prepared = {name: _prepare(name, value) for name, value in arrays.items()}
    try:
        meta_json = json.dumps(metadata, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint metadata is not JSON serializable: {e}") from None
    header_meta = {
        _KEY_VERSION: str(FORMAT_VERSION),
        _KEY_METADATA: meta_json,
        _KEY_CHECKSUM: _checksum(prepared, meta_json),
    }
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, st_save(prepared, metadata=header_meta))
    _prune(run_dir, keep, protect=path)
    return path


def _prune(run_dir: str | os.PathLike[str], keep: int, protect: Path) -> None:
    checkpoints = list_checkpoints(run_dir)
    best = best_checkpoint(run_dir)
    for old in checkpoints[: max(0, len(checkpoints) - keep)]:
        if old != protect and old != best:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The run's checkpoint files, oldest step first (temp files of interrupted saves ignored)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME_RE.match(p.name) and p.is_file()]
    return sorted(found, key=checkpoint_step)


def mark_best_checkpoint(path: str | os.PathLike[str], eval_return: float) -> None:
    """Record `path` (a checkpoint of its run) as the run's best by evaluation return: pruning
    keeps it whatever `keep_checkpoints` says, and `best_checkpoint` returns it."""
    path = Path(path)
    record = {"checkpoint": path.name, "env_steps": checkpoint_step(path),
              "eval_return_mean": float(eval_return)}
    atomic_write_bytes(path.parent / BEST_FILE, (json.dumps(record, indent=2) + "\n").encode())


def best_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`mark_best_checkpoint`'s record for the run, or None (none marked, or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / CHECKPOINT_DIR / BEST_FILE).read_text())
        checkpoint_step(record["checkpoint"])
        float(record["eval_return_mean"])
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        return None
    return record


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the best evaluation return so far, or None if none is marked or
    its file is gone."""
    record = best_record(run_dir)
    if record is None:
        return None
    path = Path(run_dir) / CHECKPOINT_DIR / record["checkpoint"]
    return path if path.is_file() else None


def forget_best_after(run_dir: str | os.PathLike[str], env_steps: int) -> None:
    """Drop the best mark if it lies beyond `env_steps` (a run resumed from an earlier
    checkpoint no longer has that history)."""
    record = best_record(run_dir)
    if record is not None and record["env_steps"] > env_steps:
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / CHECKPOINT_DIR / BEST_FILE).unlink()


def policy_sizes(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """(obs_size, action_size) recorded in a checkpoint's metadata, so that its policy loads
    without building the env; None for checkpoints written before they were recorded."""
    sizes = metadata.get("obs_size"), metadata.get("action_size")
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        return int(sizes[0]), int(sizes[1])
    return None


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step, or None if the run has none yet."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def _read_header(path: Path, data: bytes, fix: str = _DELETE_HINT) -> dict[str, Any]:
    """Parse the safetensors header ourselves, to tell truncation from a foreign file."""
    not_st = f"checkpoint {path} is not a safetensors file"
    if len(data) < 8:
        raise CheckpointError(
            f"checkpoint {path} is truncated ({len(data)} bytes, too short for a header); "
            f"{fix}"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len == 0 or header_len > _MAX_HEADER_BYTES or data[8:9] != b"{":
        raise CheckpointError(f"{not_st} (no valid header); {fix}")
    if len(data) < 8 + header_len:
        raise CheckpointError(
            f"checkpoint {path} is truncated (its header is cut off); {fix}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{not_st} (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{not_st} (its header is not a JSON object); {fix}")
    # Anything malformed beyond this is left to safetensors' own validation in load.
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__"
        and isinstance(entry, dict)
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and isinstance(entry["data_offsets"][1], int)
    ]
    payload = len(data) - 8 - header_len
    if ends and max(ends) > payload:
        raise CheckpointError(
            f"checkpoint {path} is truncated ({payload} of {max(ends)} data bytes present); "
            f"{fix}"
        )
    return header


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata `save_checkpoint` stored in the checkpoint at `path`, read from its header
    alone: quick even for a large checkpoint, for checks made before a run's slow setup. The
    arrays are neither read nor verified (`load_checkpoint` does that); a header that cannot be
    read is a CheckpointError."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            start = file.read(8)
            (header_len,) = struct.unpack("<Q", start) if len(start) == 8 else (0,)
            if not 0 < header_len <= _MAX_HEADER_BYTES:
                raise CheckpointError(f"checkpoint {path} has no valid header")
            header = json.loads(file.read(header_len))
        metadata = json.loads(header["__metadata__"][_KEY_METADATA])
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} has no readable reppo metadata") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint {path} has no readable reppo metadata")
    return metadata


def load_checkpoint(
    path: str | os.PathLike[str], *, fix: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint: returns (arrays, metadata) exactly as they were saved.

    Raises CheckpointError, with a one-line message naming the file, the problem and a fix, if
    the file is missing, truncated, not a safetensors file, not written by reppo, of an
    unsupported format version, or fails its checksum. The fix defaults to what suits resuming
    (delete the damaged file to fall back on the previous one); `fix` replaces it, e.g. for
    evaluation, where a damaged or wrong file must be left alone.
    """
    path = Path(path)
    missing_fix = fix or "`latest_checkpoint(run_dir)` finds the newest one"
    foreign_fix = fix or f"{_DELETE_HINT}, or pass a checkpoint from a reppo run"
    fix = fix or _DELETE_HINT
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; {missing_fix}") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory, not a file; {fix}") from None
    except OSError as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {e.strerror or e}; check its permissions"
        ) from None

    header = _read_header(path, data, fix)
    meta = header.get("__metadata__")
    keys = (_KEY_VERSION, _KEY_METADATA, _KEY_CHECKSUM)
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in keys):
        raise CheckpointError(
            f"checkpoint {path} is missing reppo metadata (it was not written by reppo's "
            f"save_checkpoint); {foreign_fix}"
        )
    version = meta[_KEY_VERSION]
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, but this reppo reads version "
            f"{FORMAT_VERSION}; load it with the reppo version that wrote it, or {fix}"
        )
    try:
        arrays = st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise CheckpointError(
            f"checkpoint {path} is not a valid safetensors file ({e}); {fix}"
        ) from None
    if _checksum(arrays, meta[_KEY_METADATA]) != meta[_KEY_CHECKSUM]:
        raise CheckpointError(
            f"checkpoint {path} fails its checksum (the file was corrupted on disk); {fix}"
        )
    try:
        metadata = json.loads(meta[_KEY_METADATA])
    except json.JSONDecodeError:
        raise CheckpointError(
            f"checkpoint {path} has unreadable reppo metadata; {fix}"
        ) from None
    return arrays, metadata


# The config fields that fix what a checkpoint's arrays are and mean: the task (and with it the
# observation and action sizes), the backend that wrote it, the number of seeds (the arrays'
# leading axis), whether the policy normalizes its observations, the actor's and the critic's
# architecture and the critic's value support. A policy rebuilt from a config.json that differs
# from its checkpoint in one of them either fails to load or, worse, loads and acts wrongly (say
# with `normalize_obs` turned off). The other fields (learning rates, schedule, logging,
# `device`, `impl`, ...) may differ without changing the saved policy and are not compared.
POLICY_FIELDS: tuple[str, ...] = (
    "env", "backend", "num_seeds", "normalize_obs",
    "actor_hidden_dim", "actor_num_layers", "norm", "min_std",
    "critic_hidden_dim", "critic_encoder_layers", "critic_head_layers", "critic_pred_layers",
    "use_hl_gauss", "num_bins", "v_min", "v_max", "gamma", "reward_prediction",
)
# Checkpoints listed by name in messages; the newest are shown.
_LISTED = 8


def _run_checkpoints_text(run_dir: Path, exclude: Path | None = None) -> str:
    """`RUN/checkpoints holds ckpt_....safetensors, ...` (newest last), or that it holds none."""
    found = [p for p in list_checkpoints(run_dir) if exclude is None or p != exclude]
    where = run_dir / CHECKPOINT_DIR
    if not found:
        other = " other" if exclude is not None else ""
        return f"{where} holds no{other} checkpoint"
    names = [p.name for p in found[-_LISTED:]]
    more = f"{len(found) - _LISTED} older ones and " if len(found) > _LISTED else ""
    return f"{where} holds {more}{', '.join(names)}"


def _evaluation_fix(run_dir: Path, path: Path, given: bool) -> str:
    """What to do when a checkpoint picked for evaluation cannot be read: never delete it."""
    if given:
        return (
            f"--checkpoint expects a checkpoint file of run {run_dir} "
            f"({CHECKPOINT_DIR}/ckpt_<step>.safetensors, written by `reppo train`): "
            f"{_run_checkpoints_text(run_dir)}; pass one of them, or leave --checkpoint out "
            "for the latest"
        )
    return (
        f"the file was left as it is; evaluate another checkpoint of the run with "
        f"--checkpoint FILE ({_run_checkpoints_text(run_dir, exclude=path)})"
    )


def comparable_value(name: str, value: Any) -> Any:
    """A config value as its field's type, so that e.g. 16 and 16.0 in JSON compare equal."""
    try:
        return coerce_field(name, value)
    except (ConfigError, KeyError):
        return value


def check_config_matches(
    config: dict[str, Any], metadata: dict[str, Any], *, run_dir: Path, path: Path
) -> None:
    """Refuse a run's config.json whose `POLICY_FIELDS` differ from the checkpoint's config.

    The config a checkpoint was trained with is stored in its metadata (`metadata["config"]`,
    also `metadata["backend"]`); fields a checkpoint does not store are not compared.
    """
    stored = dict(metadata.get("config") or {})
    if "backend" in metadata:
        stored.setdefault("backend", metadata["backend"])
    differ = []
    for name in POLICY_FIELDS:
        if name not in stored:
            continue
        if name in config and (comparable_value(name, config[name])
                               == comparable_value(name, stored[name])):
            continue
        shown = json.dumps(config[name]) if name in config else "missing"
        differ.append(f"{name} (config.json: {shown}, checkpoint: {json.dumps(stored[name])})")
    if differ:
        raise CheckpointError(
            f"{run_dir / 'config.json'} does not match the config stored in checkpoint "
            f"{path} in {', '.join(differ)}; if config.json was edited, restore these values "
            "(the checkpoint's are the ones it was trained with); if the checkpoint is from "
            "another run, evaluate it with that run's directory"
        )


def no_checkpoint_message(run_dir: Path, purpose: str) -> str:
    """Why the run in `run_dir` has no checkpoint to `purpose` ("load", "resume from") and what
    to do. Never `--resume`: resuming needs a checkpoint as much as loading does."""
    from reppo.runs.lock import live_writer
    from reppo.runs.metrics import read_metrics

    head = f"{run_dir}: no checkpoint to {purpose}"
    writer = live_writer(run_dir)
    if writer is not None:
        return (f"{head} yet: {writer} is training it and has not written its first one; try "
                "again once it has (every checkpoint_interval_steps env steps)")
    folder = run_dir / CHECKPOINT_DIR
    state = "is empty" if folder.is_dir() else "is missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged metrics line says nothing here
            logged = max((r.get("env_steps", 0) for r in read_metrics(run_dir)), default=0)
    except Exception:  # an unreadable metrics file: the run's progress is unknown
        logged = 0
    new_run = (f"train it again from its config: `reppo train --preset {run_dir / 'config.json'}"
               " --run-dir NEW_DIR`")
    if isinstance(logged, int) and logged > 0:
        return (f"{head}: {folder} {state}, though the run logged {logged:,} env steps, so its "
                f"checkpoint files were deleted or moved; put them back in {folder}, or "
                f"{new_run}")
    return (f"{head}: {folder} {state} and the run logged no progress (it stopped before its "
            f"first checkpoint); {new_run}")


def load_run_checkpoint(
    run_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], Path, dict[str, np.ndarray], dict[str, Any]]:
    """A run's saved config, and the arrays and metadata of `checkpoint` (default: the latest),
    for evaluating or exporting its policy.

    Returns `(config_dict, checkpoint_path, arrays, metadata)`. A run with no checkpoint yet, a
    file that is not a readable checkpoint (the message lists the run's checkpoints and never
    suggests deleting anything), and a config.json whose `POLICY_FIELDS` differ from the config
    stored in the checkpoint are CheckpointErrors that say what to do.
    """
    run_dir = Path(run_dir)
    config = open_run_dir(run_dir)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(no_checkpoint_message(run_dir, "load"))
    fix = _evaluation_fix(run_dir, path, given=checkpoint is not None)
    arrays, metadata = load_checkpoint(path, fix=fix)
    check_config_matches(config, metadata, run_dir=run_dir, path=path)
    return config, path, arrays, metadata
