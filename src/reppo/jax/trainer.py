"""The JAX backend's trainer: a jitted chunk of iterations, for every seed, per call.

The training state carries a leading seed axis. One seed runs unbatched (the axis is dropped
inside the jitted call); several run one after another with `lax.map` or batched with
`jax.vmap` (`config.seed_batching`). Under vmap the envs know the seeds' axis name
(`AutoResetVecEnv.seed_axis`), so that the auto-reset's "did any episode end" is taken over all
seeds and its reset stays a branch taken only when needed (a batched predicate would turn it
into a select that computes the reset at every step).

With several devices (`config.num_devices`, `reppo.jax.sharding`) the envs are split across
them and the compiler partitions the same program; states are gathered to host arrays for
checkpoints and placed back on the devices when loaded, so checkpoints do not depend on the
device count.

`reppo.loop.runner.train` drives it (logging, evaluation, checkpoints, faults).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo import pytrees
from reppo.config import Config
from reppo.envs import make_env
from reppo.envs.autoreset import SEED_AXIS
from reppo.envs.evaluation import eval_key, evaluate, evaluate_stochastic
from reppo.jax.agent import Agent, TrainState
from reppo.jax.multihost import join_processes
from reppo.jax.policy import evaluate_both
from reppo.jax.seeds import over_seeds
from reppo.jax.sharding import DataParallel, resolve_num_devices
from reppo.loop.seam import EvalReport, StateMismatchError

__all__ = ["JaxTrainer"]

def seed_keys(config: Config) -> np.ndarray:
    """The seeds' keys as host data, which every process of a multi-process run holds alike."""
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds, dtype=jnp.uint32)
    return np.asarray(jax.vmap(jax.random.PRNGKey)(seeds))


def device_description() -> dict[str, Any]:
    return {
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
    }


class JaxTrainer:
    """Builds the env, agent and jitted functions for one config (`reppo.loop.runner.Trainer`)."""

    def __init__(self, config: Config):
        self.config = config
        # Before anything starts JAX's backends: a multi-process run's processes meet here.
        join_processes()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.env = make_env(config.env, config.num_envs, impl=config.impl)
        self.eval_env = make_env(config.env, config.eval_episodes, impl=config.impl)
        if config.num_seeds > 1 and config.seed_batching == "vmap":
            self.env.seed_axis = self.eval_env.seed_axis = SEED_AXIS
        local_devices = resolve_num_devices(config)
        # One device runs the plain program: no shardings, nothing to partition.
        self.parallel = None
        if local_devices > 1 or self.process_count > 1:
            self.parallel = DataParallel(config, local_devices)
        self.num_devices = self.parallel.num_devices if self.parallel else 1
        batch_sharding = self.parallel.batch_sharding if self.parallel else None
        self.agent = Agent.create(config, self.env, batch_sharding)
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

        def eval_both(actor, stats, key):
            self.eval_traces += 1  # runs only while tracing: how often the program is built
            return evaluate_both(
                self.eval_env,
                lambda obs: agent.act_deterministic(actor, stats, obs),
                lambda obs, k: agent.act_stochastic(actor, stats, obs, k),
                key,
            )

        seeds, batching = config.num_seeds, config.seed_batching
        # Evaluation envs are not split: with several devices the returns come back whole.
        replicated = {"out_shardings": self.parallel.replicated} if self.parallel else {}
        self._evaluate_both = jax.jit(over_seeds(eval_both, seeds, batching), **replicated)
        self._eval_program: Callable | None = None  # `_evaluate_both` compiled (`eval_fn`)
        self.eval_traces = 0
        # The two evaluations as separate programs, one after the other: what `evaluate` ran
        # before it batched them (`evaluate_separately`, kept to check and time against).
        self._evaluate = jax.jit(over_seeds(eval_one, seeds, batching), **replicated)
        self._evaluate_stochastic = jax.jit(
            over_seeds(eval_one_stochastic, seeds, batching), **replicated
        )
        # Seeds are initialised one after another even when they train batched: under vmap,
        # the orthogonal initialisations of actor and critic (batched QR decompositions on
        # the CPU) can deadlock each other in jaxlib 0.10 (tested). Initialising once costs
        # nothing worth batching.
        init = over_seeds(agent.init, seeds, "map")
        self._state_shardings = None
        if self.parallel is not None:
            self._state_shardings = self.parallel.state_shardings(
                jax.eval_shape(init, seed_keys(config))
            )
        self._init = jax.jit(init, out_shardings=self._state_shardings)

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

            active = np.int32(capacity)
            shardings = {}
            if self.parallel is not None:
                replicated = self.parallel.replicated
                shardings = {
                    "in_shardings": (self._state_shardings, replicated),
                    "out_shardings": (self._state_shardings, replicated),
                }
            self._chunks[capacity] = jax.jit(chunk, **shardings).lower(state, active).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._chunks[capacity]

    def prepare(self, state: TrainState, capacity: int) -> None:
        """Compile the chunk program for chunks of up to `capacity` iterations now."""
        self._capacity = max(capacity, self._capacity)
        self.chunk_fn(state, self._capacity)
        # Every run ends with an evaluation: its program compiles with the training's, so
        # evaluations cost their rollouts only.
        self.eval_fn(state)

    def run_chunk(self, state: TrainState, num_iterations: int):
        capacity = max(num_iterations, self._capacity)
        program = self.chunk_fn(state, capacity)
        new_state, metrics = program(state, np.int32(num_iterations))
        # Iterations beyond `num_iterations` did not run: drop their placeholder metrics.
        metrics = jax.tree_util.tree_map(lambda x: x[:, :num_iterations], metrics)
        return new_state, jax.device_get(metrics)

    def iteration_of(self, state: TrainState) -> int:
        return int(np.asarray(state.iteration).reshape(-1)[0])

    def device_description(self) -> dict[str, Any]:
        return {**device_description(), "num_devices_used": self.num_devices}

    def _eval_keys(self, state: TrainState) -> np.ndarray:
        env_steps = self.iteration_of(state) * self.config.steps_per_iteration
        return np.stack([np.asarray(eval_key(self.config.seed + i, env_steps))
                         for i in range(self.config.num_seeds)])

    def eval_fn(self, state: TrainState) -> Callable:
        """The compiled evaluation `(actor, obs_stats, keys) -> (deterministic, sampled)`,
        built once (its compile time counts in `compile_seconds`) and run at every
        evaluation: the state's arrays keep their shapes, so no evaluation builds another."""
        if self._eval_program is None:
            start = time.perf_counter()
            self._eval_program = self._evaluate_both.lower(
                state.actor, state.obs_stats, self._eval_keys(state)
            ).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._eval_program

    def evaluate(self, state: TrainState) -> EvalReport:
        """Returns of the deterministic and of the sampling policy, each of shape
        (num_seeds, eval_episodes), on the same episodes (the same env reset keys).

        Both policies run in one rollout of 2 x eval_episodes envs (`evaluate_both`): one
        program, compiled once, with no return to the host until the episodes are over."""
        program = self.eval_fn(state)
        result, stochastic = program(state.actor, state.obs_stats, self._eval_keys(state))
        return EvalReport(
            returns=np.asarray(result.returns),
            stochastic_returns=np.asarray(stochastic.returns),
        )

    def evaluate_separately(self, state: TrainState) -> EvalReport:
        """`evaluate` as two rollouts, the deterministic one then the sampling one, each its
        own program: the same returns, at up to twice the rollout time on a GPU."""
        keys = self._eval_keys(state)
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
        if self.parallel is not None:
            state = self.parallel.gather(state)
        return pytrees.flatten(state)

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> TrainState:
        try:
            state = pytrees.unflatten(
                jax.eval_shape(self._init, seed_keys(self.config)), arrays
            )
        except pytrees.TreeMismatchError as err:
            raise StateMismatchError(str(err)) from None
        if self.parallel is not None:
            state = self.parallel.place(state, self._state_shardings)
        return state
