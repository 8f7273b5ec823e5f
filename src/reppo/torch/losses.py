"""REPPO's losses as pure functions of tensors, mirroring `reppo.jax.losses` one by one.

- HL-Gauss histogram targets and values (appendix A);
- the soft TD(lambda) reverse pass with the episode-boundary rules of docs/algorithm.md;
- the critic loss (cross-entropy or MSE, plus latent self-prediction);
- the actor loss (objectives "clipped", "full", "value");
- the temperature losses for log alpha and log beta.

Metrics are detached 0-d tensors named as in the JAX backend.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from reppo.torch import distributions as D
from reppo.torch.networks import Actor, Critic


# ---- HL-Gauss ---------------------------------------------------------------------------------
class Support(NamedTuple):
    """Histogram support of the categorical critic: num_bins bins centred on
    linspace(v_min, v_max, num_bins), each of width (v_max - v_min) / (num_bins - 1)."""

    edges: Tensor  # (num_bins + 1,) from v_min - width / 2 to v_max + width / 2
    centers: Tensor  # (num_bins,) from v_min to v_max
    sigma: float

    @classmethod
    def create(
        cls, v_min: float, v_max: float, num_bins: int, sigma_ratio: float, device: Any = None
    ) -> Support:
        # Computed in float64 and rounded once; they may differ from jnp.linspace's float32
        # arithmetic in the last bit.
        width = (v_max - v_min) / (num_bins - 1)
        centers = torch.linspace(v_min, v_max, num_bins, dtype=torch.float64)
        edges = torch.linspace(
            v_min - width / 2, v_max + width / 2, num_bins + 1, dtype=torch.float64
        )
        f32 = {"dtype": torch.float32, "device": device}
        return cls(edges.to(**f32), centers.to(**f32), sigma_ratio * width)


def hl_gauss_target(y: Tensor, support: Support) -> Tensor:
    """Histogram of N(y, sigma^2) over the bins, renormalised to the support; shape (..., bins).

    y is clipped into [v_min, v_max] (the first and last centres) first, so a target outside
    the support puts its mass at the nearest end.
    """
    y = torch.clamp(y, support.centers[0], support.centers[-1])[..., None]
    cdf = torch.special.erf((support.edges - y) / (math.sqrt(2.0) * support.sigma))
    # erf rounding can make far-tail differences slightly negative.
    mass = torch.clamp(cdf[..., 1:] - cdf[..., :-1], min=0.0)
    return mass / torch.sum(mass, dim=-1, keepdim=True)


def hl_gauss_value(logits: Tensor, support: Support) -> Tensor:
    """Expected value of the predicted histogram."""
    return torch.sum(torch.softmax(logits, dim=-1) * support.centers, dim=-1)


def initial_value_prior(support: Support, value: float = 0.0) -> Tensor:
    """The value head's starting prior: the HL-Gauss histogram of `value`."""
    y = torch.tensor(value, dtype=torch.float32, device=support.edges.device)
    return hl_gauss_target(y, support)


# ---- soft TD(lambda) ----------------------------------------------------------------------------
def soft_td_lambda(
    soft_rewards: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """TD(lambda) targets by one reverse pass over time (axis 0 of shape (T, ...)).

    G_t = r~_t + gamma * (1 - term_t) * [(1 - lam_t) V_{t+1} + lam_t G_{t+1}], with
    lam_t = 0 where the chain must not continue: at a truncation (bootstrap fully from the value
    of the true final observation) and at the last step of the rollout (bootstrap from V_T).
    `next_values[t]` is V(x_{t+1}) at the true next observation; `soft_rewards` already hold
    the entropy bonus (and none at terminations).
    """
    dtype = next_values.dtype
    continues = 1.0 - terminated.to(dtype)
    lam_t = lam * (1.0 - truncated.to(dtype))
    num_steps = next_values.shape[0]
    returns = []
    next_return = torch.zeros_like(next_values[-1])
    for t in reversed(range(num_steps)):
        lam_step = lam_t[t] if t < num_steps - 1 else torch.zeros_like(lam_t[t])
        next_return = soft_rewards[t] + gamma * continues[t] * (
            (1.0 - lam_step) * next_values[t] + lam_step * next_return
        )
        returns.append(next_return)
    return torch.stack(returns[::-1])


# ---- critic --------------------------------------------------------------------------------------
class CriticBatch(NamedTuple):
    obs: Tensor
    action: Tensor
    reward: Tensor
    target: Tensor  # soft TD(lambda) return G
    next_latent: Tensor  # psi: encoder embedding of (x', a')
    terminated: Tensor


def _scalar_value(out: Tensor, support: Support | None) -> Tensor:
    return hl_gauss_value(out, support) if support is not None else out[..., 0]


def critic_value(
    critic: Critic, obs: Tensor, action: Tensor, support: Support | None
) -> Tensor:
    """Q(x, a) as a scalar: the histogram's mean, or the scalar head's output."""
    return _scalar_value(critic.value_head(critic.encode(obs, action)), support)


def critic_loss(
    critic: Critic,
    batch: CriticBatch,
    support: Support | None,
    aux_loss_mult: float,
    reward_prediction: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """HL-Gauss cross-entropy (or 0.5 * squared error) + aux_loss_mult * self-prediction.

    The self-prediction target psi of a terminated transition is the latent of a terminal
    state, which carries no future, so those transitions are masked out of the aux term.
    """
    latent = critic.encode(batch.obs, batch.action)
    out = critic.value_head(latent)
    if support is not None:
        log_probs = F.log_softmax(out, dim=-1)
        target_probs = hl_gauss_target(batch.target, support)
        value_loss = -torch.mean(torch.sum(target_probs * log_probs, dim=-1))
        value = hl_gauss_value(out, support)
    else:
        value = out[..., 0]
        value_loss = 0.5 * torch.mean((value - batch.target) ** 2)

    # Self-prediction: one squared error per output of the predictor (the latent entries and,
    # with reward prediction, the reward), averaged, so the reward weighs as one latent entry.
    pred_latent, pred_reward = critic.predict(latent)
    errors = (pred_latent - batch.next_latent) ** 2
    if reward_prediction:
        errors = torch.cat([errors, ((pred_reward - batch.reward) ** 2)[..., None]], dim=-1)
    alive = 1.0 - batch.terminated.to(latent.dtype)
    aux_loss = torch.sum(alive * torch.mean(errors, dim=-1)) / torch.clamp(
        torch.sum(alive), min=1.0
    )
    loss = value_loss + aux_loss_mult * aux_loss
    metrics = {
        "loss/critic": value_loss,
        "loss/aux": aux_loss,
        "critic/value_error": torch.mean(torch.abs(value - batch.target)),
        "critic/value_mean": torch.mean(value),
        "critic/target_mean": torch.mean(batch.target),
    }
    return loss, {k: v.detach() for k, v in metrics.items()}


# ---- actor and temperatures ---------------------------------------------------------------------
def actor_loss(
    actor: Actor,
    critic: Critic,
    old_dist: D.Gaussian,
    obs: Tensor,
    log_alpha: Tensor,
    log_beta: Tensor,
    action_noise: Tensor,
    kl_noise: Tensor | None,
    support: Support | None,
    objective: str,
    kl_target: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Pathwise policy loss through the critic, with entropy and forward-KL terms.

    - "clipped" (eq. 21): per state, alpha log pi - Q while KL < KL_target, else beta KL;
    - "full" (eq. 20): alpha log pi - Q + beta KL;
    - "value": alpha log pi - Q (no KL term).
    `old_dist` is the behaviour policy pi_old at `obs` (the caller computes it under no_grad);
    `kl_noise` (num_samples, batch, action_dim) draws samples of pi_old; None means the
    analytic Gaussian KL. The critic, the behaviour policy and the temperatures receive no
    gradient; the gradient reaches the actor through the action fed to the critic.
    """
    if objective not in ("clipped", "full", "value"):
        raise ValueError(f"unknown actor objective {objective!r}")
    alpha = torch.exp(log_alpha.detach())
    beta = torch.exp(log_beta.detach())
    old = D.Gaussian(old_dist.mean.detach(), old_dist.std.detach())

    dist = actor(obs)
    action, _, log_prob = D.sample_from_noise(dist, action_noise)
    # The critic runs with detached copies of its parameters (torch.func.functional_call):
    # the gradient flows through the action into the actor, while nothing accumulates in the
    # critic's .grad. Unlike toggling requires_grad, this mutates no module state, so it is
    # safe under torch.compile and when the critic is being trained elsewhere at the same time.
    critic_params = {name: p.detach() for name, p in critic.named_parameters()}
    q = _scalar_value(functional_call(critic, critic_params, (obs, action)), support)

    kl = D.analytic_kl(old, dist) if kl_noise is None else D.sampled_forward_kl(old, dist, kl_noise)

    value_term = alpha * log_prob - q
    if objective == "clipped":
        per_state = torch.where(kl < kl_target, value_term, beta * kl)
    elif objective == "full":
        per_state = value_term + beta * kl
    else:
        per_state = value_term
    loss = torch.mean(per_state)
    metrics = {
        "loss/actor": loss,
        "entropy": -torch.mean(log_prob),
        "kl": torch.mean(kl),
        "actor/kl_clipped_fraction": torch.mean((kl >= kl_target).to(kl.dtype)),
        "actor/q_mean": torch.mean(q),
        "actor/std_mean": torch.mean(dist.std),
    }
    return loss, {k: v.detach() for k, v in metrics.items()}


def temperature_loss(
    log_alpha: Tensor,
    log_beta: Tensor,
    entropy: Tensor | float,
    kl: Tensor | float,
    target_entropy: float,
    kl_target: float,
) -> Tensor:
    """loss_alpha + loss_beta (eq. 18, and eq. 19 with the KL in place of the entropy).

    d/d log_alpha = alpha * (H - H_target): descent raises alpha when entropy is below target.
    d/d log_beta = -beta * (KL - KL_target): descent raises beta when KL is above target.
    """
    entropy = torch.as_tensor(entropy).detach()
    kl = torch.as_tensor(kl).detach()
    loss_alpha = torch.exp(log_alpha) * (entropy - target_entropy)
    loss_beta = -torch.exp(log_beta) * (kl - kl_target)
    return loss_alpha + loss_beta
