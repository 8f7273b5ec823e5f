"""The algorithm's math on both backends, checked against hand computations and closed forms.

Each test takes a `backend` parameter and runs on reppo.jax and reppo.torch through small
numpy-in/numpy-out adapters (a backend that is not installed skips). Each backend's own modules
(networks, losses against their definitions, normalization, jit or torch.compile) are tested in
tests/jax/test_math.py and tests/torch/test_math.py; equality of the two backends on the same
weights is in tests/test_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats


# ---- the two backends behind one numpy interface ----------------------------------------------
class _TorchBackend:
    name = "torch"

    def __init__(self):
        self.torch = pytest.importorskip("torch")
        from reppo.torch import distributions as TD
        from reppo.torch import losses as TL

        self.D, self.L = TD, TL

    def _t(self, x):
        return self.torch.as_tensor(np.asarray(x, np.float32))

    def np(self, x):
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def td(self, r, v, term, trunc, gamma, lam):
        args = [self._t(x) for x in (r, v, term, trunc)]
        return self.np(self.L.soft_td_lambda(*args, gamma, lam))

    def support(self, v_min, v_max, num_bins, sigma_ratio):
        return self.L.Support.create(v_min, v_max, num_bins, sigma_ratio)

    def hl_target(self, y, support):
        return self.np(self.L.hl_gauss_target(self._t(y), support))

    def hl_value(self, logits, support):
        return self.np(self.L.hl_gauss_value(self._t(logits), support))

    def initial_prior(self, support, value):
        return self.np(self.L.initial_value_prior(support, value))

    def gaussian(self, mean, std):
        return self.D.Gaussian(self._t(mean), self._t(std))

    def gaussian_from_head(self, mean, log_std, min_std):
        return self.D.gaussian_from_head(self._t(mean), self._t(log_std), min_std)

    def log_prob(self, dist, u):
        return self.np(self.D.log_prob_from_pre_tanh(dist, self._t(u)))

    def sample(self, dist, seed):
        gen = self.torch.Generator().manual_seed(seed)
        return tuple(self.np(x) for x in self.D.sample(dist, gen))

    def sampled_kl(self, old, new, noise):
        return self.np(self.D.sampled_forward_kl(old, new, self._t(noise)))

    def analytic_kl(self, old, new):
        return self.np(self.D.analytic_kl(old, new))

    def kernels(self, config, obs_size, action_size, seed):
        """Every Linear kernel of a fresh actor and critic, by parameter name."""
        from reppo.torch.networks import Actor, Critic

        self.torch.manual_seed(seed)
        nets = {"actor": Actor(config, obs_size, action_size),
                "critic": Critic(config, obs_size, action_size)}
        return {
            f"{net}.{name}": self.np(value)
            for net, module in nets.items()
            for name, value in module.state_dict().items()
            if name.endswith("kernel")
        }

    def temp_grads(self, log_alpha, log_beta, entropy, kl, target_entropy, kl_target):
        la = self.torch.tensor(log_alpha, requires_grad=True)
        lb = self.torch.tensor(log_beta, requires_grad=True)
        self.L.temperature_loss(la, lb, entropy, kl, target_entropy, kl_target).backward()
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

    def kernels(self, config, obs_size, action_size, seed):
        """Every Linear kernel of a fresh actor and critic, by parameter name."""
        from reppo.jax.networks import Networks

        networks = Networks.from_config(config, obs_size, action_size)
        k_actor, k_critic = self.jax.random.split(self.jax.random.PRNGKey(seed))
        params = {"actor": networks.init_actor(k_actor), "critic": networks.init_critic(k_critic)}
        leaves = self.jax.tree_util.tree_leaves_with_path(params)
        return {
            self.jax.tree_util.keystr(path): self.np(value)
            for path, value in leaves
            if "kernel" in self.jax.tree_util.keystr(path)
        }

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


# ---- initialisation ----------------------------------------------------------------------------
def _init_config(kernel_init):
    from reppo.config import Config

    return Config(
        actor_hidden_dim=512, critic_hidden_dim=512, kernel_init=kernel_init
    ).validated()


def test_orthogonal_kernels_have_orthonormal_rows_or_columns(backend):
    kernels = backend.kernels(_init_config("orthogonal"), 40, 6, seed=0)
    assert len(kernels) == 9  # actor 3, critic encoder 2, head 2, predictor 2
    for name, k in kernels.items():
        gram = k @ k.T if k.shape[0] <= k.shape[1] else k.T @ k
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-4, err_msg=name)


def test_lecun_normal_kernels_are_truncated_normals_of_variance_one_over_fan_in(backend):
    kernels = backend.kernels(_init_config("lecun_normal"), 40, 6, seed=0)
    assert len(kernels) == 9
    for name, k in kernels.items():
        scale = np.sqrt(1.0 / k.shape[0])  # fan_in: the kernel is (in, out)
        # The draw is truncated at two of its standard deviations, which are scale / 0.8796.
        assert np.abs(k).max() <= 2 * scale / 0.87962566 * (1 + 1e-5), name
        assert np.abs(k).max() > 2 * scale, name  # truncated there, not at 2 x scale
        # The truncated normal's own std is the target: about 1% sampling error for >= 3,000
        # entries (the smallest kernel, 512 x 7, has 3,584).
        assert k.std() == pytest.approx(scale, rel=0.05), name
        assert abs(k.mean()) < 0.05 * scale, name
        gram = k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T
        assert np.abs(gram - np.eye(len(gram))).max() > 0.05, name  # not orthogonal


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
