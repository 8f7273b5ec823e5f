"""The JAX backend's own modules: the losses against their definitions, the networks' layout,
normalization and the HL-Gauss bin width. The math both backends share (soft TD(lambda), HL-Gauss
targets, the tanh-Gaussian, temperatures) is checked on both in tests/test_math.py; cross-backend
equality on the same weights is in tests/test_parity.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.config import Config
from reppo.jax import distributions as D
from reppo.jax import losses as L
from reppo.jax import normalizer as N
from reppo.jax.networks import Networks


# ---- HL-Gauss ------------------------------------------------------------------------------------
def test_hl_gauss_sigma_is_ratio_of_bin_width():
    support = L.Support.create(-5.0, 5.0, 21, 0.6)
    assert support.sigma == pytest.approx(0.6 * 10.0 / 20)


# ---- actor and critic losses ---------------------------------------------------------------------
def _nets(**overrides):
    config = Config(
        actor_hidden_dim=16, critic_hidden_dim=16, num_bins=21, **overrides
    ).validated()
    return Networks.from_config(config, obs_size=5, action_size=3)


SMALL_SUPPORT = L.Support.create(0.0, 10.0, 21, 0.75)


def _init_critic(nets, key):
    prior = L.initial_value_prior(SMALL_SUPPORT) if nets.value_outputs > 1 else None
    return nets.init_critic(key, prior)


def _actor_setup(objective, kl_target=None):
    nets = _nets()
    k = jax.random.split(jax.random.PRNGKey(0), 7)
    actor = nets.init_actor(k[0])
    # A perturbed copy, so the KL is non-zero and varies across states.
    leaves, treedef = jax.tree_util.tree_flatten(actor)
    noise_keys = jax.random.split(k[6], len(leaves))
    behaviour = jax.tree_util.tree_unflatten(
        treedef,
        [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise_keys, strict=True)],
    )
    critic = _init_critic(nets, k[2])
    obs = jax.random.normal(k[3], (64, 5))
    temps = L.Temperatures(jnp.log(0.2), jnp.log(3.0))
    noise = jax.random.normal(k[4], (64, 3))
    kl_noise = jax.random.normal(k[5], (16, 64, 3))
    support = L.Support.create(0.0, 10.0, 21, 0.75)
    if kl_target is None:  # the median KL: half the states on each branch of "clipped"
        kl = D.sampled_forward_kl(nets.policy(behaviour, obs), nets.policy(actor, obs), kl_noise)
        kl_target = float(jnp.median(kl))
    args = (nets, critic, behaviour, obs, temps, noise, kl_noise, support, objective, kl_target)
    return actor, args


@pytest.mark.parametrize("objective", ["clipped", "full", "value"])
def test_actor_loss_matches_its_definition(objective):
    actor, args = _actor_setup(objective)
    nets, critic, behaviour, obs, temps, noise, kl_noise, support, _, kl_target = args
    loss, metrics = L.actor_loss(actor, *args)
    dist = nets.policy(actor, obs)
    action, _, logp = D.sample_from_noise(dist, noise)
    q = L.critic_value(nets, critic, obs, action, support)
    kl = D.sampled_forward_kl(nets.policy(behaviour, obs), dist, kl_noise)
    alpha, beta = 0.2, 3.0
    ref = {
        "clipped": jnp.where(kl < kl_target, alpha * logp - q, beta * kl),
        "full": alpha * logp - q + beta * kl,
        "value": alpha * logp - q,
    }[objective]
    assert float(loss) == pytest.approx(float(jnp.mean(ref)), rel=1e-5)
    assert float(metrics["entropy"]) == pytest.approx(float(-jnp.mean(logp)), rel=1e-5)
    if objective == "clipped":
        frac = float(metrics["actor/kl_clipped_fraction"])
        assert 0.0 < frac < 1.0  # the example exercises both branches


def test_actor_loss_gives_no_gradient_to_critic_behaviour_or_temperatures():
    actor, args = _actor_setup("full")
    nets, critic, behaviour, obs, temps, *rest = args

    def loss_wrt(critic, behaviour, temps):
        return L.actor_loss(actor, nets, critic, behaviour, obs, temps, *rest)[0]

    grads = jax.grad(loss_wrt, argnums=(0, 1, 2))(critic, behaviour, temps)
    for g in jax.tree_util.tree_leaves(grads):
        assert float(jnp.abs(g).max()) == 0.0
    actor_grads = jax.grad(lambda a: L.actor_loss(a, *args)[0])(actor)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(actor_grads)) > 0


def _critic_batch(n=32, terminated=None):
    k = jax.random.split(jax.random.PRNGKey(7), 5)
    return L.CriticBatch(
        obs=jax.random.normal(k[0], (n, 5)),
        action=jnp.tanh(jax.random.normal(k[1], (n, 3))),
        reward=jax.random.uniform(k[2], (n,)),
        target=jax.random.uniform(k[3], (n,)) * 10,
        next_latent=jax.random.normal(k[4], (n, 16)),
        terminated=jnp.zeros((n,)) if terminated is None else terminated,
    )


def test_critic_loss_hl_gauss_is_cross_entropy_plus_aux():
    nets = _nets()
    params = _init_critic(nets, jax.random.PRNGKey(0))
    support = L.Support.create(0.0, 10.0, 21, 0.75)
    batch = _critic_batch()
    loss, m = L.critic_loss(params, nets, batch, support, aux_loss_mult=0.5)
    latent = nets.encode(params, batch.obs, batch.action)
    logits = nets.value_head(params, latent)
    ce = -jnp.mean(jnp.sum(L.hl_gauss_target(batch.target, support)
                           * jax.nn.log_softmax(logits), -1))
    pred, rew = nets.predict(params, latent)
    # One squared error per predictor output (16 latent entries and the reward), averaged.
    sq = (pred - batch.next_latent) ** 2
    aux = jnp.mean((jnp.sum(sq, -1) + (rew - batch.reward) ** 2) / 17.0)
    assert float(loss) == pytest.approx(float(ce + 0.5 * aux), rel=1e-5)
    assert float(m["loss/critic"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(m["loss/aux"]) == pytest.approx(float(aux), rel=1e-5)


def test_reward_prediction_weighs_as_one_latent_entry_and_is_masked():
    nets = _nets()
    params = _init_critic(nets, jax.random.PRNGKey(0))
    term = jnp.zeros(32).at[:8].set(1.0)
    batch = _critic_batch(terminated=term)
    _, m = L.critic_loss(params, nets, batch, SMALL_SUPPORT, 1.0)
    # A reward error of 17 on every live transition adds 17^2 / 17 = 17 to the aux loss ...
    _, shifted = L.critic_loss(
        params, nets, batch._replace(reward=batch.reward + 17.0), SMALL_SUPPORT, 1.0
    )
    pred, rew = nets.predict(params, nets.encode(params, batch.obs, batch.action))
    alive = 1.0 - term
    cross = 2 * 17.0 * jnp.sum(alive * (batch.reward - rew)) / jnp.sum(alive) / 17.0
    assert float(shifted["loss/aux"] - m["loss/aux"]) == pytest.approx(
        float(17.0 + cross), rel=1e-4
    )
    # ... and nothing for terminated ones.
    _, term_only = L.critic_loss(
        params, nets, batch._replace(reward=batch.reward.at[:8].add(1e3)), SMALL_SUPPORT, 1.0
    )
    assert float(term_only["loss/aux"]) == pytest.approx(float(m["loss/aux"]), rel=1e-6)


def test_critic_loss_masks_latent_prediction_of_terminated_transitions():
    nets = _nets(reward_prediction=False)
    params = _init_critic(nets, jax.random.PRNGKey(0))
    term = jnp.zeros(32).at[:8].set(1.0)
    batch = _critic_batch(terminated=term)
    # Changing the targets of terminated transitions must not change the aux loss.
    batch2 = batch._replace(next_latent=batch.next_latent.at[:8].add(100.0))
    _, m1 = L.critic_loss(params, nets, batch, None, 1.0)
    _, m2 = L.critic_loss(params, nets, batch2, None, 1.0)
    assert float(m1["loss/aux"]) == pytest.approx(float(m2["loss/aux"]), rel=1e-6)


def test_scalar_critic_ablation_uses_squared_error():
    nets = _nets(use_hl_gauss=False)
    params = _init_critic(nets, jax.random.PRNGKey(0))
    batch = _critic_batch()
    _, m = L.critic_loss(params, nets, batch, None, 0.0)
    q = nets.value_head(params, nets.encode(params, batch.obs, batch.action))[..., 0]
    assert float(m["loss/critic"]) == pytest.approx(
        float(0.5 * jnp.mean((q - batch.target) ** 2)), rel=1e-5
    )


# ---- networks and normalization ------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["rms", "layer", "none"])
def test_network_shapes_and_layer_counts(norm):
    nets = _nets(norm=norm)
    actor = nets.init_actor(jax.random.PRNGKey(0))
    assert sorted(actor) == ["hidden_0", "hidden_1", "output"]  # 3 layers
    critic = _init_critic(nets, jax.random.PRNGKey(1))
    assert sorted(critic) == ["encoder", "head", "predictor", "value_prior"]
    assert sorted(critic["encoder"]) == ["hidden_0", "output"]  # 2 layers, raw latent
    assert critic["encoder"]["output"]["kernel"].shape == (16, 16)
    assert sorted(critic["head"]) == ["hidden_0", "output"]
    assert critic["value_prior"].shape == (21,)
    assert critic["head"]["output"]["kernel"].shape == (16, 21)
    assert critic["predictor"]["output"]["kernel"].shape == (16, 17)  # latent + reward
    dist = nets.policy(actor, jnp.ones((4, 5)))
    assert dist.mean.shape == dist.std.shape == (4, 3)
    assert bool(jnp.all(dist.std >= 0.1))


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = [rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32) for _ in range(3)]
    stats = N.init_stats(4)
    for batch in data:
        stats = N.update_stats(stats, jnp.asarray(batch))
    everything = np.concatenate(data)
    np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-4)
    assert float(stats.count) == 150
    z = N.normalize(stats, jnp.asarray(everything))
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-4)
