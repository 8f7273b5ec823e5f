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
from reppo.envs.reset_pool import reset_pool_size

__all__ = ["SEED_AXIS", "AutoResetVecEnv", "InnerEnv", "flat_obs", "reset_pool_size"]

# The axis name of the seeds when a trainer vmaps several seeds over one env (`seed_axis`).
SEED_AXIS = "seeds"


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
        # Traced once per argument shape however often a program calls them (the batch
        # reset, the reset pool, evaluation and training each reset; the physics' trace is
        # the longest part of building a program).
        self._inner_reset = jax.jit(inner.reset)
        self._inner_step = jax.jit(inner.step)
        self.num_envs = num_envs
        self.spec = spec
        # Set (to SEED_AXIS) by a trainer that runs several seeds under jax.vmap with that axis
        # name: the batch reset's "did any env end" is then taken over all seeds, so that it
        # stays a branch taken only when needed instead of a select computed at every step.
        self.seed_axis: str | None = None

    def _reset_inner(self, key: jax.Array) -> Any:
        return jax.vmap(self._inner_reset)(jax.random.split(key, self.num_envs))

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

    def with_reset_pool(self, state: EnvState, size: int) -> EnvState:
        """`state` with `size` fresh initial states (from the state's own key stream) that the
        envs ending in the following steps take in turn; `size` 0 adds none."""
        if size <= 0:
            return state
        key, pool_key = jax.random.split(state.key)
        pool = jax.vmap(self._inner_reset)(jax.random.split(pool_key, size))
        # The stepped states' dtypes, so that taking from the pool keeps the state's type.
        pool = jax.tree.map(lambda p, s: p.astype(s.dtype), pool, state.inner)
        return state._replace(key=key, pool=pool, pool_used=jnp.zeros((), jnp.int32))

    def without_reset_pool(self, state: EnvState) -> EnvState:
        """`state` without its pool (what checkpoints hold)."""
        return state._replace(pool=None, pool_used=None)

    def _anywhere(self, flags: jax.Array) -> jax.Array:
        """Whether any flag is set, in this batch or, under the seeds' vmap, in any seed's."""
        found = jnp.any(flags)
        if self.seed_axis is not None:
            found = jax.lax.pmax(found.astype(jnp.int32), self.seed_axis) > 0
        return found

    def step(
        self, state: EnvState, action: jax.Array, autoreset: bool = True
    ) -> tuple[EnvState, StepOutput]:
        """Step every env once; ended envs are reset (see `reppo.envs.contract`), unless
        `autoreset` is False: then an ended env stays at its final state (evaluation, which
        counts each env's first episode only, needs no new ones)."""
        inner = jax.vmap(self._inner_step)(state.inner, action)
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
        pool, pool_used = state.pool, state.pool_used
        if not autoreset:
            reset = jnp.zeros_like(done)
        else:
            reset = done
            pending = done
            if pool is not None:
                # The k-th env to end (counting over the rollout) takes pool state k.
                size = jax.tree.leaves(pool)[0].shape[0]
                rank = pool_used + jnp.cumsum(done, dtype=jnp.int32) - 1
                from_pool = done & (rank < size)
                taken = jax.tree.map(lambda p: p[jnp.clip(rank, 0, size - 1)], pool)
                inner = _select(from_pool, taken, inner)
                pending = done & ~from_pool
                pool_used = pool_used + jnp.sum(done, dtype=jnp.int32)

            def reset_pending(inner: Any) -> Any:
                fresh = self._reset_inner(reset_key)
                # Match the stepped state's dtypes so both cond branches have one type.
                fresh = jax.tree.map(lambda f, s: f.astype(s.dtype), fresh, inner)
                return _select(pending, fresh, inner)

            # A batched reset runs the physics' reset for every env, and most steps end no
            # episode (or the pool served them): skip it then.
            inner = jax.lax.cond(self._anywhere(pending), reset_pending, lambda s: s, inner)

        next_state = EnvState(
            obs=jnp.where(reset[:, None], flat_obs(inner.obs), final_obs),
            inner=inner,
            step_count=jnp.where(reset, 0, step_count).astype(jnp.int32),
            key=key,
            pool=pool,
            pool_used=pool_used,
        )
        out = StepOutput(
            reward=reward,
            terminated=terminated.astype(jnp.float32),
            truncated=truncated.astype(jnp.float32),
            final_obs=final_obs,
        )
        return next_state, out
