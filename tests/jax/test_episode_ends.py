"""How the JAX agent trains on an episode that ends in a termination: no future (G = r) by
default outside ManiSkill3, or bootstrapped like a truncation with `bootstrap_terminations`."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import make_env
from reppo.envs.user import register_env, unregister_env
from reppo.jax import losses as L
from reppo.jax.agent import Agent
from tests.conftest import TINY

SUCCESS_STEP = 2  # every env terminates with reward 1 at this step of its first episode


class _State(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    t: jax.Array


class _Succeeding:
    """Moves its observation with the action; ends with reward 1 at its third step."""

    action_size = 2

    def reset(self, rng):
        del rng
        return _State(jnp.zeros(3), jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))

    def step(self, state, action):
        t = state.t + 1
        done = (t == SUCCESS_STEP + 1).astype(jnp.float32)
        obs = state.obs + 0.1 + jnp.sum(action)
        return _State(obs, 0.5 + 0.5 * done, done, t)


@pytest.fixture(scope="module")
def succeeding_env():
    register_env("SucceedingForTests", _Succeeding, episode_length=50, reward_range=(0.0, 1.0))
    yield
    unregister_env("SucceedingForTests")


def _rollout(**changes):
    config = TINY.replace(env="SucceedingForTests", num_envs=4, num_steps=5,
                          num_minibatches=1, stagger_episodes=False, **changes)
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    state = agent.init(jax.random.PRNGKey(0))
    # A critic whose values differ from its initial prior's 0.
    leaves, tree = jax.tree.flatten(state.critic)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    critic = jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    state = state._replace(critic=critic)
    _, _, data, _, _ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(1))
    targets = L.soft_td_lambda(data.soft_reward, data.next_value, data.terminated,
                               data.truncated, agent.gamma, config.lam)
    return agent, jax.tree.map(np.asarray, data), np.asarray(targets)


def test_a_termination_is_worth_its_reward_by_default(succeeding_env):
    agent, data, targets = _rollout()
    t = SUCCESS_STEP
    assert not agent.bootstrap_terminations
    np.testing.assert_array_equal(data.terminated[t], 1.0)
    assert data.truncated.sum() == 0
    np.testing.assert_array_equal(data.soft_reward[t], data.reward[t])  # no bonus after it
    np.testing.assert_array_equal(targets[t], 1.0)


def test_bootstrap_terminations_trains_a_termination_as_a_truncation(succeeding_env):
    agent, data, targets = _rollout(bootstrap_terminations=True)
    t = SUCCESS_STEP
    assert agent.bootstrap_terminations
    assert data.terminated.sum() == 0
    np.testing.assert_array_equal(data.truncated[t], 1.0)
    bonus = data.soft_reward[t] - data.reward[t]
    assert np.all(bonus != 0)
    expected = data.reward[t] + bonus + agent.gamma * data.next_value[t]
    np.testing.assert_allclose(targets[t], expected, rtol=1e-6)
    assert np.all(np.abs(targets[t] - 1.0) > 1e-3)
