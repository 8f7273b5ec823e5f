"""ManiSkill3's PPO baseline, run with `rsl-rl-lib`'s PPO: settings, presets and the learner.

ManiSkill publishes a PPO baseline for its state-observation tasks (its `examples/baselines/ppo`
script, CleanRL-style). `rsl-rl-lib` is the maintained PPO package robotics users run; this
module sets its `PPO` (with its `MLPModel` actor and critic and `RolloutStorage`) to ManiSkill's
published settings, and `run` drives it on `reppo.envs.maniskill` envs in this
project's run directories. What differs from ManiSkill's script, and why, is in
docs/baselines.md:

- rsl-rl clips the actor's and the critic's gradient norms separately (ManiSkill: one norm over
  both networks), and has no early stop of an update at a KL threshold (ManiSkill's
  `target_kl` 0.1); the learning rate stays fixed, as in ManiSkill's script.
- The value loss: rsl-rl weighs the squared error by `value_loss_coef`, ManiSkill weighs half
  of it by `vf_coef`; `value_loss_coef` = `vf_coef` / 2 gives the same loss.
- Episode ends bootstrap from the value of the observation the episode reached, at every end,
  a success too, as ManiSkill's script does (its `final_values`): the reward handed to rsl-rl
  is r + gamma * V(final observation) at an end, which rsl-rl's GAE then cuts. (ManiSkill's
  dense rewards pay up to 1 per step, so an unbootstrapped success, worth 1, would be worth
  less than hovering next to it.)

`rsl_rl`, `tensordict` and `torch` are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reppo.errors import UserError

if TYPE_CHECKING:
    import torch

ALGO = "maniskill-ppo"
PRESETS = ("maniskill", "cpu")
OBS_GROUP = "policy"  # the one observation group: ManiSkill's flat state vector


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """PPO's settings. Defaults: ManiSkill's published state-based PPO (its script's
    defaults), the `maniskill` preset."""

    num_envs: int = 512  # parallel training envs
    num_steps: int = 50  # steps of each env per update (one episode of most tasks)
    gamma: float = 0.8  # discount (ManiSkill's, for its 50-step dense-reward tasks)
    gae_lambda: float = 0.9
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 32  # minibatches per pass (512 x 50 / 32 = 800 samples each)
    learning_rate: float = 3e-4  # Adam, fixed (no annealing)
    adam_eps: float = 1e-5
    clip_coef: float = 0.2  # ratio clipping of the surrogate
    clip_value_loss: bool = False
    ent_coef: float = 0.0
    vf_coef: float = 0.5  # ManiSkill's weight on half the squared value error
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True  # per minibatch, as ManiSkill's script
    hidden_dims: tuple[int, ...] = (256, 256, 256)  # actor and critic MLPs, tanh
    init_log_std: float = -0.5  # the state-independent log std of the Gaussian policy
    reward_scale: float = 1.0

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    def check(self) -> None:
        """Refuse settings PPO cannot train with, saying what to change."""
        for name in ("num_envs", "num_steps", "update_epochs", "num_minibatches"):
            _positive_int(name, getattr(self, name))
        if self.steps_per_update % self.num_minibatches:
            raise UserError(
                f"{ALGO}: num_envs x num_steps ({self.steps_per_update}) must be a multiple of "
                f"num_minibatches ({self.num_minibatches}); rsl-rl would drop the remainder"
            )
        if not self.hidden_dims or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden_dims
        ):
            raise UserError(f"{ALGO}: hidden_dims must be integers >= 1, got {self.hidden_dims!r}")
        for names, ok, what in (
            (("learning_rate", "adam_eps", "max_grad_norm", "reward_scale"),
             lambda v: v > 0, "a number > 0"),
            (("gamma", "gae_lambda"), lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            (("clip_coef", "ent_coef", "vf_coef"), lambda v: v >= 0, "a number >= 0"),
        ):
            for name in names:
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                    raise UserError(f"{ALGO}: {name} must be {what}, got {value!r}")
        if not math.isfinite(self.init_log_std):
            raise UserError(f"{ALGO}: init_log_std must be finite, got {self.init_log_std!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{ALGO} hyperparameter {name} must be an integer >= 1, got {value!r}")


# The `cpu` preset keeps every algorithmic setting and resizes the parallelism: ManiSkill's CPU
# simulator steps one env after another, so a rollout of the published 512 envs is far too slow
# on a CPU (docs/baselines.md has the speed). 32 envs x 50 steps in 2 minibatches keep the
# published samples per gradient step.
_CPU_CHANGES: dict[str, Any] = {"num_envs": 32, "num_minibatches": 2}


def preset_hyperparameters(
    preset: str, overrides: Mapping[str, Any] | None = None
) -> Hyperparameters:
    """The settings of `preset` ("maniskill": the published ones; "cpu": resized for a CPU),
    with `overrides` (field names of `Hyperparameters`) applied and checked."""
    if preset not in PRESETS:
        raise UserError(f"unknown {ALGO} preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown {ALGO} hyperparameter(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(sorted(fields))}")
    if "hidden_dims" in overrides and isinstance(overrides["hidden_dims"], list):
        overrides["hidden_dims"] = tuple(overrides["hidden_dims"])
    hp = Hyperparameters()
    if preset == "cpu":
        hp = dataclasses.replace(hp, **_CPU_CHANGES)
    hp = dataclasses.replace(hp, **overrides)
    hp.check()
    return hp


# ---- the learner -------------------------------------------------------------------------------


def observations(obs: torch.Tensor) -> Any:
    """A batch of flat observations as the TensorDict rsl-rl's models read."""
    from tensordict import TensorDict

    return TensorDict({OBS_GROUP: obs}, batch_size=[obs.shape[0]], device=obs.device)


def _orthogonal_init(mlp: torch.nn.Module, output_gain: float) -> None:
    """ManiSkill's initialization: orthogonal kernels (gain sqrt 2, the output layer's
    `output_gain`) and zero biases. rsl-rl's MLP keeps PyTorch's default otherwise."""
    import torch

    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        gain = output_gain if i == len(linears) - 1 else math.sqrt(2.0)
        torch.nn.init.orthogonal_(layer.weight, gain)
        torch.nn.init.zeros_(layer.bias)


def build_ppo(hp: Hyperparameters, obs_size: int, action_size: int, device: torch.device) -> Any:
    """rsl-rl's `PPO` with ManiSkill's settings: Gaussian tanh-MLP actor with a
    state-independent log std, tanh-MLP critic, rollout storage of `num_steps` x `num_envs`."""
    import torch
    from rsl_rl.algorithms import PPO
    from rsl_rl.models import MLPModel
    from rsl_rl.storage import RolloutStorage

    example = observations(torch.zeros(hp.num_envs, obs_size, device=device))
    groups = {"actor": [OBS_GROUP], "critic": [OBS_GROUP]}
    distribution = {
        "class_name": "rsl_rl.modules.distribution:GaussianDistribution",
        "init_std": math.exp(hp.init_log_std),
        "std_type": "log",
    }
    actor = MLPModel(example, groups, "actor", action_size, hidden_dims=list(hp.hidden_dims),
                     activation="tanh", distribution_cfg=distribution)
    critic = MLPModel(example, groups, "critic", 1, hidden_dims=list(hp.hidden_dims),
                      activation="tanh")
    _orthogonal_init(actor.mlp, 0.01 * math.sqrt(2.0))
    _orthogonal_init(critic.mlp, math.sqrt(2.0))
    storage = RolloutStorage("rl", hp.num_envs, hp.num_steps, example, [action_size],
                             str(device))
    ppo = PPO(
        actor, critic, storage,
        num_learning_epochs=hp.update_epochs,
        num_mini_batches=hp.num_minibatches,
        clip_param=hp.clip_coef,
        gamma=hp.gamma,
        lam=hp.gae_lambda,
        value_loss_coef=hp.vf_coef / 2,
        entropy_coef=hp.ent_coef,
        learning_rate=hp.learning_rate,
        max_grad_norm=hp.max_grad_norm,
        optimizer="adam",
        use_clipped_value_loss=hp.clip_value_loss,
        schedule="fixed",
        desired_kl=None,
        normalize_advantage_per_mini_batch=hp.normalize_advantage,
        device=str(device),
    )
    for group in ppo.optimizer.param_groups:  # rsl-rl builds Adam with its default eps
        group["eps"] = hp.adam_eps
    return ppo


def bootstrapped_reward(
    reward: torch.Tensor, ended: torch.Tensor, final_value: torch.Tensor | None,
    hp: Hyperparameters,
) -> torch.Tensor:
    """The reward handed to rsl-rl: scaled, plus gamma * V(final observation) where an episode
    ended (rsl-rl's GAE cuts at every end; this puts ManiSkill's bootstrap back).
    `final_value` (num_envs,) may be None when no episode ended."""
    out = reward * hp.reward_scale
    if final_value is not None:
        out = out + hp.gamma * final_value * ended.to(out.dtype)
    return out
