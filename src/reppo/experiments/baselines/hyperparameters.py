"""Which baseline, on which task, with which hyperparameters.

The baselines (`BASELINES`: Brax PPO and SAC and FastTD3 with two buffer sizes on the DM Control
tasks, ManiSkill's PPO on ManiSkill3's) and their presets (`ALGO_PRESETS`), the checks of their
inputs, and `preset_hyperparameters` / `resolve_hyperparameters`: for Brax the keyword arguments
of Brax's `train` under a preset, with overrides checked against Brax's own signatures; for
FastTD3 and ManiSkill's PPO the fields of their `Hyperparameters`. Brax, Playground, JAX and
rsl-rl are imported inside the functions, so that `reppo --help` stays fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reppo.errors import UserError

BRAX = ("brax-ppo", "brax-sac")
# FastTD3 with its replay buffer of 10,485,760 transitions and with the constrained 32,768 of the
# REPPO paper (`reppo.experiments.baselines.fasttd3.agent`, in JAX like the Brax trainers).
FASTTD3 = ("fasttd3", "fasttd3-small")
# The baselines of the Playground DM Control tasks, and of ManiSkill3's: ManiSkill's own PPO,
# run with rsl-rl-lib's PPO on the torch backend (`baselines.maniskill_ppo.agent`).
DMC_BASELINES = (*BRAX, *FASTTD3)
MANISKILL_PPO = "maniskill-ppo"
MANISKILL_BASELINES = (MANISKILL_PPO,)
BASELINES = (*DMC_BASELINES, *MANISKILL_BASELINES)
PRESETS = ("playground", "cpu", "paper-tuned", "maniskill")
# Each baseline's presets, its default first: "playground" the simulator project's published
# settings for DM Control, "maniskill" ManiSkill's published PPO, "cpu" either resized for a
# small CPU, "paper-tuned" the REPPO paper's PPO tuned for sample efficiency.
ALGO_PRESETS: dict[str, tuple[str, ...]] = {
    "brax-ppo": ("playground", "cpu", "paper-tuned"),
    "brax-sac": ("playground", "cpu"),
    "fasttd3": ("playground", "cpu"),
    "fasttd3-small": ("playground", "cpu"),
    MANISKILL_PPO: ("maniskill", "cpu"),
}
IMPL = "jax"  # MJX physics, as REPPO runs use on CPU (reppo.envs.registry: impl "auto")

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


# ---- input checks ----------------------------------------------------------------------------


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown {name} {value!r}{hint}; choose one of {', '.join(choices)}")
    return value


def default_preset(algo: str) -> str:
    """The preset `algo` runs with when none is named."""
    return ALGO_PRESETS[check_choice("baseline", algo, BASELINES)][0]


def check_preset(algo: str, preset: Any) -> str:
    """`preset` is one of `algo`'s presets (ALGO_PRESETS)."""
    check_choice("preset", preset, PRESETS)
    valid = ALGO_PRESETS[algo]
    if preset not in valid:
        owners = [a for a, presets in ALGO_PRESETS.items() if preset in presets]
        whose = f"{owners[0]}'s only" if len(owners) == 1 else f"for {', '.join(owners)}"
        raise UserError(
            f"preset {preset!r} is {whose}; {algo} has the presets {', '.join(valid)}"
        )
    return preset


def check_env(algo: str, env: str) -> None:
    """The DM Control baselines train the Playground DM Control tasks (JAX envs), ManiSkill's
    PPO the ManiSkill3 tasks (torch)."""
    from reppo.envs.registry import DMC_TASKS, UnknownEnvError, list_envs

    maniskill = env in list_envs("maniskill")
    if algo in MANISKILL_BASELINES:
        if maniskill:
            return
        if env in DMC_TASKS:
            raise UserError(
                f"{env} is a Playground DM Control task; {algo} trains the ManiSkill3 tasks "
                f"(`reppo envs --family maniskill` lists them); the DM Control baselines are "
                f"{', '.join(DMC_BASELINES)}"
            )
    else:
        if env in DMC_TASKS:
            return
        if maniskill:
            raise UserError(
                f"{env} is a ManiSkill3 task; {algo} trains the MuJoCo Playground DM Control "
                f"tasks only (`reppo envs --family dm_control` lists them); ManiSkill3's "
                f"baseline is {MANISKILL_PPO}"
            )
    raise UserError(str(UnknownEnvError(env)))


# ---- hyperparameters -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-friendly copy: tuples to lists, nested dicts copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def preset_hyperparameters(algo: str, env: str, preset: str | None = None) -> dict[str, Any]:
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
    check_choice("baseline", algo, BASELINES)
    preset = default_preset(algo) if preset is None else preset
    check_preset(algo, preset)
    check_env(algo, env)
    if algo in FASTTD3:
        return _fasttd3_hyperparameters(algo, preset, None, None)
    if algo == MANISKILL_PPO:
        return _maniskill_ppo_hyperparameters(preset, None)
    from mujoco_playground.config import dm_control_suite_params

    from reppo.envs.registry import env_spec

    make = (
        dm_control_suite_params.brax_ppo_config
        if algo == "brax-ppo"
        else dm_control_suite_params.brax_sac_config
    )
    hp = _plain(make(env).to_dict())
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
    total_steps: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preset's hyperparameters with `overrides` applied (checked against Brax's `train`
    and network-factory signatures; `network_factory` entries are merged key by key)."""
    if algo in FASTTD3 or algo == MANISKILL_PPO:
        check_choice("baseline", algo, BASELINES)
        check_preset(algo, preset)
        check_env(algo, env)
        if algo == MANISKILL_PPO:
            return _maniskill_ppo_hyperparameters(preset, overrides)
        return _fasttd3_hyperparameters(algo, preset, total_steps, overrides)
    hp = preset_hyperparameters(algo, env, preset)
    if algo == "brax-sac" and preset == "cpu":
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
            hp["network_factory"] = {**hp["network_factory"], **_plain(value)}
        else:
            hp[key] = _plain(value)
    return hp


def _fasttd3_hyperparameters(
    algo: str, preset: str, total_steps: int | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """FastTD3's settings as a dict; without a budget, fasttd3's cpu buffer is the preset's
    upper bound (a run caps it at the transitions it collects)."""
    import dataclasses

    from reppo.experiments.baselines.fasttd3.agent import preset_hyperparameters as fasttd3_preset

    steps = total_steps if total_steps is not None else 10**12
    return dataclasses.asdict(fasttd3_preset(algo, preset, steps, overrides))


def _maniskill_ppo_hyperparameters(
    preset: str, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """ManiSkill PPO's settings as a dict (`maniskill_ppo.agent.Hyperparameters`)."""
    import dataclasses

    from reppo.experiments.baselines.maniskill_ppo.agent import (
        preset_hyperparameters as maniskill_preset,
    )

    return _plain(dataclasses.asdict(maniskill_preset(preset, overrides)))
