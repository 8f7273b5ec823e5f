"""Run directories as per-run learning curves of normalized scores.

A run directory (see `reppo.runs.rundir`) holds `config.json` and `metrics.jsonl`; REPPO runs,
Brax baseline runs and sweep runs all share that layout. One directory trained with
`num_seeds=K` holds K runs: its evaluation records carry one return per seed in
`eval/return_per_seed`, and it becomes K `Run`s here.

Scores. Aggregating over tasks needs scores on a common scale:

* DM Control (MuJoCo Playground) tasks: return / 1000. Every episode has 1000 steps with a
  per-step reward in [0, 1], so 1000 is the maximum achievable return and the score lies in
  [0, 1] (max-normalization). The paper's text normalizes by "the maximum return achieved by any
  algorithm"; dividing by the achievable maximum instead keeps a score independent of which
  other runs happen to be in the report.
* ManiSkill3 tasks: the evaluation success rate `eval/success_once` (the fraction of evaluation
  episodes that succeeded at some step), as the paper reports success rates for ManiSkill.
* Any other task (a user's registered env, a Gymnasium id): no normalization is known, so the
  score is the raw return, and each such task is a family of its own (`raw_family`): raw
  returns of different tasks are never pooled, and thresholds on normalized scores (reliable
  performance, performance profiles) are not computed for them.

Only finished runs are used: a run is finished when its last evaluation is at or past its
config's `total_steps`. Unfinished and unreadable runs are skipped with a reason, never
silently.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reppo.envs.catalog import FAMILIES
from reppo.errors import UserError
from reppo.runs.directory import EXPERIMENT_FILE, RunDir
from reppo.runs.metrics import EVAL_RETURN, EVAL_RETURN_PER_SEED, METRICS_FILE, read_metrics
from reppo.runs.rundir import CONFIG_FILE

DM_CONTROL, MANISKILL = "dm_control", "maniskill"  # the catalogue's families that reports score
_RAW = "raw:"
RAW_SCORE_NAME = "raw return, not normalized"


def raw_family(task: str) -> str:
    """The family of a task whose scores are raw returns (one family per task)."""
    return _RAW + task


def is_raw(family: str) -> bool:
    return family.startswith(_RAW)


def family_title(family: str) -> str:
    if is_raw(family):
        return f"{family[len(_RAW):]} (raw return: no normalization is known)"
    return FAMILIES[family].title


def score_name(family: str) -> str:
    return RAW_SCORE_NAME if is_raw(family) else FAMILIES[family].score_name

_RETURN = EVAL_RETURN
_RETURN_PER_SEED = EVAL_RETURN_PER_SEED
_SUCCESS = "eval/success_once"
_SUCCESS_PER_SEED = "eval/success_once_per_seed"
_END_SUCCESS = "eval/success_at_end"
_END_SUCCESS_PER_SEED = "eval/success_at_end_per_seed"


class RunSkipped(Exception):
    """A run directory that cannot be used; the message is the reason."""


class RunSkippedWarning(UserWarning):
    """Issued by `load_runs` (without `on_skip`) for every run directory it leaves out."""


@dataclass(frozen=True)
class Skipped:
    """A run directory left out of the analysis, and why."""

    path: Path
    reason: str


@dataclass(frozen=True, eq=False)
class Run:
    """One seed's learning curve: its evaluations in order of env steps.

    `wall_time` is NaN where a record has none. For a directory with several seeds it is the
    wall time of the process that trained them all side by side, shared by its runs.
    """

    path: Path
    seed_index: int
    num_seeds: int
    seed: int
    method: str
    algo: str
    task: str
    family: str
    variant: str | None
    transitions_per_iteration: int | None
    total_steps: int
    env_steps: np.ndarray
    wall_time: np.ndarray
    returns: np.ndarray
    success: np.ndarray | None
    # ManiSkill3: the fraction of evaluation episodes in success at their last step, where every
    # evaluation recorded it.
    success_at_end: np.ndarray | None = None

    @property
    def name(self) -> str:
        """The directory, with the seed where the directory holds several."""
        return str(self.path) if self.num_seeds == 1 else f"{self.path} [seed {self.seed_index}]"

    @property
    def raw(self) -> np.ndarray:
        """The measured quantity the score is made of: success rate or return."""
        if self.family == MANISKILL:
            assert self.success is not None
            return self.success
        return self.returns

    @property
    def scores(self) -> np.ndarray:
        """Normalized score at every evaluation (see the module docstring)."""
        if is_raw(self.family):
            return self.returns
        max_return = FAMILIES[self.family].max_return
        return self.raw if max_return is None else self.returns / max_return

    @property
    def final_return(self) -> float:
        return float(self.returns[-1])

    @property
    def final_score(self) -> float:
        return float(self.scores[-1])

    @property
    def final_steps(self) -> int:
        return int(self.env_steps[-1])


@dataclass(frozen=True)
class RunSet:
    """The runs found under some paths, and the run directories that were left out."""

    runs: list[Run]
    skipped: list[Skipped]


# ---- finding run directories ------------------------------------------------------------------


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).is_file()


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Skipped]]:
    """Run directories (config.json and metrics.jsonl) at or under `paths`, searched recursively.

    The search does not descend into a run directory or hidden directories. A directory with a
    config.json but no metrics.jsonl, and no run below it, is returned as skipped (a run that
    has not logged yet). Raises UserError for a path that does not exist or is not a directory.
    """
    found: dict[Path, Path] = {}
    no_metrics: dict[Path, Path] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise UserError(f"{root} does not exist; pass run directories or directories "
                            "that contain them")
        if not root.is_dir():
            raise UserError(f"{root} is a file; pass run directories (with {CONFIG_FILE} and "
                            f"{METRICS_FILE}) or directories that contain them")
        for current, subdirs, _ in os.walk(root):
            here = Path(current)
            if _is_run_dir(here):
                found.setdefault(here.resolve(), here)
                subdirs.clear()
                continue
            if (here / CONFIG_FILE).is_file():
                no_metrics.setdefault(here.resolve(), here)
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    skipped = [
        Skipped(path, f"no {METRICS_FILE} (the run has not logged anything yet)")
        for resolved, path in no_metrics.items()
        if not any(resolved in run.parents for run in found)
    ]
    return sorted(found.values()), sorted(skipped, key=lambda s: s.path)


# ---- reading one run directory ----------------------------------------------------------------


@functools.cache
def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunSkipped(f"{path.name} is unreadable ({e})") from None
    if not isinstance(value, dict):
        raise RunSkipped(f"{path.name} is not a JSON object")
    return value


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, null for a logged NaN, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int_field(config: dict[str, Any], key: str, default: int | None, minimum: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RunSkipped(f"{CONFIG_FILE} has no valid {key!r} (an integer >= {minimum})")
    return value


def _per_seed(record: dict[str, Any], per_seed_key: str, pooled_key: str, k: int) -> list[float]:
    """K finite per-seed values of an evaluation record; the pooled value serves when K = 1."""
    steps = record.get("env_steps")
    values = record.get(per_seed_key)
    if values is None and k == 1 and pooled_key in record:
        values = [record[pooled_key]]
    if values is None:
        if pooled_key in record:
            raise RunSkipped(
                f"the evaluation at env step {steps} has only the pooled {pooled_key} of its "
                f"{k} seeds, not {per_seed_key}"
            )
        missing = pooled_key if k == 1 else per_seed_key
        raise RunSkipped(f"the evaluation at env step {steps} has no {missing}")
    if not isinstance(values, list) or len(values) != k:
        raise RunSkipped(
            f"{per_seed_key} at env step {steps} does not hold one value per seed ({k})"
        )
    numbers = [_number(v) for v in values]
    if any(v is None for v in numbers):
        raise RunSkipped(f"non-finite {per_seed_key} at env step {steps}")
    return [float(v) for v in numbers if v is not None]


def _family(task: str, has_success: bool) -> str:
    dmc, maniskill = FAMILIES[DM_CONTROL].tasks, FAMILIES[MANISKILL].tasks
    if task in maniskill or (has_success and task not in dmc):
        if not has_success:
            raise RunSkipped(f"ManiSkill task {task} but its evaluations have no {_SUCCESS}, "
                             "the score used for ManiSkill")
        return MANISKILL
    if task in dmc:
        return DM_CONTROL
    return raw_family(task)


def load_run_dir(path: str | os.PathLike[str], *, finished_only: bool = True) -> list[Run]:
    """The runs of one finished run directory, one per seed (with `finished_only` False, also
    of one still training: its curve so far, as `reppo tune` reads it for pruning).

    Raises RunSkipped, whose message is the reason, for an unreadable config, metrics without
    evaluations, malformed or non-finite evaluation values, or an unfinished run.
    """
    path = Path(path)
    config = _read_json_object(path / CONFIG_FILE)
    task = config.get("env")
    if not isinstance(task, str) or not task:
        raise RunSkipped(f"{CONFIG_FILE} has no 'env' (the task name)")
    total_steps = _int_field(config, "total_steps", None, 1)
    k = _int_field(config, "num_seeds", 1, 1)
    first_seed = _int_field(config, "seed", 0, -(2**63))
    algo = config.get("algo", "reppo")
    if not isinstance(algo, str) or not algo:
        raise RunSkipped(f"{CONFIG_FILE} has an invalid 'algo' {algo!r}")
    method, variant = algo, None
    if (path / EXPERIMENT_FILE).exists():
        experiment = _read_json_object(path / EXPERIMENT_FILE)
        method = experiment.get("method", algo)
        variant = experiment.get("variant")
        if not isinstance(method, str) or not method:
            raise RunSkipped(f"{EXPERIMENT_FILE} has an invalid 'method' {method!r}")
        if variant is not None and not isinstance(variant, str):
            raise RunSkipped(f"{EXPERIMENT_FILE} has an invalid 'variant' {variant!r}")
    num_envs, num_steps = config.get("num_envs"), config.get("num_steps")
    tpi = num_envs * num_steps if all(
        isinstance(v, int) and not isinstance(v, bool) for v in (num_envs, num_steps)
    ) else None

    evaluations: dict[int, dict[str, Any]] = {}
    for record in read_metrics(path):
        if _RETURN not in record:
            continue
        steps = _number(record.get("env_steps"))
        if steps is None:
            raise RunSkipped("an evaluation record has no valid 'env_steps'")
        evaluations[int(steps)] = record  # a later record for the same step supersedes
    if not evaluations:
        raise RunSkipped("no evaluation records in metrics.jsonl yet")
    steps = np.array(sorted(evaluations), dtype=np.int64)
    records = [evaluations[s] for s in steps]
    if finished_only and not RunDir(path).is_finished():
        raise RunSkipped(
            f"unfinished: last evaluation at {steps[-1]:,} of {total_steps:,} env steps"
        )
    has_success = any(_SUCCESS in r or _SUCCESS_PER_SEED in r for r in records)
    family = _family(task, has_success)
    returns = np.array([_per_seed(r, _RETURN_PER_SEED, _RETURN, k) for r in records]).T
    success = None
    if family == MANISKILL:
        success = np.array([_per_seed(r, _SUCCESS_PER_SEED, _SUCCESS, k) for r in records]).T
    at_end = None
    if family == MANISKILL and all(
        _END_SUCCESS in r or _END_SUCCESS_PER_SEED in r for r in records
    ):
        at_end = np.array(
            [_per_seed(r, _END_SUCCESS_PER_SEED, _END_SUCCESS, k) for r in records]
        ).T
    wall = np.array([_number(r.get("wall_time")) for r in records], dtype=float)  # None -> nan
    return [
        Run(
            path=path, seed_index=i, num_seeds=k, seed=first_seed + i, method=method, algo=algo,
            task=task, family=family, variant=variant, transitions_per_iteration=tpi,
            total_steps=total_steps, env_steps=steps, wall_time=wall, returns=returns[i],
            success=None if success is None else success[i],
            success_at_end=None if at_end is None else at_end[i],
        )
        for i in range(k)
    ]


def _warn(skipped: Skipped) -> None:
    warnings.warn(f"skipping {skipped.path}: {skipped.reason}", RunSkippedWarning, stacklevel=3)


def load_runs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    on_skip: Callable[[Skipped], None] | None = None,
) -> RunSet:
    """Every finished run at or under `paths`.

    Each directory left out is passed to `on_skip` (default: a RunSkippedWarning naming it and
    the reason) and listed in the result. Raises UserError when no usable run is found.
    """
    report = on_skip or _warn
    run_dirs, skipped = find_run_dirs(paths)
    for item in skipped:
        report(item)
    runs: list[Run] = []
    for run_dir in run_dirs:
        try:
            runs.extend(load_run_dir(run_dir))
        except RunSkipped as e:
            item = Skipped(run_dir, str(e))
            skipped.append(item)
            report(item)
    if not runs:
        where = ", ".join(str(p) for p in paths)
        if skipped:
            raise UserError(f"no finished runs under {where} ({len(skipped)} run directories "
                            "skipped, see the warnings); finish or fix them, or pass other "
                            "directories")
        raise UserError(f"no run directories (with {CONFIG_FILE} and {METRICS_FILE}) under "
                        f"{where}; pass the directories that `reppo train` or `reppo sweep` "
                        "wrote")
    return RunSet(runs, skipped)
