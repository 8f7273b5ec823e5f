"""Every baseline, registered in one place, and the protocol a baseline's module follows.

`REGISTRY` maps a baseline's name to its `Baseline`: what it is called, which family of the
task catalogue it trains, its presets (the default first) and the module that implements it.
That module follows `BaselineModule`: `resolve_hyperparameters` (the preset with the user's
overrides, checked) and `train` (one run into a new run directory, given a `BaselineRun` whose
inputs `run.train_baseline` has checked once). Each trains in whole iterations, cut into
evaluation periods by the one planner, `iterations.plan_iterations`.

Adding a baseline: an entry below, and a module with those two functions that evaluates with
`evaluation.ProtocolEvaluator` (or ManiSkill's protocol) and records with `evaluation.Recorder`.
Suites, `reppo baseline`, `reppo sweep --algo` and the checks of names, presets and tasks read
the entry. This module imports no framework (implementations load when a run starts).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from reppo.experiments.baselines.evaluation import BaselineResult


@dataclass(frozen=True)
class BaselineRun:
    """One baseline run, every input checked (by `run.train_baseline`) before it is built."""

    algo: str
    env: str
    seed: int
    total_steps: int
    run_dir: Path
    preset: str
    eval_interval_steps: int  # 0: evaluate only at the end
    eval_episodes: int
    echo: Callable[[str], None] | None
    hyperparameters: Mapping[str, Any] | None  # overrides of the preset's
    device: str  # "auto", "cpu" or "cuda[:k]": where a torch baseline runs


class BaselineModule(Protocol):
    """What the module named by a `Baseline` offers."""

    def resolve_hyperparameters(
        self, algo: str, env: str, preset: str, total_steps: int | None,
        overrides: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The preset's hyperparameters for `env` with `overrides` applied and checked, as
        the run directory records them (JSON values). `total_steps` None: before a budget is
        known (limits that depend on it left at the preset's)."""
        ...

    def train(self, run: BaselineRun) -> BaselineResult:
        """Train `run` into its new run directory; raises `UserError` before writing anything
        for input the baseline cannot take."""
        ...


@dataclass(frozen=True)
class Baseline:
    name: str
    title: str  # as progress lines and reports name it
    family: str  # the catalogue family (`reppo.envs.catalog.FAMILIES`) whose tasks it trains
    presets: tuple[str, ...]  # the default first
    module: str  # the `BaselineModule` that implements it

    @property
    def default_preset(self) -> str:
        return self.presets[0]

    def load(self) -> BaselineModule:
        return importlib.import_module(self.module)  # type: ignore[return-value]


# Presets: "playground" the simulator project's published settings for DM Control,
# "maniskill" ManiSkill's published PPO, "cpu" either resized for a small CPU, "paper-tuned"
# the REPPO paper's PPO tuned for sample efficiency (docs/baselines.md).
_BRAX = "reppo.experiments.baselines.brax.run"
_FASTTD3 = "reppo.experiments.baselines.fasttd3.run"
REGISTRY: dict[str, Baseline] = {b.name: b for b in (
    Baseline("brax-ppo", "Brax PPO", "dm_control", ("playground", "cpu", "paper-tuned"), _BRAX),
    Baseline("brax-sac", "Brax SAC", "dm_control", ("playground", "cpu"), _BRAX),
    # FastTD3 with its replay buffer of 10,485,760 transitions, and with the REPPO paper's
    # constrained 32,768 (implemented in JAX like the Brax trainers).
    Baseline("fasttd3", "FastTD3", "dm_control", ("playground", "cpu"), _FASTTD3),
    Baseline("fasttd3-small", "FastTD3-small", "dm_control", ("playground", "cpu"),
             _FASTTD3),
    # ManiSkill's own PPO, run with rsl-rl-lib's PPO on the torch backend's ManiSkill3 envs.
    Baseline("maniskill-ppo", "ManiSkill PPO", "maniskill", ("maniskill", "cpu"),
             "reppo.experiments.baselines.maniskill_ppo.run"),
)}


def baselines_of(family: str) -> tuple[str, ...]:
    """The names of the baselines that train `family`'s tasks, in registry order."""
    return tuple(name for name, b in REGISTRY.items() if b.family == family)
