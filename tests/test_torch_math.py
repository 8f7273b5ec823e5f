"""The algorithm's math in the PyTorch backend, checked against hand computations and closed forms.

Tests of pure math take a `backend` parameter and run on both reppo.jax and reppo.torch through
small numpy-in/numpy-out adapters; tests of torch modules (parameter layout, load_flat,
torch.compile, devices) are torch only. Cross-backend equality on the same weights is in
test_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from reppo.config import Config
from reppo.torch import distributions as TD
from reppo.torch import losses as TL
from reppo.torch import normalizer as TN
from reppo.torch.networks import Actor, Critic, FlatMismatchError, load_flat, to_flat


# ---- the two backends behind one numpy interface ----------------------------------------------
class _TorchBackend:
    name = "torch"

    @staticmethod
    def _t(x):
        return torch.as_tensor(np.asarray(x, np.float32))

    @staticmethod
    def np(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    def td(self, r, v, term, trunc, gamma, lam):
        args = [self._t(x) for x in (r, v, term, trunc)]
        return self.np(TL.soft_td_lambda(*args, gamma, lam))

    def support(self, v_min, v_max, num_bins, sigma_ratio):
        return TL.Support.create(v_min, v_max, num_bins, sigma_ratio)

    def hl_target(self, y, support):
        return self.np(TL.hl_gauss_target(self._t(y), support))

    def hl_value(self, logits, support):
        return self.np(TL.hl_gauss_value(self._t(logits), support))

    def initial_prior(self, support, value):
        return self.np(TL.initial_value_prior(support, value))

    def gaussian(self, mean, std):
        return TD.Gaussian(self._t(mean), self._t(std))

    def gaussian_from_head(self, mean, log_std, min_std):
        return TD.gaussian_from_head(self._t(mean), self._t(log_std), min_std)

    def log_prob(self, dist, u):
        return self.np(TD.log_prob_from_pre_tanh(dist, self._t(u)))

    def sample(self, dist, seed):
        gen = torch.Generator().manual_seed(seed)
        return tuple(self.np(x) for x in TD.sample(dist, gen))

    def sampled_kl(self, old, new, noise):
        return self.np(TD.sampled_forward_kl(old, new, self._t(noise)))

    def analytic_kl(self, old, new):
        return self.np(TD.analytic_kl(old, new))

    def temp_grads(self, log_alpha, log_beta, entropy, kl, target_entropy, kl_target):
        la = torch.tensor(log_alpha, requires_grad=True)
        lb = torch.tensor(log_beta, requires_grad=True)
        TL.temperature_loss(la, lb, entropy, kl, target_entropy, kl_target).backward()
        return float(la.grad), float(lb.grad)


class _JaxBackend:
    name = "jax"

    def __init__(self):
        self.jax = pytest.importorskip("jax")
        self.jnp = self.jax.numpy
        from reppo.jax import distributions as JD
        from reppo.jax import losses as JL

        self.D, self.L = JD, JL

    def _a(self, x):
        return self.jnp.asarray(np.asarray(x, np.float32))

    @staticmethod
    def np(x):
        return np.asarray(x)

    def td(self, r, v, term, trunc, gamma, lam):
        args = [self._a(x) for x in (r, v, term, trunc)]
        return self.np(self.L.soft_td_lambda(*args, gamma, lam))

    def support(self, v_min, v_max, num_bins, sigma_ratio):
        return self.L.Support.create(v_min, v_max, num_bins, sigma_ratio)

    def hl_target(self, y, support):
        return self.np(self.L.hl_gauss_target(self._a(y), support))

    def hl_value(self, logits, support):
        return self.np(self.L.hl_gauss_value(self._a(logits), support))

    def initial_prior(self, support, value):
        return self.np(self.L.initial_value_prior(support, value))

    def gaussian(self, mean, std):
        return self.D.Gaussian(self._a(mean), self._a(std))

    def gaussian_from_head(self, mean, log_std, min_std):
        return self.D.gaussian_from_head(self._a(mean), self._a(log_std), min_std)

    def log_prob(self, dist, u):
        return self.np(self.D.log_prob_from_pre_tanh(dist, self._a(u)))

    def sample(self, dist, seed):
        return tuple(self.np(x) for x in self.D.sample(dist, self.jax.random.PRNGKey(seed)))

    def sampled_kl(self, old, new, noise):
        return self.np(self.D.sampled_forward_kl(old, new, self._a(noise)))

    def analytic_kl(self, old, new):
        return self.np(self.D.analytic_kl(old, new))

    def temp_grads(self, log_alpha, log_beta, entropy, kl, target_entropy, kl_target):
        temps = self.L.Temperatures(self._a(log_alpha), self._a(log_beta))
        grads = self.jax.grad(self.L.temperature_loss)(
            temps, entropy, kl, target_entropy, kl_target
        )
        return float(grads.log_alpha), float(grads.log_beta)


@pytest.fixture(params=["jax", "torch"], scope="module")
def backend(request):
    return _JaxBackend() if request.param == "jax" else _TorchBackend()


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


def test_td_lambda_hand_computed_example(backend):
    # Steps 0-1 run into a termination at step 1; step 2 starts a new episode that is truncated
    # at step 3; steps 4-5 belong to a third episode cut by the rollout end.
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    v = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0], np.float32)
    term = np.array([0, 1, 0, 0, 0, 0], np.float32)
    trunc = np.array([0, 0, 0, 1, 0, 0], np.float32)
    g, lam = 0.5, 0.8
    G = backend.td(r, v, term, trunc, g, lam)
    G5 = 6 + g * 60  # rollout end: bootstrap from V_T
    G4 = 5 + g * ((1 - lam) * 50 + lam * G5)
    G3 = 4 + g * 40  # truncation: bootstrap from V(true final obs), no chain into step 4
    G2 = 3 + g * ((1 - lam) * 30 + lam * G3)
    G1 = 2.0  # termination: no bootstrap
    G0 = 1 + g * ((1 - lam) * 10 + lam * G1)
    np.testing.assert_allclose(G, [G0, G1, G2, G3, G4, G5], rtol=1e-6)
    np.testing.assert_allclose(G, _reference_targets(r, v, term, trunc, g, lam), rtol=1e-6)


def test_td_lambda_limits_and_batching(backend):
    rng = np.random.default_rng(0)
    T, B = 7, 5
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    term = (rng.random((T, B)) < 0.2).astype(np.float32)
    trunc = ((rng.random((T, B)) < 0.2) * (1 - term)).astype(np.float32)
    gamma = 0.9
    # lambda = 0: one-step TD targets everywhere.
    G0 = backend.td(r, v, term, trunc, gamma, 0.0)
    np.testing.assert_allclose(G0, r + gamma * (1 - term) * v, rtol=1e-5, atol=1e-6)
    # lambda = 1: discounted Monte-Carlo sums within episodes, bootstrapped at cuts; and any
    # lambda, batched vs the per-column reference.
    for lam in (1.0, 0.7):
        G = backend.td(r, v, term, trunc, gamma, lam)
        for b in range(B):
            ref = _reference_targets(r[:, b], v[:, b], term[:, b], trunc[:, b], gamma, lam)
            np.testing.assert_allclose(G[:, b], ref, rtol=1e-5, atol=1e-6)


def test_torch_td_lambda_accepts_bool_flags():
    r, v = torch.ones(4, 2), torch.full((4, 2), 2.0)
    flags = torch.zeros(4, 2, dtype=torch.bool)
    as_bool = TL.soft_td_lambda(r, v, flags, flags, 0.9, 0.95)
    as_float = TL.soft_td_lambda(r, v, flags.float(), flags.float(), 0.9, 0.95)
    torch.testing.assert_close(as_bool, as_float)


# ---- HL-Gauss ------------------------------------------------------------------------------------
def test_hl_gauss_targets_are_distributions_recovering_the_value(backend):
    support = backend.support(0.0, 150.0, 151, 0.75)
    centers = backend.np(support.centers)
    y = np.array([0.0, 3.3, 42.0, 75.5, 149.0, 150.0], np.float32)
    probs = backend.hl_target(y, support)
    assert probs.shape == (6, 151)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    expected = np.sum(probs * centers, -1)
    # Inside the support (a few sigma from the edges) the histogram's mean is the scalar.
    np.testing.assert_allclose(expected[1:4], y[1:4], atol=1e-3)
    # At the edges, renormalising the truncated Gaussian pulls the mean inwards by < 1 bin.
    assert 0.0 < expected[0] < 1.0 and 149.0 < expected[-1] < 150.0
    assert support.sigma == pytest.approx(0.75 * 150.0 / 150)  # width: span / (bins - 1)


def test_hl_gauss_clips_outside_the_support(backend):
    support = backend.support(0.0, 150.0, 151, 0.75)
    inside = backend.hl_target([0.0, 150.0], support)
    outside = backend.hl_target([-1e3, 1e4], support)
    np.testing.assert_allclose(outside, inside)
    assert int(np.argmax(outside[0])) == 0 and int(np.argmax(outside[1])) == 150


def test_hl_gauss_value_and_initial_prior(backend):
    support = backend.support(0.0, 150.0, 151, 0.75)
    with np.errstate(divide="ignore"):  # empty far-tail bins: logit -inf, probability 0
        logits = np.log(backend.hl_target([37.0], support))
    np.testing.assert_allclose(backend.hl_value(logits, support), [37.0], atol=1e-3)
    prior = backend.initial_prior(support, 0.0)
    assert prior.shape == (151,)
    np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-6)
    # 40 x the prior (the value head's starting logits) predicts a value near 0 ...
    assert 0.0 < float(backend.hl_value(40.0 * prior, support)) < 0.5
    # ... and 40 x the histogram of any value inside the support predicts that value.
    prior = backend.initial_prior(support, 60.0)
    assert float(backend.hl_value(40.0 * prior, support)) == pytest.approx(60.0, abs=1e-2)


def test_hl_gauss_centres_span_the_support(backend):
    support = backend.support(-10.0, 10.0, 21, 0.75)
    np.testing.assert_allclose(backend.np(support.centers), np.arange(-10.0, 11.0), atol=1e-5)
    np.testing.assert_allclose(backend.np(support.edges), np.arange(-10.5, 11.0), atol=1e-5)
    assert support.sigma == pytest.approx(0.75)


# ---- tanh-Gaussian -------------------------------------------------------------------------------
def test_log_prob_matches_numerical_density_summed_over_dims(backend):
    mean, std = np.array([0.3, -0.5]), np.array([0.4, 0.7])
    dist = backend.gaussian(mean, std)
    a = np.array([0.2, -0.6])
    u = np.arctanh(a)
    ours = float(backend.log_prob(dist, u))
    # Density of tanh(X), X ~ N(m, s): p(a) = N(atanh a) / (1 - a^2), product over dims.
    ref = sum(stats.norm.logpdf(u[i], mean[i], std[i]) - np.log(1 - a[i] ** 2) for i in range(2))
    assert ours == pytest.approx(ref, rel=1e-5)
    # The 1-d squashed density integrates to one.
    d1 = backend.gaussian([0.8], [0.5])

    def density(x):
        return float(np.exp(backend.log_prob(d1, [np.arctanh(x)])))

    total, _ = integrate.quad(density, -1 + 1e-9, 1 - 1e-9, limit=200)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_log_prob_is_stable_for_saturated_actions(backend):
    dist = backend.gaussian([8.0, -9.0], [0.1, 0.1])
    action, u, logp = backend.sample(dist, 0)
    assert np.isfinite(logp)
    assert np.abs(np.tanh(u)).max() == pytest.approx(1.0)
    np.testing.assert_allclose(action, np.tanh(u), atol=1e-6)


def test_shapes_are_summed_over_action_dims(backend):
    dist = backend.gaussian(np.zeros((32, 6)), np.ones((32, 6)))
    action, u, logp = backend.sample(dist, 1)
    assert action.shape == u.shape == (32, 6)
    assert logp.shape == (32,)
    noise = np.random.default_rng(2).normal(size=(16, 32, 6))
    assert backend.sampled_kl(dist, dist, noise).shape == (32,)
    assert backend.analytic_kl(dist, dist).shape == (32,)


def test_gaussian_from_head_adds_min_std(backend):
    dist = backend.gaussian_from_head(np.zeros(3), np.array([-50.0, 0.0, 50.0]), 0.1)
    np.testing.assert_allclose(backend.np(dist.std), [0.1, 1.1, np.exp(2.0) + 0.1], rtol=1e-6)


def test_sampled_kl_matches_analytic_gaussian_kl(backend):
    m0, s0 = np.array([0.1, -0.3, 0.5]), np.array([0.5, 0.8, 0.3])
    m1, s1 = np.array([0.2, -0.1, 0.4]), np.array([0.6, 0.7, 0.35])
    old, new = backend.gaussian(m0, s0), backend.gaussian(m1, s1)
    noise = np.random.default_rng(3).normal(size=(400_000, 3)).astype(np.float32)
    sampled = float(backend.sampled_kl(old, new, noise))
    analytic = float(backend.analytic_kl(old, new))
    # Closed form of KL(N0 || N1), written independently.
    ref = np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5)
    assert analytic == pytest.approx(float(ref), rel=1e-5)
    assert sampled == pytest.approx(analytic, rel=0.02)
    assert float(backend.analytic_kl(old, old)) == pytest.approx(0.0, abs=1e-7)


def test_torch_sample_is_reproducible_with_a_generator():
    dist = TD.Gaussian(torch.zeros(4, 2), torch.ones(4, 2))
    first = TD.sample(dist, torch.Generator().manual_seed(5))
    second = TD.sample(dist, torch.Generator().manual_seed(5))
    for x, y in zip(first, second, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(TD.deterministic_action(dist), torch.zeros(4, 2))


# ---- temperatures --------------------------------------------------------------------------------
def _temp_grads(backend, entropy, kl):
    return backend.temp_grads(
        np.log(0.01), np.log(0.01), entropy, kl, target_entropy=-3.0, kl_target=0.1
    )


def test_alpha_grows_when_entropy_below_target(backend):
    # Gradient descent moves log alpha against its gradient.
    assert _temp_grads(backend, entropy=-5.0, kl=0.1)[0] < 0  # below target: alpha grows
    assert _temp_grads(backend, entropy=-1.0, kl=0.1)[0] > 0  # above target: alpha shrinks


def test_beta_grows_when_kl_above_target(backend):
    assert _temp_grads(backend, entropy=-3.0, kl=0.5)[1] < 0  # above target: beta grows
    assert _temp_grads(backend, entropy=-3.0, kl=0.01)[1] > 0  # below target: beta shrinks


# ---- torch networks ------------------------------------------------------------------------------
def _config(**overrides) -> Config:
    return Config(actor_hidden_dim=16, critic_hidden_dim=16, num_bins=21, **overrides).validated()


@pytest.mark.parametrize("norm", ["rms", "layer", "none"])
def test_network_names_shapes_and_layer_counts(norm):
    torch.manual_seed(0)
    actor = Actor(_config(norm=norm), obs_size=5, action_size=3)
    names = set(to_flat(actor))
    norm_params = {"rms": ["scale"], "layer": ["bias", "scale"], "none": []}[norm]
    expected = {"output/kernel", "output/bias"}
    for i in range(2):  # 3 layers: 2 hidden blocks and the output
        expected |= {f"hidden_{i}/linear/kernel", f"hidden_{i}/linear/bias"}
        expected |= {f"hidden_{i}/norm/{p}" for p in norm_params}
    assert names == expected
    assert actor.hidden_0.linear.kernel.shape == (5, 16)
    assert actor.output.kernel.shape == (16, 6)

    critic = Critic(_config(norm=norm), obs_size=5, action_size=3)
    flat = to_flat(critic)
    assert {n.split("/")[1] for n in flat if n.startswith("encoder/")} == {"hidden_0", "output"}
    assert {n.split("/")[1] for n in flat if n.startswith("head/")} == {"hidden_0", "output"}
    assert flat["encoder/hidden_0/linear/kernel"].shape == (8, 16)
    assert flat["head/output/kernel"].shape == (16, 21)
    assert flat["value_prior"].shape == (21,)
    assert flat["predictor/output/kernel"].shape == (16, 17)  # latent + reward
    assert all(v.dtype == np.float32 for v in flat.values())

    dist = actor(torch.ones(4, 5))
    assert dist.mean.shape == dist.std.shape == (4, 3)
    assert bool(torch.all(dist.std >= 0.1))
    latent = critic.encode(torch.ones(4, 5), torch.zeros(4, 3))
    next_latent, reward = critic.predict(latent)
    assert latent.shape == next_latent.shape == (4, 16) and reward.shape == (4,)
    assert critic.value_head(latent).shape == (4, 21)


def test_scalar_critic_without_reward_prediction_shapes():
    critic = Critic(_config(use_hl_gauss=False, reward_prediction=False), 5, 3)
    latent = critic.encode(torch.ones(4, 5), torch.zeros(4, 3))
    assert critic.value_head(latent).shape == (4, 1)
    next_latent, reward = critic.predict(latent)
    assert next_latent.shape == (4, 16)
    torch.testing.assert_close(reward, torch.zeros(4))


def test_initialisation_is_orthogonal_with_zero_bias():
    torch.manual_seed(0)
    actor = Actor(Config(actor_hidden_dim=512).validated(), obs_size=400, action_size=2)
    first, second = actor.hidden_0.linear.kernel.detach(), actor.hidden_1.linear.kernel.detach()
    # (400, 512): orthonormal rows; (512, 512): an orthogonal matrix.
    torch.testing.assert_close(first @ first.T, torch.eye(400), atol=1e-4, rtol=0)
    torch.testing.assert_close(second.T @ second, torch.eye(512), atol=1e-4, rtol=0)
    assert not actor.hidden_0.linear.bias.any()
    assert torch.all(actor.hidden_0.norm.scale == 1)


def test_value_prior_starts_the_critic_at_the_chosen_value():
    support = TL.Support.create(-10.0, 10.0, 21, 0.75)
    critic = Critic(_config(), 5, 3, value_prior=TL.initial_value_prior(support, 2.0))
    q = TL.critic_value(critic, torch.randn(64, 5), torch.randn(64, 3), support)
    # The head's random output (order one) barely moves 40 x the prior's logits.
    assert float((q.detach() - 2.0).abs().max()) < 0.5
    assert critic.value_prior.requires_grad
    with pytest.raises(ValueError, match="value_prior"):
        Critic(_config(), 5, 3, value_prior=np.zeros(7, np.float32))


def test_load_flat_round_trip_and_prefixes():
    torch.manual_seed(0)
    source, target = Actor(_config(), 5, 3), Actor(_config(), 5, 3)
    checkpoint = {
        **to_flat(source, "actor/"),
        **to_flat(Critic(_config(), 5, 3), "critic/"),
        "actor_opt/0/count": np.zeros((), np.int32),  # shares a first word, not the prefix
        "iteration": np.zeros((), np.int32),
    }
    load_flat(target, checkpoint, "actor/")
    for name, value in to_flat(target).items():
        np.testing.assert_array_equal(value, checkpoint["actor/" + name])
    # A leading seed axis, as in a JAX checkpoint of several seeds.
    stacked = {k: np.stack([v, v + 1]) for k, v in to_flat(source).items()}
    load_flat(target, stacked, index=1)
    np.testing.assert_array_equal(to_flat(target)["output/bias"], stacked["output/bias"][1])


def test_load_flat_reports_the_offending_array():
    actor = Actor(_config(), 5, 3)
    flat = to_flat(actor)
    before = to_flat(actor)

    def fails(bad, match, prefix=""):
        with pytest.raises(FlatMismatchError, match=match):
            load_flat(actor, bad, prefix)

    fails({k: v for k, v in flat.items() if k != "hidden_1/norm/scale"}, "hidden_1/norm/scale")
    fails({**flat, "output/kernel": np.zeros((16, 7), np.float32)}, "output/kernel.*shape")
    fails({**flat, "output/bias": flat["output/bias"].astype(np.float64)}, "output/bias.*dtype")
    fails({**flat, "hidden_2/linear/kernel": np.zeros((16, 16), np.float32)}, "hidden_2")
    fails({"actor/" + k: v for k, v in flat.items()}, "missing array 'hidden_0")
    assert issubclass(FlatMismatchError, ValueError)
    # A failed load leaves the module untouched, even where the first arrays fitted.
    bad = {k: v + 1 for k, v in flat.items()}
    bad["output/bias"] = np.zeros(2, np.float32)
    fails(bad, "output/bias")
    for name, value in to_flat(actor).items():
        np.testing.assert_array_equal(value, before[name])


# ---- torch losses against their definitions ------------------------------------------------
def _actor_setup(objective, kl_estimator="sample"):
    torch.manual_seed(0)
    config = _config()
    actor, behaviour, critic = Actor(config, 5, 3), Actor(config, 5, 3), Critic(config, 5, 3)
    obs = torch.randn(64, 5)
    with torch.no_grad():
        for p, q in zip(behaviour.parameters(), actor.parameters(), strict=True):
            p.copy_(q + 0.3 * torch.randn_like(q))
        old = behaviour(obs)
    noise, kl_noise = torch.randn(64, 3), torch.randn(16, 64, 3)
    if kl_estimator == "analytic":
        kl_noise = None
    support = TL.Support.create(0.0, 10.0, 21, 0.75)
    with torch.no_grad():
        new = actor(obs)
        kl = TD.analytic_kl(old, new) if kl_noise is None else TD.sampled_forward_kl(
            old, new, kl_noise
        )
    kl_target = float(torch.median(kl))  # about half the states on each branch of "clipped"
    log_alpha = torch.tensor(np.log(0.2), dtype=torch.float32, requires_grad=True)
    log_beta = torch.tensor(np.log(3.0), dtype=torch.float32, requires_grad=True)
    return actor, (critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective,
                   kl_target)


@pytest.mark.parametrize("kl_estimator", ["sample", "analytic"])
@pytest.mark.parametrize("objective", ["clipped", "full", "value"])
def test_actor_loss_matches_its_definition(objective, kl_estimator):
    actor, args = _actor_setup(objective, kl_estimator)
    critic, old, obs, _, _, noise, kl_noise, support, _, kl_target = args
    loss, metrics = TL.actor_loss(actor, *args)
    with torch.no_grad():
        dist = actor(obs)
        action, _, logp = TD.sample_from_noise(dist, noise)
        q = TL.critic_value(critic, obs, action, support)
        kl = TD.analytic_kl(old, dist) if kl_noise is None else TD.sampled_forward_kl(
            old, dist, kl_noise
        )
    alpha, beta = 0.2, 3.0
    ref = {
        "clipped": torch.where(kl < kl_target, alpha * logp - q, beta * kl),
        "full": alpha * logp - q + beta * kl,
        "value": alpha * logp - q,
    }[objective]
    assert float(loss.detach()) == pytest.approx(float(ref.mean()), rel=1e-5)
    assert float(metrics["entropy"]) == pytest.approx(float(-logp.mean()), rel=1e-5)
    assert float(metrics["kl"]) == pytest.approx(float(kl.mean()), rel=1e-5)
    assert float(metrics["actor/q_mean"]) == pytest.approx(float(q.mean()), rel=1e-5)
    assert all(m.ndim == 0 and not m.requires_grad for m in metrics.values())
    if objective == "clipped":
        assert 0.0 < float(metrics["actor/kl_clipped_fraction"]) < 1.0  # both branches


def test_actor_loss_rejects_unknown_objective():
    actor, args = _actor_setup("clipped")
    with pytest.raises(ValueError, match="objective"):
        TL.actor_loss(actor, *args[:8], "nope", args[9])


def test_actor_loss_gives_no_gradient_to_critic_behaviour_or_temperatures():
    actor, args = _actor_setup("full")
    critic, old, obs, log_alpha, log_beta = args[:5]
    old = TD.Gaussian(old.mean.requires_grad_(), old.std.requires_grad_())
    loss, _ = TL.actor_loss(actor, critic, old, obs, log_alpha, log_beta, *args[5:])
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert old.mean.grad is None and old.std.grad is None
    assert log_alpha.grad is None and log_beta.grad is None
    assert max(float(p.grad.abs().max()) for p in actor.parameters()) > 0
    assert all(p.requires_grad for p in critic.parameters())  # no requires_grad toggling


def _critic_batch(n=32, terminated=None):
    gen = torch.Generator().manual_seed(7)
    return TL.CriticBatch(
        obs=torch.randn(n, 5, generator=gen),
        action=torch.tanh(torch.randn(n, 3, generator=gen)),
        reward=torch.rand(n, generator=gen),
        target=torch.rand(n, generator=gen) * 10,
        next_latent=torch.randn(n, 16, generator=gen),
        terminated=torch.zeros(n) if terminated is None else terminated,
    )


def test_critic_loss_hl_gauss_is_cross_entropy_plus_aux():
    torch.manual_seed(0)
    critic = Critic(_config(), 5, 3)
    support = TL.Support.create(0.0, 10.0, 21, 0.75)
    batch = _critic_batch()
    loss, m = TL.critic_loss(critic, batch, support, aux_loss_mult=0.5, reward_prediction=True)
    with torch.no_grad():
        latent = critic.encode(batch.obs, batch.action)
        logits = critic.value_head(latent)
        ce = -torch.mean(
            torch.sum(TL.hl_gauss_target(batch.target, support) * logits.log_softmax(-1), -1)
        )
        pred, rew = critic.predict(latent)
        # One squared error per predictor output (16 latent entries and the reward), averaged.
        sq = torch.sum((pred - batch.next_latent) ** 2, -1) + (rew - batch.reward) ** 2
        aux = torch.mean(sq / 17.0)
    assert float(loss.detach()) == pytest.approx(float(ce + 0.5 * aux), rel=1e-5)
    assert float(m["loss/critic"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(m["loss/aux"]) == pytest.approx(float(aux), rel=1e-5)
    assert sorted(m) == sorted([
        "loss/critic", "loss/aux", "critic/value_error", "critic/value_mean", "critic/target_mean"
    ])


def test_critic_loss_masks_latent_prediction_of_terminated_transitions():
    critic = Critic(_config(reward_prediction=False), 5, 3)
    term = torch.zeros(32)
    term[:8] = 1.0
    batch = _critic_batch(terminated=term)
    # Changing the targets of terminated transitions must not change the aux loss.
    shifted = batch.next_latent.clone()
    shifted[:8] += 100.0
    _, m1 = TL.critic_loss(critic, batch, None, 1.0, reward_prediction=False)
    _, m2 = TL.critic_loss(critic, batch._replace(next_latent=shifted), None, 1.0, False)
    assert float(m1["loss/aux"]) == pytest.approx(float(m2["loss/aux"]), rel=1e-6)
    # Boolean termination flags mean the same.
    _, m3 = TL.critic_loss(critic, batch._replace(terminated=term.bool()), None, 1.0, False)
    assert float(m3["loss/aux"]) == pytest.approx(float(m1["loss/aux"]), rel=1e-6)


def test_scalar_critic_ablation_uses_squared_error():
    critic = Critic(_config(use_hl_gauss=False), 5, 3)
    batch = _critic_batch()
    _, m = TL.critic_loss(critic, batch, None, 0.0, reward_prediction=True)
    with torch.no_grad():
        q = critic.value_head(critic.encode(batch.obs, batch.action))[..., 0]
    assert float(m["loss/critic"]) == pytest.approx(
        float(0.5 * torch.mean((q - batch.target) ** 2)), rel=1e-5
    )


# ---- torch.compile and devices -------------------------------------------------------------
def test_losses_trace_as_one_graph_under_torch_compile():
    # fullgraph=True fails on any graph break (data-dependent Python control flow); the
    # aot_eager backend traces forward and backward without compiling C++, so the test is cheap.
    torch._dynamo.reset()
    actor, args = _actor_setup("clipped")
    critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective, kl_target = args
    batch = _critic_batch(n=64)

    def step(obs, noise, kl_noise, batch):
        a_loss, a_metrics = TL.actor_loss(
            actor, critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective,
            kl_target,
        )
        c_loss, c_metrics = TL.critic_loss(critic, batch, support, 1.0, True)
        return a_loss + c_loss, {**a_metrics, **c_metrics}

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, metrics = compiled(obs, noise, kl_noise, batch)
    loss.backward()
    grads = [p.grad.clone() for p in (*actor.parameters(), *critic.parameters())]
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    eager_loss, eager_metrics = step(obs, noise, kl_noise, batch)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(metrics, eager_metrics)
    eager_grads = [p.grad for p in (*actor.parameters(), *critic.parameters())]
    torch.testing.assert_close(grads, eager_grads)
    torch._dynamo.reset()


def test_everything_runs_on_another_device():
    # The meta device has no data: any tensor made on the CPU by mistake mixes devices and fails.
    device = torch.device("meta")
    config = _config()
    support = TL.Support.create(0.0, 10.0, 21, 0.75, device=device)
    value_prior = TL.initial_value_prior(support)
    actor = Actor(config, 5, 3, device=device)
    critic = Critic(config, 5, 3, value_prior=value_prior, device=device)
    obs = torch.empty(8, 5, device=device)
    dist = actor(obs)
    assert dist.mean.device == device
    log_alpha = torch.zeros((), device=device, requires_grad=True)
    log_beta = torch.zeros((), device=device, requires_grad=True)
    noise = torch.empty(8, 3, device=device)
    loss, metrics = TL.actor_loss(
        actor, critic, dist, obs, log_alpha, log_beta, noise, None, support, "clipped", 0.1
    )
    assert loss.device == device and all(m.device == device for m in metrics.values())
    batch = TL.CriticBatch(
        obs, noise, torch.empty(8, device=device), torch.empty(8, device=device),
        torch.empty(8, 16, device=device), torch.empty(8, device=device),
    )
    loss, _ = TL.critic_loss(critic, batch, support, 1.0, True)
    assert loss.device == device
    flags = torch.empty(4, 8, device=device)
    assert TL.soft_td_lambda(flags, flags, flags, flags, 0.9, 0.9).device == device
    stats = TN.update_stats(TN.init_stats(5, device), obs)
    assert TN.normalize(stats, obs).device == device
    temp = TL.temperature_loss(log_alpha, log_beta, metrics["entropy"], metrics["kl"], -1.5, 0.1)
    assert temp.device == device


# ---- normalization -------------------------------------------------------------------------------
def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = [rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32) for _ in range(3)]
    stats = TN.init_stats(4)
    for batch in data:
        stats = TN.update_stats(stats, torch.from_numpy(batch))
    everything = np.concatenate(data)
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var.numpy(), everything.var(0), rtol=1e-4)
    assert float(stats.count) == 150
    z = TN.normalize(stats, torch.from_numpy(everything)).numpy()
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-4)
    far = TN.normalize(stats, torch.full((1, 4), 1e6))
    torch.testing.assert_close(far, torch.full((1, 4), TN.CLIP))
