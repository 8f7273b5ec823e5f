"""Environments for the torch backend: ManiSkill3 tasks natively, Playground via DLPack."""

from __future__ import annotations

from typing import Any

import torch

from reppo.config import ConfigError
from reppo.envs.contract import EnvSpec, TorchStep


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no GPU; use --device cpu")
    return torch.device(device)


def is_maniskill(name: str) -> bool:
    from reppo.envs.maniskill import MANISKILL_TASKS

    return name in MANISKILL_TASKS


def make_torch_env(
    name: str,
    num_envs: int,
    *,
    device: torch.device,
    seed: int = 0,
    evaluation: bool = False,
    impl: str = "auto",
) -> Any:
    """A `TorchVecEnv` of `num_envs` envs `name` on `device`."""
    if is_maniskill(name):
        from reppo.envs.maniskill import make_maniskill_env

        return make_maniskill_env(
            name, num_envs, seed=seed, evaluation=evaluation, device=str(device)
        )
    from reppo.envs.bridge import PlaygroundTorchEnv

    return PlaygroundTorchEnv(name, num_envs, impl=impl, device=device)


def torch_env_spec(name: str, impl: str = "auto") -> EnvSpec:
    if is_maniskill(name):
        from reppo.envs.maniskill import maniskill_spec

        return maniskill_spec(name)
    from reppo.envs.registry import env_spec

    return env_spec(name, impl=impl)


@torch.no_grad()
def evaluate_torch(env: Any, act: Any, seed: int) -> dict[str, torch.Tensor | None]:
    """One episode in each of the env's `num_envs` envs with the deterministic policy `act`.

    The returns count rewards up to and including each env's first episode end; success_once
    is success at any step of that episode, success_at_end success at its last step (for
    tasks that report success, else None). Every episode ends within `spec.episode_length`
    steps, so that many steps finish them all.
    """
    obs = env.reset(seed)
    n, device = env.num_envs, env.device
    returns = torch.zeros(n, device=device)
    lengths = torch.zeros(n, dtype=torch.int64, device=device)
    running = torch.ones(n, dtype=torch.bool, device=device)
    success_once = torch.zeros(n, dtype=torch.bool, device=device)
    success_at_end = torch.zeros(n, dtype=torch.bool, device=device)
    has_success = False
    for _ in range(env.spec.episode_length):
        out: TorchStep = env.step(act(obs))
        returns += running * out.reward
        lengths += running.long()
        ended = (out.terminated + out.truncated) > 0
        if out.success is not None:
            has_success = True
            success = out.success.bool()
            success_once |= running & success
            success_at_end = torch.where(running & ended, success, success_at_end)
        running &= ~ended
        obs = out.obs
        if not running.any():
            break
    return {
        "returns": returns,
        "lengths": lengths,
        "success_once": success_once if has_success else None,
        "success_at_end": success_at_end if has_success else None,
    }
