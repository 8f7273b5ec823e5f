"""The torch backend's trainer: iterations as an eager (optionally compiled) loop.

`reppo.training.train` drives it exactly like the JAX trainer, so run directories, metrics,
checkpoints, resuming and progress lines are the same. One seed per process (`num_seeds` 1).

Checkpoints use the JAX backend's names for what both backends share (`actor/...`,
`critic/...`, `behaviour/...`, `obs_stats/...`, `temps/...`, with a leading seed axis of 1),
so either backend evaluates and exports the other's runs. Torch-only state (Adam moments, the
generator) is stored under `actor_opt/`, `critic_opt/`, `temp_opt/` and `rng/`.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
import torch

from reppo.config import Config
from reppo.envs.torch_registry import (
    evaluate_torch,
    evaluate_torch_stochastic,
    make_torch_env,
    resolve_device,
)
from reppo.torch import normalizer as N
from reppo.torch.agent import TorchAgent
from reppo.torch.networks import FlatMismatchError, load_flat, to_flat
from reppo.trainer import EvalReport, StateMismatchError, eval_seed

__all__ = ["TorchTrainer"]


class _State:
    """The mutable training state the loop hands back and forth (the agent holds the rest)."""

    def __init__(self, obs: torch.Tensor, episode_return: torch.Tensor, iteration: int) -> None:
        self.obs = obs
        self.episode_return = episode_return
        self.iteration = iteration


def _seed_axis(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value[None] for name, value in flat.items()}


def _optimizer_flat(opt: torch.optim.Optimizer, names: list[str], prefix: str):
    state = opt.state_dict()["state"]
    flat = {}
    for index, name in enumerate(names):
        for key, value in state.get(index, {}).items():
            flat[f"{prefix}{name}/{key}"] = value.detach().cpu().numpy().reshape(
                value.shape
            ).astype(np.float32)
    return flat


def _load_optimizer(
    opt: torch.optim.Optimizer, names: list[str], prefix: str, flat: dict[str, np.ndarray]
) -> None:
    saved = opt.state_dict()
    state = {}
    for index, name in enumerate(names):
        head = f"{prefix}{name}/"
        keys = {k.removeprefix(head) for k in flat if k.startswith(head)}
        if not keys:
            continue
        state[index] = {k: torch.as_tensor(flat[head + k][0]) for k in keys}
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


class TorchTrainer:
    """Builds the envs and the agent for one config (`reppo.training.Trainer`)."""

    def __init__(self, config: Config) -> None:
        if config.num_seeds != 1:
            raise ValueError("the torch backend trains one seed per process")
        self.config = config
        self.device = resolve_device(config.device)
        self.env = make_torch_env(
            config.env, config.num_envs, device=self.device, seed=config.seed, impl=config.impl
        )
        self.eval_env = make_torch_env(
            config.env, config.eval_episodes, device=self.device, seed=config.seed,
            evaluation=True, impl=config.impl,
        )
        self.agent = TorchAgent(config, self.env.spec, self.device, config.seed)
        self.compile_seconds = 0.0
        self._compiled = not config.torch_compile

    # ---- the loop's interface ------------------------------------------------------------------
    def init_state(self) -> _State:
        obs = self.env.reset(self.config.seed)
        if self.config.stagger_episodes:
            self.env.stagger(self.config.seed)
        return _State(obs, torch.zeros(self.config.num_envs, device=self.device), 0)

    def iteration_of(self, state: _State) -> int:
        return state.iteration

    def device_description(self) -> dict[str, Any]:
        name = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
            else platform.processor() or platform.machine()
        )
        return {"torch": torch.__version__, "torch_device": str(self.device), "devices": [name]}

    def run_chunk(self, state: _State, num_iterations: int):
        rows: list[dict[str, float]] = []
        obs, episode_return = state.obs, state.episode_return
        for i in range(num_iterations):
            start = time.perf_counter()
            obs, episode_return, metrics = self.agent.iteration(
                self.env, obs, episode_return, state.iteration + i
            )
            if not self._compiled:
                # torch.compile compiles during the first iteration; count it as compile time.
                self.compile_seconds += time.perf_counter() - start
                self._compiled = True
            rows.append(metrics)
            if not all(v for k, v in metrics.items() if k.startswith("finite/")):
                num_iterations = i + 1
                break
        new_state = _State(obs, episode_return, state.iteration + num_iterations)
        names = rows[0].keys()
        return new_state, {k: np.array([[row[k] for row in rows]]) for k in names}

    def evaluate(self, state: _State) -> EvalReport:
        seed = eval_seed(self.config.seed, state.iteration * self.config.steps_per_iteration)
        result = evaluate_torch(self.eval_env, self.agent.act_deterministic, seed=seed)
        # The same episodes (reset with the same seed) with actions sampled from the policy;
        # the success metrics stay those of the deterministic policy.
        stochastic = evaluate_torch_stochastic(
            self.eval_env, self.agent.act_stochastic, seed=seed
        )

        def row(x: torch.Tensor | None) -> np.ndarray | None:
            return None if x is None else x.float().cpu().numpy()[None]

        return EvalReport(
            returns=row(result["returns"]),
            success_once=row(result["success_once"]),
            success_at_end=row(result["success_at_end"]),
            stochastic_returns=row(stochastic["returns"]),
        )

    # ---- checkpoints ---------------------------------------------------------------------------
    def _flat_state(self, state: _State) -> dict[str, np.ndarray]:
        a = self.agent
        flat = {
            **to_flat(a.actor, "actor/"),
            **to_flat(a.behaviour, "behaviour/"),
            **to_flat(a.critic, "critic/"),
            "temps/log_alpha": a.log_alpha.detach().cpu().numpy(),
            "temps/log_beta": a.log_beta.detach().cpu().numpy(),
            **{f"obs_stats/{k}": v.cpu().numpy() for k, v in a.obs_stats._asdict().items()},
            "episode_return": state.episode_return.cpu().numpy(),
            "env_obs": state.obs.cpu().numpy(),
            "iteration": np.asarray(state.iteration, np.int32),
            "rng/torch": a.generator.get_state().cpu().numpy(),
            **_optimizer_flat(a.actor_opt, self._names(a.actor), "actor_opt/"),
            **_optimizer_flat(a.critic_opt, self._names(a.critic), "critic_opt/"),
            **_optimizer_flat(a.temp_opt, ["log_alpha", "log_beta"], "temp_opt/"),
        }
        if hasattr(self.env, "get_state"):
            flat.update({f"env_state/{k}": v for k, v in self.env.get_state().items()})
        return _seed_axis(flat)

    @staticmethod
    def _names(module: torch.nn.Module) -> list[str]:
        return [name.replace(".", "/") for name, _ in module.named_parameters()]

    backend = "torch"

    def policy_sizes(self) -> tuple[int, int]:
        return self.env.spec.obs_size, self.env.spec.action_size

    def state_arrays(self, state: _State) -> dict[str, np.ndarray]:
        return self._flat_state(state)

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> _State:
        a, dev = self.agent, self.device
        try:
            for module, prefix in ((a.actor, "actor/"), (a.behaviour, "behaviour/"),
                                   (a.critic, "critic/")):
                load_flat(module, arrays, prefix, index=0)
            with torch.no_grad():
                a.log_alpha.copy_(torch.as_tensor(arrays["temps/log_alpha"][0]))
                a.log_beta.copy_(torch.as_tensor(arrays["temps/log_beta"][0]))
            a.obs_stats = N.RunningStats(*(
                torch.as_tensor(arrays[f"obs_stats/{k}"][0], device=dev)
                for k in N.RunningStats._fields
            ))
            _load_optimizer(a.actor_opt, self._names(a.actor), "actor_opt/", arrays)
            _load_optimizer(a.critic_opt, self._names(a.critic), "critic_opt/", arrays)
            _load_optimizer(a.temp_opt, ["log_alpha", "log_beta"], "temp_opt/", arrays)
            a.generator.set_state(torch.as_tensor(arrays["rng/torch"][0]))
            episode_return = torch.as_tensor(arrays["episode_return"][0], device=dev)
            env_state = {
                k.removeprefix("env_state/"): v[0]
                for k, v in arrays.items() if k.startswith("env_state/")
            }
            if env_state and hasattr(self.env, "set_state"):
                obs = self.env.set_state(env_state)
            else:
                # Simulators whose state cannot be saved (ManiSkill) restart their episodes.
                restart_seed = self.config.seed + iteration
                obs = self.env.reset(restart_seed)
                if self.config.stagger_episodes:
                    self.env.stagger(restart_seed)
                episode_return = torch.zeros_like(episode_return)
        except (KeyError, FlatMismatchError, ValueError, RuntimeError) as err:
            raise StateMismatchError(str(err)) from None
        return _State(obs, episode_return, iteration)


