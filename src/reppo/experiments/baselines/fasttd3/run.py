"""One FastTD3 run into a new REPPO-format run directory: the schedule (iterations cut into
evaluation periods), the evaluation with the project's protocol, and the files.

The run directory is the Brax baselines' (docs/baselines.md): `config.json` (`algo`, `env`,
`seed`, `num_seeds` 1, `total_steps`, `eval_episodes`, `eval_interval_steps`, `preset`, `impl`,
`hyperparameters`, `schedule`), `versions.json`, `metrics.jsonl` (one record per evaluation
point, FastTD3's training metrics under `fasttd3/`, the last with `"final": true`) and the
learning curve. Like the Brax baselines it cannot be resumed: an interrupted run is run again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reppo.experiments.baselines.evaluation import (
    IMPL,
    BaselineResult,
    ProtocolEvaluator,
    Recorder,
    baseline_versions,
    refuse_existing,
)
from reppo.experiments.baselines.fasttd3.agent import Hyperparameters, preset_hyperparameters
from reppo.experiments.baselines.iterations import plan_iterations
from reppo.experiments.baselines.registry import REGISTRY, BaselineRun


def resolve(
    algo: str, env: str, preset: str, total_steps: int,
    overrides: Mapping[str, Any] | None,
) -> Hyperparameters:
    hp = preset_hyperparameters(algo, preset, total_steps, overrides)
    hp.check(total_steps)
    return hp


def resolve_hyperparameters(
    algo: str, env: str, preset: str, total_steps: int | None,
    overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """FastTD3's settings as the run directory records them; without a budget, the cpu
    preset's buffer is its upper bound (a run caps it at the transitions it collects)."""
    steps = total_steps if total_steps is not None else 10**12
    return dataclasses.asdict(preset_hyperparameters(algo, preset, steps, overrides))


def train(run: BaselineRun) -> BaselineResult:
    """Train FastTD3 (`run.algo`: fasttd3 or fasttd3-small) on `run.env`; the caller
    (`baselines.run.train_baseline`) has checked the algo, preset, env, seed and counts."""
    algo, env, seed, total_steps = run.algo, run.env, run.seed, run.total_steps
    preset, eval_episodes = run.preset, run.eval_episodes
    eval_interval_steps = run.eval_interval_steps
    echo, hyperparameters, impl = run.echo, run.hyperparameters, IMPL
    run_dir = Path(run.run_dir)
    refuse_existing(run_dir)
    hp = resolve(algo, env, preset, total_steps, hyperparameters)
    # The one planner of evaluation periods; one iteration is one env step of every env.
    schedule = plan_iterations(hp.num_envs, total_steps, eval_interval_steps)
    config = {
        "algo": algo, "env": env, "seed": seed, "num_seeds": 1, "total_steps": total_steps,
        "eval_episodes": eval_episodes, "eval_interval_steps": eval_interval_steps,
        "preset": preset, "impl": impl, "hyperparameters": dataclasses.asdict(hp),
        "schedule": schedule.as_config(),
    }

    start = time.perf_counter()
    import jax
    import numpy as np

    from reppo.envs.registry import make_env
    from reppo.experiments.baselines.fasttd3.agent import FastTD3, reset_period_metrics
    from reppo.runs import MetricsLogger, create_run_dir, plot_learning_curve, read_metrics

    agent = FastTD3(hp, make_env(env, hp.num_envs, impl=impl))
    evaluator = ProtocolEvaluator(env, eval_episodes)

    def policy_factory(params: Any) -> Callable:
        def policy(obs: Any, key: Any) -> tuple[Any, dict]:
            return agent.policy(params["actor"], params["obs_stats"], obs), {}

        return policy

    create_run_dir(run_dir, config, baseline_versions(algo))
    name = REGISTRY[algo].title
    if echo is not None:
        echo(
            f"{name} ({preset} preset, {hp.buffer_transitions:,}-transition buffer) on {env}, "
            f"seed {seed}: {total_steps:,} env steps ({hp.num_envs} envs x "
            f"{schedule.iterations:,} iterations), {len(schedule.eval_steps())} evaluation(s) "
            f"of {eval_episodes} episodes -> {run_dir}"
        )
    # Donated: the loop's output state reuses the input's buffers, so the replay buffer (1.7
    # GB at the playground preset on CheetahRun) is never held twice.
    advance = jax.jit(agent.run, donate_argnums=0)
    state = jax.jit(agent.init)(jax.random.PRNGKey(seed))
    done = 0
    with MetricsLogger(run_dir) as logger:
        recorder = Recorder(evaluator=evaluator, logger=logger, seed=seed,
                             total_steps=total_steps, echo=echo, start=start,
                             metric_prefix="fasttd3/")
        for mark in schedule.eval_iterations():
            state = advance(reset_period_metrics(state), np.int32(mark - done))
            done = mark
            params = {"actor": state.actor, "obs_stats": state.obs_stats}
            recorder.capture(policy_factory, params)
            recorder.progress(mark * hp.num_envs, _training_metrics(state))
    records = read_metrics(run_dir)
    plot_learning_curve(records, run_dir / "learning_curve.png", f"{name} on {env}")
    return BaselineResult(
        run_dir=run_dir, final_record=recorder.records[-1], records=recorder.records,
        policy_factory=policy_factory,
        params={"actor": state.actor, "obs_stats": state.obs_stats},
    )


def _training_metrics(state: Any) -> dict[str, float]:
    """The period's training metrics: the last update's losses and target mean, the last
    step's mean reward, and the mean return of the training episodes that ended in it."""
    m = {k: float(v) for k, v in state.metrics.items()}
    episodes = m.pop("episodes")
    returns = m.pop("episode_return_sum")
    out = {k: v for k, v in m.items()}
    out["train_episodes"] = episodes
    if episodes > 0:
        out["train_episode_return"] = returns / episodes
    out["buffer_transitions"] = float(int(state.buffer.size) * state.buffer.num_envs)
    return out
