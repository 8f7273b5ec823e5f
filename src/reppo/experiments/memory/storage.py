"""Bytes of REPPO's rollout storage per iteration, from the real array shapes, and of an
off-policy replay buffer on the same task."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

REPLAY_CAPACITIES: tuple[int, ...] = (10_485_760, 32_768)
FLOAT32_BYTES = 4
# Per replay transition: obs, next obs, action, reward, done, truncation.
REPLAY_ASSUMPTION = (
    "a replay transition holds obs, next obs, action, reward, done and truncation, float32: "
    "4 * (2 * obs + action + 3) bytes"
)


@dataclass(frozen=True)
class ArrayInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @classmethod
    def of(cls, name: str, x: Any) -> ArrayInfo:
        import numpy as np

        shape = tuple(int(d) for d in x.shape)
        dtype = np.dtype(x.dtype)
        return cls(name, shape, dtype.name, math.prod(shape) * dtype.itemsize)


def replay_buffer_bytes(obs_size: int, action_size: int, capacity: int) -> int:
    """Bytes of a float32 replay buffer of `capacity` transitions (see REPLAY_ASSUMPTION)."""
    return capacity * FLOAT32_BYTES * (2 * obs_size + action_size + 3)


@dataclass(frozen=True)
class Storage:
    """REPPO's per-iteration arrays for one config, from the shapes of the real code."""

    obs_size: int
    action_size: int
    rollout: tuple[ArrayInfo, ...]  # what one iteration collects and keeps
    shuffled: tuple[ArrayInfo, ...]  # the per-epoch minibatch gather of the update
    train_state: int  # bytes of parameters, optimizer state, temperatures, obs statistics

    @property
    def rollout_bytes(self) -> int:
        return sum(a.nbytes for a in self.rollout)

    @property
    def shuffled_bytes(self) -> int:
        return sum(a.nbytes for a in self.shuffled)


def rollout_storage(config: Any) -> Storage:
    """Shapes of one iteration's arrays for `config` (one seed), traced but not computed."""
    import jax

    from reppo.envs import make_env
    from reppo.jax import losses as L
    from reppo.jax.agent import Agent

    env = make_env(config.env, config.num_envs, impl=config.impl)
    agent = Agent.create(config, env)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(agent.init, key)
    _, _, data, raw_obs, _ = jax.eval_shape(agent.rollout, state, key)
    target = jax.eval_shape(
        lambda d: L.soft_td_lambda(d.soft_reward, d.next_value, d.terminated, d.truncated,
                                   agent.gamma, config.lam),
        data,
    )
    fields = [ArrayInfo.of(f"rollout.{name}", x) for name, x in data._asdict().items()]
    target_info = ArrayInfo.of("td_lambda_target", target)
    # Agent.iteration keeps the raw observations for the normalizer update, and Agent.update
    # gathers every transition field and the target into shuffled minibatches each epoch.
    rollout = (*fields, ArrayInfo.of("raw_obs", raw_obs), target_info)
    shuffled = tuple(
        ArrayInfo(f"shuffled.{a.name.split('.')[-1]}", a.shape, a.dtype, a.nbytes)
        for a in (*fields, target_info)
    )
    learner = [state.actor, state.behaviour, state.critic, state.temps, state.actor_opt,
               state.critic_opt, state.temp_opt, state.obs_stats]
    train_state = sum(ArrayInfo.of("", x).nbytes for x in jax.tree_util.tree_leaves(learner))
    return Storage(env.spec.obs_size, env.spec.action_size, rollout, shuffled, train_state)
