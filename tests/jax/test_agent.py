"""The JAX agent's update as a whole: what the config's schedule does to each step."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo import pytrees
from reppo.envs import make_env
from reppo.jax import distributions as D
from reppo.jax import losses as L
from reppo.jax.agent import Agent
from tests.conftest import TINY
from tests.fakes import STILL_ENV, still_env


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
def test_linear_schedule_scales_the_actor_and_critic_steps(tiny_config, still, iteration):
    """One Adam step is proportional to the learning rate, so in iteration i of n the linear
    schedule's step is (1 - i/n) times the constant schedule's; the temperatures keep theirs."""
    config = tiny_config.replace(env=STILL_ENV, num_epochs=1, num_minibatches=1)
    n = config.num_iterations
    assert n == 4
    before, actor_c, critic_c, temps_c = _one_step_update(config, iteration)
    _, actor_l, critic_l, temps_l = _one_step_update(
        config.replace(lr_schedule="linear"), iteration
    )
    scale = 1.0 - iteration / n
    for start, const, linear in ((before.actor, actor_c, actor_l),
                                 (before.critic, critic_c, critic_l)):
        start, const, linear = (pytrees.flatten(t) for t in (start, const, linear))
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


def test_lr_scale_runs_from_one_to_zero_over_the_budget(tiny_config, still):
    tiny_config = tiny_config.replace(env=STILL_ENV)
    env = make_env(tiny_config.env, tiny_config.num_envs)
    constant = Agent.create(tiny_config, env)
    linear = Agent.create(tiny_config.replace(lr_schedule="linear"), env)
    assert constant.lr_scale(jnp.asarray(2)) is None
    scales = [float(linear.lr_scale(jnp.asarray(i))) for i in range(6)]
    assert scales == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


# ---- correlated exploration noise ----------------------------------------------------------------
def _lag_one_correlation(u):
    """Mean over envs and action dims of the lag-1 autocorrelation along the time axis (0)."""
    u = u - u.mean(axis=0, keepdims=True)
    num = (u[1:] * u[:-1]).mean(axis=0)
    den = np.sqrt(u[1:].var(axis=0) * u[:-1].var(axis=0))
    return float(np.mean(num / den))


_NOISE_CONFIG = {"env": STILL_ENV, "num_envs": 64, "num_steps": 64, "stagger_episodes": False}


@pytest.fixture(scope="module")
def still():
    # Every action is drawn at the same state, so the actions' correlation is the noise's.
    with still_env():
        yield


def _rollout(config):
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    state = agent.init(jax.random.PRNGKey(0))
    _, _, data, _, _ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(1))
    return agent, state, data


def _pre_tanh(actions):
    return np.arctanh(np.clip(np.asarray(actions, np.float64), -0.999999, 0.999999))


@pytest.fixture(scope="module")
def independent_rollout(still):
    return _rollout(TINY.replace(**_NOISE_CONFIG))


def test_correlated_noise_keeps_each_action_a_policy_draw_and_links_consecutive_ones(
    tiny_config, independent_rollout
):
    rho = 0.9
    independent = _pre_tanh(independent_rollout[2].action)
    config = tiny_config.replace(**_NOISE_CONFIG, action_noise_correlation=rho)
    correlated = _pre_tanh(_rollout(config)[2].action)
    assert abs(_lag_one_correlation(independent)) < 0.1
    assert _lag_one_correlation(correlated) == pytest.approx(rho, abs=0.1)
    # The chain's law at every step is N(0, I): the spread of the actions stays the policy's,
    # at the first step of the rollout as at the last.
    spread = independent.std()
    assert correlated.std() == pytest.approx(spread, rel=0.1)
    assert correlated[0].std() == pytest.approx(spread, rel=0.25)
    assert correlated[-1].std() == pytest.approx(spread, rel=0.25)


def test_no_correlation_draws_the_actions_it_always_drew(tiny_config, independent_rollout):
    """0 is the independent noise of before, key for key: runs made before the option
    existed reproduce."""
    agent, state, data = independent_rollout
    # The first action, drawn as the rollout always drew it: the step keys split from the
    # rollout key, the action key the first of each step key's two.
    step_key = jax.random.split(jax.random.PRNGKey(1), agent.config.num_steps)[0]
    k_act, _ = jax.random.split(step_key)
    obs = agent.normalize(state.obs_stats, state.env_state.obs)
    expected, _, _ = D.sample(agent.nets.policy(state.behaviour, obs), k_act)
    np.testing.assert_allclose(np.asarray(data.action[0]), np.asarray(expected), rtol=1e-6)
