"""One Brax baseline run: `train_baseline` / `run_baseline` train Brax `algo` on a task into a
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

from reppo.errors import UserError
from reppo.experiments.baseline_evaluation import ProtocolEvaluator, _Recorder
from reppo.experiments.baseline_hyperparameters import (
    BASELINES,
    IMPL,
    _brax_train,
    _check_choice,
    _check_env,
    _check_int,
    _check_preset,
    _network_factory,
    resolve_hyperparameters,
)
from reppo.experiments.baseline_schedule import (
    _check_hyperparameters,
    _check_overshoot,
    plan_schedule,
)
from reppo.experiments.suites import default_eval_interval
from reppo.runs import MetricsLogger, create_run_dir, plot_learning_curve, read_metrics
from reppo.runs.versions import collect_versions

# ---- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class BaselineResult:
    """What `train_baseline` returns: the final evaluation record and the final policy."""

    run_dir: Path
    final_record: dict[str, Any]
    records: list[dict[str, Any]]
    policy_factory: Callable  # params -> deterministic Brax policy(obs, key) -> (action, extras)
    params: Any  # Brax's final params (normalizer, policy[, value])


def _versions(algo: str) -> dict[str, Any]:
    import jax

    return collect_versions({
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
        "baseline": algo,
    })


def _refuse_existing(run_dir: Path) -> None:
    """A baseline never writes into a directory that holds anything (Brax cannot resume)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        what = "is a file" if not run_dir.is_dir() else "is not empty"
        raise UserError(
            f"{run_dir} {what}; nothing was changed. Brax runs cannot be resumed: pick a new "
            f"--run-dir (or move this one aside to run it again from scratch)"
        )


def train_baseline(
    algo: str,
    env: str,
    seed: int,
    total_steps: int,
    run_dir: Path,
    *,
    preset: str = "playground",
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
) -> BaselineResult:
    """Train Brax `algo` on `env` for `total_steps` env steps into the new `run_dir`.

    `eval_interval_steps` None evaluates about `DEFAULT_NUM_EVALS` times, 0 only at the end.
    `hyperparameters` overrides entries of the preset (keys of Brax's `train`, and
    `network_factory` keys of its network factory). Raises `UserError` for bad input before
    anything is written.
    """
    _check_choice("baseline", algo, BASELINES)
    _check_preset(algo, preset)
    _check_int("seed", seed, 0)
    _check_int("total_steps", total_steps, 1)
    _check_int("eval_episodes", eval_episodes, 1)
    if eval_interval_steps is None:
        eval_interval_steps = default_eval_interval(total_steps)
    _check_int("eval_interval_steps", eval_interval_steps, 0)
    _check_env(env)
    run_dir = Path(run_dir)
    _refuse_existing(run_dir)

    hp = resolve_hyperparameters(algo, env, preset, total_steps, hyperparameters)
    _check_hyperparameters(algo, hp, total_steps)
    schedule = plan_schedule(algo, hp, total_steps, eval_interval_steps)
    _check_overshoot(algo, schedule, total_steps)
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

    from reppo.experiments import brax_compat

    evaluator = ProtocolEvaluator(env, eval_episodes)
    environment = evaluator.env.inner  # the Playground env REPPO runs train on
    train_fn = _brax_train(algo)
    kwargs = {k: v for k, v in hp.items() if k != "network_factory"}
    kwargs.update(schedule.brax_arguments())
    network_factory = functools.partial(_network_factory(algo), **_network_kwargs(hp))

    create_run_dir(run_dir, config, _versions(algo))
    name = {"brax-ppo": "Brax PPO", "brax-sac": "Brax SAC"}[algo]
    if echo is not None:
        echo(
            f"{name} ({preset} preset) on {env}, seed {seed}: {total_steps:,} env steps "
            f"(Brax runs {schedule.planned_env_steps:,}), {schedule.num_evals} evaluation(s) "
            f"of {eval_episodes} episodes -> {run_dir}"
        )
    with MetricsLogger(run_dir) as logger:
        recorder = _Recorder(
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
    preset: str = "playground",
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one baseline run (see `train_baseline`); returns its final evaluation record."""
    return train_baseline(
        algo, env, seed, total_steps, run_dir, preset=preset,
        eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
        hyperparameters=hyperparameters,
    ).final_record
