"""The sweep directory itself: OUT/sweep.json and OUT/sweep.lock.

`check_out_dir` refuses an OUT that is not a sweep or holds a sweep with other settings,
`record_invocation` creates sweep.json or adds this invocation to it, and `sweep_lock` keeps
two sweeps from running in the same OUT at once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reppo.errors import UserError
from reppo.experiments.sweep.plan import read_json
from reppo.experiments.sweep.settings import Settings
from reppo.runs.rundir import check_output_directory

SWEEP_FILE = "sweep.json"


LOCK_FILE = "sweep.lock"
_UNSET = object()


# ---- the sweep file and lock -----------------------------------------------------------------


def now_stamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _differences(existing: dict[str, Any], settings: Settings) -> list[str]:
    """What differs between a sweep.json and these settings, one phrase per difference."""
    diffs = []
    for key, new in (("suite", settings.suite.name), ("seeds", settings.seeds),
                     ("first_seed", settings.first_seed), ("steps", settings.steps)):
        # A sweep.json written before first seeds existed trained seeds from 0.
        if existing.get(key, 0 if key == "first_seed" else None) != new:
            diffs.append(f"{key} {existing.get(key)!r} there, {new!r} now")
    old_algo = existing.get("algos", {}).get(settings.method_key)
    if old_algo is None:
        return diffs
    if old_algo.get("preset") != settings.preset:
        diffs.append(f"{settings.method_key} preset {old_algo.get('preset')!r} there, "
                     f"{settings.preset!r} now")
    old_file = old_algo.get("preset_config") or {}
    new_file = json.loads(json.dumps(settings.algo_record())).get("preset_config") or {}
    if old_file and new_file and old_file != new_file:
        changed = sorted(k for k in set(old_file) | set(new_file)
                         if old_file.get(k) != new_file.get(k))
        diffs.append(f"the preset file {settings.preset} has changed since: "
                     f"{', '.join(changed)}")
    old_set, new_set = old_algo.get("overrides", {}), settings.overrides
    for name in sorted(set(old_set) | set(new_set)):
        if old_set.get(name, _UNSET) != new_set.get(name, _UNSET):
            there = f"{name}={old_set[name]}" if name in old_set else f"no {name}"
            now = f"{name}={new_set[name]}" if name in new_set else f"no {name}"
            diffs.append(f"--set {there} there, {now} now")
    return diffs


def check_out_dir(settings: Settings) -> dict[str, Any] | None:
    """The existing sweep.json of OUT (None for a new sweep); refuses conflicting settings."""
    out = settings.out
    path = out / SWEEP_FILE
    if not (out.is_dir() and path.exists()):
        check_output_directory(out, "--out", record=SWEEP_FILE, kind="sweep",
                               ignore=(LOCK_FILE,))
        return None
    existing = read_json(path)
    if not isinstance(existing, dict):
        raise UserError(f"{path} is unreadable or not a JSON object; repair it or pick "
                          "another --out")
    # Compare in JSON form: overrides were stored as JSON.
    diffs = _differences(json.loads(json.dumps(existing)), settings)
    if diffs:
        raise UserError(
            f"{out} holds a sweep with other settings ({'; '.join(diffs)}); nothing was "
            "changed; rerun with its settings to resume it, or pick another --out"
        )
    return existing


def record_invocation(settings: Settings, existing: dict[str, Any] | None) -> None:
    """Create OUT/sweep.json, or add this invocation (and algo) to it."""
    from reppo.runs import atomic_write_json

    invocation = {
        "command": settings.command(), "date": now_stamp(), "algo": settings.algo,
        "tasks": list(settings.tasks), "methods": [m.label for m in settings.methods],
    }
    if existing is None:
        settings.out.mkdir(parents=True, exist_ok=True)
        record = {
            "suite": settings.suite.name, "backend": settings.suite.backend,
            "seeds": settings.seeds, "first_seed": settings.first_seed,
            "steps": settings.steps,
            "algos": {settings.method_key: settings.algo_record()},
            "command": invocation["command"], "date": invocation["date"],
            "invocations": [invocation],
        }
        try:
            atomic_write_json(settings.out / SWEEP_FILE, record, overwrite=False)
        except FileExistsError:
            raise UserError(f"{settings.out} was claimed by another sweep just now; "
                              "pick another --out") from None
        return
    record = dict(existing)
    record.setdefault("algos", {})[settings.method_key] = settings.algo_record()
    record["invocations"] = [*record.get("invocations", []), invocation]
    atomic_write_json(settings.out / SWEEP_FILE, record)


@contextlib.contextmanager
def sweep_lock(out: Path, lock_file: str = LOCK_FILE,
               command: str = "reppo sweep") -> Iterator[None]:
    """Hold OUT/sweep.lock (or `lock_file`), so two sweeps (or searches: `command`) never run
    the same runs at once (POSIX)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the run dirs still refuse reuse
        yield
        return
    with open(out / lock_file, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise UserError(
                f"another {command} (pid {holder}) is running in {out}; wait for it to end "
                "or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
