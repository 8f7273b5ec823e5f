"""Preset files: a config kept in a JSON file, usable wherever a preset name is.

`reppo train --preset FILE.json`, `reppo sweep --preset FILE.json` and `reppo.preset("FILE.json")`
load one; `reppo tune` writes its winning config as one. The file is a JSON object whose keys
are config fields (`reppo train --help` lists them), plus two optional keys:

- `"base"`: the named preset (`paper`, `cpu`, ...) whose values the fields not in the file
  take; without it they take the `paper` preset's (the config's defaults);
- `"description"`: free text, e.g. where the file came from; printed by `reppo train`.

A run's `config.json` is a preset file as it is. A preset file has no per-task settings: its
fields apply to every task, and those of its base's per-task settings are not applied.
Imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reppo.config import Config, ConfigError

BASE, DESCRIPTION = "base", "description"
_SUFFIX = ".json"


def is_preset_file(name: str | os.PathLike[str]) -> bool:
    """Whether `name` names a preset file rather than a named preset: a path ending in .json
    or holding a directory separator (no preset name has either)."""
    text = os.fspath(name)
    return text.endswith(_SUFFIX) or "/" in text or os.sep in text


def read_preset_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a preset file, or a ConfigError naming the problem."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"preset file {path} {what}; give a JSON file of config fields (a run's "
            "config.json, or the best.json of `reppo tune`), or a preset name"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"preset file {path} is unreadable: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"preset file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {path} must hold a JSON object of config fields, "
                          f"not a {type(data).__name__}")
    return data


def preset_description(path: str | os.PathLike[str]) -> str | None:
    """The file's description, if it has one."""
    description = read_preset_file(path).get(DESCRIPTION)
    return description if isinstance(description, str) else None


def write_preset_file(path: str | os.PathLike[str], config: Config, description: str, *,
                      overwrite: bool = False) -> None:
    """Write `config` whole (every field, so that later changes of the named presets cannot
    change what it means) with its description, atomically; an existing file is replaced only
    with `overwrite` (FileExistsError otherwise)."""
    from reppo.runs import atomic_write_json

    atomic_write_json(Path(path), {DESCRIPTION: description, **config.to_dict()},
                      overwrite=overwrite)
