"""One baseline run: `train_baseline` / `run_baseline` check a run's inputs once and hand them,
as a `registry.BaselineRun`, to the baseline's module (`registry.REGISTRY`), which trains it
into a new REPPO-format run directory (config.json, versions.json, metrics.jsonl, learning
curve). Frameworks load when a run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reppo.experiments.baselines.evaluation import BaselineResult, refuse_existing
from reppo.experiments.baselines.hyperparameters import (
    check_baseline,
    check_env,
    check_int,
    check_preset,
    default_preset,
)
from reppo.experiments.baselines.registry import REGISTRY, BaselineRun
from reppo.experiments.suites import default_eval_interval

# ---- the run ---------------------------------------------------------------------------------


def train_baseline(
    algo: str,
    env: str,
    seed: int,
    total_steps: int,
    run_dir: Path,
    *,
    preset: str | None = None,
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> BaselineResult:
    """Train baseline `algo` on `env` for `total_steps` env steps into the new `run_dir`.

    `eval_interval_steps` None is the suites' cadence (`suites.default_eval_interval`), 0
    evaluates only at the end.
    `hyperparameters` overrides entries of the preset (Brax: keys of Brax's `train`, and
    `network_factory` keys of its network factory; FastTD3: fields of
    `fasttd3.agent.Hyperparameters`; ManiSkill PPO: fields of
    `maniskill_ppo.agent.Hyperparameters`). `preset` None is the algo's default
    (`registry.REGISTRY`). `device` places ManiSkill PPO's simulator and networks ("auto": the
    GPU where torch sees one); the JAX baselines run on JAX's default device. Raises
    `UserError` for bad input before anything is written.
    """
    check_baseline(algo)
    preset = default_preset(algo) if preset is None else preset
    check_preset(algo, preset)
    check_int("seed", seed, 0)
    check_int("total_steps", total_steps, 1)
    check_int("eval_episodes", eval_episodes, 1)
    if eval_interval_steps is None:
        eval_interval_steps = default_eval_interval(total_steps)
    check_int("eval_interval_steps", eval_interval_steps, 0)
    check_env(algo, env)
    run_dir = Path(run_dir)
    refuse_existing(run_dir)
    run = BaselineRun(
        algo=algo, env=env, seed=seed, total_steps=total_steps, run_dir=run_dir, preset=preset,
        eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
        hyperparameters=hyperparameters, device=device,
    )
    return REGISTRY[algo].load().train(run)


def run_baseline(
    algo: str,
    env: str,
    seed: int,
    total_steps: int,
    run_dir: Path,
    *,
    preset: str | None = None,
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Train one baseline run (see `train_baseline`); returns its final evaluation record."""
    return train_baseline(
        algo, env, seed, total_steps, run_dir, preset=preset,
        eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
        hyperparameters=hyperparameters, device=device,
    ).final_record
