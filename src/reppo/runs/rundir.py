"""The run directory: where one training run keeps its config, versions, metrics and checkpoints.

Layout::

    runs/CartpoleBalance-20250101-120000/
        config.json       the full run config (a `Config.to_dict()`)
        versions.json     package versions and machine description (see versions.py)
        metrics.jsonl     one JSON record per log line (see metrics.py)
        checkpoints/      ckpt_{step:012d}.safetensors (see checkpoint.py)

The rule of this module is that it never overwrites or deletes a file it did not write: a
directory that already holds anything is refused, with a message that says how to proceed.
`check_output_directory` is that refusal for every command that writes a directory (a run, a
sweep, a search, a report, a toy study, a baseline run, a saved policy).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from reppo.errors import UserError

CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"


class RunDirError(RuntimeError):
    """A run directory cannot be created or opened; the message says why and what to do."""


# ---- atomic file writing (shared by the other modules of reppo.runs) -------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory (a rename is only atomic within one
    file system), are flushed and fsynced, and the file is then renamed over `path`. With
    `overwrite=False` an existing `path` is left alone and FileExistsError is raised, even if
    it appeared while we were writing (the final step is a hard link, which cannot replace).
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_current_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:
                # File systems without hard links: fall back to a checked rename, which leaves
                # only a tiny race window instead of none.
                if path.exists():
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = True) -> Path:
    """Pretty-print `obj` as JSON (sorted keys, trailing newline) and write it atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


# ---- creating and opening run directories -----------------------------------------------------


def default_run_dir(env: str, root: str | os.PathLike[str] = "runs") -> Path:
    """`root/{env}-{YYYYmmdd-HHMMSS}` (local time), with `-2`, `-3`, ... if that already exists.

    Only picks the name; `create_run_dir` creates the directory.
    """
    # Env names are plain identifiers today, but keep any future "suite/task" name from
    # turning into nested directories.
    safe_env = re.sub(r"[^A-Za-z0-9_.-]+", "_", env).strip("._") or "run"
    base = Path(root) / f"{safe_env}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    missing = object()
    return [k for k in keys if old.get(k, missing) != new.get(k, missing)]


def _describe_existing_run(path: Path, config: dict[str, Any]) -> str:
    """Say how the run already in `path` compares with the config we were asked to start."""
    try:
        old = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{path} already holds a run (its {CONFIG_FILE} is unreadable)"
    # Compare in JSON form so that e.g. tuples and lists, which JSON cannot tell apart, match.
    new = json.loads(json.dumps(config, default=str))
    if not isinstance(old, dict):
        return f"{path} already holds a run (its {CONFIG_FILE} is not a JSON object)"
    diff = _differing_fields(old, new)
    if not diff:
        return f"{path} already holds a run with the same config"
    named = ", ".join(diff[:3]) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
    return f"{path} already holds a run with a different config (differs in {named})"


def check_output_directory(
    path: str | os.PathLike[str],
    name: str,
    *,
    advice: str = "pick a new or empty directory",
    record: str | None = None,
    kind: str | None = None,
    ignore: tuple[str, ...] = (),
    error: type[Exception] = UserError,
) -> None:
    """The one refusal of an occupied output directory: `path` must be missing or a
    directory that holds nothing but the names in `ignore`. `name` starts the message (a flag
    such as "--out", or "" for a path given by position); `record`/`kind` say what a directory
    of this command would hold ("holds no sweep.json, so it is not a sweep"), for commands
    that continue such a directory themselves; `advice` is the fix; `error` the class raised
    (every one of them is a user error, exit status 2)."""
    path = Path(path)
    where = f"{name} {path}".strip()
    unchanged = "nothing was changed"
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise error(f"{where} is a file; {unchanged}; {advice}")
    if path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
        what = f" and holds no {record}, so it is not a {kind}" if record else ""
        raise error(f"{where} is not empty{what}; {unchanged}; {advice}")


def check_run_dir_free(path: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """Refuse (RunDirError) a `path` where `create_run_dir` could not start a fresh run: a
    file, a directory that holds a run (resume it instead) or other files. Called before a
    run's slow setup as well, so that a conflict is reported in seconds, not after it."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_FILE).exists():
        raise RunDirError(
            f"{_describe_existing_run(path, config)}; nothing was changed; to continue it use "
            f"`reppo train --resume {path}`, or pick another --run-dir for a new run"
        )
    check_output_directory(
        path, "", record=CONFIG_FILE, kind="reppo run directory", error=RunDirError,
        advice="pick another --run-dir (or a new or empty directory)",
    )
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(
            f"cannot create run directory {path}: {existing} is not a writable directory; "
            "pick another --run-dir"
        )


def create_run_dir(
    path: str | os.PathLike[str], config: dict[str, Any], versions: dict[str, Any]
) -> Path:
    """Create a fresh run directory at `path` holding `config.json` and `versions.json`.

    `path` may be missing or an empty directory. Anything else is refused with RunDirError and
    left exactly as it was: a directory that already holds a run (resume it instead), a
    non-empty directory of other files, or a file.
    """
    path = Path(path)
    check_run_dir_free(path, config)
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / CONFIG_FILE, config, overwrite=False)
        atomic_write_json(path / VERSIONS_FILE, versions, overwrite=False)
    except FileExistsError:
        # Another process started a run in the same directory between our check and write.
        raise RunDirError(
            f"{path} was claimed by another run while this one was being created; "
            "pick another --run-dir"
        ) from None
    except OSError as e:
        raise RunDirError(
            f"cannot create run directory {path}: {e.strerror or e}; check the path and its "
            "permissions, or pick another --run-dir"
        ) from None
    return path


def open_run_dir(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the `config.json` of an existing run (for `--resume` and evaluation)."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(
            f"run directory {path} does not exist; check the path (new runs go under runs/ "
            "by default)"
        )
    if not path.is_dir():
        raise RunDirError(
            f"{path} is a file, not a run directory; pass the directory `reppo train` created"
        )
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunDirError(
            f"{path} is not a reppo run directory (it has no {CONFIG_FILE}); pass the "
            "directory that `reppo train` created"
        )
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RunDirError(f"cannot read {config_path}: {reason}; check its permissions") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(
            f"{config_path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "repair it or restore it from a backup, or start a new run"
        ) from None
    if not isinstance(config, dict):
        raise RunDirError(
            f"{config_path} does not hold a config (a JSON object); repair it or start a new run"
        )
    return config
