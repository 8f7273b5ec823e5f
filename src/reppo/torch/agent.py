"""One REPPO iteration (Algorithm 1) in PyTorch: rollout, soft TD(lambda), minibatch updates.

The same steps as `reppo.jax.agent`, written as a readable loop over tensors. All randomness is
drawn from one `torch.Generator` (saved in checkpoints), and `update` takes its randomness as an
explicit `UpdatePlan` (minibatch permutations and Gaussian noise), so the parity tests can feed
both backends the same draws.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from reppo.config import Config, ConfigError
from reppo.envs.contract import EnvSpec
from reppo.envs.reset_pool import reset_pool_size
from reppo.torch import distributions as D
from reppo.torch import losses as L
from reppo.torch import normalizer as N
from reppo.torch.networks import Actor, Critic
from reppo.torch.optim import Adam, clip_grads_


class Rollout(NamedTuple):
    """One iteration's data, each of shape (num_steps, num_envs, ...)."""

    obs: Tensor  # normalized with the statistics of this iteration
    action: Tensor
    reward: Tensor
    soft_reward: Tensor
    next_value: Tensor
    next_latent: Tensor
    terminated: Tensor
    truncated: Tensor


class UpdatePlan(NamedTuple):
    """The randomness of one update: (epochs, minibatches, ...) permutations and noise."""

    perms: Tensor  # (E, M, B) int64 indices into the flattened rollout
    action_noise: Tensor  # (E, M, B, A)
    kl_noise: Tensor | None  # (E, M, K, B, A); None: analytic KL


class _Objective(nn.Module):
    """A loss as a module over the networks it differentiates, so that torch.func can take its
    gradient with respect to their parameters (`functional_call` swaps them in)."""

    def __init__(self, loss: Any, **modules: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, *args: Any) -> tuple[Tensor, Any]:
        return self.loss(self, *args)


class Temperatures(nn.Module):
    """log alpha and log beta, the entropy and KL temperatures."""

    def __init__(self, alpha: float, beta: float, device: Any = None) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha), device=device))
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta), device=device))


def loss_grads(
    objective: nn.Module, params: list[Tensor], names: list[str], *args: Any
) -> tuple[list[Tensor], Any]:
    """The gradients of `objective(*args)`'s loss with respect to `params` (named `names` in
    it), and its second output.

    Eager: reverse-mode autograd on the parameters themselves. Under torch.compile:
    `torch.func.grad_and_value` of the objective as a function of its parameters, which the
    compiler traces into the same program as the forward pass and the optimizer steps
    (`torch.autograd.grad` would break the graph there).
    """
    if torch.compiler.is_compiling():
        def loss_of(values: list[Tensor]) -> tuple[Tensor, Any]:
            return functional_call(objective, dict(zip(names, values, strict=True)), args)

        grads, (_, aux) = grad_and_value(loss_of, has_aux=True)([p.detach() for p in params])
        return list(grads), aux
    with torch.enable_grad():
        loss, aux = objective(*args)
    return list(torch.autograd.grad(loss, params)), aux


def _all_finite(tensors: list[Tensor]) -> Tensor:
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def ends(out: Any, bootstrap_terminations: bool) -> tuple[Tensor, Tensor]:
    """(terminated, truncated) as training sees a step: with `bootstrap_terminations` every
    termination is relabelled a truncation, so its target bootstraps from the value of the
    observation it reached (`Config.bootstrap_terminations`)."""
    if not bootstrap_terminations:
        return out.terminated, out.truncated
    return torch.zeros_like(out.terminated), torch.maximum(out.terminated, out.truncated)


def require_compile_toolchain(device: torch.device) -> None:
    """Fail before training, not at the first update, where inductor would need a compiler."""
    if device.type != "cpu":
        return
    candidates = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    if not any(name and shutil.which(name) for name in candidates):
        raise ConfigError(
            "torch_compile on CPU generates C++ and needs a C++ compiler, and none was found "
            "(CXX, c++, g++, clang++); install one (e.g. `apt-get install g++`) or drop "
            "--torch-compile"
        )


class TorchAgent:
    """REPPO's networks, optimizers, temperatures and statistics for one env spec."""

    def __init__(self, config: Config, spec: EnvSpec, device: torch.device, seed: int) -> None:
        c = self.config = config
        self.spec = spec
        self.device = device
        self.gamma = c.resolved_gamma(spec.episode_length)
        v_min, v_max = c.value_support(self.gamma, spec.reward_range)
        self.support = (
            L.Support.create(v_min, v_max, c.num_bins, c.hl_gauss_sigma_ratio, device=device)
            if c.use_hl_gauss
            else None
        )
        self.target_entropy = c.target_entropy_per_dim * spec.action_size
        self.bootstrap_terminations = c.resolved_bootstrap_terminations(spec.family)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)  # the networks' initial weights
        prior = L.initial_value_prior(self.support) if self.support is not None else None
        self.actor = Actor(c, spec.obs_size, spec.action_size).to(device)
        self.behaviour = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = Critic(c, spec.obs_size, spec.action_size, prior).to(device)
        self.temps = Temperatures(c.alpha_init, c.beta_init, device=device)
        self.log_alpha, self.log_beta = self.temps.log_alpha, self.temps.log_beta
        self.actor_opt = Adam(list(self.actor.parameters()), c.actor_lr)
        self.critic_opt = Adam(list(self.critic.parameters()), c.critic_lr)
        self.temp_opt = Adam([self.log_alpha, self.log_beta], c.temperature_lr or c.actor_lr)
        self.obs_stats = N.init_stats(spec.obs_size, device=device)
        # Set for a run over several processes (`reppo.torch.distributed.TorchProcesses`):
        # gradients are averaged over the ranks before each optimizer step, and observation
        # statistics merged over them, so every rank takes the same steps.
        self.data_parallel: Any = None
        self._objectives()
        self._compiled_step: Any = None
        if c.torch_compile:
            require_compile_toolchain(device)

    def _objectives(self) -> None:
        """The three losses of a minibatch step as modules of the parameters they train."""
        c, support = self.config, self.support
        self._critic_objective = _Objective(
            lambda m, batch: L.critic_loss(
                m.critic, batch, support, c.aux_loss_mult, c.reward_prediction
            ),
            critic=self.critic,
        )
        self._actor_objective = _Objective(
            lambda m, old, obs, noise, kl_noise: L.actor_loss(
                m.actor, m.critic, old, obs, m.temps.log_alpha, m.temps.log_beta, noise,
                kl_noise, support, c.actor_objective, c.kl_target,
            ),
            actor=self.actor, critic=self.critic, temps=self.temps,
        )
        target_entropy = self.target_entropy
        self._temp_objective = _Objective(
            lambda m, entropy, kl: (L.temperature_loss(
                m.temps.log_alpha, m.temps.log_beta, entropy, kl, target_entropy, c.kl_target
            ), {}),
            temps=self.temps,
        )
        self._names = {
            "critic": [f"critic.{n}" for n, _ in self.critic.named_parameters()],
            "actor": [f"actor.{n}" for n, _ in self.actor.named_parameters()],
            "temps": ["temps.log_alpha", "temps.log_beta"],
        }

    # ---- pieces -----------------------------------------------------------------------------
    def reset_pool_size(self, num_envs: int) -> int:
        """Fresh initial states a rollout draws ahead for its episode ends, as the JAX agent
        (staggered episodes only)."""
        c = self.config
        if not c.stagger_episodes:
            return 0
        return reset_pool_size(num_envs, c.num_steps, self.spec.episode_length)

    def normalize(self, obs: Tensor) -> Tensor:
        return N.normalize(self.obs_stats, obs) if self.config.normalize_obs else obs

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    @torch.no_grad()
    def act_deterministic(self, obs: Tensor) -> Tensor:
        return D.deterministic_action(self.actor(self.normalize(obs)))

    @torch.no_grad()
    def act_stochastic(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        """An action sampled from the tanh-Gaussian policy (what training acts with)."""
        return D.sample(self.actor(self.normalize(obs)), generator)[0]

    # ---- step 1: rollout with the behaviour policy --------------------------------------------
    @torch.no_grad()
    def rollout(self, env: Any, obs: Tensor, episode_return: Tensor):
        """num_steps steps of every env; returns (data, raw next obs, next obs, returns, stats)."""
        c, support = self.config, self.support
        alpha = torch.exp(self.log_alpha)
        n, k = env.num_envs, c.num_bootstrap_samples
        steps: list[Rollout] = []
        raw_obs = []
        # Adapters that can draw the rollout's new episodes ahead (the Playground bridge) do.
        pool_size = self.reset_pool_size(n)
        if pool_size and hasattr(env, "begin_rollout"):
            env.begin_rollout(pool_size)
        finished_sum = torch.zeros((), device=self.device)
        finished_count = torch.zeros((), device=self.device)
        success_sum = torch.zeros((), device=self.device)
        rho = c.action_noise_correlation
        # The correlated chain starts from its stationary law, N(0, I) (see the JAX agent).
        act_noise = self.randn(n, self.spec.action_size) if rho > 0.0 else None
        fresh_weight = math.sqrt(1.0 - rho**2)
        for _ in range(c.num_steps):
            norm_obs = self.normalize(obs)
            fresh = self.randn(n, self.spec.action_size)
            act_noise = rho * act_noise + fresh_weight * fresh if rho > 0.0 else fresh
            action, _, _ = D.sample_from_noise(self.behaviour(norm_obs), act_noise)
            out = env.step(action)
            terminated, truncated = ends(out, self.bootstrap_terminations)

            # Bootstrap at the true next observation with fresh actions a' ~ pi_theta'.
            next_obs = self.normalize(out.final_obs)
            next_dist = self.behaviour(next_obs)
            noise = self.randn(k, n, self.spec.action_size)
            next_action, _, next_log_prob = D.sample_from_noise(next_dist, noise)
            next_latent = self.critic.encode(next_obs.expand(k, *next_obs.shape), next_action)
            head = self.critic.value_head(next_latent)
            values = L.hl_gauss_value(head, support) if support is not None else head[..., 0]
            # No next action follows a termination, so no entropy bonus there.
            bonus = -self.gamma * alpha * next_log_prob.mean(0)
            soft_reward = out.reward + (1.0 - terminated) * bonus

            done = torch.maximum(terminated, truncated)
            episode_return = episode_return + out.reward
            finished_sum += (done * episode_return).sum()
            finished_count += done.sum()
            if out.success is not None:
                success_sum += (done * out.success.float()).sum()
            episode_return = episode_return * (1.0 - done)
            steps.append(Rollout(
                norm_obs, action, out.reward, soft_reward, values.mean(0), next_latent[0],
                terminated, truncated,
            ))
            raw_obs.append(out.obs)
            obs = out.obs
        if pool_size and hasattr(env, "end_rollout"):
            env.end_rollout()
        data = Rollout(*(torch.stack(x) for x in zip(*steps, strict=True)))
        stats = {"finished_sum": finished_sum, "finished": finished_count, "success": success_sum}
        return data, torch.stack(raw_obs), obs, episode_return, stats

    # ---- step 3: critic, actor and temperature updates ------------------------------------------
    def make_plan(self) -> UpdatePlan:
        c, a = self.config, self.spec.action_size
        size, b = c.steps_per_iteration, c.minibatch_size
        perms = torch.stack([
            torch.randperm(size, generator=self.generator, device=self.device)
            for _ in range(c.num_epochs)
        ]).reshape(c.num_epochs, c.num_minibatches, b)
        action_noise = self.randn(c.num_epochs, c.num_minibatches, b, a)
        kl_noise = None
        if c.kl_estimator == "sample":
            kl_noise = self.randn(c.num_epochs, c.num_minibatches, c.kl_num_samples, b, a)
        return UpdatePlan(perms, action_noise, kl_noise)

    def minibatch_step(
        self, batch: L.CriticBatch, action_noise: Tensor, kl_noise: Tensor | None
    ) -> dict[str, Tensor]:
        """One critic, actor and temperature step on one minibatch; the metrics as tensors.

        Everything stays on the device (no value is read back), so under torch.compile the
        whole step, forward and backward passes and the three Adam steps, is one program.
        """
        grads, critic_metrics = loss_grads(
            self._critic_objective, self.critic_opt.params, self._names["critic"], batch
        )
        self._apply(self.critic_opt, grads)

        # The actor step uses the critic just updated.
        with torch.no_grad():
            old = self.behaviour(batch.obs)
        grads, actor_metrics = loss_grads(
            self._actor_objective, self.actor_opt.params, self._names["actor"],
            old, batch.obs, action_noise, kl_noise,
        )
        self._apply(self.actor_opt, grads)

        grads, _ = loss_grads(
            self._temp_objective, self.temp_opt.params, self._names["temps"],
            actor_metrics["entropy"], actor_metrics["kl"],
        )
        self._apply(self.temp_opt, grads)
        return {**critic_metrics, **actor_metrics}

    def _apply(self, opt: Adam, grads: list[Tensor]) -> None:
        # Averaged before clipping: the clipped step is then the one of the whole (all ranks')
        # minibatch.
        if self.data_parallel is not None:
            self.data_parallel.average_tensors_(grads)
        clip_grads_(grads, self.config.max_grad_norm)
        opt.apply_(grads)

    def _step_function(self) -> Any:
        """The minibatch step to call: eager, or compiled once as one whole program.

        A run over several processes stays eager: its gradient averaging is a collective
        between the losses and the optimizer steps.
        """
        c = self.config
        if not c.torch_compile or self.data_parallel is not None:
            return self.minibatch_step
        if self._compiled_step is None:
            if c.cuda_graphs:
                # What the step writes in place must keep its address for a CUDA graph to
                # replay it; the batch and noise are copied in by the graph's runner.
                for opt in (self.critic_opt, self.actor_opt, self.temp_opt):
                    for tensor in (*opt.params, *opt.state_tensors()):
                        torch._dynamo.mark_static_address(tensor)
            mode = "reduce-overhead" if c.cuda_graphs else None
            self._compiled_step = torch.compile(self.minibatch_step, fullgraph=True, mode=mode)
        return self._compiled_step

    def update(self, data: dict[str, Tensor], plan: UpdatePlan) -> dict[str, Tensor]:
        """Epochs of minibatch steps over the flattened data; metrics averaged over them."""
        c = self.config
        step = self._step_function()
        fields = ("obs", "action", "reward", "target", "next_latent", "terminated")
        totals: list[Tensor] | None = None
        names: list[str] = []
        for e in range(c.num_epochs):
            for m in range(c.num_minibatches):
                idx = plan.perms[e, m]
                batch = L.CriticBatch(*(data[name][idx] for name in fields))
                kl_noise = plan.kl_noise[e, m] if plan.kl_noise is not None else None
                metrics = step(batch, plan.action_noise[e, m], kl_noise)
                if totals is None:
                    # Copies: a CUDA graph's outputs are overwritten by its next replay.
                    names = list(metrics)
                    totals = [v.detach().clone() for v in metrics.values()]
                else:
                    torch._foreach_add_(totals, list(metrics.values()))
        count = c.num_epochs * c.num_minibatches
        assert totals is not None
        return {name: value / count for name, value in zip(names, totals, strict=True)}

    def set_lr_scale(self, iteration: int) -> None:
        """The actor's and critic's learning rates for iteration `iteration` (counted from 0):
        constant, or times 1 - iteration / num_iterations under the linear schedule."""
        c = self.config
        scale = 1.0
        if c.lr_schedule == "linear":
            scale = max(1.0 - iteration / c.num_iterations, 0.0)
        for opt, lr in ((self.actor_opt, c.actor_lr), (self.critic_opt, c.critic_lr)):
            opt.set_lr(lr * scale)

    # ---- one whole iteration -------------------------------------------------------------------
    def iteration(self, env: Any, obs: Tensor, episode_return: Tensor, iteration: int = 0):
        """Algorithm 1 once, as iteration `iteration` of the run (counted from 0); returns
        (next obs, episode returns, metrics as floats)."""
        c = self.config
        self.set_lr_scale(iteration)
        data, raw_obs, obs, episode_return, stats = self.rollout(env, obs, episode_return)
        targets = L.soft_td_lambda(
            data.soft_reward, data.next_value, data.terminated, data.truncated, self.gamma, c.lam
        )
        flat = {
            name: x.reshape(-1, *x.shape[2:])
            for name, x in {**data._asdict(), "target": targets}.items()
        }
        metrics = self.update(flat, self.make_plan())
        with torch.no_grad():
            self.behaviour.load_state_dict(self.actor.state_dict())  # step 4: theta' <- theta
            if c.normalize_obs:
                self.obs_stats = (
                    N.update_stats(self.obs_stats, raw_obs) if self.data_parallel is None
                    else self.data_parallel.update_stats(self.obs_stats, raw_obs)
                )

        # Every value the loop logs, read back from the device at once.
        values = {
            **metrics,
            "train/reward_mean": data.reward.mean(),
            "train/finished_sum": stats["finished_sum"],
            "train/episodes": stats["finished"],
            "train/success_sum": stats["success"],
            "train/target_mean": targets.mean(),
            "temp/alpha": torch.exp(self.log_alpha.detach()),
            "temp/beta": torch.exp(self.log_beta.detach()),
            "finite/actor": _all_finite(list(self.actor.parameters())),
            "finite/critic": _all_finite(list(self.critic.parameters())),
            "finite/temperatures": _all_finite([self.log_alpha, self.log_beta]),
            "finite/observations": torch.isfinite(raw_obs).all(),
        }
        host = dict(zip(values, torch.stack([
            v.detach().float().reshape(()) for v in values.values()
        ]).tolist(), strict=True))
        episodes = host.pop("train/episodes")
        finished_sum, success_sum = host.pop("train/finished_sum"), host.pop("train/success_sum")
        out = {name: v for name, v in host.items() if not name.startswith("finite/")}
        out.update({
            "train/episode_return": finished_sum / episodes if episodes > 0 else math.nan,
            "train/episodes": episodes,
            **{name: v > 0.5 for name, v in host.items() if name.startswith("finite/")},
            "finite/losses": all(
                math.isfinite(out[k]) for k in ("loss/critic", "loss/aux", "loss/actor")
            ),
        })
        if env.spec.family == "maniskill":
            out["train/success_rate"] = success_sum / episodes if episodes > 0 else math.nan
        return obs, episode_return, out
