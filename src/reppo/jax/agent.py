"""One REPPO iteration (Algorithm 1) as a pure, jittable function of the training state.

`Agent.iteration` collects a rollout with the behaviour policy, computes soft TD(lambda)
targets, runs the epochs of critic-then-actor minibatch steps, and copies the actor into the
behaviour policy. `Agent.chunk` scans it over a number of iterations; the training loop jits
`jax.vmap(chunk)` so several seeds train side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from reppo.config import Config
from reppo.envs.autoreset import reset_pool_size
from reppo.envs.contract import EnvState
from reppo.jax import distributions as D
from reppo.jax import losses as L
from reppo.jax import normalizer as N
from reppo.jax.networks import Networks, Params


class TrainState(NamedTuple):
    """Everything a run needs to continue exactly; one seed's worth (vmapped for several)."""

    actor: Params
    behaviour: Params  # pi_theta', the actor frozen at the start of an iteration
    critic: Params
    temps: L.Temperatures
    actor_opt: Any
    critic_opt: Any
    temp_opt: Any
    obs_stats: N.RunningStats
    env_state: EnvState
    episode_return: jax.Array  # (num_envs,) return of each env's current episode so far
    key: jax.Array
    iteration: jax.Array  # () int32 iterations completed


class Transition(NamedTuple):
    obs: jax.Array  # normalized with the statistics of this iteration
    action: jax.Array
    reward: jax.Array
    soft_reward: jax.Array
    next_value: jax.Array
    next_latent: jax.Array
    terminated: jax.Array
    truncated: jax.Array


def _optimizer(lr: float, max_grad_norm: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def _scaled(updates: Any, lr_scale: jax.Array | None) -> Any:
    """Adam's step is proportional to its learning rate: scaling the step scales the rate."""
    return updates if lr_scale is None else optax.tree_utils.tree_scale(lr_scale, updates)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def ends(out: Any, bootstrap_terminations: bool) -> tuple[jax.Array, jax.Array]:
    """(terminated, truncated) as training sees a step: with `bootstrap_terminations` every
    termination is relabelled a truncation, so its target bootstraps from the value of the
    observation it reached (`Config.bootstrap_terminations`)."""
    if not bootstrap_terminations:
        return out.terminated, out.truncated
    return jnp.zeros_like(out.terminated), jnp.maximum(out.terminated, out.truncated)


@dataclass(frozen=True)
class Agent:
    """REPPO for one config and one batched env; hashable so its methods can be jitted."""

    config: Config
    env: Any  # satisfies reppo.envs.contract
    nets: Networks
    gamma: float
    v_min: float
    v_max: float
    # With several devices (`reppo.jax.sharding`): every minibatch is split over them, so
    # each computes its share of the losses and the compiler averages the gradients.
    batch_sharding: Any = None

    @classmethod
    def create(cls, config: Config, env: Any, batch_sharding: Any = None) -> Agent:
        spec = env.spec
        gamma = config.resolved_gamma(spec.episode_length)
        v_min, v_max = config.value_support(gamma, spec.reward_range)
        nets = Networks.from_config(config, spec.obs_size, spec.action_size)
        return cls(config, env, nets, gamma, v_min, v_max, batch_sharding)

    # ---- pieces derived from the config ------------------------------------------------------
    @property
    def bootstrap_terminations(self) -> bool:
        return self.config.resolved_bootstrap_terminations(self.env.spec.family)

    @property
    def support(self) -> L.Support | None:
        c = self.config
        if not c.use_hl_gauss:
            return None
        return L.Support.create(self.v_min, self.v_max, c.num_bins, c.hl_gauss_sigma_ratio)

    @property
    def reset_pool_size(self) -> int:
        """Fresh initial states drawn once per rollout for the episodes that end in it
        (`reppo.envs.autoreset.reset_pool_size`); with staggered episodes only, since envs in
        lockstep all end at once, once per episode, where one batch reset serves them."""
        c = self.config
        if not c.stagger_episodes:
            return 0
        return reset_pool_size(c.num_envs, c.num_steps, self.env.spec.episode_length)

    @property
    def target_entropy(self) -> float:
        return self.config.target_entropy_per_dim * self.nets.action_size

    @property
    def actor_tx(self) -> optax.GradientTransformation:
        return _optimizer(self.config.actor_lr, self.config.max_grad_norm)

    @property
    def critic_tx(self) -> optax.GradientTransformation:
        return _optimizer(self.config.critic_lr, self.config.max_grad_norm)

    @property
    def temp_tx(self) -> optax.GradientTransformation:
        lr = self.config.temperature_lr or self.config.actor_lr
        return _optimizer(lr, self.config.max_grad_norm)

    def normalize(self, stats: N.RunningStats, obs: jax.Array) -> jax.Array:
        return N.normalize(stats, obs) if self.config.normalize_obs else obs

    # ---- initialization ----------------------------------------------------------------------
    def init(self, key: jax.Array) -> TrainState:
        c = self.config
        k_actor, k_critic, k_env, k_train = jax.random.split(key, 4)
        support = self.support
        value_prior = L.initial_value_prior(support) if support is not None else None
        actor = self.nets.init_actor(k_actor)
        critic = self.nets.init_critic(k_critic, value_prior)
        temps = L.Temperatures(
            jnp.log(jnp.asarray(c.alpha_init, jnp.float32)),
            jnp.log(jnp.asarray(c.beta_init, jnp.float32)),
        )
        env_state = self.env.reset(k_env)
        if c.stagger_episodes:
            env_state = self.env.stagger(env_state, jax.random.fold_in(k_env, 1))
        return TrainState(
            actor=actor,
            behaviour=actor,
            critic=critic,
            temps=temps,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            temp_opt=self.temp_tx.init(temps),
            obs_stats=N.init_stats(self.nets.obs_size),
            env_state=env_state,
            episode_return=jnp.zeros((c.num_envs,), jnp.float32),
            key=k_train,
            iteration=jnp.zeros((), jnp.int32),
        )

    # ---- step 1: rollout ---------------------------------------------------------------------
    def rollout(self, state: TrainState, key: jax.Array):
        c, nets, support = self.config, self.nets, self.support
        alpha = jnp.exp(state.temps.log_alpha)
        behaviour, critic, stats = state.behaviour, state.critic, state.obs_stats

        rho = c.action_noise_correlation

        def step(carry, step_key):
            env_state, episode_return, prev_noise = carry
            k_act, k_boot = jax.random.split(step_key)
            obs = self.normalize(stats, env_state.obs)
            dist = nets.policy(behaviour, obs)
            act_noise = jax.random.normal(k_act, dist.mean.shape, dist.mean.dtype)
            if rho > 0.0:
                act_noise = rho * prev_noise + math.sqrt(1.0 - rho**2) * act_noise
            action, _, _ = D.sample_from_noise(dist, act_noise)
            env_state, out = self.env.step(env_state, action)
            terminated, truncated = ends(out, self.bootstrap_terminations)

            # Bootstrap at the true next observation with fresh actions a' ~ pi_theta'.
            next_obs = self.normalize(stats, out.final_obs)
            next_dist = nets.policy(behaviour, next_obs)
            noise = jax.random.normal(
                k_boot, (c.num_bootstrap_samples, *next_dist.mean.shape), jnp.float32
            )
            next_action, _, next_log_prob = D.sample_from_noise(next_dist, noise)
            next_obs_k = jnp.broadcast_to(next_obs, (c.num_bootstrap_samples, *next_obs.shape))
            next_latent = nets.encode(critic, next_obs_k, next_action)
            head = nets.value_head(critic, next_latent)
            values = L.hl_gauss_value(head, support) if support is not None else head[..., 0]
            # No next action follows a termination, so no entropy bonus there.
            bonus = -self.gamma * alpha * jnp.mean(next_log_prob, axis=0)
            soft_reward = out.reward + (1.0 - terminated) * bonus

            done = jnp.maximum(terminated, truncated)
            episode_return = episode_return + out.reward
            finished = (jnp.sum(done * episode_return), jnp.sum(done))
            episode_return = episode_return * (1.0 - done)
            transition = Transition(
                obs=obs,
                action=action,
                reward=out.reward,
                soft_reward=soft_reward,
                next_value=jnp.mean(values, axis=0),
                next_latent=next_latent[0],
                terminated=terminated,
                truncated=truncated,
            )
            return (env_state, episode_return, act_noise), (transition, env_state.obs, finished)

        noise_shape = (*state.env_state.obs.shape[:-1], nets.action_size)
        if rho > 0.0:
            # The chain starts from its stationary law, N(0, I): every action of the rollout
            # is a draw of pi_theta'. (Without correlation the key stream is as it always was.)
            key, k_first = jax.random.split(key)
            first_noise = jax.random.normal(k_first, noise_shape, jnp.float32)
        else:
            first_noise = jnp.zeros(noise_shape, jnp.float32)
        keys = jax.random.split(key, c.num_steps)
        env_state = self.env.with_reset_pool(state.env_state, self.reset_pool_size)
        (env_state, episode_return, _), (data, raw_obs, finished) = jax.lax.scan(
            step, (env_state, state.episode_return, first_noise), keys
        )
        env_state = self.env.without_reset_pool(env_state)
        return env_state, episode_return, data, raw_obs, finished

    # ---- step 3: update ----------------------------------------------------------------------
    def lr_scale(self, iteration: jax.Array) -> jax.Array | None:
        """The factor on the actor's and critic's learning rates in iteration `iteration`
        (counted from 0): 1 - iteration / num_iterations under the linear schedule, None
        (no factor) under the constant one."""
        if self.config.lr_schedule == "constant":
            return None
        done = iteration.astype(jnp.float32) / self.config.num_iterations
        return jnp.maximum(1.0 - done, 0.0)

    def minibatch_update(self, carry, inputs, lr_scale: jax.Array | None = None):
        c, nets, support = self.config, self.nets, self.support
        actor, critic, temps, actor_opt, critic_opt, temp_opt, behaviour = carry
        batch, key = inputs
        if self.batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, self.batch_sharding)

        critic_batch = L.CriticBatch(
            batch["obs"], batch["action"], batch["reward"], batch["target"],
            batch["next_latent"], batch["terminated"],
        )
        (_, critic_metrics), grads = jax.value_and_grad(L.critic_loss, has_aux=True)(
            critic, nets, critic_batch, support, c.aux_loss_mult
        )
        updates, critic_opt = self.critic_tx.update(grads, critic_opt, critic)
        critic = optax.apply_updates(critic, _scaled(updates, lr_scale))

        # The actor step uses the critic just updated.
        k_action, k_kl = jax.random.split(key)
        obs = batch["obs"]
        action_noise = jax.random.normal(k_action, (obs.shape[0], nets.action_size))
        kl_noise = None
        if c.kl_estimator == "sample":
            kl_noise = jax.random.normal(k_kl, (c.kl_num_samples, obs.shape[0], nets.action_size))
        (_, actor_metrics), grads = jax.value_and_grad(L.actor_loss, has_aux=True)(
            actor, nets, critic, behaviour, obs, temps, action_noise, kl_noise, support,
            c.actor_objective, c.kl_target,
        )
        updates, actor_opt = self.actor_tx.update(grads, actor_opt, actor)
        actor = optax.apply_updates(actor, _scaled(updates, lr_scale))

        grads = jax.grad(L.temperature_loss)(
            temps, actor_metrics["entropy"], actor_metrics["kl"], self.target_entropy, c.kl_target
        )
        updates, temp_opt = self.temp_tx.update(grads, temp_opt, temps)
        temps = optax.apply_updates(temps, updates)

        carry = (actor, critic, temps, actor_opt, critic_opt, temp_opt, behaviour)
        return carry, {**critic_metrics, **actor_metrics}

    def update(self, state: TrainState, data: dict[str, jax.Array], key: jax.Array):
        c = self.config
        size = c.steps_per_iteration
        lr_scale = self.lr_scale(state.iteration)

        def minibatch(carry, inputs):
            return self.minibatch_update(carry, inputs, lr_scale)

        def epoch(carry, epoch_key):
            k_perm, k_mb = jax.random.split(epoch_key)
            perm = jax.random.permutation(k_perm, size).reshape(c.num_minibatches, -1)
            batches = jax.tree_util.tree_map(lambda x: x[perm], data)
            keys = jax.random.split(k_mb, c.num_minibatches)
            return jax.lax.scan(minibatch, carry, (batches, keys))

        carry = (
            state.actor, state.critic, state.temps, state.actor_opt, state.critic_opt,
            state.temp_opt, state.behaviour,
        )
        carry, metrics = jax.lax.scan(epoch, carry, jax.random.split(key, c.num_epochs))
        return carry, jax.tree_util.tree_map(jnp.mean, metrics)

    # ---- one whole iteration -----------------------------------------------------------------
    def iteration(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        c = self.config
        key, k_rollout, k_update = jax.random.split(state.key, 3)
        env_state, episode_return, data, raw_obs, finished = self.rollout(state, k_rollout)

        targets = L.soft_td_lambda(
            data.soft_reward, data.next_value, data.terminated, data.truncated,
            self.gamma, c.lam,
        )
        flat = {
            name: x.reshape(-1, *x.shape[2:])
            for name, x in {**data._asdict(), "target": targets}.items()
        }
        carry, metrics = self.update(state, flat, k_update)
        actor, critic, temps, actor_opt, critic_opt, temp_opt, _ = carry

        obs_stats = state.obs_stats
        if c.normalize_obs:
            obs_stats = N.update_stats(obs_stats, raw_obs)
        returns_sum, episodes = (jnp.sum(x) for x in finished)
        metrics.update({
            "train/reward_mean": jnp.mean(data.reward),
            "train/episode_return": jnp.where(
                episodes > 0, returns_sum / jnp.maximum(episodes, 1.0), jnp.nan
            ),
            "train/episodes": episodes,
            "train/target_mean": jnp.mean(targets),
            "temp/alpha": jnp.exp(temps.log_alpha),
            "temp/beta": jnp.exp(temps.log_beta),
            "finite/actor": _all_finite(actor),
            "finite/critic": _all_finite(critic),
            "finite/temperatures": _all_finite(temps),
            "finite/losses": _all_finite(
                [metrics[k] for k in ("loss/critic", "loss/aux", "loss/actor")]
            ),
            "finite/observations": _all_finite(raw_obs),
        })
        new_state = TrainState(
            actor=actor,
            behaviour=actor,  # Algorithm 1, step 4: theta' <- theta
            critic=critic,
            temps=temps,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            temp_opt=temp_opt,
            obs_stats=obs_stats,
            env_state=env_state,
            episode_return=episode_return,
            key=key,
            iteration=state.iteration + 1,
        )
        return new_state, metrics

    def chunk(self, state: TrainState, num_iterations: int, active: jax.Array | None = None):
        """`num_iterations` iterations in one lax.scan; metrics stacked over iterations.

        With `active` (a traced count), only the first `active` iterations run and the rest
        leave the state untouched (their metrics are zeros, to be dropped by the caller): one
        compiled program serves chunks of every length up to `num_iterations`.
        """
        if active is None:
            return jax.lax.scan(
                lambda s, _: self.iteration(s), state, None, length=num_iterations
            )
        _, metrics_shape = jax.eval_shape(self.iteration, state)

        def skip(s: TrainState):
            return s, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), metrics_shape)

        def body(s: TrainState, i: jax.Array):
            return jax.lax.cond(i < active, self.iteration, skip, s)

        return jax.lax.scan(body, state, jnp.arange(num_iterations))

    # ---- the policy ------------------------------------------------------------------------------
    def act_deterministic(self, actor: Params, stats: N.RunningStats, obs: jax.Array):
        return D.deterministic_action(self.nets.policy(actor, self.normalize(stats, obs)))

    def act_stochastic(self, actor: Params, stats: N.RunningStats, obs: jax.Array, key: jax.Array):
        """An action sampled from the tanh-Gaussian policy (what training acts with)."""
        return D.sample(self.nets.policy(actor, self.normalize(stats, obs)), key)[0]
