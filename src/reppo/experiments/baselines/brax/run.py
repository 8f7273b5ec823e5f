"""One Brax PPO or SAC run into a new REPPO-format run directory: Brax's own trainer with
the protocol's evaluations (`evaluation.Recorder`) in place of Brax's (`compat`). The
`BaselineModule` of both (`registry`). JAX, Brax and Playground load when a run starts.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reppo.experiments.baselines.brax.hyperparameters import (
    brax_network_factory,
    brax_train,
    resolve_hyperparameters,
)
from reppo.experiments.baselines.brax.schedule import (
    check_hyperparameters,
    check_overshoot,
    plan_schedule,
)
from reppo.experiments.baselines.evaluation import (
    IMPL,
    BaselineResult,
    ProtocolEvaluator,
    Recorder,
    baseline_versions,
    refuse_existing,
)
from reppo.experiments.baselines.registry import REGISTRY, BaselineRun
from reppo.runs import MetricsLogger, create_run_dir, plot_learning_curve, read_metrics

__all__ = ["resolve_hyperparameters", "train"]


def train(run: BaselineRun) -> BaselineResult:
    """Brax PPO or SAC, its evaluations replaced by the protocol's (`Recorder`); the caller
    (`baselines.run.train_baseline`) has checked the algo, preset, env, seed and counts."""
    algo, env, seed, total_steps = run.algo, run.env, run.seed, run.total_steps
    preset, eval_episodes, echo = run.preset, run.eval_episodes, run.echo
    eval_interval_steps, run_dir = run.eval_interval_steps, Path(run.run_dir)
    refuse_existing(run_dir)
    hp = resolve_hyperparameters(algo, env, preset, total_steps, run.hyperparameters)
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

    from reppo.experiments.baselines.brax import compat

    evaluator = ProtocolEvaluator(env, eval_episodes)
    environment = evaluator.env.inner  # the Playground env REPPO runs train on
    train_fn = brax_train(algo)
    kwargs = {k: v for k, v in hp.items() if k != "network_factory"}
    kwargs.update(schedule.brax_arguments())
    network_factory = functools.partial(brax_network_factory(algo), **_network_kwargs(hp))

    create_run_dir(run_dir, config, baseline_versions(algo))
    name = REGISTRY[algo].title
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
        with compat.jax_compat(), compat.capture_evaluations(recorder.capture):
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
