"""One baseline run: `train_baseline` / `run_baseline` train baseline `algo` on a task into a
new REPPO-format run directory (config.json, versions.json, metrics.jsonl, learning curve).
JAX, Brax and Playground load when a run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reppo.experiments.baselines.evaluation import (
    BaselineResult,
    ProtocolEvaluator,
    Recorder,
    baseline_versions,
    refuse_existing,
)
from reppo.experiments.baselines.hyperparameters import (
    BASELINES,
    FASTTD3,
    IMPL,
    MANISKILL_PPO,
    brax_network_factory,
    brax_train,
    check_choice,
    check_env,
    check_int,
    check_preset,
    default_preset,
    resolve_hyperparameters,
)
from reppo.experiments.baselines.schedule import (
    check_hyperparameters,
    check_overshoot,
    plan_schedule,
)
from reppo.experiments.suites import default_eval_interval
from reppo.runs import MetricsLogger, create_run_dir, plot_learning_curve, read_metrics

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

    `eval_interval_steps` None evaluates about `DEFAULT_NUM_EVALS` times, 0 only at the end.
    `hyperparameters` overrides entries of the preset (Brax: keys of Brax's `train`, and
    `network_factory` keys of its network factory; FastTD3: fields of
    `fasttd3.agent.Hyperparameters`; ManiSkill PPO: fields of
    `maniskill_ppo.agent.Hyperparameters`). `preset` None is the algo's default
    (`ALGO_PRESETS`). `device` places ManiSkill PPO's simulator and networks ("auto": the
    GPU where torch sees one); the JAX baselines run on JAX's default device. Raises
    `UserError` for bad input before anything is written.
    """
    check_choice("baseline", algo, BASELINES)
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
    if algo == MANISKILL_PPO:
        from reppo.experiments.baselines.maniskill_ppo.run import train_maniskill_ppo

        return train_maniskill_ppo(
            env, seed, total_steps, run_dir, preset=preset,
            eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
            hyperparameters=hyperparameters, device=device,
        )
    if algo in FASTTD3:
        from reppo.experiments.baselines.fasttd3.run import train_fasttd3

        return train_fasttd3(
            algo, env, seed, total_steps, run_dir, preset=preset,
            eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
            hyperparameters=hyperparameters, impl=IMPL,
        )

    return _train_brax(algo, env, seed, total_steps, run_dir, preset, eval_interval_steps,
                       eval_episodes, echo, hyperparameters)


def _train_brax(
    algo: str, env: str, seed: int, total_steps: int, run_dir: Path, preset: str,
    eval_interval_steps: int, eval_episodes: int, echo: Callable[[str], None] | None,
    hyperparameters: Mapping[str, Any] | None,
) -> BaselineResult:
    """Brax PPO or SAC, its evaluations replaced by the protocol's (`Recorder`)."""
    hp = resolve_hyperparameters(algo, env, preset, total_steps, hyperparameters)
    check_hyperparameters(algo, hp, total_steps)
    schedule = plan_schedule(algo, hp, total_steps, eval_interval_steps)
    check_overshoot(algo, schedule, total_steps)
    config = {
        "algo": algo,
        "env": env,
        "seed": seed,
        "num_seeds": 1,
        "total_steps": total_steps,
        "eval_episodes": eval_episodes,
        "eval_interval_steps": eval_interval_steps,
        "preset": preset,
        "impl": IMPL,
        "hyperparameters": hp,
        "schedule": {**dataclasses.asdict(schedule), "eval_steps": schedule.eval_steps()},
    }

    start = time.perf_counter()
    from mujoco_playground import wrapper

    from reppo.experiments.baselines import brax_compat

    evaluator = ProtocolEvaluator(env, eval_episodes)
    environment = evaluator.env.inner  # the Playground env REPPO runs train on
    train_fn = brax_train(algo)
    kwargs = {k: v for k, v in hp.items() if k != "network_factory"}
    kwargs.update(schedule.brax_arguments())
    network_factory = functools.partial(brax_network_factory(algo), **_network_kwargs(hp))

    create_run_dir(run_dir, config, baseline_versions(algo))
    name = {"brax-ppo": "Brax PPO", "brax-sac": "Brax SAC"}[algo]
    if echo is not None:
        echo(
            f"{name} ({preset} preset) on {env}, seed {seed}: {total_steps:,} env steps "
            f"(Brax runs {schedule.planned_env_steps:,}), {schedule.num_evals} evaluation(s) "
            f"of {eval_episodes} episodes -> {run_dir}"
        )
    with MetricsLogger(run_dir) as logger:
        recorder = Recorder(
            evaluator=evaluator, logger=logger, seed=seed, total_steps=total_steps, echo=echo,
            start=start,
        )
        with brax_compat.jax_compat(), brax_compat.capture_evaluations(recorder.capture):
            make_policy, params, _ = train_fn(
                environment=environment,
                num_timesteps=total_steps,
                seed=seed,
                wrap_env_fn=wrapper.wrap_for_brax_training,
                network_factory=network_factory,
                progress_fn=recorder.progress,
                deterministic_eval=True,
                num_eval_envs=eval_episodes,
                **kwargs,
            )
    records = read_metrics(run_dir)
    if not records or not records[-1].get("final"):
        raise RuntimeError(f"Brax stopped before {total_steps:,} env steps; {run_dir} is partial")
    plot_learning_curve(records, run_dir / "learning_curve.png", f"{name} on {env}")
    return BaselineResult(
        run_dir=run_dir,
        final_record=recorder.records[-1],
        records=recorder.records,
        policy_factory=functools.partial(make_policy, deterministic=True),
        params=params,
    )


def _network_kwargs(hp: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples Brax's network factories expect."""
    return {
        k: tuple(v) if isinstance(v, list) else v for k, v in hp["network_factory"].items()
    }


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
