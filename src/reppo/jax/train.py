"""The JAX backend's trainer: a jitted chunk of iterations, for every seed, per call.

The training state carries a leading seed axis. One seed runs unbatched (the axis is dropped
inside the jitted call); several run one after another with `lax.map` or batched with
`jax.vmap` (`config.seed_batching`). Under vmap the envs know the seeds' axis name
(`AutoResetVecEnv.seed_axis`), so that the auto-reset's "did any episode end" is taken over all
seeds and its reset stays a branch taken only when needed (a batched predicate would turn it
into a select that computes the reset at every step).

`reppo.training.train` drives it (logging, evaluation, checkpoints, faults).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.config import Config
from reppo.envs import make_env
from reppo.envs.autoreset import SEED_AXIS
from reppo.envs.evaluation import eval_key, evaluate, evaluate_stochastic
from reppo.jax import tree_io
from reppo.jax.agent import Agent, TrainState
from reppo.trainer import EvalReport, StateMismatchError

__all__ = ["JaxTrainer"]

def seed_keys(config: Config) -> jax.Array:
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds, dtype=jnp.uint32)
    return jax.vmap(jax.random.PRNGKey)(seeds)


def device_description() -> dict[str, Any]:
    return {
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
    }


def over_seeds(fn: Callable, num_seeds: int, batching: str) -> Callable:
    """`fn` applied to every seed of arguments with a leading seed axis (outputs stacked)."""
    if num_seeds == 1:
        def single(*args):
            out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
            return jax.tree_util.tree_map(lambda x: x[None], out)

        return single
    if batching == "vmap":
        return jax.vmap(fn, axis_name=SEED_AXIS)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


class JaxTrainer:
    """Builds the env, agent and jitted functions for one config (`reppo.training.Trainer`)."""

    def __init__(self, config: Config):
        self.config = config
        self.env = make_env(config.env, config.num_envs, impl=config.impl)
        self.eval_env = make_env(config.env, config.eval_episodes, impl=config.impl)
        if config.num_seeds > 1 and config.seed_batching == "vmap":
            self.env.seed_axis = self.eval_env.seed_axis = SEED_AXIS
        self.agent = Agent.create(config, self.env)
        self._chunks: dict[int, Callable] = {}
        self._capacity = 0  # the longest chunk prepared so far (`prepare`)
        self.compile_seconds = 0.0
        agent = self.agent

        def eval_one(actor, stats, key):
            return evaluate(
                self.eval_env, lambda obs: agent.act_deterministic(actor, stats, obs), key
            )

        def eval_one_stochastic(actor, stats, key):
            return evaluate_stochastic(
                self.eval_env, lambda obs, k: agent.act_stochastic(actor, stats, obs, k), key
            )

        seeds, batching = config.num_seeds, config.seed_batching
        self._evaluate = jax.jit(over_seeds(eval_one, seeds, batching))
        self._evaluate_stochastic = jax.jit(over_seeds(eval_one_stochastic, seeds, batching))
        # Seeds are initialised one after another even when they train batched: under vmap,
        # the orthogonal initialisations of actor and critic (batched QR decompositions on
        # the CPU) can deadlock each other in jaxlib 0.10 (tested). Initialising once costs
        # nothing worth batching.
        self._init = jax.jit(over_seeds(agent.init, seeds, "map"))

    def init_state(self) -> TrainState:
        return self._init(seed_keys(self.config))

    def chunk_fn(self, state: TrainState, capacity: int) -> Callable:
        """The compiled program `(state, active) -> (state, metrics)` that runs the first
        `active` of `capacity` iterations (compiled once per capacity, so a chunk of any
        length up to `capacity` costs no second compilation)."""
        if capacity not in self._chunks:
            start = time.perf_counter()

            def chunk(s, active):
                return over_seeds(
                    lambda s_: self.agent.chunk(s_, capacity, active),
                    self.config.num_seeds,
                    self.config.seed_batching,
                )(s)

            active = jnp.asarray(capacity, jnp.int32)
            self._chunks[capacity] = jax.jit(chunk).lower(state, active).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._chunks[capacity]

    def prepare(self, state: TrainState, capacity: int) -> None:
        """Compile the chunk program for chunks of up to `capacity` iterations now."""
        self._capacity = max(capacity, self._capacity)
        self.chunk_fn(state, self._capacity)

    def run_chunk(self, state: TrainState, num_iterations: int):
        capacity = max(num_iterations, self._capacity)
        program = self.chunk_fn(state, capacity)
        new_state, metrics = program(state, jnp.asarray(num_iterations, jnp.int32))
        # Iterations beyond `num_iterations` did not run: drop their placeholder metrics.
        metrics = jax.tree_util.tree_map(lambda x: x[:, :num_iterations], metrics)
        return new_state, jax.device_get(metrics)

    def iteration_of(self, state: TrainState) -> int:
        return int(np.asarray(state.iteration).reshape(-1)[0])

    def device_description(self) -> dict[str, Any]:
        return device_description()

    def evaluate(self, state: TrainState) -> EvalReport:
        """Returns of the deterministic and of the sampling policy, each of shape
        (num_seeds, eval_episodes), on the same episodes (the same env reset keys)."""
        env_steps = self.iteration_of(state) * self.config.steps_per_iteration
        keys = jnp.stack([eval_key(self.config.seed + i, env_steps)
                          for i in range(self.config.num_seeds)])
        result = self._evaluate(state.actor, state.obs_stats, keys)
        stochastic = self._evaluate_stochastic(state.actor, state.obs_stats, keys)
        return EvalReport(
            returns=np.asarray(result.returns),
            stochastic_returns=np.asarray(stochastic.returns),
        )

    # ---- checkpoints ---------------------------------------------------------------------------
    backend = "jax"

    def policy_sizes(self) -> tuple[int, int]:
        return self.env.spec.obs_size, self.env.spec.action_size

    def state_arrays(self, state: TrainState) -> dict[str, np.ndarray]:
        return tree_io.flatten(state)

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> TrainState:
        try:
            return tree_io.unflatten(jax.eval_shape(self.init_state), arrays)
        except tree_io.TreeMismatchError as err:
            raise StateMismatchError(str(err)) from None
