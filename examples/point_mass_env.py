"""A point mass on a plane, written as a pure-JAX functional env and registered with reppo.

The env has the Brax / MuJoCo Playground single-env API that reppo batches:
`reset(rng) -> state`, `step(state, action) -> state`, a state with `obs`, `reward` and `done`,
and `action_size`. Importing this module registers it as "PointMass2D", so the command line
can train and evaluate it by its module-qualified name (run from this directory):

    reppo train --env point_mass_env:PointMass2D --total-steps 100k
    reppo eval runs/point_mass_env_PointMass2D-<date>
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

import reppo


class PointMassState(NamedTuple):
    position: jax.Array  # (2,)
    velocity: jax.Array  # (2,)
    obs: jax.Array  # (4,): position and velocity
    reward: jax.Array  # (): 1 at the origin, 0 at distance >= 1
    done: jax.Array  # (): never 1 here (the time limit truncates the episodes)


class PointMass:
    """Push a damped point mass from a random start to the origin; actions are forces in
    [-1, 1]^2."""

    action_size = 2

    def _state(self, position, velocity, reward):
        obs = jnp.concatenate([position, velocity])
        return PointMassState(position, velocity, obs, reward, jnp.zeros(()))

    def reset(self, rng: jax.Array) -> PointMassState:
        position = jax.random.uniform(rng, (2,), minval=-1.0, maxval=1.0)
        return self._state(position, jnp.zeros(2), jnp.zeros(()))

    def step(self, state: PointMassState, action: jax.Array) -> PointMassState:
        velocity = 0.9 * state.velocity + 0.1 * jnp.clip(action, -1.0, 1.0)
        position = jnp.clip(state.position + 0.1 * velocity, -2.0, 2.0)
        reward = 1.0 - jnp.minimum(jnp.linalg.norm(position), 1.0)
        return self._state(position, velocity, reward)


reppo.register_env("PointMass2D", PointMass, episode_length=100, reward_range=(0.0, 1.0))
