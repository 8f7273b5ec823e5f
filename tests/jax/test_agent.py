"""The JAX agent's update as a whole: what the config's schedule does to each step."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo import pytrees
from reppo.envs import make_env
from reppo.envs.user import register_env, unregister_env
from reppo.jax import distributions as D
from reppo.jax import losses as L
from reppo.jax.agent import Agent
from tests.conftest import TINY
from tests.fakes import STILL_ENV, StillState, still_env


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


# ---- envs whose state moves ----------------------------------------------------------------------
class _Cart:
    """A frictionless cart on a line, pushed by the action: v += 0.1 a, x += 0.1 v; the
    observation is (x, v) and the reward exp(-x^2). Unlike `_Still`, the state carries the
    past actions, so whatever the noise remembers of them shows in the state."""

    action_size = 1

    def reset(self, rng):
        del rng
        return StillState(jnp.zeros(2), jnp.zeros(()), jnp.zeros(()))

    def step(self, state, action):
        x, v = state.obs[0], state.obs[1]
        v = v + 0.1 * action[0]
        x = x + 0.1 * v
        return StillState(jnp.stack([x, v]), jnp.exp(-x * x), jnp.zeros(()))


@pytest.fixture(scope="module")
def cart_env():
    register_env("CartForAgentTests", _Cart, episode_length=1000, reward_range=(0.0, 1.0))
    yield
    unregister_env("CartForAgentTests")


_CART_CONFIG = {"env": "CartForAgentTests", "stagger_episodes": False}


def test_several_bootstrap_actions_average_the_value_of_the_same_draws(cart_env):
    """V(x') with num_bootstrap_samples K = 3 is the mean of Q(x', a'_k) over the K actions
    drawn from the step's bootstrap key, and the soft reward's bonus the mean of their log pi:
    recomputed here by hand from the same keys."""
    k = 3
    config = TINY.replace(**_CART_CONFIG, num_envs=8, num_steps=6, num_bootstrap_samples=k)
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    state = agent.init(jax.random.PRNGKey(0))
    # A fresh critic's values are its prior's, nearly the same for every action: perturb it
    # so that the K actions' values differ and an average of the wrong draws shows.
    leaves, tree = jax.tree_util.tree_flatten(state.critic)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    leaves = [x + 0.5 * jax.random.normal(kk, x.shape, x.dtype)
              for x, kk in zip(leaves, keys, strict=True)]
    state = state._replace(critic=jax.tree_util.tree_unflatten(tree, leaves))
    _, _, data, raw_obs, _ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(1))
    nets, critic = agent.nets, state.critic
    alpha = float(jnp.exp(state.temps.log_alpha))

    @jax.jit
    def by_hand(step_key, next_raw_obs):
        _, k_boot = jax.random.split(step_key)
        next_obs = agent.normalize(state.obs_stats, next_raw_obs)
        dist = nets.policy(state.behaviour, next_obs)
        noise = jax.random.normal(k_boot, (k, *dist.mean.shape), jnp.float32)
        actions, _, log_probs = D.sample_from_noise(dist, noise)
        latents = nets.encode(critic, jnp.broadcast_to(next_obs, (k, *next_obs.shape)), actions)
        return L.hl_gauss_value(nets.value_head(critic, latents), agent.support), log_probs, latents

    step_keys = jax.random.split(jax.random.PRNGKey(1), config.num_steps)
    single_sample_gap = 0.0
    for t in range(config.num_steps):
        # No episode ends here, so the true next observation is the next one acted on.
        values, log_probs, latents = by_hand(step_keys[t], raw_obs[t])
        np.testing.assert_allclose(np.asarray(data.next_value[t]),
                                   np.asarray(values.mean(axis=0)), rtol=1e-5, atol=1e-5)
        expected_reward = data.reward[t] - agent.gamma * alpha * log_probs.mean(axis=0)
        np.testing.assert_allclose(np.asarray(data.soft_reward[t]),
                                   np.asarray(expected_reward), rtol=1e-5, atol=1e-6)
        # The self-prediction target is the latent of the first of the K actions.
        np.testing.assert_allclose(np.asarray(data.next_latent[t]), np.asarray(latents[0]),
                                   rtol=1e-5, atol=1e-6)
        single_sample_gap = max(single_sample_gap,
                                float(jnp.abs(values[0] - values.mean(axis=0)).max()))
    # The K draws differ, so a target of one of them alone would have failed the checks above.
    assert single_sample_gap > 1e-4
    assert float(jnp.abs(data.reward).max()) > 0 and not np.asarray(data.terminated).any()


def _noise_and_velocity(config):
    """The rollout's exploration noise eps_t, recovered from the executed pre-tanh actions
    (u = mu + sigma * eps at the stored observation), and the cart's velocity there."""
    agent, state, data = _rollout(config)
    dist = agent.nets.policy(state.behaviour, data.obs)
    eps = (_pre_tanh(data.action) - np.asarray(dist.mean)) / np.asarray(dist.std)
    return eps[1:, :, 0].ravel(), np.asarray(data.obs)[1:, :, 1].ravel()


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_correlated_noise_leans_the_way_the_state_moves(cart_env, rho):
    """Each action is a draw of pi only marginally: with rho > 0 the noise given the state
    leans in the direction of motion, which the previous steps' noise caused (the bias
    docs/algorithm.md states); with rho = 0 it is independent of the state."""
    config = TINY.replace(**_CART_CONFIG, num_envs=64, num_steps=64,
                          action_noise_correlation=rho)
    eps, velocity = _noise_and_velocity(config)
    assert eps.std() == pytest.approx(1.0, abs=0.1)  # marginally N(0, 1) either way
    slow, fast = np.quantile(velocity, [0.1, 0.9])
    lean = eps[velocity >= fast].mean() - eps[velocity <= slow].mean()
    correlation = np.corrcoef(eps, velocity)[0, 1]
    if rho == 0.0:
        assert abs(correlation) < 0.06 and abs(lean) < 0.25
    else:
        assert correlation > 0.08 and lean > 0.5
