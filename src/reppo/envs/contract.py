"""The environment contracts: the JAX one (pure functions of a state) and the torch one.

## JAX adapters

An adapter is a set of pure, jittable functions over a batch of `num_envs` environments:

    spec                          static facts (`EnvSpec`)
    reset(key) -> EnvState        a fresh batch; `state.obs` has shape (num_envs, obs_size)
    stagger(state, key) -> EnvState   the batch with step counters spread over the episode
    step(state, action) -> (EnvState, StepOutput)
    with_reset_pool(state, size) -> EnvState    `size` fresh initial states for the next steps
    without_reset_pool(state) -> EnvState       drop them (before checkpointing the state)

`action` has shape (num_envs, action_size) with entries in [-1, 1].

`step` auto-resets: for an env whose episode ended at this step, `next_state.obs` is the first
observation of a new episode, while `StepOutput.final_obs` holds the *true* last observation of
the ended episode (bootstrapping from the reset observation is a bug of stock wrappers). For an
env that did not end, `final_obs == next_state.obs`.

Episode ends are reported as two disjoint flags:
- `terminated`: the task itself ended (no bootstrapping beyond it);
- `truncated`: the time limit `spec.episode_length` was hit without termination (bootstrap from
  `final_obs`).
Both are float32 arrays of 0/1, shape (num_envs,). Physics that went non-finite counts as a
termination, and the env is reset.

An env's new episode normally comes from a reset of the whole batch, run whenever any env ended
(the reset is computed once for all envs, as the batch is one vectorised program). Where resets
are costly (CheetahRun settles its physics for 200 steps in each) and episodes are staggered, so
that some env ends at most steps, a rollout draws a pool of `size` fresh initial states once
(`with_reset_pool`) and ended envs take theirs from it in turn; only ends beyond the pool fall
back to the batch reset. Either way every new episode starts from a fresh random state.

## Torch adapters (`TorchVecEnv`)

A stateful batch of `num_envs` environments whose arrays are torch tensors on `env.device`
(ManiSkill3 natively; MuJoCo Playground through the zero-copy DLPack bridge):

    spec, num_envs, device
    reset(seed) -> obs                          (num_envs, obs_size) float32
    stagger(seed)                               spread the step counters over the episode
    step(action) -> TorchStep                   action (num_envs, action_size) in [-1, 1]
    close()

The episode-boundary rules are the JAX ones: `step` auto-resets the envs that ended (partial
resets), `TorchStep.obs` is what the policy acts on next, `TorchStep.final_obs` the true
observation reached by this step, `terminated` and `truncated` disjoint float32 0/1 flags.
`TorchStep.success` is a (num_envs,) bool tensor for tasks with a success condition (ManiSkill),
else None. An adapter built for evaluation (`evaluation=True`) does not reset envs partially:
every env runs `spec.episode_length` steps and only the time limit ends its episode.

## Staggered episodes

Training calls `stagger` once, right after the first reset: each env's step counter is drawn
uniformly from [0, episode_length), so its first episode is cut short at its own step and
time-limit truncations spread over iterations instead of ending every env together. Observations
never depend on the counter. Evaluation envs are never staggered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:  # the contract module imports neither framework
    import jax
    import torch


@dataclass(frozen=True)
class EnvSpec:
    name: str
    obs_size: int
    action_size: int
    episode_length: int
    reward_range: tuple[float, float]
    family: str  # e.g. "dm_control"


class EnvState(NamedTuple):
    obs: jax.Array  # (num_envs, obs_size): what the policy acts on next
    inner: Any  # the simulator's own batched state
    step_count: jax.Array  # (num_envs,) int32 steps taken in the current episode
    key: jax.Array  # key for resets
    # During a rollout only (`with_reset_pool`), None otherwise, so that checkpoints taken
    # between rollouts hold neither: fresh initial states drawn for the rollout's episode ends,
    # with a leading pool axis, and how many of them ended envs have taken.
    pool: Any = None
    pool_used: Any = None  # () int32


class StepOutput(NamedTuple):
    reward: jax.Array  # (num_envs,) float32
    terminated: jax.Array  # (num_envs,) float32 0/1
    truncated: jax.Array  # (num_envs,) float32 0/1
    final_obs: jax.Array  # (num_envs, obs_size) true observation reached by this step


class TorchStep(NamedTuple):
    obs: torch.Tensor  # (num_envs, obs_size) next observation, after auto-reset
    reward: torch.Tensor  # (num_envs,) float32
    terminated: torch.Tensor  # (num_envs,) float32 0/1
    truncated: torch.Tensor  # (num_envs,) float32 0/1
    final_obs: torch.Tensor  # (num_envs, obs_size) true observation reached by this step
    success: torch.Tensor | None = None  # (num_envs,) bool, for tasks with a success condition


class TorchVecEnv(Protocol):
    spec: EnvSpec
    num_envs: int
    device: torch.device

    def reset(self, seed: int) -> torch.Tensor: ...

    def stagger(self, seed: int) -> None:
        """After `reset`: draw each env's step counter from [0, episode_length) (training)."""
        ...

    def step(self, action: torch.Tensor) -> TorchStep: ...

    def close(self) -> None: ...


class PooledTorchVecEnv(TorchVecEnv, Protocol):
    """A torch adapter that can draw a rollout's new episodes ahead (the Playground bridge):
    the torch agent calls `begin_rollout(size)` before a rollout and `end_rollout()` after it,
    as the JAX agent calls `with_reset_pool` / `without_reset_pool`."""

    def begin_rollout(self, pool_size: int) -> None: ...

    def end_rollout(self) -> None: ...
