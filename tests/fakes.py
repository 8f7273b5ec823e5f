"""Shared fakes, so that tests of the loop and of the env plumbing need no simulator and no
algorithm: a still env (a registered JAX env whose observation never changes: it compiles in
moments) and a scripted trainer (a `reppo.loop.seam.Trainer` whose state is its iteration count
and whose metrics and evaluations follow a script)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from reppo.config import Config
from reppo.envs.user import register_env, unregister_env
from reppo.loop.seam import EvalReport

STILL_ENV = "StillForTests"


class StillState(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array


class StillEnv:
    """A functional JAX env (the registered-env API) that never moves: every action is taken at
    the same observation, and the reward is 0. Its episodes end only at the time limit."""

    action_size = 2

    def reset(self, rng: jax.Array) -> StillState:
        del rng
        return StillState(jnp.zeros(3), jnp.zeros(()), jnp.zeros(()))

    def step(self, state: StillState, action: jax.Array) -> StillState:
        del action
        return state


@contextlib.contextmanager
def still_env(name: str = STILL_ENV, episode_length: int = 1000) -> Iterator[str]:
    """`StillEnv` registered as `name` for the block (unregistered after it)."""
    register_env(name, StillEnv, episode_length=episode_length, reward_range=(0.0, 1.0))
    try:
        yield name
    finally:
        unregister_env(name)


def rise_then_fall(iteration: int) -> float:
    """The default scripted evaluation: best (100) at iteration 3, lower before and after."""
    return 100.0 - (iteration - 3) ** 2


class ScriptedTrainer:
    """The loop's bookkeeping without an algorithm. The state is the number of iterations run.

    `eval_return(iteration)` is every evaluation's return; `metrics(iterations)` gives the
    logged metrics of a chunk from the array of its iterations (1-based), shape (1, n): by
    default a temperature that blows up (finite) after iteration 4, which the loop warns about
    as divergence; `non_finite_at` makes the chunk holding that iteration report a non-finite
    value. `calls` lists the trainer calls the loop made, in order. Its checkpoints hold a
    policy of the JAX layout (zero weights) for `policy_sizes`, so that `reppo.train` and
    `reppo eval` can load them."""

    backend = "jax"

    def __init__(
        self,
        config: Config,
        *,
        eval_return: Callable[[int], float] = rise_then_fall,
        metrics: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
        non_finite_at: int | None = None,
        compile_seconds: float = 0.0,
    ) -> None:
        self.config = config
        self.eval_return = eval_return
        self.metrics = metrics or (lambda its: {"temp/alpha": np.where(its > 4, 5e24, 0.01)})
        self.non_finite_at = non_finite_at
        self.compile_seconds = 0.0
        self._compile = compile_seconds
        self.calls: list[tuple[str, int]] = []
        self._policy: dict[str, np.ndarray] | None = None

    def prepare(self, state: int, chunk_size: int) -> None:
        self.calls.append(("prepare", chunk_size))
        self.compile_seconds += self._compile

    def init_state(self) -> int:
        return 0

    def iteration_of(self, state: int) -> int:
        return state

    def run_chunk(self, state: int, n: int) -> tuple[int, dict[str, np.ndarray]]:
        self.calls.append(("run_chunk", n))
        seeds = self.config.num_seeds
        its = np.broadcast_to(np.arange(state + 1, state + n + 1)[None], (seeds, n))
        finite = np.ones_like(its, bool)
        if self.non_finite_at is not None:
            finite = finite & (its != self.non_finite_at)
        return state + n, {**self.metrics(its), "finite/all": finite}

    def evaluate(self, state: int) -> EvalReport:
        self.calls.append(("evaluate", state))
        episodes = self.config.eval_episodes
        return EvalReport(returns=np.full((self.config.num_seeds, episodes),
                                          self.eval_return(state)))

    def policy_sizes(self) -> tuple[int, int]:
        return 5, 1

    def state_arrays(self, state: int) -> dict[str, np.ndarray]:
        return {**self._policy_arrays(), "iteration": np.full((self.config.num_seeds,), state)}

    def _policy_arrays(self) -> dict[str, np.ndarray]:
        if self._policy is None:
            from reppo import pytrees
            from reppo.jax import normalizer
            from reppo.jax.networks import Networks

            obs_size, action_size = self.policy_sizes()
            nets = Networks.from_config(self.config, obs_size, action_size)
            actor = jax.eval_shape(nets.init_actor, jax.random.PRNGKey(0))

            def seeds(tree: Any, fill: Callable[[Any], np.ndarray]) -> Any:
                n = self.config.num_seeds
                return jax.tree_util.tree_map(lambda x: np.stack([fill(x)] * n), tree)

            self._policy = {
                **pytrees.flatten(seeds(actor, lambda x: np.zeros(x.shape, x.dtype)), "actor/"),
                **pytrees.flatten(seeds(normalizer.init_stats(obs_size), np.asarray),
                                  "obs_stats/"),
            }
        return self._policy

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> int:
        return int(arrays["iteration"][0])

    def device_description(self) -> dict[str, Any]:
        return {"device": "scripted"}


def scripted_backend(monkeypatch: Any, **script: Any) -> list[ScriptedTrainer]:
    """Make every trainer the loop builds (`reppo.loop.runner.make_trainer`, as `reppo.train` and
    `reppo train` do) a `ScriptedTrainer(config, **script)`; returns the list of those built."""
    from reppo.loop import runner as training

    built: list[ScriptedTrainer] = []

    def make(config: Config) -> ScriptedTrainer:
        built.append(ScriptedTrainer(config, **script))
        return built[-1]

    monkeypatch.setattr(training, "make_trainer", make)
    return built
