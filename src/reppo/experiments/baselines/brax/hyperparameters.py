"""Brax PPO's and SAC's hyperparameters: the keyword arguments of Brax's `train` under a preset
("playground": Playground's per-task configuration; "cpu": resized for a small CPU;
"paper-tuned": the REPPO paper's PPO), with overrides checked against Brax's own signatures.
Brax and Playground are imported inside the functions: listing baselines stays cheap.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from reppo.errors import UserError
from reppo.experiments.baselines.evaluation import IMPL
from reppo.experiments.baselines.hyperparameters import plain

# The "cpu" presets keep every algorithmic setting of the Playground preset and resize only
# what sets the parallelism and memory (documented in docs/baselines.md):
# - PPO: 32 envs instead of 2048, each still collecting 16 unrolls of 30 steps (480 steps)
#   per update, in 16 minibatches of 32 sequences instead of 32 of 1024; every transition is
#   still used num_updates_per_batch=16 times. One update is 15,360 env steps (Playground:
#   983,040), small enough for budgets of 100k steps.
# - SAC: 32 envs instead of 128 with grad_updates_per_step 2 instead of 8, which keeps the
#   gradient updates per env step (1/16) and the batch size; the replay buffer holds at most
#   total_steps transitions (never more than the run collects; Playground: 4,194,304).
_CPU_CHANGES: dict[str, dict[str, Any]] = {
    "brax-ppo": {"num_envs": 32, "batch_size": 32, "num_minibatches": 16},
    "brax-sac": {"num_envs": 32, "grad_updates_per_step": 2},
}

# "paper-tuned": the PPO that the REPPO paper tuned for sample efficiency on Playground's DM
# Control suite (its section 4 baselines), on top of Playground's preset for the task (which
# keeps the per-task discount, reward scaling 10, observation normalization and Brax's default
# networks). 2048 envs x 64 steps = 131,072 env steps per update (batch_size x unroll_length x
# num_minibatches = 64 x 64 x 32), 16 epochs, lr 3e-4, clip 0.2 for the policy and the value,
# GAE lambda 0.95, no entropy bonus, normalized advantages. Playground's preset resets every env
# after each update (480 steps per env per update there); with 64 steps per env that would cut
# every 1000-step episode at 64 steps, so this preset never forces a reset (the envs' own
# auto-reset ends each episode at its time limit).
_PAPER_TUNED_PPO: dict[str, Any] = {
    "num_envs": 2048, "unroll_length": 64, "batch_size": 64, "num_minibatches": 32,
    "num_updates_per_batch": 16, "learning_rate": 3e-4, "clipping_epsilon": 0.2,
    "clipping_epsilon_value": 0.2, "gae_lambda": 0.95, "entropy_cost": 0.0,
    "normalize_advantage": True, "normalize_observations": True, "num_resets_per_eval": 0,
}

# Arguments of Brax's train() that the baseline run sets itself; a hyperparameter override of one
# of them would break the run's contract (budget, evaluation protocol, env settings).
_RESERVED = frozenset({
    "environment", "num_timesteps", "num_evals", "episode_length", "action_repeat", "seed",
    "wrap_env", "wrap_env_fn", "eval_env", "num_eval_envs", "deterministic_eval", "run_evals",
    "progress_fn", "policy_params_fn", "randomization_fn", "max_devices_per_host", "vision",
    "augment_pixels", "log_training_metrics", "training_metrics_steps", "save_checkpoint_path",
    "restore_checkpoint_path", "restore_params", "restore_value_fn", "checkpoint_logdir",
    "use_pmap_on_reset",
})


def brax_train(algo: str) -> Callable[..., Any]:
    if algo == "brax-ppo":
        from brax.training.agents.ppo import train as ppo

        return ppo.train
    from brax.training.agents.sac import train as sac

    return sac.train


def brax_network_factory(algo: str) -> Callable[..., Any]:
    if algo == "brax-ppo":
        from brax.training.agents.ppo import networks

        return networks.make_ppo_networks
    from brax.training.agents.sac import networks

    return networks.make_sac_networks


def preset_hyperparameters(algo: str, env: str, preset: str) -> dict[str, Any]:
    """The keyword arguments of Brax's `train` for `algo` on `env` under `preset`.

    "playground" is `mujoco_playground.config.dm_control_suite_params.brax_ppo_config(env)` /
    `brax_sac_config(env)` as it resolves for `env`, less what the caller decides
    (`num_timesteps`: the budget; `num_evals`: the evaluation cadence) and, for SAC,
    `num_resets_per_eval` (Brax 0.14.2's SAC has no such argument). `episode_length` and
    `action_repeat` are those of REPPO runs (the task's own episode length, no repeat).
    "cpu" is the same with the changes of `_CPU_CHANGES` (SAC's replay size is set by
    `resolve_hyperparameters`, which knows the budget); "paper-tuned" (PPO only) with those
    of `_PAPER_TUNED_PPO`, the REPPO paper's tuned PPO. `network_factory` is a dict of
    keyword arguments for Brax's `make_ppo_networks` / `make_sac_networks`.
    """
    from mujoco_playground.config import dm_control_suite_params

    from reppo.envs.registry import env_spec

    make = (
        dm_control_suite_params.brax_ppo_config
        if algo == "brax-ppo"
        else dm_control_suite_params.brax_sac_config
    )
    hp = plain(make(env).to_dict())
    for key in ("num_timesteps", "num_evals"):
        hp.pop(key, None)
    if algo == "brax-sac":
        hp.pop("num_resets_per_eval", None)
    hp["episode_length"] = env_spec(env, impl=IMPL).episode_length
    hp["action_repeat"] = 1
    hp.setdefault("network_factory", {})
    if preset == "cpu":
        hp.update(_CPU_CHANGES[algo])
    elif preset == "paper-tuned":
        hp.update(_PAPER_TUNED_PPO)
    return hp


def allowed_keys(algo: str) -> tuple[set[str], set[str]]:
    train_keys = set(inspect.signature(brax_train(algo)).parameters) - _RESERVED
    factory = inspect.signature(brax_network_factory(algo)).parameters
    net_keys = set(factory) - {"observation_size", "action_size", "preprocess_observations_fn"}
    return train_keys, net_keys


def resolve_hyperparameters(
    algo: str,
    env: str,
    preset: str,
    total_steps: int | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preset's hyperparameters with `overrides` applied (checked against Brax's `train`
    and network-factory signatures; `network_factory` entries are merged key by key)."""
    hp = preset_hyperparameters(algo, env, preset)
    if algo == "brax-sac" and preset == "cpu" and total_steps is not None:
        hp["max_replay_size"] = min(int(hp["max_replay_size"]), total_steps)
    if not overrides:
        return hp
    train_keys, net_keys = allowed_keys(algo)
    for key, value in overrides.items():
        if key in _RESERVED:
            raise UserError(
                f"hyperparameter {key!r} is set by the baseline runner itself (budget, "
                f"evaluation or env settings) and cannot be overridden"
            )
        if key not in train_keys:
            raise UserError(
                f"unknown {algo} hyperparameter {key!r}; valid: {', '.join(sorted(train_keys))}"
            )
        if key == "network_factory":
            if not isinstance(value, Mapping):
                raise UserError("network_factory must be a mapping of network keyword arguments")
            unknown = sorted(set(value) - net_keys)
            if unknown:
                raise UserError(
                    f"unknown network_factory argument(s) {', '.join(unknown)}; valid: "
                    f"{', '.join(sorted(net_keys))}"
                )
            hp["network_factory"] = {**hp["network_factory"], **plain(value)}
        else:
            hp[key] = plain(value)
    return hp
