"""Actor and critic as `nn.Module`s with the parameter layout of `reppo.jax.networks`.

Every parameter has the JAX name and shape: a Linear stores `kernel` (in, out) and `bias`
(out,) and computes `x @ kernel + bias`; RMSNorm stores `scale`, LayerNorm `scale` and `bias`,
and the no-norm ablation nothing. A state_dict name `hidden_0.linear.kernel` is the JAX flat
name `hidden_0/linear/kernel`, so weights move between backends by name, with no
transposition (`to_flat`, `load_flat`).

Layer counting and architecture follow the JAX backend: every network ends in a plain Linear
output layer and every other Linear is followed by the norm and SiLU; the critic's latent is
the encoder's raw output, which the value head and the predictor pass through SiLU first; the
HL-Gauss value head adds `PRIOR_SCALE` times a trainable prior (`value_prior`) to its logits.
All control flow in `forward` depends only on construction-time constants, so the modules trace
under `torch.compile` without graph breaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reppo.config import Config
from reppo.torch import distributions as D

_NORM_EPS = 1e-6


class FlatMismatchError(ValueError):
    """A flat name -> array map does not fit a module's parameters."""


# ---- building blocks ------------------------------------------------------------------------
# As reppo.jax.networks.PRIOR_SCALE: the value head's logits are output + PRIOR_SCALE * prior.
PRIOR_SCALE = 40.0


# The standard deviation of a unit normal truncated to [-2, 2]: dividing by it gives the
# truncated draw the variance asked for (as JAX's `variance_scaling` does).
_TRUNCATED_UNIT_STD = 0.87962566103423978


class Linear(nn.Module):
    """`x @ kernel + bias`; a zero bias and a kernel initialised as `kernel_init` says:
    'orthogonal' (gain 1) or 'lecun_normal' (a normal truncated at two standard deviations,
    variance 1 / fan_in), as the JAX `init_dense`."""

    def __init__(
        self, in_dim: int, out_dim: int, device: Any = None, kernel_init: str = "orthogonal"
    ) -> None:
        super().__init__()
        if kernel_init not in ("orthogonal", "lecun_normal"):
            raise ValueError(
                f"unknown kernel_init {kernel_init!r}; expected 'orthogonal' or 'lecun_normal'"
            )
        self.kernel_init = kernel_init
        self.kernel = nn.Parameter(torch.empty(in_dim, out_dim, device=device))
        self.bias = nn.Parameter(torch.empty(out_dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.kernel_init == "orthogonal":
                nn.init.orthogonal_(self.kernel, gain=1.0)
            else:
                std = (1.0 / self.kernel.shape[0]) ** 0.5 / _TRUNCATED_UNIT_STD
                nn.init.trunc_normal_(self.kernel, std=std, a=-2.0 * std, b=2.0 * std)
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.kernel + self.bias


class RMSNorm(nn.Module):
    def __init__(self, dim: int, device: Any = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim, device=device))

    def forward(self, x: Tensor) -> Tensor:
        # x * rsqrt(mean(x^2) + eps) * scale, as the JAX apply_norm.
        return F.rms_norm(x, self.scale.shape, self.scale, _NORM_EPS)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, device: Any = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim, device=device))
        self.bias = nn.Parameter(torch.zeros(dim, device=device))

    def forward(self, x: Tensor) -> Tensor:
        # (x - mean) * rsqrt(biased var + eps) * scale + bias, as the JAX apply_norm.
        return F.layer_norm(x, self.scale.shape, self.scale, self.bias, _NORM_EPS)


class NoNorm(nn.Module):
    """The no-norm ablation: identity, no parameters (the JAX `norm` dict is empty)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def make_norm(kind: str, dim: int, device: Any = None) -> nn.Module:
    if kind == "rms":
        return RMSNorm(dim, device)
    if kind == "layer":
        return LayerNorm(dim, device)
    if kind == "none":
        return NoNorm()
    raise ValueError(f"unknown norm {kind!r}; expected 'rms', 'layer' or 'none'")


class HiddenBlock(nn.Module):
    """Linear -> norm -> SiLU."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        norm: str,
        device: Any = None,
        kernel_init: str = "orthogonal",
    ) -> None:
        super().__init__()
        self.linear = Linear(in_dim, out_dim, device, kernel_init)
        self.norm = make_norm(norm, out_dim, device)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.norm(self.linear(x)))


class MLP(nn.Module):
    """`num_hidden` blocks `hidden_i` (Linear -> norm -> SiLU), then an optional Linear `output`.

    Mirrors `init_mlp` / `apply_mlp` of the JAX backend.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_hidden: int,
        out_dim: int | None,
        norm: str,
        device: Any = None,
        kernel_init: str = "orthogonal",
    ) -> None:
        super().__init__()
        self.num_hidden = num_hidden
        dim = in_dim
        for i in range(num_hidden):
            self.add_module(
                f"hidden_{i}", HiddenBlock(dim, hidden_dim, norm, device, kernel_init)
            )
            dim = hidden_dim
        self.has_output = out_dim is not None
        if out_dim is not None:
            self.output = Linear(dim, out_dim, device, kernel_init)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_hidden):  # a construction-time constant: unrolled when traced
            x = getattr(self, f"hidden_{i}")(x)
        if self.has_output:
            x = self.output(x)
        return x


# ---- the networks of REPPO --------------------------------------------------------------------
class Actor(MLP):
    """The policy network obs -> pre-tanh Gaussian, with the JAX actor's parameter names.

    Its blocks sit at the top level (`hidden_0`, ..., `output`) as in the JAX actor dict:
    actor_num_layers - 1 hidden blocks and an output Linear of 2 * action_size (mean, log std).
    """

    def __init__(
        self, config: Config, obs_size: int, action_size: int, device: Any = None
    ) -> None:
        super().__init__(
            obs_size,
            config.actor_hidden_dim,
            config.actor_num_layers - 1,
            2 * action_size,
            config.norm,
            device,
            config.kernel_init,
        )
        self.obs_size = obs_size
        self.action_size = action_size
        self.min_std = config.min_std

    def forward(self, obs: Tensor) -> D.Gaussian:  # type: ignore[override]
        mean, log_std = torch.chunk(super().forward(obs), 2, dim=-1)
        return D.gaussian_from_head(mean, log_std, self.min_std)


class Critic(nn.Module):
    """Encoder phi(x, a), value head f_c, self-predictor f_p and (HL-Gauss) the value prior,
    as the JAX `init_critic`.

    `value_prior` (num_bins,) is the HL-Gauss prior's starting value: the agent passes the
    histogram of 0 (`losses.initial_value_prior`); None starts it at zeros (no prior).
    `forward(obs, action)` is the value head's output at the encoder's latent.
    """

    def __init__(
        self,
        config: Config,
        obs_size: int,
        action_size: int,
        value_prior: Tensor | np.ndarray | None = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.obs_size = obs_size
        self.action_size = action_size
        self.value_outputs = config.num_bins if config.use_hl_gauss else 1
        self.reward_prediction = config.reward_prediction
        hidden, norm = config.critic_hidden_dim, config.norm
        pred_out = hidden + (1 if config.reward_prediction else 0)
        init = config.kernel_init
        self.encoder = MLP(
            obs_size + action_size, hidden, config.critic_encoder_layers - 1, hidden, norm,
            device, init,
        )
        self.head = MLP(
            hidden, hidden, config.critic_head_layers - 1, self.value_outputs, norm, device, init
        )
        self.predictor = MLP(
            hidden, hidden, config.critic_pred_layers - 1, pred_out, norm, device, init
        )
        self.has_prior = self.value_outputs > 1
        if self.has_prior:
            if value_prior is None:
                prior = torch.zeros(self.value_outputs, device=device)
            elif isinstance(value_prior, torch.Tensor):  # possibly on another device
                prior = value_prior.detach().to(device=device, dtype=torch.float32).clone()
            else:
                prior = torch.as_tensor(np.asarray(value_prior, np.float32), device=device)
            if tuple(prior.shape) != (self.value_outputs,):
                raise ValueError(
                    f"value_prior has shape {tuple(prior.shape)}, the value head outputs "
                    f"({self.value_outputs},)"
                )
            self.value_prior = nn.Parameter(prior)

    def encode(self, obs: Tensor, action: Tensor) -> Tensor:
        """The latent z = phi(x, a), the encoder's raw output."""
        return self.encoder(torch.cat([obs, action], dim=-1))

    def value_head(self, latent: Tensor) -> Tensor:
        """HL-Gauss logits (..., num_bins), or the scalar value (..., 1)."""
        out = self.head(F.silu(latent))
        if self.has_prior:
            out = out + PRIOR_SCALE * self.value_prior
        return out

    def predict(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Self-prediction f_p(z): (next latent, reward or zeros)."""
        out = self.predictor(F.silu(latent))
        if self.reward_prediction:
            return out[..., :-1], out[..., -1]
        return out, torch.zeros(out.shape[:-1], dtype=out.dtype, device=out.device)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.value_head(self.encode(obs, action))


# ---- weights as flat name -> array maps ---------------------------------------------------------
def _flat_name(state_dict_name: str) -> str:
    return state_dict_name.replace(".", "/")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_flat(module: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """{prefix + JAX-style name: numpy copy} of every parameter and buffer of `module`."""
    return {
        prefix + _flat_name(name): value.detach().cpu().numpy().copy()
        for name, value in module.state_dict().items()
    }


def load_flat(
    module: nn.Module,
    flat: Mapping[str, Any],
    prefix: str = "",
    index: int | None = None,
) -> None:
    """Copy `flat[prefix + name]` into each parameter of `module`, checking names, shapes, dtypes.

    Arrays whose names do not start with `prefix` are ignored (the rest of a checkpoint); an
    array under `prefix` that the module does not have is an error, as is a missing one. With
    `index`, each array is first indexed along its leading axis (a JAX checkpoint stacks the
    seeds of a run there). Nothing is copied unless every array fits.
    """
    targets = {
        prefix + _flat_name(name): value
        for name, value in module.state_dict(keep_vars=True).items()
    }
    values = {}
    for name, ref in targets.items():
        if name not in flat:
            raise FlatMismatchError(f"missing array {name!r}")
        value = np.asarray(flat[name])
        if index is not None:
            value = value[index]
        if tuple(value.shape) != tuple(ref.shape):
            raise FlatMismatchError(
                f"array {name!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        if np.dtype(value.dtype).name != _dtype_name(ref.dtype):
            raise FlatMismatchError(
                f"array {name!r} has dtype {value.dtype}, expected {_dtype_name(ref.dtype)}"
            )
        values[name] = value
    extra = sorted(k for k in flat if k.startswith(prefix) and k not in targets)
    if extra:
        raise FlatMismatchError(
            f"unexpected array {extra[0]!r} under prefix {prefix!r} ({len(extra)} in all); "
            "was it saved with another config?"
        )
    with torch.no_grad():
        for name, ref in targets.items():
            ref.copy_(torch.from_numpy(np.array(values[name], copy=True)))
