"""FastTD3's replay buffer, on the device: one circular buffer per env, all written together.

Each env's slot t holds the transition of its step t: observation, executed action, reward,
termination and truncation flags, and the true next observation (the final one where the
episode ended: `reppo.envs.contract`). Every env writes the same slot at each step, so the
buffer is `(capacity, num_envs, ...)` arrays plus one write position; it holds
`capacity * num_envs` transitions and forgets the oldest step of every env once full.

Sampling draws the same number of slots from every env (batch_size // num_envs each, as
FastTD3 does) and returns n-step targets: rewards summed with discount up to `n_step` steps
ahead, stopping at the first step that ended the episode (terminated or truncated), with the
observation to bootstrap from and whether to (not after a termination). A window never
reaches past the newest step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ReplayBuffer(NamedTuple):
    obs: jax.Array  # (capacity, num_envs, obs_size)
    action: jax.Array  # (capacity, num_envs, action_size)
    reward: jax.Array  # (capacity, num_envs)
    terminated: jax.Array  # (capacity, num_envs) 0/1
    truncated: jax.Array  # (capacity, num_envs) 0/1
    next_obs: jax.Array  # (capacity, num_envs, obs_size): the true next observation
    position: jax.Array  # () int32: the slot the next step is written to
    size: jax.Array  # () int32: filled slots per env, at most capacity

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        return sum(int(x.size) * x.dtype.itemsize for x in self)


class Batch(NamedTuple):
    obs: jax.Array  # (B, obs_size)
    action: jax.Array  # (B, action_size)
    reward: jax.Array  # (B,) discounted sum of the window's rewards
    discount: jax.Array  # (B,) gamma ** (steps in the window)
    bootstrap: jax.Array  # (B,) 1.0 unless the window ended in a termination
    next_obs: jax.Array  # (B, obs_size) the observation after the window's last step


def init_buffer(capacity: int, num_envs: int, obs_size: int, action_size: int) -> ReplayBuffer:
    if capacity < 1 or num_envs < 1:
        raise ValueError(f"capacity and num_envs must be >= 1, got {capacity}, {num_envs}")
    f32 = jnp.float32
    return ReplayBuffer(
        obs=jnp.zeros((capacity, num_envs, obs_size), f32),
        action=jnp.zeros((capacity, num_envs, action_size), f32),
        reward=jnp.zeros((capacity, num_envs), f32),
        terminated=jnp.zeros((capacity, num_envs), f32),
        truncated=jnp.zeros((capacity, num_envs), f32),
        next_obs=jnp.zeros((capacity, num_envs, obs_size), f32),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def add(
    buffer: ReplayBuffer,
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    next_obs: jax.Array,
) -> ReplayBuffer:
    """Write one step of every env (arrays with a leading num_envs axis)."""
    i = buffer.position

    def put(store: jax.Array, row: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_index_in_dim(store, row.astype(store.dtype), i, 0)

    return ReplayBuffer(
        obs=put(buffer.obs, obs),
        action=put(buffer.action, action),
        reward=put(buffer.reward, reward),
        terminated=put(buffer.terminated, terminated),
        truncated=put(buffer.truncated, truncated),
        next_obs=put(buffer.next_obs, next_obs),
        position=(i + 1) % buffer.capacity,
        size=jnp.minimum(buffer.size + 1, buffer.capacity),
    )


def sample(
    buffer: ReplayBuffer, key: jax.Array, batch_size: int, n_step: int, gamma: float
) -> Batch:
    """`batch_size // num_envs` (at least 1) windows of `n_step` steps from every env, each
    starting at a uniformly drawn slot whose whole window is filled. Needs `size >= n_step`
    (the caller starts learning later than that)."""
    num_envs, capacity = buffer.num_envs, buffer.capacity
    per_env = max(1, batch_size // num_envs)
    env = jnp.tile(jnp.arange(num_envs), per_env)  # (B,)
    starts = buffer.size - n_step + 1  # window starts per env
    offset = jax.random.randint(key, env.shape, 0, jnp.maximum(starts, 1))
    oldest = (buffer.position - buffer.size) % capacity
    first = (oldest + offset) % capacity

    steps = (first[:, None] + jnp.arange(n_step)[None, :]) % capacity  # (B, n)
    env_n = env[:, None]
    reward = buffer.reward[steps, env_n]
    terminated = buffer.terminated[steps, env_n]
    ended = jnp.maximum(terminated, buffer.truncated[steps, env_n])
    # alive[k]: no step before k ended the episode, so step k belongs to the window.
    alive = jnp.cumprod(
        jnp.concatenate([jnp.ones_like(ended[:, :1]), 1.0 - ended[:, :-1]], axis=1), axis=1
    )
    powers = gamma ** jnp.arange(n_step, dtype=jnp.float32)
    length = jnp.sum(alive, axis=1).astype(jnp.int32)  # 1..n
    last = length - 1
    last_step = jnp.take_along_axis(steps, last[:, None], axis=1)[:, 0]
    return Batch(
        obs=buffer.obs[first, env],
        action=buffer.action[first, env],
        reward=jnp.sum(alive * powers * reward, axis=1),
        discount=gamma ** length.astype(jnp.float32),
        bootstrap=1.0 - jnp.take_along_axis(terminated, last[:, None], axis=1)[:, 0],
        next_obs=buffer.next_obs[last_step, env],
    )
