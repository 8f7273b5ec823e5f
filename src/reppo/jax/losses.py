"""REPPO's losses as pure functions of arrays (paper section 3; docs/algorithm.md).

- HL-Gauss histogram targets and values (appendix A);
- the soft TD(lambda) reverse pass with the episode-boundary rules of docs/algorithm.md;
- the critic loss (cross-entropy or MSE, plus latent self-prediction);
- the actor loss (objectives "clipped", "full", "value");
- the temperature losses for log alpha and log beta.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from reppo.jax import distributions as D
from reppo.jax.networks import Networks, Params


# ---- HL-Gauss ---------------------------------------------------------------------------------
class Support(NamedTuple):
    """Histogram support of the categorical critic: num_bins bins centred on
    linspace(v_min, v_max, num_bins), each of width (v_max - v_min) / (num_bins - 1)."""

    edges: jax.Array  # (num_bins + 1,) from v_min - width / 2 to v_max + width / 2
    centers: jax.Array  # (num_bins,) from v_min to v_max
    sigma: float

    @classmethod
    def create(cls, v_min: float, v_max: float, num_bins: int, sigma_ratio: float) -> Support:
        width = (v_max - v_min) / (num_bins - 1)
        centers = jnp.linspace(v_min, v_max, num_bins, dtype=jnp.float32)
        edges = jnp.linspace(
            v_min - width / 2, v_max + width / 2, num_bins + 1, dtype=jnp.float32
        )
        return cls(edges, centers, sigma_ratio * width)


def hl_gauss_target(y: jax.Array, support: Support) -> jax.Array:
    """Histogram of N(y, sigma^2) over the bins, renormalised to the support; shape (..., bins).

    y is clipped into [v_min, v_max] (the first and last centres) first, so a target outside
    the support puts its mass at the nearest end.
    """
    y = jnp.clip(y, support.centers[0], support.centers[-1])[..., None]
    cdf = erf((support.edges - y) / (jnp.sqrt(2.0) * support.sigma))
    # erf rounding can make far-tail differences slightly negative.
    mass = jnp.maximum(cdf[..., 1:] - cdf[..., :-1], 0.0)
    return mass / jnp.sum(mass, axis=-1, keepdims=True)


def hl_gauss_value(logits: jax.Array, support: Support) -> jax.Array:
    """Expected value of the predicted histogram."""
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * support.centers, axis=-1)


def initial_value_prior(support: Support, value: float = 0.0) -> jax.Array:
    """The value head's starting prior: the HL-Gauss histogram of `value`."""
    return hl_gauss_target(jnp.asarray(value, jnp.float32), support)


# ---- soft TD(lambda) ----------------------------------------------------------------------------
def soft_td_lambda(
    soft_rewards: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """TD(lambda) targets by one reverse pass over time (axis 0 of shape (T, ...)).

    G_t = r~_t + gamma * (1 - term_t) * [(1 - lam_t) V_{t+1} + lam_t G_{t+1}], with
    lam_t = 0 where the chain must not continue: at a truncation (bootstrap fully from the value
    of the true final observation) and at the last step of the rollout (bootstrap from V_T).
    `next_values[t]` is V(x_{t+1}) at the true next observation; `soft_rewards` already hold
    the entropy bonus (and none at terminations).
    """
    continues = 1.0 - jnp.asarray(terminated)
    lam_t = lam * (1.0 - jnp.asarray(truncated))
    lam_t = lam_t.at[-1].set(0.0)

    def backward(next_return, inputs):
        reward, value, cont, lam_step = inputs
        ret = reward + gamma * cont * ((1.0 - lam_step) * value + lam_step * next_return)
        return ret, ret

    _, returns = jax.lax.scan(
        backward,
        jnp.zeros_like(next_values[-1]),
        (soft_rewards, next_values, continues, lam_t),
        reverse=True,
    )
    return returns


# ---- critic --------------------------------------------------------------------------------------
class CriticBatch(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    target: jax.Array  # soft TD(lambda) return G
    next_latent: jax.Array  # psi: encoder embedding of (x', a')
    terminated: jax.Array


def critic_value(
    nets: Networks, params: Params, obs: jax.Array, action: jax.Array, support: Support | None
) -> jax.Array:
    """Q(x, a) as a scalar: the histogram's mean, or the scalar head's output."""
    out = nets.value_head(params, nets.encode(params, obs, action))
    return hl_gauss_value(out, support) if support is not None else out[..., 0]


def critic_loss(
    params: Params,
    nets: Networks,
    batch: CriticBatch,
    support: Support | None,
    aux_loss_mult: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """HL-Gauss cross-entropy (or 0.5 * squared error) + aux_loss_mult * self-prediction.

    The self-prediction target psi of a terminated transition is the latent of a terminal
    state, which carries no future, so those transitions are masked out of the aux term.
    """
    latent = nets.encode(params, batch.obs, batch.action)
    out = nets.value_head(params, latent)
    if support is not None:
        log_probs = jax.nn.log_softmax(out, axis=-1)
        value_loss = -jnp.mean(jnp.sum(hl_gauss_target(batch.target, support) * log_probs, -1))
        value = hl_gauss_value(out, support)
    else:
        value = out[..., 0]
        value_loss = 0.5 * jnp.mean((value - batch.target) ** 2)

    # Self-prediction: one squared error per output of the predictor (the latent entries and,
    # with reward prediction, the reward), averaged, so the reward weighs as one latent entry.
    pred_latent, pred_reward = nets.predict(params, latent)
    errors = (pred_latent - batch.next_latent) ** 2
    if nets.reward_prediction:
        errors = jnp.concatenate([errors, ((pred_reward - batch.reward) ** 2)[..., None]], -1)
    alive = 1.0 - batch.terminated
    aux_loss = jnp.sum(alive * jnp.mean(errors, axis=-1)) / jnp.maximum(jnp.sum(alive), 1.0)
    loss = value_loss + aux_loss_mult * aux_loss
    metrics = {
        "loss/critic": value_loss,
        "loss/aux": aux_loss,
        "critic/value_error": jnp.mean(jnp.abs(value - batch.target)),
        "critic/value_mean": jnp.mean(value),
        "critic/target_mean": jnp.mean(batch.target),
    }
    return loss, metrics


# ---- actor and temperatures ---------------------------------------------------------------------
class Temperatures(NamedTuple):
    """Entropy temperature alpha and KL temperature beta, stored as logs so they stay > 0."""

    log_alpha: jax.Array
    log_beta: jax.Array


def actor_loss(
    actor_params: Params,
    nets: Networks,
    critic_params: Params,
    behaviour_params: Params,
    obs: jax.Array,
    temps: Temperatures,
    action_noise: jax.Array,
    kl_noise: jax.Array | None,
    support: Support | None,
    objective: str,
    kl_target: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pathwise policy loss through the critic, with entropy and forward-KL terms.

    - "clipped" (eq. 21): per state, alpha log pi - Q while KL < KL_target, else beta KL;
    - "full" (eq. 20): alpha log pi - Q + beta KL;
    - "value": alpha log pi - Q (no KL term).
    `kl_noise` (num_samples, batch, action_dim) draws samples of pi_old; None means the
    analytic Gaussian KL. The critic and the behaviour policy receive no gradient.
    """
    alpha = jnp.exp(jax.lax.stop_gradient(temps.log_alpha))
    beta = jnp.exp(jax.lax.stop_gradient(temps.log_beta))
    critic_params = jax.lax.stop_gradient(critic_params)

    dist = nets.policy(actor_params, obs)
    action, _, log_prob = D.sample_from_noise(dist, action_noise)
    q = critic_value(nets, critic_params, obs, action, support)

    old = jax.lax.stop_gradient(nets.policy(behaviour_params, obs))
    kl = D.analytic_kl(old, dist) if kl_noise is None else D.sampled_forward_kl(old, dist, kl_noise)

    value_term = alpha * log_prob - q
    if objective == "clipped":
        per_state = jnp.where(kl < kl_target, value_term, beta * kl)
    elif objective == "full":
        per_state = value_term + beta * kl
    elif objective == "value":
        per_state = value_term
    else:
        raise ValueError(f"unknown actor objective {objective!r}")
    metrics = {
        "loss/actor": jnp.mean(per_state),
        "entropy": -jnp.mean(log_prob),
        "kl": jnp.mean(kl),
        "actor/kl_clipped_fraction": jnp.mean((kl >= kl_target).astype(jnp.float32)),
        "actor/q_mean": jnp.mean(q),
        "actor/std_mean": jnp.mean(dist.std),
    }
    return jnp.mean(per_state), metrics


def temperature_loss(
    temps: Temperatures,
    entropy: jax.Array,
    kl: jax.Array,
    target_entropy: float,
    kl_target: float,
) -> jax.Array:
    """loss_alpha + loss_beta (eq. 18, and eq. 19 with the KL in place of the entropy).

    d/d log_alpha = alpha * (H - H_target): descent raises alpha when entropy is below target.
    d/d log_beta = -beta * (KL - KL_target): descent raises beta when KL is above target.
    """
    entropy = jax.lax.stop_gradient(entropy)
    kl = jax.lax.stop_gradient(kl)
    loss_alpha = jnp.exp(temps.log_alpha) * (entropy - target_entropy)
    loss_beta = -jnp.exp(temps.log_beta) * (kl - kl_target)
    return loss_alpha + loss_beta
