"""A saved policy in PyTorch: the actor and observation statistics of any run's checkpoint.

Checkpoints of both backends name the actor's weights and the statistics the same way
(`actor/...`, `obs_stats/...`, with a leading seed axis), so this loads JAX runs too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reppo.config import Config
from reppo.envs.torch_registry import (
    evaluate_torch,
    is_maniskill,
    make_torch_env,
    resolve_device,
    torch_env_spec,
)
from reppo.loop.seam import eval_seed
from reppo.runs import (
    CheckpointError,
    evaluation_report,
    load_run_checkpoint,
    open_run_dir,
    policy_sizes,
)
from reppo.torch import distributions as D
from reppo.torch import normalizer as N
from reppo.torch.networks import Actor as ActorNet
from reppo.torch.networks import FlatMismatchError, load_flat


class DeterministicPolicy(nn.Module):
    """obs -> tanh(mean): the evaluation policy, with the run's normalization built in."""

    def __init__(self, actor: ActorNet, stats: N.RunningStats | None) -> None:
        super().__init__()
        self.actor = actor
        self.normalize_obs = stats is not None
        if stats is not None:
            self.register_buffer("obs_mean", stats.mean.clone())
            self.register_buffer("obs_var", stats.var.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.normalize_obs:
            obs = N.normalize(N.RunningStats(self.obs_mean, self.obs_var, None), obs)
        return D.deterministic_action(self.actor(obs))


@dataclass
class SavedPolicy:
    config: Config
    policies: list[DeterministicPolicy]  # one per seed of the run
    obs_size: int
    action_size: int
    env_steps: int
    checkpoint: Path
    backend: str  # the backend that wrote the checkpoint


@torch.no_grad()
def sample_action(
    policy: DeterministicPolicy, obs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """An action sampled from `policy`'s tanh-Gaussian (what training acts with); the
    generator, if given, must live on the policy's device."""
    if policy.normalize_obs:
        obs = N.normalize(N.RunningStats(policy.obs_mean, policy.obs_var, None), obs)
    return D.sample(policy.actor(obs), generator)[0]


def load_policy(
    run_dir: Path, checkpoint: Path | None = None, device: str | torch.device = "cpu"
) -> SavedPolicy:
    saved_config, path, arrays, metadata = load_run_checkpoint(run_dir, checkpoint)
    return policy_from_arrays(Config.from_dict(saved_config), arrays, path, metadata, device)


def policy_from_arrays(
    config: Config,
    arrays: dict[str, np.ndarray],
    path: Path,
    metadata: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> SavedPolicy:
    """The policies (one per seed) in the `actor/...` and `obs_stats/...` arrays of a
    checkpoint of either backend; `metadata` is the checkpoint's (`path` names it in errors).
    The sizes recorded in `metadata` spare building the env; without them the env is asked."""
    metadata = metadata or {}
    sizes = policy_sizes(metadata)
    if sizes is None:
        spec = torch_env_spec(config.env, impl=config.impl)
        sizes = spec.obs_size, spec.action_size
    obs_size, action_size = sizes
    policies = []
    for seed_index in range(config.num_seeds):
        actor = ActorNet(config, obs_size, action_size)
        try:
            load_flat(actor, arrays, "actor/", index=seed_index)
            stats = N.RunningStats(*(
                torch.as_tensor(np.asarray(arrays[f"obs_stats/{k}"][seed_index]))
                for k in N.RunningStats._fields
            ))
        except (FlatMismatchError, KeyError, IndexError) as err:
            raise CheckpointError(f"{path}: does not match the run's config.json ({err})") from None
        policy = DeterministicPolicy(actor, stats if config.normalize_obs else None)
        policies.append(policy.to(device).eval())
    return SavedPolicy(
        config, policies, obs_size, action_size, int(metadata.get("env_steps", 0)),
        path, metadata.get("backend", "jax"),
    )


def evaluate_run(
    run_dir: Path, *, episodes: int = 16, seed: int | None = None,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Deterministic evaluation of every seed's policy with the torch backend, on the episodes
    the JAX backend's `evaluate_run` uses (`eval_seed(seed + i, env_steps)`)."""
    saved = load_policy(run_dir, checkpoint)
    config = saved.config
    first = config.seed if seed is None else seed
    device = resolve_device(config.device if config.backend == "torch" else "auto")
    env = make_torch_env(
        config.env, episodes, device=device, seed=eval_seed(first, saved.env_steps),
        evaluation=True, impl=config.impl,
    )
    returns, success_once, success_at_end = [], [], []
    for i, policy in enumerate(saved.policies):
        policy.to(device)
        result = evaluate_torch(env, policy, seed=eval_seed(first + i, saved.env_steps))
        returns.append(result["returns"].cpu().numpy())
        if result["success_once"] is not None:
            success_once.append(result["success_once"].float().cpu().numpy())
            success_at_end.append(result["success_at_end"].float().cpu().numpy())
    env.close()
    r = np.stack(returns)
    report = evaluation_report(
        env=config.env, run_dir=run_dir, checkpoint=saved.checkpoint,
        env_steps=saved.env_steps, backend="torch", returns=r,
    )
    if success_once:
        report["success_once"] = float(np.mean(success_once))
        report["success_at_end"] = float(np.mean(success_at_end))
    return report


def record_run_video(
    run_dir: Path, path: Path, *, seed: int | None = None, checkpoint: Path | None = None
) -> dict[str, float]:
    """One episode as a video. Playground renders through MuJoCo, so the weights (stored the
    same way by both backends) are run by the JAX policy there."""
    config = Config.from_dict(open_run_dir(run_dir))
    if is_maniskill(config.env):
        raise CheckpointError(
            "videos of ManiSkill3 runs are not supported yet; evaluate without --video"
        )
    from reppo.jax.policy import record_run_video as record_with_jax

    return record_with_jax(run_dir, path, seed=seed, checkpoint=checkpoint)
