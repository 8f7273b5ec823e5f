"""The JAX agent's update as a whole: what the config's schedule does to each step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import make_env
from reppo.jax import losses as L
from reppo.jax import tree_io
from reppo.jax.agent import Agent


def _one_step_update(config, iteration):
    """Parameters before and after one minibatch step of iteration `iteration`."""
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    state = agent.init(jax.random.PRNGKey(0))._replace(iteration=jnp.asarray(iteration))
    _, _, data, _, _ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(1))
    targets = L.soft_td_lambda(
        data.soft_reward, data.next_value, data.terminated, data.truncated, agent.gamma,
        config.lam,
    )
    columns = {**data._asdict(), "target": targets}
    flat = {n: x.reshape(-1, *x.shape[2:]) for n, x in columns.items()}
    (actor, critic, temps, *_), _ = jax.jit(agent.update)(state, flat, jax.random.PRNGKey(2))
    return state, actor, critic, temps


@pytest.mark.parametrize("iteration", [0, 1, 3])
def test_linear_schedule_scales_the_actor_and_critic_steps(tiny_config, iteration):
    """One Adam step is proportional to the learning rate, so in iteration i of n the linear
    schedule's step is (1 - i/n) times the constant schedule's; the temperatures keep theirs."""
    config = tiny_config.replace(num_epochs=1, num_minibatches=1)
    n = config.num_iterations
    assert n == 4
    before, actor_c, critic_c, temps_c = _one_step_update(config, iteration)
    _, actor_l, critic_l, temps_l = _one_step_update(
        config.replace(lr_schedule="linear"), iteration
    )
    scale = 1.0 - iteration / n
    for start, const, linear in ((before.actor, actor_c, actor_l),
                                 (before.critic, critic_c, critic_l)):
        start, const, linear = (tree_io.flatten(t) for t in (start, const, linear))
        moved = 0.0
        for name in start:
            step_c = np.asarray(const[name]) - np.asarray(start[name])
            step_l = np.asarray(linear[name]) - np.asarray(start[name])
            np.testing.assert_allclose(step_l, scale * step_c, rtol=1e-4, atol=1e-7,
                                       err_msg=name)
            moved = max(moved, float(np.abs(step_c).max()))
        assert moved > 1e-4  # the constant schedule did move these parameters
    np.testing.assert_array_equal(np.asarray(temps_l.log_alpha), np.asarray(temps_c.log_alpha))
    np.testing.assert_array_equal(np.asarray(temps_l.log_beta), np.asarray(temps_c.log_beta))


def test_lr_scale_runs_from_one_to_zero_over_the_budget(tiny_config):
    env = make_env(tiny_config.env, tiny_config.num_envs)
    constant = Agent.create(tiny_config, env)
    linear = Agent.create(tiny_config.replace(lr_schedule="linear"), env)
    assert constant.lr_scale(jnp.asarray(2)) is None
    scales = [float(linear.lr_scale(jnp.asarray(i))) for i in range(6)]
    assert scales == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
