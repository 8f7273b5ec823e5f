"""The one typed configuration of a REPPO run, shared by every backend.

Each field is documented where it is declared (the `help` metadata is also the CLI help). A
preset (see `presets.py`) is a named `Config`. The whole config is saved as `config.json` in the
run directory; a policy is rebuilt from it plus the saved weights.

References: "Table 1" is the paper's hyperparameter table; docs/algorithm.md explains every
choice taken where the paper is silent or wrong.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

# Fields that may change when a run is resumed: extending it, or how it is logged. Any other
# change would make it a different run, which config.json would no longer describe.
RESUMABLE_FIELDS = frozenset({
    "total_steps", "log_interval_steps", "eval_interval_steps", "eval_episodes",
    "checkpoint_interval_steps", "keep_checkpoints", "tensorboard", "wandb", "wandb_project",
    "num_devices",
})


def frozen_changes(saved: Config, new: Config) -> list[str]:
    """The fields, outside `RESUMABLE_FIELDS`, in which `new` differs from a run's `saved`
    config: what resuming that run with `new` would refuse."""
    return sorted(
        f.name for f in dataclasses.fields(Config)
        if f.name not in RESUMABLE_FIELDS and getattr(new, f.name) != getattr(saved, f.name)
    )


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and how to fix it."""


def _f(default: Any, help: str, **choices: Any) -> Any:
    return field(default=default, metadata={"help": help, **choices})


NormKind = Literal["rms", "layer", "none"]
KernelInit = Literal["orthogonal", "lecun_normal"]
ActorObjective = Literal["clipped", "full", "value"]
KLEstimator = Literal["sample", "analytic"]
Impl = Literal["auto", "jax", "warp"]
Backend = Literal["jax", "torch"]
Device = Literal["auto", "cpu", "cuda"]
SeedBatching = Literal["map", "vmap"]
LRSchedule = Literal["constant", "linear"]


@dataclass(frozen=True)
class Config:
    # ---- run -------------------------------------------------------------------------------
    env: str = _f("CartpoleBalance", "Environment name (`reppo envs` lists them).")
    backend: Backend = _f(
        "jax",
        "Training backend: 'jax' (MuJoCo Playground) or 'torch' (ManiSkill3, and Playground "
        "through a zero-copy DLPack bridge). Both read and write the same run directories.",
    )
    seed: int = _f(0, "Random seed of the first run; seed i of --num-seeds K is seed + i.")
    num_seeds: int = _f(1, "Independent seeds trained side by side in one process (JAX backend).")
    seed_batching: SeedBatching = _f(
        "vmap",
        "How the JAX backend runs --num-seeds seeds in one jitted call: 'vmap' batched (one "
        "program over all seeds, each with its own envs, networks and keys) or 'map' one after "
        "another (lax.map). Both give every seed the same computation; vmap is faster where "
        "one seed leaves the device idle, as on a CPU (benchmarks/results.md).",
    )
    total_steps: int = _f(50_000_000, "Environment steps to train for, summed over envs (Table 1).")
    impl: Impl = _f(
        "auto",
        "MuJoCo Playground physics implementation: 'jax' (MJX), 'warp' (MuJoCo Warp) or 'auto' "
        "(MJX, many times faster than warp on a CPU; docs/algorithm.md).",
    )
    num_devices: int = _f(
        0,
        "Devices the JAX backend splits its envs across (data parallel: the compiler averages "
        "the gradients). 0: every local GPU or TPU whose count divides num_envs and the "
        "minibatch, 1 on a CPU (whose forced host devices share the same cores). The math "
        "is that of one device; checkpoints do not depend on it, so a run may resume on "
        "another count.",
    )

    # ---- torch backend ---------------------------------------------------------------------
    device: Device = _f(
        "auto", "Torch device: 'cuda' when available with 'auto', else 'cpu' (torch backend)."
    )
    torch_compile: bool = _f(
        False, "torch.compile each minibatch update (critic, actor and temperatures, their "
        "gradients and Adam steps) as one program (torch backend; needs a C++ compiler on a CPU)."
    )
    cuda_graphs: bool = _f(
        False,
        "Capture the compiled update in CUDA graphs (torch.compile mode 'reduce-overhead'); "
        "needs a GPU and torch_compile (torch backend).",
    )

    # ---- data collection -------------------------------------------------------------------
    num_envs: int = _f(1024, "Parallel environments (Table 1: n envs).")
    num_steps: int = _f(128, "Steps per env per iteration; num_envs*num_steps transitions/iter.")
    gamma: float | None = _f(
        None, "Discount. None: 1 - 10 / episode_length (Table 1), 0.99 for 1000-step DMC tasks."
    )
    lam: float = _f(0.95, "TD(lambda) mixing parameter (Table 1).")
    num_bootstrap_samples: int = _f(
        1, "Actions a' ~ pi(.|x') averaged for the bootstrap value V(x') (Algorithm 1: one)."
    )
    normalize_obs: bool = _f(
        True, "Running mean/variance observation normalization, applied inside the policy."
    )
    bootstrap_terminations: bool | None = _f(
        None,
        "Treat an env's termination as the end of an episode that could have gone on: train on "
        "it like a time-limit truncation, bootstrapping from the value of the observation it "
        "reached (and the episode still restarts). False: a termination has no future (G = r). "
        "None: the task family's convention, True for ManiSkill3 (whose terminations are "
        "successes and failures of a task whose reward would go on) and False elsewhere.",
    )
    stagger_episodes: bool = _f(
        True,
        "Start each training env at a random step of its first episode (uniform in [0, "
        "episode_length)), so that time-limit truncations spread over iterations. Without it "
        "all envs of a task that never terminates (DM Control) truncate together and every "
        "iteration trains on the same slice of the episode. Evaluation envs never stagger.",
    )

    # ---- optimization ----------------------------------------------------------------------
    num_epochs: int = _f(8, "Passes over each iteration's data (Table 1: n epochs).")
    num_minibatches: int = _f(64, "Minibatches per epoch (Table 1: n mini batches).")
    actor_lr: float = _f(3e-4, "Adam learning rate of the actor (Table 1).")
    critic_lr: float = _f(3e-4, "Adam learning rate of the critic (Table 1).")
    temperature_lr: float | None = _f(
        None, "Adam learning rate of log alpha and log beta. None: the actor's."
    )
    max_grad_norm: float = _f(0.5, "Global gradient-norm clip of each optimizer (Table 1).")
    lr_schedule: LRSchedule = _f(
        "constant",
        "Learning rates of the actor and the critic: 'constant' (Table 1) or 'linear', decayed "
        "with the iterations from their value to 0 at total_steps (iteration i of n steps at "
        "1 - i/n of it), so that a fixed budget ends on a settled policy. The temperatures "
        "keep their rate. Not the released code's anneal_lr, which decays per optimizer step "
        "and the temperatures too (docs/algorithm.md). Extending total_steps on resume "
        "stretches the rest of the decay.",
    )

    # ---- networks --------------------------------------------------------------------------
    actor_hidden_dim: int = _f(512, "Width of the actor's hidden layers (Table 1).")
    actor_num_layers: int = _f(3, "Hidden layers of the actor (Table 1).")
    critic_hidden_dim: int = _f(512, "Width of every critic layer (Table 1).")
    critic_encoder_layers: int = _f(2, "Layers of the critic encoder phi(x, a) (Table 1).")
    critic_head_layers: int = _f(2, "Layers of the value head f_c (Table 1).")
    critic_pred_layers: int = _f(2, "Layers of the self-prediction head f_p (Table 1).")
    norm: NormKind = _f(
        "rms",
        "Normalization after each hidden Linear: 'rms' (RMSNorm, released code), 'layer' "
        "(LayerNorm, paper text) or 'none' (the no-norm ablation).",
    )
    kernel_init: KernelInit = _f(
        "orthogonal",
        "Initialisation of every Linear kernel (biases start at zero): 'orthogonal' (gain 1) "
        "or 'lecun_normal' (a truncated normal of variance 1 / fan_in, the released code's "
        "choice). docs/algorithm.md compares the two.",
    )

    # ---- critic ----------------------------------------------------------------------------
    use_hl_gauss: bool = _f(
        True, "HL-Gauss categorical critic; False is the scalar-MSE ablation (paper 4.5)."
    )
    num_bins: int = _f(151, "HL-Gauss histogram bins (Table 1).")
    v_min: float | None = _f(
        None, "Lower end of the value support. None: from the env's reward range and gamma."
    )
    v_max: float | None = _f(
        None, "Upper end of the value support. None: from the env's reward range and gamma."
    )
    hl_gauss_sigma_ratio: float = _f(0.75, "HL-Gauss sigma as a multiple of the bin width.")
    aux_loss_mult: float = _f(
        1.0, "Weight of the latent self-prediction loss (Table 1); 0 is the no-aux ablation."
    )
    reward_prediction: bool = _f(
        True, "The prediction head also regresses the reward (released code), under aux_loss_mult."
    )

    # ---- actor and temperatures ------------------------------------------------------------
    min_std: float = _f(0.1, "Added to exp(log sigma) of the pre-tanh Gaussian (released code).")
    actor_objective: ActorObjective = _f(
        "clipped",
        "'clipped' (eq. 21, per-state KL switch; the paper's numbers), 'full' (eq. 20) or "
        "'value' (no KL term: the no-KL ablation).",
    )
    action_noise_correlation: float = _f(
        0.0,
        "Correlation rho in [0, 1) of the rollout's exploration noise from one env step to the "
        "next: eps_t = rho * eps_(t-1) + sqrt(1 - rho^2) * xi_t, so each action is still a draw "
        "of the policy (eps_t ~ N(0, I)) but consecutive ones push the same way for about "
        "1 / (1 - rho) steps. 0: independent noise (the paper). Given the state, the executed "
        "action is then not a draw of pi: its noise leans the way the previous actions "
        "pushed, so the data, the critic's (x, a) pairs and the targets follow that "
        "correlated behaviour (docs/algorithm.md). The chain restarts at every rollout; "
        "updates and the bootstrap actions a' always sample independently.",
    )
    alpha_init: float = _f(0.01, "Initial entropy temperature alpha (Table 1).")
    beta_init: float = _f(0.01, "Initial KL temperature beta (Table 1).")
    target_entropy_per_dim: float = _f(
        -0.5, "Entropy target per action dimension: H_target = this * |A| (Table 1, sign fixed)."
    )
    kl_target: float = _f(0.1, "KL target, summed over action dimensions (Table 1).")
    kl_estimator: KLEstimator = _f(
        "sample",
        "Forward KL(pi_old || pi): 'sample' (kl_num_samples draws of pi_old, as the paper) or "
        "'analytic' (closed-form Gaussian KL, equal in expectation).",
    )
    kl_num_samples: int = _f(
        16,
        "Samples of pi_old per state for the sampled KL: 16 as the released JAX code (the "
        "paper gives no number; docs/algorithm.md).",
    )

    # ---- logging, evaluation, checkpoints --------------------------------------------------
    log_interval_steps: int = _f(
        1_000_000, "Env steps between log lines (a new value compiles nothing: the compiled "
        "chunk of iterations ends early at each log line)."
    )
    eval_interval_steps: int = _f(5_000_000, "Env steps between evaluations (0: only at the end).")
    eval_episodes: int = _f(16, "Deterministic evaluation episodes (run in parallel).")
    checkpoint_interval_steps: int = _f(
        5_000_000, "Env steps between checkpoints (one is also written at the end)."
    )
    keep_checkpoints: int = _f(3, "Most recent checkpoints kept on disk.")
    tensorboard: bool = _f(False, "Also write TensorBoard event files (needs tensorboardX).")
    wandb: bool = _f(False, "Also log to Weights & Biases (offline unless WANDB_MODE is set).")
    wandb_project: str = _f("reppo", "Weights & Biases project name.")

    # ---- derived quantities ----------------------------------------------------------------
    @property
    def steps_per_iteration(self) -> int:
        """Env steps (transitions) collected per iteration, per seed."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.steps_per_iteration // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_iteration))

    def resolved_gamma(self, episode_length: int) -> float:
        return self.gamma if self.gamma is not None else 1.0 - 10.0 / episode_length

    def resolved_bootstrap_terminations(self, family: str) -> bool:
        """Whether terminations bootstrap, for an env of `family` (`EnvSpec.family`)."""
        if self.bootstrap_terminations is not None:
            return self.bootstrap_terminations
        return family == "maniskill"

    def value_support(
        self, gamma: float, reward_range: tuple[float, float]
    ) -> tuple[float, float]:
        """(v_min, v_max): the config's, or the discounted reward range with headroom.

        With rewards in [r_lo, r_hi] returns lie in [r_lo, r_hi] / (1 - gamma); the soft reward
        adds the entropy bonus, so the support gets half the span as headroom at the top (and at
        the bottom for negative rewards). DMC (rewards in [0, 1], gamma 0.99) gives [0, 150].
        """
        r_lo, r_hi = reward_range
        lo, hi = r_lo / (1.0 - gamma), r_hi / (1.0 - gamma)
        margin = 0.5 * (hi - lo)
        auto_lo = lo - margin if r_lo < 0 else lo
        v_min = self.v_min if self.v_min is not None else auto_lo
        v_max = self.v_max if self.v_max is not None else hi + margin
        if not v_min < v_max:
            raise ConfigError(
                f"the value support [{v_min}, {v_max}] is empty (v_min from "
                f"{'the config' if self.v_min is not None else 'the reward range'}, v_max from "
                f"{'the config' if self.v_max is not None else 'the reward range'}); "
                "set both --v-min and --v-max"
            )
        return float(v_min), float(v_max)

    # ---- (de)serialization and validation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; valid fields are listed by "
                "`reppo train --help`"
            )
        values = {name: coerce_field(name, value) for name, value in data.items()}
        return cls(**values).validated()

    def replace(self, **changes: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **changes})

    def validated(self) -> Config:
        """Return self, or raise ConfigError naming the first invalid field and a fix."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        positive = [
            "num_seeds", "total_steps", "num_envs", "num_steps", "num_epochs", "num_minibatches",
            "num_bootstrap_samples", "actor_hidden_dim", "actor_num_layers",
            "critic_hidden_dim", "critic_encoder_layers", "critic_head_layers",
            "critic_pred_layers", "kl_num_samples", "log_interval_steps", "eval_episodes",
            "checkpoint_interval_steps", "keep_checkpoints", "actor_lr", "critic_lr",
            "max_grad_norm", "alpha_init", "beta_init", "kl_target", "hl_gauss_sigma_ratio",
        ]
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.num_bins < 2:
            raise ConfigError(f"num_bins must be >= 2, got {self.num_bins}")
        if self.temperature_lr is not None and not self.temperature_lr > 0:
            raise ConfigError(f"temperature_lr must be > 0 or None, got {self.temperature_lr}")
        if self.gamma is not None and not 0.0 < self.gamma < 1.0:
            raise ConfigError(f"gamma must lie in (0, 1) or be None (auto), got {self.gamma}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"lam must lie in [0, 1], got {self.lam}")
        if self.min_std < 0:
            raise ConfigError(f"min_std must be >= 0, got {self.min_std}")
        if not 0.0 <= self.action_noise_correlation < 1.0:
            raise ConfigError(
                f"action_noise_correlation must lie in [0, 1) (0: independent noise), got "
                f"{self.action_noise_correlation}"
            )
        if self.aux_loss_mult < 0:
            raise ConfigError(f"aux_loss_mult must be >= 0, got {self.aux_loss_mult}")
        if self.eval_interval_steps < 0:
            raise ConfigError(
                f"eval_interval_steps must be >= 0 (0: only at the end), got "
                f"{self.eval_interval_steps}"
            )
        if self.backend == "torch" and self.num_seeds > 1:
            raise ConfigError(
                "num_seeds > 1 trains seeds side by side with jax.vmap and needs --backend jax; "
                "with the torch backend run one process per seed (--seed S)"
            )
        if self.num_devices < 0:
            raise ConfigError(
                f"num_devices must be >= 0 (0: all local accelerators), got {self.num_devices}"
            )
        if self.num_devices > 1:
            if self.backend == "torch":
                raise ConfigError(
                    "num_devices > 1 splits the envs across JAX devices and needs --backend jax;"
                    " the torch backend uses one process per device (torchrun)"
                )
            minibatch = self.steps_per_iteration // self.num_minibatches
            for name, size in (("num_envs", self.num_envs), ("the minibatch", minibatch)):
                if size % self.num_devices:
                    raise ConfigError(
                        f"{name} ({size}) is not divisible by num_devices = "
                        f"{self.num_devices}; pick a device count that divides it"
                    )
        if self.cuda_graphs and not self.torch_compile:
            raise ConfigError("cuda_graphs needs torch_compile; add --torch-compile")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.steps_per_iteration % self.num_minibatches:
            raise ConfigError(
                f"num_envs * num_steps = {self.steps_per_iteration} is not divisible by "
                f"num_minibatches = {self.num_minibatches}; pick num_minibatches dividing it"
            )
        if (
            self.v_min is not None
            and self.v_max is not None
            and not self.v_min < self.v_max
        ):
            raise ConfigError(f"v_min ({self.v_min}) must be below v_max ({self.v_max})")
        return self


def field_help(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(Config) if f.name == name)


def field_type(name: str) -> Any:
    return _type_hints()[name]


@functools.cache
def _type_hints() -> dict[str, Any]:
    # Resolving the string annotations is slow, and Config.replace checks every field.
    return typing.get_type_hints(Config)


def _allowed(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a Literal field (possibly Optional), else None."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return None


def base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, accepts None) of a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


_COUNT_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9}


def parse_count(text: str) -> int:
    """A whole number as people write step counts: '100000', '100_000', '100,000', '1e6',
    '100k', '1.5M', '2G'. The one parser of counts for every flag and `--set` value; raises
    ValueError for anything that is not a whole number."""
    raw = str(text).strip().replace("_", "").replace(",", "")
    scale = 1
    if raw[-1:].lower() in _COUNT_SUFFIXES:
        scale, raw = _COUNT_SUFFIXES[raw[-1].lower()], raw[:-1]
    try:
        number = decimal.Decimal(raw) * scale  # exact: '1.5M' is 1500000, '0.1k' is 100
    except decimal.InvalidOperation:
        raise ValueError(f"not a whole number: {text!r}") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"not a whole number: {text!r}")
    if abs(number) >= 2**63:  # counts are stored as int64 (checkpoints, JAX)
        raise ValueError(f"out of range: {text!r}")
    return int(number)


def coerce_field(name: str, value: Any) -> Any:
    """Convert a JSON or command-line value to the field's type, or raise ConfigError."""
    base, nullable = base_type(field_type(name))
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "auto")
                         and nullable):
        if not nullable:
            raise ConfigError(f"{name} cannot be None")
        return None
    allowed = _allowed(base)
    try:
        if allowed is not None:
            value = str(value)
        elif base is bool:
            if isinstance(value, str):
                lowered = value.lower()
                if lowered in ("true", "1", "yes", "on"):
                    value = True
                elif lowered in ("false", "0", "no", "off"):
                    value = False
                else:
                    raise ValueError(value)
            elif not isinstance(value, bool):
                raise ValueError(value)
        elif base is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                value = parse_count(value)  # "1e6", "100k", "1.5M"
            if isinstance(value, float):
                if not value.is_integer():  # also rejects inf and nan
                    raise ValueError(value)
                value = int(value)
            else:
                value = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            value = float(value)
        elif base is str:
            value = str(value)
    except (TypeError, ValueError):
        kind = (
            "true or false" if base is bool
            else "a whole number (e.g. 100000, 100k, 1.5M or 1e5)" if base is int
            else getattr(base, "__name__", str(base))
        )
        raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if allowed is not None and value not in allowed:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return value


def _check_type(name: str, value: Any) -> None:
    if coerce_field(name, value) != value:
        raise ConfigError(f"{name} has the wrong type: {value!r}")
