"""A vectorised, auto-resetting wrapper around one functional single-env simulator.

The inner env follows the Playground/Brax functional API:

    inner.reset(key) -> state        with state.obs, state.reward, state.done
    inner.step(state, action) -> state

`AutoResetVecEnv` vmaps it over `num_envs`, adds a time limit, and implements the contract of
`reppo.envs.contract` (true final observations, disjoint terminated/truncated flags, fresh
random resets). Everything is pure, so it works under `jax.jit`, `jax.lax.scan` and an outer
`jax.vmap` over seeds.

Non-finite physics rule: if an env's observation or reward contains NaN/inf after a step, the
step counts as a termination and its reward is reported as 0; if the observation itself is
non-finite, its `final_obs` row is replaced by zeros. Since the step is a termination nobody
bootstraps from that row, so its value is irrelevant; what matters is that NaN never leaks into
a learner, where even `0 * NaN` is NaN. The env is then reset like any other ended env.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from reppo.envs.contract import EnvSpec, EnvState, StepOutput


class InnerEnv(Protocol):
    """The single-env functional API that `AutoResetVecEnv` wraps (Playground's MjxEnv)."""

    def reset(self, rng: jax.Array) -> Any: ...

    def step(self, state: Any, action: jax.Array) -> Any: ...


def flat_obs(obs: Any) -> jax.Array:
    """The policy observation of an inner state: the "state" entry of dict observations."""
    if isinstance(obs, Mapping):
        obs = obs["state"]
    return jnp.asarray(obs, jnp.float32)


def _select(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per-env `where` over two batched pytrees; `mask` has shape (num_envs,)."""

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, on_true, on_false)


class AutoResetVecEnv:
    """`num_envs` copies of an inner env with a time limit and auto-reset (see module doc).

    The object itself holds no mutable state: all state lives in `EnvState`, so instances can
    be closed over by jitted functions.
    """

    def __init__(self, inner: InnerEnv, num_envs: int, spec: EnvSpec) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if spec.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {spec.episode_length}")
        self.inner = inner
        self.num_envs = num_envs
        self.spec = spec

    def _reset_inner(self, key: jax.Array) -> Any:
        return jax.vmap(self.inner.reset)(jax.random.split(key, self.num_envs))

    def reset(self, key: jax.Array) -> EnvState:
        """A fresh batch of episodes; `key` seeds this reset and all later auto-resets."""
        key, reset_key = jax.random.split(key)
        inner = self._reset_inner(reset_key)
        return EnvState(
            obs=flat_obs(inner.obs),
            inner=inner,
            step_count=jnp.zeros((self.num_envs,), jnp.int32),
            key=key,
        )

    def stagger(self, state: EnvState, key: jax.Array) -> EnvState:
        """`state` with each env's step counter drawn uniformly from [0, episode_length).

        Called once on a fresh training batch: each env's first episode is then cut short at a
        different step, and from there on truncations spread evenly over time instead of
        ending every env together. The physics state is untouched (observations do not
        depend on the counter), so the first episodes are genuine, only shorter.
        """
        step_count = jax.random.randint(
            key, (self.num_envs,), 0, self.spec.episode_length, jnp.int32
        )
        return state._replace(step_count=step_count)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepOutput]:
        """Step every env once; ended envs are reset (see `reppo.envs.contract`)."""
        inner = jax.vmap(self.inner.step)(state.inner, action)
        obs = flat_obs(inner.obs)
        reward = jnp.asarray(inner.reward, jnp.float32)

        obs_ok = jnp.all(jnp.isfinite(obs), axis=-1)
        finite = obs_ok & jnp.isfinite(reward)
        terminated = (inner.done > 0) | ~finite
        step_count = state.step_count + 1
        truncated = (step_count >= self.spec.episode_length) & ~terminated
        done = terminated | truncated

        reward = jnp.where(finite, reward, 0.0)
        final_obs = jnp.where(obs_ok[:, None], obs, 0.0)

        # Split every step so each reset draws new initial states, never a replayed one.
        key, reset_key = jax.random.split(state.key)

        def reset_ended(inner: Any) -> Any:
            fresh = self._reset_inner(reset_key)
            # Match the stepped state's dtypes so both cond branches have one type.
            fresh = jax.tree.map(lambda f, s: f.astype(s.dtype), fresh, inner)
            return _select(done, fresh, inner)

        # A batched reset runs the physics' forward pass for every env, and most steps end no
        # episode (DM Control only ends at the time limit): skip it then.
        # (Under an outer vmap the predicate is batched and cond runs both branches; correct,
        # only slower.)
        inner = jax.lax.cond(jnp.any(done), reset_ended, lambda s: s, inner)

        next_state = EnvState(
            obs=jnp.where(done[:, None], flat_obs(inner.obs), final_obs),
            inner=inner,
            step_count=jnp.where(done, 0, step_count).astype(jnp.int32),
            key=key,
        )
        out = StepOutput(
            reward=reward,
            terminated=terminated.astype(jnp.float32),
            truncated=truncated.astype(jnp.float32),
            final_obs=final_obs,
        )
        return next_state, out
