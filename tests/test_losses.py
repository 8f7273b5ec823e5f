"""The algorithm's math, checked against hand computations and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from reppo.config import Config
from reppo.jax import distributions as D
from reppo.jax import losses as L
from reppo.jax import normalizer as N
from reppo.jax.networks import Networks


# ---- soft TD(lambda) -----------------------------------------------------------------------------
def _reference_targets(rewards, values, term, trunc, gamma, lam):
    """The recursion written out by hand, one step at a time (single env)."""
    T = len(rewards)
    G = np.zeros(T)
    for t in reversed(range(T)):
        if term[t]:
            G[t] = rewards[t]
        elif trunc[t] or t == T - 1:
            G[t] = rewards[t] + gamma * values[t]
        else:
            G[t] = rewards[t] + gamma * ((1 - lam) * values[t] + lam * G[t + 1])
    return G


def test_td_lambda_hand_computed_example():
    # Steps 0-1 run into a termination at step 1; step 2 starts a new episode that is truncated
    # at step 3; steps 4-5 belong to a third episode cut by the rollout end.
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    v = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0], np.float32)
    term = np.array([0, 1, 0, 0, 0, 0], np.float32)
    trunc = np.array([0, 0, 0, 1, 0, 0], np.float32)
    g, lam = 0.5, 0.8
    G = np.asarray(L.soft_td_lambda(r, v, term, trunc, g, lam))
    # By hand:
    G5 = 6 + g * 60  # rollout end: bootstrap from V_T
    G4 = 5 + g * ((1 - lam) * 50 + lam * G5)
    G3 = 4 + g * 40  # truncation: bootstrap from V(true final obs), no chain into step 4
    G2 = 3 + g * ((1 - lam) * 30 + lam * G3)
    G1 = 2.0  # termination: no bootstrap
    G0 = 1 + g * ((1 - lam) * 10 + lam * G1)
    np.testing.assert_allclose(G, [G0, G1, G2, G3, G4, G5], rtol=1e-6)
    np.testing.assert_allclose(G, _reference_targets(r, v, term, trunc, g, lam), rtol=1e-6)


def test_td_lambda_limits_and_batching():
    rng = np.random.default_rng(0)
    T, B = 7, 5
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    term = (rng.random((T, B)) < 0.2).astype(np.float32)
    trunc = ((rng.random((T, B)) < 0.2) * (1 - term)).astype(np.float32)
    gamma = 0.9
    # lambda = 0: one-step TD targets everywhere.
    G0 = np.asarray(L.soft_td_lambda(r, v, term, trunc, gamma, 0.0))
    np.testing.assert_allclose(G0, r + gamma * (1 - term) * v, rtol=1e-5, atol=1e-6)
    # lambda = 1: discounted Monte-Carlo sums within episodes, bootstrapped at cuts.
    G1 = np.asarray(L.soft_td_lambda(r, v, term, trunc, gamma, 1.0))
    for b in range(B):
        ref = _reference_targets(r[:, b], v[:, b], term[:, b], trunc[:, b], gamma, 1.0)
        np.testing.assert_allclose(G1[:, b], ref, rtol=1e-5, atol=1e-6)
    # Any lambda, batched vs per-column reference.
    G = np.asarray(L.soft_td_lambda(r, v, term, trunc, gamma, 0.7))
    for b in range(B):
        ref = _reference_targets(r[:, b], v[:, b], term[:, b], trunc[:, b], gamma, 0.7)
        np.testing.assert_allclose(G[:, b], ref, rtol=1e-5, atol=1e-6)


# ---- HL-Gauss ------------------------------------------------------------------------------------
SUPPORT = L.Support.create(0.0, 150.0, 151, 0.75)


def test_hl_gauss_targets_are_distributions_recovering_the_value():
    y = jnp.array([0.0, 3.3, 42.0, 75.5, 149.0, 150.0])
    probs = L.hl_gauss_target(y, SUPPORT)
    assert probs.shape == (6, 151)
    assert jnp.all(probs >= 0)
    np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-5)
    expected = jnp.sum(probs * SUPPORT.centers, -1)
    # Inside the support (a few sigma from the edges) the histogram's mean is the scalar.
    np.testing.assert_allclose(expected[1:4], y[1:4], atol=1e-3)
    # At the edges, renormalising the truncated Gaussian pulls the mean inwards by < 1 bin.
    assert 0.0 < expected[0] < 1.0 and 149.0 < expected[-1] < 150.0


def test_hl_gauss_clips_outside_the_support():
    inside = L.hl_gauss_target(jnp.array([0.0, 150.0]), SUPPORT)
    outside = L.hl_gauss_target(jnp.array([-1e3, 1e4]), SUPPORT)
    np.testing.assert_allclose(outside, inside)
    assert int(jnp.argmax(outside[0])) == 0 and int(jnp.argmax(outside[1])) == 150


def test_hl_gauss_value_and_initial_prior():
    logits = jnp.log(L.hl_gauss_target(jnp.array([37.0]), SUPPORT))
    np.testing.assert_allclose(L.hl_gauss_value(logits, SUPPORT), [37.0], atol=1e-3)
    prior = L.initial_value_prior(SUPPORT, 0.0)
    np.testing.assert_allclose(jnp.sum(prior), 1.0, rtol=1e-6)
    # The value head's starting logits are dominated by 40 x the prior: a value near 0.
    assert 0.0 < float(L.hl_gauss_value(40.0 * prior, SUPPORT)) < 0.5


def test_hl_gauss_bins_are_centred_on_the_support_ends():
    # 151 centres 0, 1, ..., 150 (bin width 150 / 150 = 1), edges half a bin outside them.
    np.testing.assert_allclose(SUPPORT.centers, np.arange(151.0), atol=1e-4)
    np.testing.assert_allclose(SUPPORT.edges, np.arange(152.0) - 0.5, atol=1e-4)
    assert SUPPORT.sigma == pytest.approx(0.75)


def test_hl_gauss_sigma_is_ratio_of_bin_width():
    support = L.Support.create(-5.0, 5.0, 21, 0.6)
    assert support.sigma == pytest.approx(0.6 * 10.0 / 20)


# ---- tanh-Gaussian -------------------------------------------------------------------------------
def test_log_prob_matches_numerical_density_summed_over_dims():
    dist = D.Gaussian(jnp.array([0.3, -0.5]), jnp.array([0.4, 0.7]))
    a = np.array([0.2, -0.6])
    u = np.arctanh(a)
    ours = float(D.log_prob_from_pre_tanh(dist, jnp.asarray(u)))
    # Density of tanh(X), X ~ N(m, s): p(a) = N(atanh a) / (1 - a^2), product over dims.
    ref = sum(
        stats.norm.logpdf(u[i], 0.3 if i == 0 else -0.5, 0.4 if i == 0 else 0.7)
        - np.log(1 - a[i] ** 2)
        for i in range(2)
    )
    assert ours == pytest.approx(ref, rel=1e-5)
    # The 1-d squashed density integrates to one.
    d1 = D.Gaussian(jnp.array([0.8]), jnp.array([0.5]))

    def density(x):
        return float(jnp.exp(D.log_prob_from_pre_tanh(d1, jnp.array([np.arctanh(x)]))))

    total, _ = integrate.quad(density, -1 + 1e-9, 1 - 1e-9, limit=200)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_log_prob_is_stable_for_saturated_actions():
    dist = D.Gaussian(jnp.array([8.0, -9.0]), jnp.array([0.1, 0.1]))
    _, u, logp = D.sample(dist, jax.random.PRNGKey(0))
    assert jnp.isfinite(logp)
    assert jnp.abs(jnp.tanh(u)).max() == pytest.approx(1.0)


def test_shapes_are_summed_over_action_dims():
    dist = D.Gaussian(jnp.zeros((32, 6)), jnp.ones((32, 6)))
    action, u, logp = D.sample(dist, jax.random.PRNGKey(1))
    assert action.shape == u.shape == (32, 6)
    assert logp.shape == (32,)
    noise = jax.random.normal(jax.random.PRNGKey(2), (16, 32, 6))
    assert D.sampled_forward_kl(dist, dist, noise).shape == (32,)
    assert D.analytic_kl(dist, dist).shape == (32,)


def test_gaussian_from_head_adds_min_std():
    dist = D.gaussian_from_head(jnp.zeros(3), jnp.array([-50.0, 0.0, 50.0]), 0.1)
    np.testing.assert_allclose(dist.std, [0.1, 1.1, np.exp(2.0) + 0.1], rtol=1e-6)


def test_sampled_kl_matches_analytic_gaussian_kl():
    old = D.Gaussian(jnp.array([0.1, -0.3, 0.5]), jnp.array([0.5, 0.8, 0.3]))
    new = D.Gaussian(jnp.array([0.2, -0.1, 0.4]), jnp.array([0.6, 0.7, 0.35]))
    noise = jax.random.normal(jax.random.PRNGKey(3), (400_000, 3))
    sampled = float(D.sampled_forward_kl(old, new, noise))
    analytic = float(D.analytic_kl(old, new))
    # Closed form of KL(N0 || N1), written independently.
    ref = sum(
        np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5
        for m0, s0, m1, s1 in zip(old.mean, old.std, new.mean, new.std, strict=True)
    )
    assert analytic == pytest.approx(float(ref), rel=1e-5)
    assert sampled == pytest.approx(analytic, rel=0.02)
    assert float(D.analytic_kl(old, old)) == pytest.approx(0.0, abs=1e-7)


# ---- temperatures --------------------------------------------------------------------------------
def _temp_grads(entropy, kl, target_entropy=-3.0, kl_target=0.1):
    temps = L.Temperatures(jnp.log(0.01), jnp.log(0.01))
    return jax.grad(L.temperature_loss)(temps, entropy, kl, target_entropy, kl_target)


def test_alpha_grows_when_entropy_below_target():
    # Gradient descent moves log alpha against its gradient.
    assert _temp_grads(entropy=-5.0, kl=0.1).log_alpha < 0  # below target: alpha grows
    assert _temp_grads(entropy=-1.0, kl=0.1).log_alpha > 0  # above target: alpha shrinks


def test_beta_grows_when_kl_above_target():
    assert _temp_grads(entropy=-3.0, kl=0.5).log_beta < 0  # above target: beta grows
    assert _temp_grads(entropy=-3.0, kl=0.01).log_beta > 0  # below target: beta shrinks


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
