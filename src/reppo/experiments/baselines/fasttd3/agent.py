"""FastTD3 (Seo et al. 2025), in JAX on the Playground envs: hyperparameters and presets, the
networks, and one training iteration (an env step of every env plus the gradient updates).

FastTD3 is TD3 with a distributional (C51) critic, clipped double Q, many parallel envs and
large-batch updates from a replay buffer on the device: every iteration steps each of
`num_envs` envs once with the deterministic actor plus Gaussian noise of a per-env scale,
stores the transitions, and (after `learning_starts` iterations) makes `num_updates` critic
updates on batches of `batch_size` n-step transitions, an actor update every
`policy_frequency` critic updates and a soft target update after each. The actor is its own
target (FastTD3 keeps no target actor). The math is in `losses`, the buffer in
`buffer`, the run (schedule, evaluation, run directory) in `run`.

Two algorithms differ only in the replay buffer: `fasttd3` holds 10,485,760 transitions
(FastTD3's 1024 envs x 10,240 steps) and `fasttd3-small` 32,768 (the REPPO paper's
constrained buffer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from reppo.errors import UserError
from reppo.experiments.baselines.fasttd3 import buffer as B
from reppo.experiments.baselines.fasttd3 import losses as M
from reppo.jax.normalizer import RunningStats, init_stats, normalize, update_stats

# Replay buffer size in transitions, summed over envs.
BUFFER_TRANSITIONS = {"fasttd3": 10_485_760, "fasttd3-small": 32_768}


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """FastTD3's settings. Defaults: its published MuJoCo Playground DM Control configuration
    (the `MuJoCoPlaygroundArgs` defaults with the `CheetahRunArgs` changes, which its authors
    give as the configuration for DM Control tasks), the `playground` preset."""

    num_envs: int = 1024  # parallel training envs; one iteration steps each once
    buffer_transitions: int = 10_485_760  # replay capacity summed over envs (per env: / num_envs)
    batch_size: int = 32_768  # transitions per update, batch_size // num_envs from each env
    num_updates: int = 2  # critic updates per iteration
    policy_frequency: int = 2  # one actor update per this many critic updates (delayed)
    learning_starts: int = 10  # iterations of collection before the first update
    n_step: int = 3  # steps of the n-step return (cut at an episode's end)
    gamma: float = 0.97  # discount
    tau: float = 0.1  # soft target update: target <- (1 - tau) target + tau online
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    weight_decay: float = 0.1  # AdamW's decoupled weight decay, both networks
    num_atoms: int = 101  # C51 atoms
    v_min: float = -500.0  # support of the value distribution
    v_max: float = 500.0
    critic_hidden_dim: int = 1024  # critic layers: h, h/2, h/4 (ReLU), then num_atoms
    actor_hidden_dim: int = 512  # actor layers: h, h/2, h/4 (ReLU), then tanh
    init_scale: float = 0.01  # std of the actor's output-layer kernel at initialization
    std_min: float = 0.1  # per-env exploration noise std ~ U[std_min, std_max), redrawn per episode
    std_max: float = 0.4
    policy_noise: float = 0.1  # target policy smoothing noise std
    noise_clip: float = 0.5  # ... clipped to +-noise_clip
    use_cdq: bool = True  # clipped double Q: the lower critic's target; the actor maximizes the min
    normalize_observations: bool = True  # running mean/std, updated with every env step

    @property
    def buffer_per_env(self) -> int:
        return self.buffer_transitions // self.num_envs

    def check(self, total_steps: int) -> None:
        """Refuse settings the run cannot train with, saying what to change."""
        for name in ("num_envs", "buffer_transitions", "batch_size", "num_updates",
                     "policy_frequency", "n_step", "num_atoms", "critic_hidden_dim",
                     "actor_hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"fasttd3 hyperparameter {name} must be an integer >= 1, "
                                f"got {value!r}")
        if self.learning_starts < 0:
            raise UserError(f"fasttd3 learning_starts must be >= 0, got {self.learning_starts}")
        if self.num_atoms < 2 or not self.v_min < self.v_max:
            raise UserError(f"fasttd3 needs num_atoms >= 2 and v_min < v_max, got "
                            f"{self.num_atoms}, [{self.v_min}, {self.v_max}]")
        if self.batch_size % self.num_envs:
            raise UserError(f"fasttd3 draws batch_size // num_envs transitions from each env: "
                            f"batch_size ({self.batch_size}) must be a multiple of num_envs "
                            f"({self.num_envs})")
        if self.critic_hidden_dim < 4 or self.actor_hidden_dim < 4:
            raise UserError("fasttd3 hidden dims must be >= 4 (layers h, h/2, h/4)")
        if self.buffer_per_env < self.n_step:
            raise UserError(
                f"a replay buffer of {self.buffer_transitions:,} transitions holds "
                f"{self.buffer_per_env} step(s) per env with {self.num_envs} envs, fewer than "
                f"one {self.n_step}-step window; use fewer envs or a larger buffer"
            )
        first_update = self.num_envs * max(self.learning_starts, self.n_step)
        if total_steps <= first_update:
            raise UserError(
                f"fasttd3 collects {first_update:,} env steps ({self.num_envs} envs x "
                f"{max(self.learning_starts, self.n_step)} iterations) before its first "
                f"update, which leaves no training within {total_steps:,} steps; raise the "
                f"budget"
            )


# The "cpu" preset keeps every algorithmic setting and resizes what sets the parallelism and
# the compute, as the Brax baselines' cpu presets do: 128 envs instead of 1024, batches of 4,096
# instead of 32,768 (the same 2 x 4,096 / 128 = 64 sampled transitions per env step), and
# networks a quarter as wide (critic 256-128-64, actor 128-64-32), as REPPO's cpu preset narrows
# its own, because the full-width critic's updates are too slow on a CPU (docs/baselines.md).
# fasttd3's buffer holds at most the transitions the run collects; fasttd3-small keeps 32,768.
_CPU_CHANGES: dict[str, Any] = {
    "num_envs": 128, "batch_size": 4096, "critic_hidden_dim": 256, "actor_hidden_dim": 128,
}


def preset_hyperparameters(
    algo: str, preset: str, total_steps: int, overrides: Mapping[str, Any] | None = None
) -> Hyperparameters:
    """FastTD3's settings for `algo` under `preset`, with `overrides` (field names of
    `Hyperparameters`) applied."""
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown {algo} hyperparameter(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(sorted(fields))}")
    hp = Hyperparameters(buffer_transitions=BUFFER_TRANSITIONS[algo])
    if preset == "cpu":
        hp = dataclasses.replace(hp, **_CPU_CHANGES)
    hp = dataclasses.replace(hp, **overrides)
    if preset == "cpu" and algo == "fasttd3" and "buffer_transitions" not in overrides:
        collected = math.ceil(total_steps / hp.num_envs) * hp.num_envs
        hp = dataclasses.replace(hp, buffer_transitions=min(hp.buffer_transitions, collected))
    return hp


# ---- networks ----------------------------------------------------------------------------------

Params = dict[str, Any]


def _linear(key: jax.Array, fan_in: int, fan_out: int) -> Params:
    """PyTorch's default Linear initialization (FastTD3's): U(+-1/sqrt(fan_in)) for both."""
    bound = 1.0 / math.sqrt(fan_in)
    k_w, k_b = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(k_w, (fan_in, fan_out), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(k_b, (fan_out,), jnp.float32, -bound, bound),
    }


def _widths(hidden: int) -> list[int]:
    return [hidden, hidden // 2, hidden // 4]


def _mlp_init(key: jax.Array, sizes: list[int]) -> list[Params]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [_linear(k, i, o) for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def _mlp(layers: list[Params], x: jax.Array) -> jax.Array:
    """ReLU between the layers, none after the last."""
    for i, layer in enumerate(layers):
        x = x @ layer["kernel"] + layer["bias"]
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def init_actor(key: jax.Array, obs_size: int, action_size: int, hp: Hyperparameters) -> Params:
    k_body, k_out = jax.random.split(key)
    layers = _mlp_init(k_body, [obs_size, *_widths(hp.actor_hidden_dim), action_size])
    # A near-zero output layer: the first actions are close to 0 whatever the observation.
    layers[-1] = {
        "kernel": hp.init_scale * jax.random.normal(k_out, layers[-1]["kernel"].shape),
        "bias": jnp.zeros_like(layers[-1]["bias"]),
    }
    return {"layers": layers}


def actor_apply(params: Params, obs: jax.Array) -> jax.Array:
    """The deterministic action in [-1, 1]."""
    return jnp.tanh(_mlp(params["layers"], obs))


def init_critic(key: jax.Array, obs_size: int, action_size: int, hp: Hyperparameters) -> Params:
    sizes = [obs_size + action_size, *_widths(hp.critic_hidden_dim), hp.num_atoms]
    k1, k2 = jax.random.split(key)
    return {"q1": _mlp_init(k1, sizes), "q2": _mlp_init(k2, sizes)}


def critic_apply(params: Params, obs: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two critics' logits over the atoms, (B, num_atoms) each."""
    x = jnp.concatenate([obs, action], axis=-1)
    return _mlp(params["q1"], x), _mlp(params["q2"], x)


# ---- training state and one iteration ----------------------------------------------------------


class TrainState(NamedTuple):
    actor: Params
    critic: Params
    critic_target: Params
    actor_opt: Any
    critic_opt: Any
    obs_stats: RunningStats
    buffer: B.ReplayBuffer
    env_state: Any
    noise_scales: jax.Array  # (num_envs, 1)
    key: jax.Array
    iteration: jax.Array  # () int32, iterations done
    updates: jax.Array  # () int32, critic updates done
    # Running statistics of the current evaluation period, reset by `reset_period_metrics`.
    episode_return: jax.Array  # (num_envs,) return of each env's current episode so far
    metrics: dict[str, jax.Array]


METRIC_NAMES = ("critic_loss", "actor_loss", "q_mean", "reward_mean", "episode_return_sum",
                "episodes")


@dataclasses.dataclass(frozen=True)
class FastTD3:
    """FastTD3 for one env batch and one set of hyperparameters; hashable, so its methods can
    be jitted with `self` static."""

    hp: Hyperparameters
    env: Any  # reppo.envs.autoreset.AutoResetVecEnv with hp.num_envs envs
    stagger: bool = True  # spread the first episodes' ends, as REPPO's training envs do

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def _tx(self, lr: float) -> optax.GradientTransformation:
        return optax.adamw(lr, weight_decay=self.hp.weight_decay)

    def normalize(self, stats: RunningStats, obs: jax.Array) -> jax.Array:
        return normalize(stats, obs) if self.hp.normalize_observations else obs

    def init(self, key: jax.Array) -> TrainState:
        hp, spec = self.hp, self.env.spec
        k_actor, k_critic, k_env, k_noise, key = jax.random.split(key, 5)
        actor = init_actor(k_actor, spec.obs_size, spec.action_size, hp)
        critic = init_critic(k_critic, spec.obs_size, spec.action_size, hp)
        env_state = self.env.reset(k_env)
        if self.stagger:
            env_state = self.env.stagger(env_state, jax.random.fold_in(k_env, 1))
        return TrainState(
            actor=actor, critic=critic, critic_target=critic,
            actor_opt=self._tx(hp.actor_lr).init(actor),
            critic_opt=self._tx(hp.critic_lr).init(critic),
            obs_stats=init_stats(spec.obs_size),
            buffer=B.init_buffer(hp.buffer_per_env, hp.num_envs, spec.obs_size,
                                 spec.action_size),
            env_state=env_state,
            noise_scales=M.draw_noise_scales(k_noise, hp.num_envs, hp.std_min, hp.std_max),
            key=key,
            iteration=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
            episode_return=jnp.zeros((hp.num_envs,), jnp.float32),
            metrics={name: jnp.zeros((), jnp.float32) for name in METRIC_NAMES},
        )

    # -- the gradient updates --

    def _critic_update(self, state: TrainState, batch: B.Batch, key: jax.Array) -> tuple:
        hp = self.hp
        next_action = M.smoothed_target_action(
            actor_apply(state.actor, batch.next_obs), key, hp.policy_noise, hp.noise_clip)
        t1, t2 = critic_apply(state.critic_target, batch.next_obs, next_action)
        p1 = M.project(jax.nn.softmax(t1), batch.reward, batch.discount, batch.bootstrap,
                       hp.v_min, hp.v_max)
        p2 = M.project(jax.nn.softmax(t2), batch.reward, batch.discount, batch.bootstrap,
                       hp.v_min, hp.v_max)
        if hp.use_cdq:
            p1 = p2 = M.clipped_double_q_target(p1, p2, hp.v_min, hp.v_max)

        def loss(critic: Params) -> jax.Array:
            l1, l2 = critic_apply(critic, batch.obs, batch.action)
            return M.cross_entropy(l1, p1) + M.cross_entropy(l2, p2)

        value, grads = jax.value_and_grad(loss)(state.critic)
        updates, opt = self._tx(hp.critic_lr).update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)
        q_mean = jnp.mean(M.expected_value(p1, hp.v_min, hp.v_max))
        return state._replace(critic=critic, critic_opt=opt), value, q_mean

    def _actor_update(self, state: TrainState, batch: B.Batch) -> tuple[TrainState, jax.Array]:
        hp = self.hp

        def loss(actor: Params) -> jax.Array:
            l1, l2 = critic_apply(state.critic, batch.obs, actor_apply(actor, batch.obs))
            return M.actor_objective(l1, l2, hp.v_min, hp.v_max, hp.use_cdq)

        value, grads = jax.value_and_grad(loss)(state.actor)
        updates, opt = self._tx(hp.actor_lr).update(grads, state.actor_opt, state.actor)
        return state._replace(actor=optax.apply_updates(state.actor, updates),
                              actor_opt=opt), value

    def _updates(self, state: TrainState) -> TrainState:
        hp = self.hp
        metrics = dict(state.metrics)
        for _ in range(hp.num_updates):
            key, k_sample, k_noise = jax.random.split(state.key, 3)
            state = state._replace(key=key)
            batch = B.sample(state.buffer, k_sample, hp.batch_size, hp.n_step, hp.gamma)
            batch = batch._replace(obs=self.normalize(state.obs_stats, batch.obs),
                                   next_obs=self.normalize(state.obs_stats, batch.next_obs))
            state, critic_loss, q_mean = self._critic_update(state, batch, k_noise)
            due = state.updates % hp.policy_frequency == hp.policy_frequency - 1

            def actor_step(s: TrainState, batch: B.Batch = batch) -> tuple[TrainState, jax.Array]:
                return self._actor_update(s, batch)

            def no_actor_step(s: TrainState, last: jax.Array = metrics["actor_loss"]) -> tuple:
                return s, last

            state, actor_loss = jax.lax.cond(due, actor_step, no_actor_step, state)
            state = state._replace(
                critic_target=M.soft_update(state.critic_target, state.critic, hp.tau),
                updates=state.updates + 1,
            )
            metrics.update(critic_loss=critic_loss, actor_loss=actor_loss, q_mean=q_mean)
        return state._replace(metrics=metrics)

    # -- one iteration --

    def iteration(self, state: TrainState) -> TrainState:
        """Step every env once with the exploring actor, store the step, and update."""
        hp = self.hp
        key, k_act, k_scales = jax.random.split(state.key, 3)
        obs = state.env_state.obs
        stats = update_stats(state.obs_stats, obs) if hp.normalize_observations else \
            state.obs_stats
        mean_action = actor_apply(state.actor, self.normalize(stats, obs))
        noise = jax.random.normal(k_act, mean_action.shape) * state.noise_scales
        action = jnp.clip(mean_action + noise, -1.0, 1.0)  # store what the env executes
        env_state, out = self.env.step(state.env_state, action)
        buffer = B.add(state.buffer, obs, action, out.reward, out.terminated, out.truncated,
                       out.final_obs)
        ended = jnp.maximum(out.terminated, out.truncated)
        episode_return = state.episode_return + out.reward
        metrics = dict(state.metrics)
        metrics["episode_return_sum"] = metrics["episode_return_sum"] + jnp.sum(
            ended * episode_return)
        metrics["episodes"] = metrics["episodes"] + jnp.sum(ended)
        metrics["reward_mean"] = jnp.mean(out.reward)
        state = state._replace(
            obs_stats=stats, buffer=buffer, env_state=env_state, key=key,
            noise_scales=M.refresh_noise_scales(state.noise_scales, ended, k_scales,
                                                hp.std_min, hp.std_max),
            iteration=state.iteration + 1,
            episode_return=episode_return * (1.0 - ended),
            metrics=metrics,
        )
        learn = (state.iteration > hp.learning_starts) & (buffer.size >= hp.n_step)
        return jax.lax.cond(learn, self._updates, lambda s: s, state)

    def run(self, state: TrainState, num_iterations: jax.Array) -> TrainState:
        """`num_iterations` iterations (a traced count: one compilation serves every length)."""
        return jax.lax.fori_loop(0, num_iterations, lambda _, s: self.iteration(s), state)

    def policy(self, actor: Params, stats: RunningStats, obs: jax.Array) -> jax.Array:
        """The deterministic policy that is evaluated: the actor on normalized observations."""
        return actor_apply(actor, self.normalize(stats, obs))


def reset_period_metrics(state: TrainState) -> TrainState:
    metrics = dict(state.metrics)
    metrics["episode_return_sum"] = jnp.zeros((), jnp.float32)
    metrics["episodes"] = jnp.zeros((), jnp.float32)
    return state._replace(metrics=metrics)
