"""The environment contract every JAX env adapter satisfies.

An adapter is a set of pure, jittable functions over a batch of `num_envs` environments:

    spec                          static facts (`EnvSpec`)
    reset(key) -> EnvState        a fresh batch; `state.obs` has shape (num_envs, obs_size)
    step(state, action) -> (EnvState, StepOutput)

`action` has shape (num_envs, action_size) with entries in [-1, 1].

`step` auto-resets: for an env whose episode ended at this step, `next_state.obs` is the first
observation of a new episode, while `StepOutput.final_obs` holds the *true* last observation of
the ended episode (bootstrapping from the reset observation is a bug of stock wrappers). For an
env that did not end, `final_obs == next_state.obs`.

Episode ends are reported as two disjoint flags:
- `terminated`: the task itself ended (no bootstrapping beyond it);
- `truncated`: the time limit `spec.episode_length` was hit without termination (bootstrap from
  `final_obs`).
Both are float32 arrays of 0/1, shape (num_envs,). Physics that went non-finite counts as a
termination, and the env is reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax


@dataclass(frozen=True)
class EnvSpec:
    name: str
    obs_size: int
    action_size: int
    episode_length: int
    reward_range: tuple[float, float]
    family: str  # e.g. "dm_control"


class EnvState(NamedTuple):
    obs: jax.Array  # (num_envs, obs_size): what the policy acts on next
    inner: Any  # the simulator's own batched state
    step_count: jax.Array  # (num_envs,) int32 steps taken in the current episode
    key: jax.Array  # key for resets


class StepOutput(NamedTuple):
    reward: jax.Array  # (num_envs,) float32
    terminated: jax.Array  # (num_envs,) float32 0/1
    truncated: jax.Array  # (num_envs,) float32 0/1
    final_obs: jax.Array  # (num_envs, obs_size) true observation reached by this step
