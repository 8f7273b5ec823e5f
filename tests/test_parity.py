"""The PyTorch backend computes what the JAX backend computes, on identical weights and data.

Weights are initialised by JAX (`Networks.from_config`), perturbed so that biases and norm
scales are not at their trivial initial values, flattened by `pytrees.flatten` and loaded into
the torch modules by name with `load_flat`. Inputs are numpy float32 arrays shared by both.
Values, metrics and gradients (torch `.grad` against `jax.grad`, matched by flat name) are
compared at float32 precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from reppo import pytrees
from reppo.config import Config
from reppo.jax import distributions as JD
from reppo.jax import losses as JL
from reppo.jax import normalizer as JN
from reppo.jax.agent import TrainState
from reppo.jax.networks import Networks
from reppo.torch import distributions as TD
from reppo.torch import losses as TL
from reppo.torch import normalizer as TN
from reppo.torch.networks import Actor, Critic, load_flat, to_flat

OBS, ACT, BATCH = 7, 3, 64
GAMMA = 0.9
# float32 results of the same math in different op orders (XLA vs ATen kernels).
RTOL = ATOL = 1e-5
NORMS = ["rms", "layer", "none"]
CRITIC_KINDS = [  # (use_hl_gauss, reward_prediction)
    (True, True), (True, False), (False, True), (False, False)
]


# ---- helpers -------------------------------------------------------------------------------------
def _config(**overrides: Any) -> Config:
    return Config(
        actor_hidden_dim=32, critic_hidden_dim=32, num_bins=51, **overrides
    ).validated()


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _t(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x, np.float32))


def _close(ours: Any, reference: Any, rtol: float = RTOL, atol: float = ATOL, what: str = ""):
    np.testing.assert_allclose(_np(ours), _np(reference), rtol=rtol, atol=atol, err_msg=what)


def _close_flat(ours: dict, reference: dict, rtol: float = RTOL, atol: float = ATOL):
    assert sorted(ours) == sorted(reference)
    for name in reference:
        _close(ours[name], reference[name], rtol, atol, what=name)


def _perturbed(tree: Any, seed: int) -> tuple[Any, dict[str, np.ndarray]]:
    """The JAX params plus noise, as a pytree and as the flat map both backends load."""
    rng = np.random.default_rng(seed)
    flat = {
        name: (value + 0.1 * rng.normal(size=value.shape)).astype(np.float32)
        for name, value in pytrees.flatten(tree).items()
    }
    return pytrees.unflatten(tree, flat), flat


def _grads(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name.replace(".", "/"): _np(p.grad) for name, p in module.named_parameters()}


class Pair(NamedTuple):
    config: Config
    nets: Networks
    jax_actor: Any
    jax_critic: Any
    actor: Actor
    critic: Critic
    jax_support: JL.Support | None
    support: TL.Support | None


def _torch_support(support: JL.Support | None) -> TL.Support | None:
    """The torch Support with the JAX edges, bit for bit (see test_support_create_matches)."""
    if support is None:
        return None
    return TL.Support(_t(support.edges), _t(support.centers), support.sigma)


def _pair(seed: int = 0, **overrides: Any) -> Pair:
    config = _config(**overrides)
    nets = Networks.from_config(config, OBS, ACT)
    k_actor, k_critic = jax.random.split(jax.random.PRNGKey(seed))
    jax_actor, actor_flat = _perturbed(nets.init_actor(k_actor), seed)
    jax_critic, critic_flat = _perturbed(nets.init_critic(k_critic), seed + 1)
    actor, critic = Actor(config, OBS, ACT), Critic(config, OBS, ACT)
    load_flat(actor, actor_flat)
    load_flat(critic, critic_flat)
    jax_support = None
    if config.use_hl_gauss:
        v_min, v_max = config.value_support(GAMMA, (-1.0, 1.0))
        jax_support = JL.Support.create(
            v_min, v_max, config.num_bins, config.hl_gauss_sigma_ratio
        )
    return Pair(
        config, nets, jax_actor, jax_critic, actor, critic, jax_support,
        _torch_support(jax_support),
    )


def _rng_data(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + seed)
    f32 = lambda x: np.asarray(x, np.float32)
    terminated = f32(rng.random(BATCH) < 0.25)
    return {
        "obs": f32(2.0 * rng.normal(size=(BATCH, OBS))),
        "action": f32(np.tanh(rng.normal(size=(BATCH, ACT)))),
        "reward": f32(rng.normal(size=BATCH)),
        "target": f32(rng.uniform(-25.0, 25.0, size=BATCH)),  # the support is [-20, 20]
        "next_latent": f32(rng.normal(size=(BATCH, 32))),
        "terminated": terminated,
        "action_noise": f32(rng.normal(size=(BATCH, ACT))),
        "kl_noise": f32(rng.normal(size=(16, BATCH, ACT))),
    }


# ---- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("use_hl_gauss,reward_prediction", CRITIC_KINDS)
def test_parameters_have_the_jax_names_shapes_and_dtypes(norm, use_hl_gauss, reward_prediction):
    p = _pair(norm=norm, use_hl_gauss=use_hl_gauss, reward_prediction=reward_prediction)
    for module, tree in ((p.actor, p.jax_actor), (p.critic, p.jax_critic)):
        ours, theirs = to_flat(module), pytrees.flatten(tree)
        assert sorted(ours) == sorted(theirs)
        for name, value in theirs.items():
            assert ours[name].shape == value.shape and ours[name].dtype == value.dtype, name
            np.testing.assert_array_equal(ours[name], value)  # no transposition anywhere
        # And back: the torch weights fill the JAX template.
        back = pytrees.unflatten(tree, ours)
        _close_flat(pytrees.flatten(back), theirs, rtol=0, atol=0)


def test_a_jax_checkpoint_loads_by_prefix_and_seed():
    config = _config()
    nets = Networks.from_config(config, OBS, ACT)
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-3))

    def init(key):
        k_actor, k_critic = jax.random.split(key)
        actor, critic = nets.init_actor(k_actor), nets.init_critic(k_critic)
        return TrainState(
            actor=actor, behaviour=actor, critic=critic,
            temps=JL.Temperatures(jnp.zeros(()), jnp.zeros(())),
            actor_opt=tx.init(actor), critic_opt=tx.init(critic), temp_opt=None,
            obs_stats=JN.init_stats(OBS), env_state=None,
            episode_return=jnp.zeros(4), key=key, iteration=jnp.zeros((), jnp.int32),
        )

    # Two seeds stacked along a leading axis, as the vmapped training state is saved.
    seeds = [init(key) for key in jax.random.split(jax.random.PRNGKey(0), 2)]
    state = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *seeds)
    arrays = pytrees.flatten(state)
    assert "actor/hidden_0/linear/kernel" in arrays
    assert any(k.startswith("actor_opt/") and "hidden_0" in k for k in arrays)
    actor, critic = Actor(config, OBS, ACT), Critic(config, OBS, ACT)
    load_flat(actor, arrays, "actor/", index=1)
    load_flat(critic, arrays, "critic/", index=1)
    seed1 = jax.tree_util.tree_map(lambda x: x[1], state)
    obs = np.random.default_rng(0).normal(size=(5, OBS)).astype(np.float32)
    with torch.no_grad():
        dist = actor(_t(obs))
        latent = critic.encode(_t(obs), dist.mean)
    jax_dist = nets.policy(seed1.actor, obs)
    _close(dist.mean, jax_dist.mean)
    _close(latent, nets.encode(seed1.critic, obs, jax_dist.mean))


# ---- network outputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_actor_outputs_match(norm):
    p = _pair(norm=norm)
    obs = _rng_data(0)["obs"]
    obs[0] *= 50.0  # drives some log-stds above the clamp at 2
    with torch.no_grad():
        dist = p.actor(_t(obs))
    jax_dist = p.nets.policy(p.jax_actor, obs)
    _close(dist.mean, jax_dist.mean)
    _close(dist.std, jax_dist.std)
    _close(TD.deterministic_action(dist), JD.deterministic_action(jax_dist))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("use_hl_gauss,reward_prediction", CRITIC_KINDS)
def test_critic_outputs_match(norm, use_hl_gauss, reward_prediction):
    p = _pair(norm=norm, use_hl_gauss=use_hl_gauss, reward_prediction=reward_prediction)
    data = _rng_data(1)
    with torch.no_grad():
        latent = p.critic.encode(_t(data["obs"]), _t(data["action"]))
        head = p.critic.value_head(latent)
        next_latent, reward = p.critic.predict(latent)
        q = TL.critic_value(p.critic, _t(data["obs"]), _t(data["action"]), p.support)
    jax_latent = p.nets.encode(p.jax_critic, data["obs"], data["action"])
    jax_next_latent, jax_reward = p.nets.predict(p.jax_critic, jax_latent)
    _close(latent, jax_latent)
    _close(head, p.nets.value_head(p.jax_critic, jax_latent))
    _close(next_latent, jax_next_latent)
    _close(reward, jax_reward)
    jax_q = JL.critic_value(p.nets, p.jax_critic, data["obs"], data["action"], p.jax_support)
    _close(q, jax_q)


def test_initial_value_prior_matches():
    config = _config()
    nets = Networks.from_config(config, OBS, ACT)
    v_min, v_max = config.value_support(GAMMA, (-1.0, 1.0))
    jax_support = JL.Support.create(v_min, v_max, config.num_bins, config.hl_gauss_sigma_ratio)
    support = _torch_support(jax_support)
    jax_critic = nets.init_critic(jax.random.PRNGKey(0), JL.initial_value_prior(jax_support))
    critic = Critic(config, OBS, ACT, value_prior=TL.initial_value_prior(support))
    ours, theirs = to_flat(critic), pytrees.flatten(jax_critic)
    assert set(ours) == set(theirs)
    _close(ours["value_prior"], theirs["value_prior"], rtol=0, atol=1e-6)


# ---- HL-Gauss ------------------------------------------------------------------------------------
def test_support_create_matches():
    for v_min, v_max, bins in [(0.0, 150.0, 151), (-20.0, 20.0, 51), (-37.5, 112.5, 101)]:
        ours = TL.Support.create(v_min, v_max, bins, 0.75)
        theirs = JL.Support.create(v_min, v_max, bins, 0.75)
        # jnp.linspace rounds its float32 arithmetic differently: edges agree to ~1 ulp.
        ulp = float(np.spacing(np.float32(max(abs(v_min), abs(v_max)))))
        _close(ours.edges, theirs.edges, rtol=0, atol=2 * ulp)
        _close(ours.centers, theirs.centers, rtol=0, atol=2 * ulp)
        assert ours.sigma == pytest.approx(theirs.sigma, rel=1e-12)
        assert ours.edges.dtype == torch.float32


def test_hl_gauss_targets_values_and_initial_prior_match():
    p = _pair()
    rng = np.random.default_rng(3)
    y = rng.uniform(-30.0, 30.0, size=(4, 100)).astype(np.float32)  # some outside [-20, 20]
    y[0, :4] = [-20.0, 20.0, -1e4, 1e4]
    target = TL.hl_gauss_target(_t(y), p.support)
    _close(target, JL.hl_gauss_target(y, p.jax_support), rtol=0, atol=1e-6)
    logits = (3.0 * rng.normal(size=(4, 100, 51))).astype(np.float32)
    _close(TL.hl_gauss_value(_t(logits), p.support), JL.hl_gauss_value(logits, p.jax_support))
    for value in (0.0, 7.3, -50.0):
        ours = TL.initial_value_prior(p.support, value)
        theirs = JL.initial_value_prior(p.jax_support, value)
        _close(ours, theirs, rtol=0, atol=1e-6)


# ---- critic loss ---------------------------------------------------------------------------------
def _critic_batches(data):
    fields = ("obs", "action", "reward", "target", "next_latent", "terminated")
    return (
        TL.CriticBatch(*(_t(data[f]) for f in fields)),
        JL.CriticBatch(*(jnp.asarray(data[f]) for f in fields)),
    )


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("use_hl_gauss,reward_prediction", CRITIC_KINDS)
def test_critic_loss_metrics_and_gradients_match(norm, use_hl_gauss, reward_prediction):
    p = _pair(norm=norm, use_hl_gauss=use_hl_gauss, reward_prediction=reward_prediction)
    batch, jax_batch = _critic_batches(_rng_data(2))
    aux_loss_mult = 0.7
    loss, metrics = TL.critic_loss(p.critic, batch, p.support, aux_loss_mult, reward_prediction)
    loss.backward()
    (jax_loss, jax_metrics), jax_grads = jax.value_and_grad(JL.critic_loss, has_aux=True)(
        p.jax_critic, p.nets, jax_batch, p.jax_support, aux_loss_mult
    )
    _close(loss, jax_loss)
    _close_flat(metrics, jax_metrics)  # loss/critic, loss/aux (latent + reward), value stats
    _close_flat(_grads(p.critic), pytrees.flatten(jax_grads))


# ---- TD(lambda) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_td_lambda_targets_match(lam):
    rng = np.random.default_rng(4)
    T, B = 16, 8
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = (10.0 * rng.normal(size=(T, B))).astype(np.float32)
    terminated = (rng.random((T, B)) < 0.15).astype(np.float32)
    truncated = (rng.random((T, B)) < 0.15).astype(np.float32)  # some steps have both flags
    args = (rewards, values, terminated, truncated)
    ours = TL.soft_td_lambda(*map(_t, args), GAMMA, lam)
    theirs = JL.soft_td_lambda(*args, GAMMA, lam)
    _close(ours, theirs)


# ---- distributions -------------------------------------------------------------------------------
def _heads(seed):
    rng = np.random.default_rng(seed)
    mean = (2.0 * rng.normal(size=(BATCH, ACT))).astype(np.float32)
    mean[0] = [9.0, -9.0, 12.0]  # saturated actions
    log_std = rng.uniform(-4.0, 3.0, size=(BATCH, ACT)).astype(np.float32)  # some above 2
    return mean, log_std


def test_distribution_functions_match():
    min_std = 0.1
    ours_old = TD.gaussian_from_head(*map(_t, _heads(5)), min_std)
    ours_new = TD.gaussian_from_head(*map(_t, _heads(6)), min_std)
    theirs_old = JD.gaussian_from_head(*_heads(5), min_std)
    theirs_new = JD.gaussian_from_head(*_heads(6), min_std)
    _close(ours_old.std, theirs_old.std)
    data = _rng_data(5)

    action, u, log_prob = TD.sample_from_noise(ours_new, _t(data["action_noise"]))
    jax_action, jax_u, jax_log_prob = JD.sample_from_noise(theirs_new, data["action_noise"])
    _close(action, jax_action)
    _close(u, jax_u)
    _close(log_prob, jax_log_prob)
    _close(TD.gaussian_log_prob(ours_new, u), JD.gaussian_log_prob(theirs_new, jax_u))

    wide = np.linspace(-40.0, 40.0, 3 * 81, dtype=np.float32).reshape(81, 3)
    _close(TD.tanh_log_det_jacobian(_t(wide)), JD.tanh_log_det_jacobian(wide))

    sampled = TD.sampled_forward_kl(ours_old, ours_new, _t(data["kl_noise"]))
    _close(sampled, JD.sampled_forward_kl(theirs_old, theirs_new, data["kl_noise"]))
    _close(TD.analytic_kl(ours_old, ours_new), JD.analytic_kl(theirs_old, theirs_new))


# ---- actor loss ----------------------------------------------------------------------------------
def _kl_target_with_a_gap(kl: np.ndarray) -> float:
    """A KL target splitting the middle states, far from every state's KL.

    A state whose KL lay within float32 noise of the target could switch branches between the
    backends; the midpoint of the widest gap among the middle half avoids that.
    """
    kl = np.sort(kl)
    n = len(kl)
    lo = n // 4
    gaps = np.diff(kl[lo : n - lo + 1])
    i = lo + int(np.argmax(gaps))
    assert kl[i + 1] - kl[i] > 1e-4 * max(1.0, abs(kl[i]))
    return float(0.5 * (kl[i] + kl[i + 1]))


@pytest.mark.parametrize(
    "objective,kl_estimator,use_hl_gauss,norm",
    [
        ("clipped", "sample", True, "rms"),
        ("clipped", "analytic", True, "layer"),
        ("clipped", "sample", False, "none"),
        ("full", "sample", True, "rms"),
        ("full", "analytic", True, "rms"),
        ("value", "sample", True, "layer"),
    ],
)
def test_actor_loss_metrics_and_gradients_match(objective, kl_estimator, use_hl_gauss, norm):
    p = _pair(use_hl_gauss=use_hl_gauss, norm=norm)
    _, behaviour_flat = _perturbed(p.jax_actor, 9)  # the behaviour policy: a perturbed actor
    jax_behaviour = pytrees.unflatten(p.jax_actor, behaviour_flat)
    behaviour = Actor(p.config, OBS, ACT)
    load_flat(behaviour, behaviour_flat)

    data = _rng_data(6)
    obs, noise = data["obs"], data["action_noise"]
    kl_noise = data["kl_noise"] if kl_estimator == "sample" else None
    old = p.nets.policy(jax_behaviour, obs)
    new = p.nets.policy(p.jax_actor, obs)
    kl = JD.analytic_kl(old, new) if kl_noise is None else JD.sampled_forward_kl(old, new, kl_noise)
    kl_target = _kl_target_with_a_gap(np.asarray(kl))
    log_alpha, log_beta = np.float32(np.log(0.3)), np.float32(np.log(2.0))

    with torch.no_grad():
        old_dist = behaviour(_t(obs))
    t_log_alpha = torch.tensor(log_alpha, requires_grad=True)
    t_log_beta = torch.tensor(log_beta, requires_grad=True)
    loss, metrics = TL.actor_loss(
        p.actor, p.critic, old_dist, _t(obs), t_log_alpha, t_log_beta, _t(noise),
        None if kl_noise is None else _t(kl_noise), p.support, objective, kl_target,
    )
    loss.backward()
    temps = JL.Temperatures(jnp.asarray(log_alpha), jnp.asarray(log_beta))
    (jax_loss, jax_metrics), jax_grads = jax.value_and_grad(JL.actor_loss, has_aux=True)(
        p.jax_actor, p.nets, p.jax_critic, jax_behaviour, obs, temps, noise, kl_noise,
        p.jax_support, objective, kl_target,
    )
    _close(loss, jax_loss)
    _close_flat(metrics, jax_metrics)
    _close_flat(_grads(p.actor), pytrees.flatten(jax_grads))
    assert all(q.grad is None for q in p.critic.parameters())
    assert t_log_alpha.grad is None and t_log_beta.grad is None
    if objective == "clipped":
        assert 0.0 < float(metrics["actor/kl_clipped_fraction"]) < 1.0  # both branches taken


# ---- temperatures --------------------------------------------------------------------------------
@pytest.mark.parametrize("entropy,kl", [(-5.0, 0.5), (-1.0, 0.01), (-1.5, 0.1)])
def test_temperature_loss_and_gradients_match(entropy, kl):
    log_alpha, log_beta = np.float32(np.log(0.02)), np.float32(np.log(1.7))
    target_entropy, kl_target = -0.5 * ACT, 0.1
    t_log_alpha = torch.tensor(log_alpha, requires_grad=True)
    t_log_beta = torch.tensor(log_beta, requires_grad=True)
    entropy_t = torch.tensor(entropy, requires_grad=True)  # must receive no gradient
    loss = TL.temperature_loss(
        t_log_alpha, t_log_beta, entropy_t, torch.tensor(kl), target_entropy, kl_target
    )
    loss.backward()
    temps = JL.Temperatures(jnp.asarray(log_alpha), jnp.asarray(log_beta))
    jax_loss, jax_grads = jax.value_and_grad(JL.temperature_loss)(
        temps, jnp.float32(entropy), jnp.float32(kl), target_entropy, kl_target
    )
    _close(loss, jax_loss)
    _close(t_log_alpha.grad, jax_grads.log_alpha)
    _close(t_log_beta.grad, jax_grads.log_beta)
    assert entropy_t.grad is None


# ---- normalizer ----------------------------------------------------------------------------------
def test_running_stats_and_normalization_match():
    rng = np.random.default_rng(7)
    ours, theirs = TN.init_stats(OBS), JN.init_stats(OBS)
    for shape in [(16, 4, OBS), (1, OBS), (300, OBS)]:
        batch = rng.normal(3.0, 5.0, size=shape).astype(np.float32)
        ours, theirs = TN.update_stats(ours, _t(batch)), JN.update_stats(theirs, batch)
        for a, b in zip(ours, theirs, strict=True):
            _close(a, b)
    obs = rng.normal(3.0, 80.0, size=(64, OBS)).astype(np.float32)  # some clipped at +-10
    _close(TN.normalize(ours, _t(obs)), JN.normalize(theirs, obs))
