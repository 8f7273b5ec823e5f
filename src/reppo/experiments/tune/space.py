"""The search space of `reppo tune`: which config fields a search varies, over which values.

A space is a TOML (or JSON) file with one table per config field (`reppo train --help` lists
the fields), holding either a range or a list of choices:

    [actor_lr]              # a float field: a range, here on a log scale
    low = 3e-4
    high = 3e-3
    log = true

    [num_bootstrap_samples] # an int field: a range of integers (step 1 unless `step` is given)
    low = 1
    high = 8

    [action_noise_correlation]
    choices = [0.0, 0.5, 0.9]   # any field: one of these values

Keys of a range: `low`, `high` (both included), `log` (sample uniformly in log space; needs
low > 0) and `step` (a grid low, low + step, ...; not with `log`). Boolean and named-choice
fields (`norm`, `lr_schedule`, ...) take `choices` only. Every bound and choice is checked
against the config the trials start from, so that a value no trial could run is refused
before the search starts; combinations that no config allows (say a `num_minibatches` that
does not divide one of the `num_envs` choices) are found when a trial draws them and
recorded as failed trials.

Fields that do not change what a run learns, or that the search sets itself (the task, seeds,
budget, backend, logging, evaluation and checkpoint cadence, devices), cannot be searched.
This module imports nothing heavy; `suggest` takes an Optuna trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.config import RESUMABLE_FIELDS, Config, ConfigError, coerce_field, field_type
from reppo.errors import UserError

# Set by the search for every run (a managed field of the sweep) or not a hyperparameter:
# they change where and how a run is executed or recorded, not what it learns.
NOT_SEARCHABLE: dict[str, str] = {
    "env": "the suite's tasks are the search's (--tasks)",
    "seed": "the search's seeds are set by --seeds and --first-seed",
    "num_seeds": "the search's seeds are set by --seeds",
    "total_steps": "the budget of every trial is --steps",
    "backend": "the suite names the backend",
    **{name: "it changes how a run is logged, evaluated or checkpointed, not what it learns"
       for name in RESUMABLE_FIELDS},
    "device": "it picks where a run is computed, not what it learns",
    "torch_compile": "it changes how fast a run is computed, not what it learns",
    "cuda_graphs": "it changes how fast a run is computed, not what it learns",
    "seed_batching": "it changes how seeds are batched, not what they learn",
    "impl": "it picks the physics implementation, part of the task rather than the algorithm",
}
_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Param:
    """One searched field: a range (low, high, log, step) or a list of choices."""

    name: str
    kind: str  # "int", "float" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The canonical record (tune.json): a rerun must declare the same space."""
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        record: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            record["step"] = self.step
        return record

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(map(_show, self.choices))}}}"
        scale = ", log scale" if self.log else ""
        step = f", step {_show(self.step)}" if self.step is not None else ""
        return f"{self.name} in [{_show(self.low)}, {_show(self.high)}]{scale}{step}"

    def suggest(self, trial: Any) -> Any:
        """This field's value for an Optuna trial (drawn by its sampler, or the one it holds)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log,
                                   step=self.step)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def as_dict(self) -> dict[str, Any]:
        return {p.name: p.as_dict() for p in self.params}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's config values of every searched field, typed as the config wants."""
        return {p.name: coerce_field(p.name, p.suggest(trial)) for p in self.params}

    def typed(self, values: dict[str, Any]) -> dict[str, Any]:
        """A finished trial's values (Optuna's `params`) as config values."""
        return {p.name: coerce_field(p.name, values[p.name]) for p in self.params}

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params]


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) or value is None else f"{value:g}"


def _error(path: Path, message: str) -> UserError:
    return UserError(f"search space {path}: {message}")


def read_space_file(path: Path) -> dict[str, Any]:
    """The raw tables of a space file (.toml or .json), or a UserError naming the problem."""
    if not path.is_file():
        raise UserError(f"search space {path} does not exist; write one (docs/experiments.md, "
                        "`reppo tune`) and pass it with --space")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"search space {path} is unreadable: {err}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise _error(path, f"not valid JSON: {err}") from None
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise _error(path, f"not valid TOML: {err}") from None
    else:
        raise _error(path, "must be a .toml or .json file")
    if not isinstance(data, dict) or not data:
        raise _error(path, "declares no field; give one table per searched config field, e.g. "
                           "[actor_lr] with low = 3e-4, high = 3e-3, log = true")
    return data


def load_space(path: str | Path, start: Config) -> SearchSpace:
    """The validated search space of `path`, for trials that start from the config `start`
    (the preset with the search's fixed --set values)."""
    path = Path(path)
    data = read_space_file(path)
    fields = {f.name for f in dataclasses.fields(Config)}
    params = []
    for name, spec in data.items():
        if name not in fields:
            import difflib

            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _error(path, f"[{name}] is not a config field{hint}; `reppo train --help` "
                               "lists them")
        if name in NOT_SEARCHABLE:
            raise _error(path, f"[{name}] cannot be searched: {NOT_SEARCHABLE[name]}")
        if not isinstance(spec, dict):
            raise _error(path, f"{name} must be a table: [{name}] with low and high, or "
                               "choices")
        params.append(_param(path, name, spec, start))
    return SearchSpace(tuple(params))


def _param(path: Path, name: str, spec: dict[str, Any], start: Config) -> Param:
    base, _ = _optional_base(field_type(name))
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise _error(path, f"[{name}] has choices and {', '.join(extra)}: give either "
                               "choices or a range (low, high, log, step)")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise _error(path, f"[{name}] choices must be a non-empty list")
        try:
            typed = tuple(coerce_field(name, c) for c in choices)
        except ConfigError as err:
            raise _error(path, f"[{name}] choices: {err}") from None
        if len(set(map(repr, typed))) != len(typed):
            raise _error(path, f"[{name}] lists a choice twice")
        for value in typed:
            _check_value(path, name, value, start)
        return Param(name, "choice", choices=typed)

    unknown = sorted(set(spec) - _RANGE_KEYS)
    if unknown:
        raise _error(path, f"[{name}] has unknown key(s) {', '.join(unknown)}; a range takes "
                           "low, high, log and step, a list takes choices")
    if base not in (int, float):
        raise _error(path, f"[{name}] is not a number field: list its values as choices = "
                           "[...]")
    if "low" not in spec or "high" not in spec:
        raise _error(path, f"[{name}] needs low and high (or choices = [...])")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _error(path, f"[{name}] log must be true or false")
    bounds = []
    for key in ("low", "high", "step"):
        value = spec.get(key)
        if value is None:
            bounds.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ):
            raise _error(path, f"[{name}] {key} must be a finite number, got {value!r}")
        if base is int and not float(value).is_integer():
            raise _error(path, f"[{name}] is an integer field: {key} must be a whole number, "
                               f"got {value!r}")
        bounds.append(int(value) if base is int else float(value))
    low, high, step = bounds
    if not low < high:
        raise _error(path, f"[{name}] low ({low:g}) must be below high ({high:g}); for one "
                           f"value use --set {name}=VALUE instead")
    if log and low <= 0:
        raise _error(path, f"[{name}] a log scale needs low > 0, got {low:g}")
    if step is not None:
        if log:
            raise _error(path, f"[{name}] takes log or step, not both")
        if step <= 0:
            raise _error(path, f"[{name}] step must be > 0, got {step:g}")
    for value in (low, high):
        _check_value(path, name, value, start)
    return Param(name, "int" if base is int else "float", low=low, high=high, log=log,
                 step=step)


def _optional_base(tp: Any) -> tuple[Any, bool]:
    from reppo.config import base_type

    return base_type(tp)


def _check_value(path: Path, name: str, value: Any, start: Config) -> None:
    try:
        start.replace(**{name: value})
    except ConfigError as err:
        raise _error(path, f"[{name}] {value!r} makes no valid config with the search's "
                           f"preset and --set values: {err}") from None
