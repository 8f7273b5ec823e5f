"""Environments for the torch backend: ManiSkill3 and Gymnasium natively, Playground and
registered JAX envs via DLPack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reppo.config import ConfigError
from reppo.envs.catalog import DMC_TASKS
from reppo.envs.contract import EnvSpec, TorchVecEnv
from reppo.envs.user import RegisteredEnv, gymnasium_id, lookup


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no GPU; use --device cpu")
    return torch.device(device)


def is_maniskill(name: str) -> bool:
    from reppo.envs.maniskill import MANISKILL_TASKS

    return name in MANISKILL_TASKS


def _gymnasium_source(name: str) -> tuple[bool, RegisteredEnv | None]:
    """(True, its registration) for a Gymnasium env: registered for the torch backend, or an
    id of Gymnasium's registry (registration None). (False, None) for Playground and
    ManiSkill tasks and registered JAX envs (Playground's bridge runs those)."""
    if name in DMC_TASKS or is_maniskill(name):
        return False, None
    entry = lookup(name)
    if entry is not None:
        return entry.backend == "torch", entry if entry.backend == "torch" else None
    return gymnasium_id(name) is not None, None


def make_torch_env(
    name: str,
    num_envs: int,
    *,
    device: torch.device,
    seed: int = 0,
    evaluation: bool = False,
    impl: str = "auto",
) -> Any:
    """A `TorchVecEnv` of `num_envs` envs `name` on `device`: a ManiSkill3 task, a Gymnasium
    env (registered for the torch backend, or a Gymnasium id), or, through the DLPack bridge,
    a Playground task or a registered JAX env."""
    gymnasium, entry = _gymnasium_source(name)
    if gymnasium:
        from reppo.envs.gymnasium_env import GymnasiumTorchEnv

        return GymnasiumTorchEnv(
            name, entry, num_envs, device=device, seed=seed, evaluation=evaluation
        )
    if is_maniskill(name):
        from reppo.envs.maniskill import make_maniskill_env

        return make_maniskill_env(
            name, num_envs, seed=seed, evaluation=evaluation, device=str(device)
        )
    from reppo.envs.bridge import PlaygroundTorchEnv

    return PlaygroundTorchEnv(name, num_envs, impl=impl, device=device)


def torch_env_spec(name: str, impl: str = "auto") -> EnvSpec:
    gymnasium, entry = _gymnasium_source(name)
    if gymnasium:
        from reppo.envs.gymnasium_env import gymnasium_spec

        return gymnasium_spec(name, entry)
    if is_maniskill(name):
        from reppo.envs.maniskill import maniskill_spec

        return maniskill_spec(name)
    from reppo.envs.registry import env_spec

    return env_spec(name, impl=impl)


def evaluate_torch(
    env: TorchVecEnv,
    act: Callable[[torch.Tensor], torch.Tensor],
    episodes_env_steps: int | None = None,
    *,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """One episode in each env of `env` (any `TorchVecEnv`, built with `evaluation=True`).

    Resets with `seed`, then runs `episodes_env_steps` steps (default `spec.episode_length`,
    which ends every env's first episode) with `act(obs) -> action` under `torch.no_grad`.
    Each env's episode counts up to and including its first end (terminated or truncated);
    in ManiSkill's evaluation mode that is the whole `episode_length` steps. Returns tensors of
    shape (num_envs,): `returns` (float32, undiscounted), `lengths` (int64), and for envs that
    report success, `success_once` (bool: success at any step of the episode) and
    `success_at_end` (bool: success at its last step), else None.
    """
    return _episodes(env, act, episodes_env_steps, seed)


def evaluate_torch_stochastic(
    env: TorchVecEnv,
    act: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    episodes_env_steps: int | None = None,
    *,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """`evaluate_torch` with a stochastic policy `act(obs, generator) -> action`.

    The envs are reset with `seed` exactly as `evaluate_torch` resets them, so with the same
    `seed` both run from the same initial states. `generator` (on `env.device`, seeded from
    `seed`) is the only source of the policy's noise; the env never draws from it.
    """
    generator = torch.Generator(device=env.device)
    generator.manual_seed(seed)
    return _episodes(env, lambda obs: act(obs, generator), episodes_env_steps, seed)


_EVAL_CHECK_EVERY = 32


def _episodes(
    env: TorchVecEnv,
    act: Callable[[torch.Tensor], torch.Tensor],
    episodes_env_steps: int | None,
    seed: int,
) -> dict[str, torch.Tensor | None]:
    num_steps = env.spec.episode_length if episodes_env_steps is None else episodes_env_steps
    if num_steps < 1:
        raise ValueError(f"episodes_env_steps must be >= 1, got {num_steps}")
    n, dev = env.num_envs, env.device
    returns = torch.zeros(n, dtype=torch.float32, device=dev)
    lengths = torch.zeros(n, dtype=torch.int64, device=dev)
    running = torch.ones(n, dtype=torch.bool, device=dev)
    success_once = success_at_end = None
    with torch.no_grad():
        obs = env.reset(seed)
        for step in range(num_steps):
            out = env.step(act(obs))
            returns += torch.where(running, out.reward, torch.zeros_like(out.reward))
            lengths += running.long()
            if out.success is not None:
                if success_once is None:
                    success_once = torch.zeros(n, dtype=torch.bool, device=dev)
                    success_at_end = torch.zeros(n, dtype=torch.bool, device=dev)
                success_once |= running & out.success
                success_at_end = torch.where(running, out.success, success_at_end)
            running &= (out.terminated + out.truncated) == 0
            obs = out.obs
            # Whether every episode has ended is read back from the device every
            # `_EVAL_CHECK_EVERY` steps, not at each one; steps after an env's end count nothing.
            if step % _EVAL_CHECK_EVERY == _EVAL_CHECK_EVERY - 1 and not running.any():
                break
    return {
        "returns": returns,
        "lengths": lengths,
        "success_once": success_once,
        "success_at_end": success_at_end,
    }
