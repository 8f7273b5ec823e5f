"""One run of ManiSkill's PPO (rsl-rl's `PPO`, set up in `agent`) on a ManiSkill3
task into a new REPPO-format run directory.

The loop is rsl-rl's on-policy loop (`act`, `process_env_step`, `compute_returns`, `update`)
around a `reppo.envs.maniskill` env in training mode (partial resets: an env that succeeds,
fails or reaches the time limit is reset alone, as ManiSkill's script trains). Evaluation is the
project's protocol for ManiSkill tasks: `eval_episodes` envs in evaluation mode (terminations
ignored, every episode runs the task's whole time limit), reset from `eval_seed(seed,
env_steps)` as REPPO's torch evaluation is, with the actor's mean action; the records carry
`eval/success_once` and `eval/success_at_end` beside the return.

The run directory is the other baselines' (docs/baselines.md): `config.json` (`algo`, `env`,
`seed`, `num_seeds` 1, `total_steps`, `eval_episodes`, `eval_interval_steps`, `preset`,
`device`, `hyperparameters`, `schedule`), `versions.json`, `metrics.jsonl` (PPO's losses and
the training episodes under `maniskill_ppo/`, the last record `"final": true`) and the learning
curve. Like the other baselines it cannot be resumed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reppo.experiments.baselines.evaluation import BaselineResult, Recorder, refuse_existing
from reppo.experiments.baselines.hyperparameters import plain
from reppo.experiments.baselines.iterations import plan_iterations
from reppo.experiments.baselines.maniskill_ppo.agent import (
    ALGO,
    Hyperparameters,
    bootstrapped_reward,
    build_ppo,
    observations,
    preset_hyperparameters,
)
from reppo.experiments.baselines.registry import BaselineRun
from reppo.loop.seam import EvalReport


class TorchProtocolEvaluator:
    """The project's ManiSkill evaluation of a torch policy: one episode in each of
    `eval_episodes` evaluation-mode envs, reset from `eval_seed(seed, env_steps)`."""

    def __init__(self, env: str, eval_episodes: int, device: Any) -> None:
        from reppo.envs.maniskill import make_maniskill_env

        self.env = make_maniskill_env(env, eval_episodes, evaluation=True, device=device)

    def evaluate(self, policy_factory: Callable, params: Any, seed: int, env_steps: int
                 ) -> EvalReport:
        from reppo.envs.eval_seed import eval_seed
        from reppo.envs.torch_registry import evaluate_torch

        result = evaluate_torch(self.env, policy_factory(params), seed=eval_seed(seed, env_steps))

        def row(x: Any) -> Any:
            return None if x is None else x.double().cpu().numpy()[None]

        return EvalReport(returns=row(result["returns"]), success_once=row(result["success_once"]),
                          success_at_end=row(result["success_at_end"]))

    def close(self) -> None:
        self.env.close()


def deterministic_policy(actor: Any) -> Callable:
    """The actor's mean action, clipped to the action bounds (ManiSkill's evaluation)."""
    import torch

    def act(obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return actor(observations(obs)).clamp(-1.0, 1.0)

    return act


def resolve_hyperparameters(
    algo: str, env: str, preset: str, total_steps: int | None,
    overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """ManiSkill PPO's settings (`agent.Hyperparameters`) as the run directory records them."""
    return plain(dataclasses.asdict(preset_hyperparameters(preset, overrides)))


def train(run: BaselineRun) -> BaselineResult:
    """Train ManiSkill's PPO on ManiSkill task `run.env`; the caller
    (`baselines.run.train_baseline`) has checked the algo, preset, env, seed and counts.
    `run.device`: "auto" (the GPU simulator where torch sees CUDA, else the CPU one), "cpu"
    or "cuda[:k]"."""
    env, seed, total_steps, preset = run.env, run.seed, run.total_steps, run.preset
    eval_interval_steps, eval_episodes, echo = run.eval_interval_steps, run.eval_episodes, run.echo
    hyperparameters, device = run.hyperparameters, run.device
    run_dir = Path(run.run_dir)
    refuse_existing(run_dir)
    hp = preset_hyperparameters(preset, hyperparameters)
    # The one planner of evaluation periods; an iteration is one PPO update.
    schedule = plan_iterations(hp.steps_per_update, total_steps, eval_interval_steps)

    start = time.perf_counter()
    import torch

    from reppo.envs.maniskill import make_maniskill_env, resolve_device
    from reppo.runs import MetricsLogger, create_run_dir, plot_learning_curve, read_metrics
    from reppo.runs.versions import collect_versions

    dev = resolve_device(device)
    config = {
        "algo": ALGO, "env": env, "seed": seed, "num_seeds": 1, "total_steps": total_steps,
        "eval_episodes": eval_episodes, "eval_interval_steps": eval_interval_steps,
        "preset": preset, "device": str(dev), "hyperparameters": dataclasses.asdict(hp),
        "schedule": schedule.as_config(),
    }
    torch.manual_seed(seed)  # the networks' initialization, the actions' noise, the shuffles
    train_env = make_maniskill_env(env, hp.num_envs, seed=seed, device=dev)
    evaluator = TorchProtocolEvaluator(env, eval_episodes, dev)
    try:
        ppo = build_ppo(hp, train_env.spec.obs_size, train_env.spec.action_size, dev)
        versions = collect_versions({"torch": torch.__version__, "torch_device": str(dev),
                                     "baseline": ALGO})
        create_run_dir(run_dir, config, versions)
        if echo is not None:
            echo(
                f"ManiSkill PPO (rsl-rl, {preset} preset) on {env}, seed {seed}: "
                f"{total_steps:,} env steps ({hp.num_envs} envs x {hp.num_steps} steps x "
                f"{schedule.iterations:,} updates), {len(schedule.eval_steps())} evaluation(s) "
                f"of {eval_episodes} episodes -> {run_dir}"
            )
        loop = PPOLoop(ppo, train_env, hp, seed)
        done = 0
        with MetricsLogger(run_dir) as logger:
            recorder = Recorder(evaluator=evaluator, logger=logger, seed=seed,
                                 total_steps=total_steps, echo=echo, start=start,
                                 metric_prefix="maniskill_ppo/")
            for mark in schedule.eval_iterations():
                metrics = loop.train(mark - done)
                done = mark
                recorder.capture(deterministic_policy, ppo.get_policy())
                recorder.progress(mark * hp.steps_per_update, metrics)
    finally:
        train_env.close()
        evaluator.close()
    records = read_metrics(run_dir)
    plot_learning_curve(records, run_dir / "learning_curve.png", f"ManiSkill PPO on {env}")
    return BaselineResult(
        run_dir=run_dir, final_record=recorder.records[-1], records=recorder.records,
        policy_factory=deterministic_policy, params=ppo.get_policy(),
    )


class PPOLoop:
    """rsl-rl's on-policy loop on one env; `train(n)` runs n updates and returns their metrics
    (the last update's losses, the period's training episodes)."""

    def __init__(self, ppo: Any, env: Any, hp: Hyperparameters, seed: int) -> None:
        import torch

        self.ppo, self.env, self.hp = ppo, env, hp
        self.obs = observations(env.reset(seed))
        self.episode_return = torch.zeros(env.num_envs, device=env.device)
        self.ppo.train_mode()

    def train(self, updates: int) -> dict[str, float]:
        import torch

        ended_returns: list[torch.Tensor] = []
        successes: list[torch.Tensor] = []
        losses: dict[str, float] = {}
        for _ in range(updates):
            with torch.inference_mode():
                for _ in range(self.hp.num_steps):
                    self._step(ended_returns, successes)
                self.ppo.compute_returns(self.obs)
            losses = self.ppo.update()
        metrics = {f"{k}_loss": float(v) for k, v in losses.items() if k != "entropy"}
        metrics["entropy"] = float(losses.get("entropy", float("nan")))
        metrics["learning_rate"] = float(self.ppo.learning_rate)
        metrics["train_episodes"] = float(sum(int(r.numel()) for r in ended_returns))
        if ended_returns:
            metrics["train_episode_return"] = float(torch.cat(ended_returns).mean())
        if successes:
            metrics["train_success_at_end"] = float(torch.cat(successes).float().mean())
        return metrics

    def _step(self, ended_returns: list, successes: list) -> None:
        import torch

        actions = self.ppo.act(self.obs)
        out = self.env.step(actions)
        ended = (out.terminated + out.truncated) > 0
        final_value = None
        if bool(ended.any()):
            final_value = self.ppo.critic(observations(out.final_obs)).reshape(-1)
        reward = bootstrapped_reward(out.reward, ended, final_value, self.hp)
        self.episode_return += out.reward
        if final_value is not None:
            ended_returns.append(self.episode_return[ended].clone())
            if out.success is not None:
                successes.append(out.success[ended].clone())
            self.episode_return = torch.where(ended, torch.zeros_like(self.episode_return),
                                              self.episode_return)
        self.obs = observations(out.obs)
        self.ppo.process_env_step(self.obs, reward, ended, {})

