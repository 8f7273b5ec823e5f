"""The tanh-squashed diagonal Gaussian policy (docs/algorithm.md) as pure functions of tensors.

Mirrors `reppo.jax.distributions` function by function. Sampling carries the pre-tanh sample
`u` so log-probabilities never need atanh of a clipped action. All log-probabilities,
entropies and KLs are summed over the action dimension (the last axis).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# exp(log_std) is bounded above so a diverging head cannot produce inf; the lower end is
# governed by min_std.
_LOG_STD_MAX = 2.0


class Gaussian(NamedTuple):
    """Pre-tanh diagonal Gaussian; mean and std have shape (..., action_dim)."""

    mean: Tensor
    std: Tensor


def gaussian_from_head(mean: Tensor, log_std: Tensor, min_std: float) -> Gaussian:
    """sigma = exp(min(log sigma, 2)) + min_std."""
    std = torch.exp(torch.clamp(log_std, max=_LOG_STD_MAX)) + min_std
    return Gaussian(mean, std)


def gaussian_log_prob(dist: Gaussian, u: Tensor) -> Tensor:
    """log N(u; mean, std) summed over the last axis."""
    z = (u - dist.mean) / dist.std
    return torch.sum(-0.5 * z**2 - torch.log(dist.std) - _HALF_LOG_2PI, dim=-1)


def tanh_log_det_jacobian(u: Tensor) -> Tensor:
    """log |d tanh(u) / du| summed over the last axis, in the stable softplus form.

    log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)).
    """
    return torch.sum(2.0 * (_LOG_2 - u - F.softplus(-2.0 * u)), dim=-1)


def log_prob_from_pre_tanh(dist: Gaussian, u: Tensor) -> Tensor:
    """log pi(tanh(u)) of the squashed policy, from the pre-tanh sample u."""
    return gaussian_log_prob(dist, u) - tanh_log_det_jacobian(u)


def sample_from_noise(dist: Gaussian, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reparameterised sample from standard-normal noise: (tanh(u), u, log pi(tanh(u)))."""
    u = dist.mean + dist.std * noise
    return torch.tanh(u), u, log_prob_from_pre_tanh(dist, u)


def sample(
    dist: Gaussian, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Reparameterised sample: (action = tanh(u), pre-tanh u, log pi(action)).

    The generator, if given, must live on the device of `dist.mean`.
    """
    noise = torch.randn(
        dist.mean.shape, generator=generator, dtype=dist.mean.dtype, device=dist.mean.device
    )
    return sample_from_noise(dist, noise)


def deterministic_action(dist: Gaussian) -> Tensor:
    """The evaluation action tanh(mean)."""
    return torch.tanh(dist.mean)


def sampled_forward_kl(old: Gaussian, new: Gaussian, noise: Tensor) -> Tensor:
    """Monte-Carlo forward KL(pi_old || pi_new) per state.

    `noise` has shape (num_samples, ..., action_dim); samples are drawn from `old`. tanh is a
    bijection, so the Jacobian terms of both log-probs cancel at the same pre-tanh point and the
    KL of the squashed policies equals that of the pre-tanh Gaussians.
    """
    u = old.mean + old.std * noise
    log_ratio = gaussian_log_prob(old, u) - gaussian_log_prob(new, u)
    return torch.mean(log_ratio, dim=0)


def analytic_kl(old: Gaussian, new: Gaussian) -> Tensor:
    """Closed-form KL(old || new) of diagonal Gaussians, summed over the last axis."""
    var_ratio = (old.std / new.std) ** 2
    mean_term = ((old.mean - new.mean) / new.std) ** 2
    return 0.5 * torch.sum(var_ratio + mean_term - 1.0 - torch.log(var_ratio), dim=-1)
