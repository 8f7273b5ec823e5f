"""Actor and critic as parameter dicts plus pure apply functions.

Parameters are nested dicts of arrays with stable names (`actor/hidden_0/kernel`, ...) so a
checkpoint is a flat, framework-neutral name -> array map that the PyTorch backend can read.

Layer counting follows Table 1: a network "of n layers" has n Linear layers. Every network
ends in a plain Linear output layer; every other Linear is followed by the configured
normalization and SiLU. The critic encoder's output (the latent z, also the self-prediction
target) is that raw Linear output; the value head and the predictor apply SiLU to it first.
The HL-Gauss value head adds a trainable prior, `PRIOR_SCALE` times the histogram of 0, to
its logits. This is the released code's architecture (docs/algorithm.md, "Networks"), except
that kernels are orthogonal (gain 1) by default where the released code keeps flax's default
LeCun normal (`kernel_init` chooses): a deviation, stated there; biases are zero in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from reppo.config import Config
from reppo.jax import distributions as D

Params = dict[str, Any]
_NORM_EPS = 1e-6


# ---- building blocks ------------------------------------------------------------------------
# The value head's logits are its output plus PRIOR_SCALE * prior, the prior starting as the
# HL-Gauss histogram of 0: at initialisation the prior dominates the (order-one) output, so the
# critic starts near 0 with a smooth, peaked histogram, and both parts keep learning.
PRIOR_SCALE = 40.0


KERNEL_INITIALIZERS = {
    "orthogonal": jax.nn.initializers.orthogonal(1.0),
    "lecun_normal": jax.nn.initializers.lecun_normal(),  # truncated normal, variance 1 / fan_in
}


def init_dense(
    key: jax.Array, in_dim: int, out_dim: int, kernel_init: str = "orthogonal"
) -> Params:
    """A kernel drawn by `KERNEL_INITIALIZERS[kernel_init]` and a zero bias."""
    kernel = KERNEL_INITIALIZERS[kernel_init](key, (in_dim, out_dim), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((out_dim,), jnp.float32)}


def dense(params: Params, x: jax.Array) -> jax.Array:
    return x @ params["kernel"] + params["bias"]


def init_norm(kind: str, dim: int) -> Params:
    if kind == "rms":
        return {"scale": jnp.ones((dim,), jnp.float32)}
    if kind == "layer":
        return {"scale": jnp.ones((dim,), jnp.float32), "bias": jnp.zeros((dim,), jnp.float32)}
    return {}


def apply_norm(kind: str, params: Params, x: jax.Array) -> jax.Array:
    if kind == "rms":
        x = x * jax.lax.rsqrt(jnp.mean(x**2, axis=-1, keepdims=True) + _NORM_EPS)
        return x * params["scale"]
    if kind == "layer":
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + _NORM_EPS) * params["scale"] + params["bias"]
    return x


def init_mlp(
    key: jax.Array,
    in_dim: int,
    hidden_dim: int,
    num_hidden: int,
    out_dim: int | None,
    norm: str,
    kernel_init: str = "orthogonal",
) -> Params:
    """`num_hidden` blocks Linear -> norm -> SiLU, then an optional plain Linear output."""
    keys = jax.random.split(key, num_hidden + 1)
    params: Params = {}
    dim = in_dim
    for i in range(num_hidden):
        params[f"hidden_{i}"] = {
            "linear": init_dense(keys[i], dim, hidden_dim, kernel_init),
            "norm": init_norm(norm, hidden_dim),
        }
        dim = hidden_dim
    if out_dim is not None:
        params["output"] = init_dense(keys[-1], dim, out_dim, kernel_init)
    return params


def apply_mlp(params: Params, x: jax.Array, norm: str) -> jax.Array:
    i = 0
    while f"hidden_{i}" in params:
        block = params[f"hidden_{i}"]
        x = jax.nn.silu(apply_norm(norm, block["norm"], dense(block["linear"], x)))
        i += 1
    if "output" in params:
        x = dense(params["output"], x)
    return x


# ---- the networks of REPPO --------------------------------------------------------------------
@dataclass(frozen=True)
class Networks:
    """Static description of REPPO's networks for one env; hashable, so usable under jit."""

    obs_size: int
    action_size: int
    actor_hidden_dim: int
    actor_num_layers: int
    critic_hidden_dim: int
    critic_encoder_layers: int
    critic_head_layers: int
    critic_pred_layers: int
    norm: str
    min_std: float
    value_outputs: int  # num_bins for HL-Gauss, 1 for the scalar (MSE) critic
    reward_prediction: bool
    kernel_init: str = "orthogonal"

    @classmethod
    def from_config(cls, config: Config, obs_size: int, action_size: int) -> Networks:
        return cls(
            obs_size=obs_size,
            action_size=action_size,
            actor_hidden_dim=config.actor_hidden_dim,
            actor_num_layers=config.actor_num_layers,
            critic_hidden_dim=config.critic_hidden_dim,
            critic_encoder_layers=config.critic_encoder_layers,
            critic_head_layers=config.critic_head_layers,
            critic_pred_layers=config.critic_pred_layers,
            norm=config.norm,
            min_std=config.min_std,
            value_outputs=config.num_bins if config.use_hl_gauss else 1,
            reward_prediction=config.reward_prediction,
            kernel_init=config.kernel_init,
        )

    # -- actor --
    def init_actor(self, key: jax.Array) -> Params:
        return init_mlp(
            key,
            self.obs_size,
            self.actor_hidden_dim,
            self.actor_num_layers - 1,
            2 * self.action_size,
            self.norm,
            self.kernel_init,
        )

    def policy(self, actor_params: Params, obs: jax.Array) -> D.Gaussian:
        out = apply_mlp(actor_params, obs, self.norm)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return D.gaussian_from_head(mean, log_std, self.min_std)

    # -- critic --
    def init_critic(self, key: jax.Array, value_prior: jax.Array | None = None) -> Params:
        """Encoder, value head, predictor and (HL-Gauss) the value prior.

        `value_prior` (num_bins,) is the HL-Gauss prior's starting value: the agent passes the
        histogram of 0 (`losses.initial_value_prior`); None starts it at zeros (no prior).
        """
        k_enc, k_head, k_pred = jax.random.split(key, 3)
        hidden = self.critic_hidden_dim
        pred_out = hidden + (1 if self.reward_prediction else 0)
        params = {
            "encoder": init_mlp(
                k_enc,
                self.obs_size + self.action_size,
                hidden,
                self.critic_encoder_layers - 1,
                hidden,
                self.norm,
                self.kernel_init,
            ),
            "head": init_mlp(
                k_head,
                hidden,
                hidden,
                self.critic_head_layers - 1,
                self.value_outputs,
                self.norm,
                self.kernel_init,
            ),
            "predictor": init_mlp(
                k_pred,
                hidden,
                hidden,
                self.critic_pred_layers - 1,
                pred_out,
                self.norm,
                self.kernel_init,
            ),
        }
        if self.value_outputs > 1:
            if value_prior is None:
                value_prior = jnp.zeros((self.value_outputs,), jnp.float32)
            if jnp.shape(value_prior) != (self.value_outputs,):
                raise ValueError(
                    f"value_prior has shape {jnp.shape(value_prior)}, the value head outputs "
                    f"({self.value_outputs},)"
                )
            params["value_prior"] = jnp.asarray(value_prior, jnp.float32)
        return params

    def encode(self, critic_params: Params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The latent z = phi(x, a), the encoder's raw output."""
        return apply_mlp(
            critic_params["encoder"], jnp.concatenate([obs, action], axis=-1), self.norm
        )

    def value_head(self, critic_params: Params, latent: jax.Array) -> jax.Array:
        """HL-Gauss logits (..., num_bins), or the scalar value (..., 1)."""
        out = apply_mlp(critic_params["head"], jax.nn.silu(latent), self.norm)
        if "value_prior" in critic_params:
            out = out + PRIOR_SCALE * critic_params["value_prior"]
        return out

    def predict(self, critic_params: Params, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Self-prediction f_p(z): (next latent, reward or zeros)."""
        out = apply_mlp(critic_params["predictor"], jax.nn.silu(latent), self.norm)
        if self.reward_prediction:
            return out[..., :-1], out[..., -1]
        return out, jnp.zeros(out.shape[:-1], out.dtype)
