"""MuJoCo Playground for the torch backend: a zero-copy JAX -> torch bridge over DLPack.

The JAX auto-reset batch (`reppo.envs.autoreset`) runs jitted; its arrays are handed to torch
with `torch.from_dlpack` and actions come back with `jax.dlpack.from_dlpack`, so on one device
no array is copied. The env state stays a JAX pytree, which makes it checkpointable: a torch
run on Playground resumes exactly, like a JAX run.

JAX preallocates most of a GPU's memory at start-up, which would starve torch on the same GPU;
`reppo.cli` sets XLA_PYTHON_CLIENT_PREALLOCATE=false for torch runs before JAX is imported.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import torch

from reppo import pytrees
from reppo.envs.contract import EnvSpec, TorchStep
from reppo.envs.registry import make_env


def to_torch(x: jax.Array, device: torch.device) -> torch.Tensor:
    tensor = torch.from_dlpack(x)
    return tensor if tensor.device == device else tensor.to(device)


def to_jax(x: torch.Tensor) -> jax.Array:
    return jax.dlpack.from_dlpack(x.detach().contiguous())


class PlaygroundTorchEnv:
    """A batch of Playground envs behind the `TorchVecEnv` contract."""

    def __init__(
        self,
        name: str,
        num_envs: int,
        *,
        impl: str = "auto",
        device: str | torch.device = "cpu",
        episode_length: int | None = None,
    ) -> None:
        self._env = make_env(name, num_envs, impl=impl, episode_length=episode_length)
        self.spec: EnvSpec = self._env.spec
        self.num_envs = num_envs
        self.device = torch.device(device)
        self._reset = jax.jit(self._env.reset)
        self._step = jax.jit(self._env.step)
        self._with_pool = jax.jit(self._env.with_reset_pool, static_argnums=1)
        self._without_pool = jax.jit(self._env.without_reset_pool)
        self._state: Any = None

    def reset(self, seed: int) -> torch.Tensor:
        self._state = self._reset(jax.random.PRNGKey(seed))
        return to_torch(self._state.obs, self.device)

    def stagger(self, seed: int) -> None:
        """Spread the step counters of the fresh batch over [0, episode_length) (training)."""
        if self._state is None:
            raise RuntimeError("call reset(seed) before stagger(seed)")
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        self._state = self._env.stagger(self._state, key)

    def step(self, action: torch.Tensor) -> TorchStep:
        if self._state is None:
            raise RuntimeError("call reset(seed) before step(action)")
        self._state, out = self._step(self._state, to_jax(action.float()))
        d = self.device
        return TorchStep(
            obs=to_torch(self._state.obs, d),
            reward=to_torch(out.reward, d),
            terminated=to_torch(out.terminated, d),
            truncated=to_torch(out.truncated, d),
            final_obs=to_torch(out.final_obs, d),
        )

    def begin_rollout(self, pool_size: int) -> None:
        """Draw `pool_size` fresh initial states for the episodes that end in the coming
        rollout (`AutoResetVecEnv.with_reset_pool`); 0 draws none."""
        if pool_size > 0:
            self._state = self._with_pool(self._state, pool_size)

    def end_rollout(self) -> None:
        """Drop the rollout's unused initial states (checkpoints never hold them)."""
        if self._state is not None and self._state.pool is not None:
            self._state = self._without_pool(self._state)

    # The env state is a JAX pytree: flat named arrays for checkpoints, like the JAX backend's.
    def get_state(self) -> dict[str, np.ndarray]:
        return pytrees.flatten(self._state)

    def set_state(self, flat: dict[str, np.ndarray]) -> torch.Tensor:
        template = jax.eval_shape(self._reset, jax.random.PRNGKey(0))
        self._state = pytrees.unflatten(template, flat)
        return to_torch(self._state.obs, self.device)

    def close(self) -> None:
        self._state = None
