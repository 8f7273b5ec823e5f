"""Data-parallel training of one torch run over several processes (`torch.distributed`).

`torchrun --nproc-per-node N -m reppo.cli train --backend torch ...` starts N processes (ranks)
of the same run; torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
tell each one its place. Every rank steps `num_envs / world_size` envs of its own (seeded by
`rank_seed`), splits its batch into the run's `num_minibatches`, and before every optimizer
step averages the gradients over the ranks, so all ranks hold the same parameters, optimizer
moments, temperatures and observation statistics throughout. Rank 0 alone writes the run
directory (`reppo.loop.runner` follows `process_index`/`process_count`).

The collectives, per iteration: three gradient all-reduces per minibatch step (critic, actor,
temperatures; one flattened buffer each), one all-gather of the rollout's observation moments,
and one all-reduce of the metrics. The loop adds a stop flag per chunk, the evaluation report
(rank 0 evaluates, the others receive its report) and, per checkpoint, a gather of every rank's
own state (its envs, episode returns, generator) to rank 0.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from reppo.config import Config, ConfigError
from reppo.loop.seam import SingleProcess
from reppo.torch import normalizer as N

__all__ = [
    "Launch",
    "TorchProcesses",
    "average_gradients",
    "check_divisible",
    "combine_moments",
    "processes_from_env",
    "rank_seed",
    "reduce_metrics",
]

RENDEZVOUS_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 evaluates and writes checkpoints and plots while the others wait in a collective:
# give it far longer than a collective normally takes before a rank gives up on the others.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
LAUNCH_HINT = (
    "launch several processes with `torchrun --nproc-per-node N -m reppo.cli train "
    "--backend torch ...`, which sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
)


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch: rank `rank` of `world_size`, `local_rank` on its
    machine. A plain `python`/`reppo` start is rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Launch:
        env = os.environ if environ is None else environ
        size = _int_variable(env, "WORLD_SIZE", default=1)
        if size < 1:
            raise ConfigError(f"WORLD_SIZE={size}: it must be >= 1; {LAUNCH_HINT}")
        if size == 1:
            return cls()
        missing = [name for name in RENDEZVOUS_VARIABLES if not env.get(name)]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={size} asks for {size} processes, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set; {LAUNCH_HINT} (under SLURM, "
                "run torchrun inside srun, or export them from SLURM_PROCID, SLURM_LOCALID "
                "and the first host of the allocation)"
            )
        rank = _int_variable(env, "RANK")
        local_rank = _int_variable(env, "LOCAL_RANK")
        if not 0 <= rank < size:
            raise ConfigError(f"RANK={rank} is outside [0, WORLD_SIZE={size}); {LAUNCH_HINT}")
        if local_rank < 0:
            raise ConfigError(f"LOCAL_RANK={local_rank} must be >= 0; {LAUNCH_HINT}")
        return cls(rank, local_rank, size)


def _int_variable(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not an integer; {LAUNCH_HINT}") from None


def check_divisible(config: Config, world_size: int) -> None:
    """The config splits evenly over `world_size` ranks, or a ConfigError naming the fix."""
    if config.backend != "torch":
        raise ConfigError(
            f"WORLD_SIZE={world_size}: several processes train one run with --backend torch "
            "only; the JAX backend splits a run over the local devices with --num-devices"
        )
    if config.num_envs % world_size:
        raise ConfigError(
            f"num_envs ({config.num_envs}, the total over all processes) is not divisible by "
            f"the {world_size} processes; pick --num-envs a multiple of {world_size} or "
            "another process count"
        )
    local = config.num_envs // world_size * config.num_steps
    if local % config.num_minibatches:
        raise ConfigError(
            f"each of the {world_size} processes collects num_envs / {world_size} * num_steps "
            f"= {local} transitions per iteration, not divisible by num_minibatches = "
            f"{config.num_minibatches}; pick num_minibatches dividing {local}"
        )


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s envs and noise: `seed` itself on rank 0 (so rank 0 starts like
    a single-process run), and for the others a value mixed from (seed, rank), so that no rank
    repeats another run's seed `seed + k`."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence((seed, rank)).generate_state(1, np.uint32)[0] >> 1)


def combine_moments(
    counts: Tensor, means: Tensor, variances: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(count, mean, population variance) of the union of sets given by their counts (k,),
    means (k, d) and population variances (k, d): the parallel combination, folded in order."""
    stats = N.RunningStats(means[0], variances[0], counts[0])
    for i in range(1, counts.shape[0]):
        stats = N.merge_moments(stats, counts[i], means[i], variances[i])
    return stats.count, stats.mean, stats.var


def average_gradients(params: Iterable[Tensor], world_size: int, group: Any = None) -> None:
    """Replace every `.grad` of `params` by its mean over the ranks: one all-reduce of one
    flattened buffer. Parameters without a gradient (the same on every rank, as every rank runs
    the same program) are left without one."""
    average_tensors_([p.grad for p in params if p.grad is not None], world_size, group)


def average_tensors_(tensors: list[Tensor], world_size: int, group: Any = None) -> None:
    """Replace every tensor of `tensors` in place by its mean over the ranks (one all-reduce of
    one flattened buffer)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat /= world_size
    offset = 0
    for tensor in tensors:
        size = tensor.numel()
        tensor.copy_(flat[offset:offset + size].view_as(tensor))
        offset += size


# Metrics that are counts (summed over the ranks) and averages over the finished episodes
# (weighted by each rank's episode count); every other metric is a mean over equal batches.
_SUMMED = ("train/episodes",)
_PER_EPISODE = ("train/episode_return", "train/success_rate")


def reduce_metrics(
    metrics: Mapping[str, float | bool], world_size: int, group: Any = None,
    device: torch.device | None = None,
) -> dict[str, float | bool]:
    """One iteration's metrics over all ranks, with one all-reduce: means of the per-rank
    values; `train/episodes` summed; episode averages weighted by each rank's episodes (NaN
    only where no rank finished one); `finite/` flags true only where true on every rank."""
    names = sorted(metrics)
    episodes = float(metrics.get("train/episodes", 0.0))
    values = []
    for name in names:
        value = float(metrics[name])
        if name.startswith("finite/"):
            value = 0.0 if metrics[name] else 1.0  # counts the ranks where it failed
        elif name in _PER_EPISODE:
            value = value * episodes if episodes > 0 else 0.0
        values.append(value)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    summed = dict(zip(names, total.cpu().tolist(), strict=True))
    out: dict[str, float | bool] = {}
    for name in names:
        value = summed[name]
        if name.startswith("finite/"):
            out[name] = value == 0.0
        elif name in _SUMMED:
            out[name] = value
        elif name in _PER_EPISODE:
            all_episodes = summed.get("train/episodes", 0.0)
            out[name] = value / all_episodes if all_episodes > 0 else math.nan
        else:
            out[name] = value / world_size
    return out


class TorchProcesses:
    """The process group of a multi-process launch, with the collectives the trainer and the
    loop use. `device` is this rank's compute device (cuda:LOCAL_RANK with NCCL, else CPU with
    Gloo); collectives of tensors run on it."""

    def __init__(self, launch: Launch, device: torch.device) -> None:
        self.index = launch.rank
        self.count = launch.world_size
        self.local_index = launch.local_rank
        self.device = device

    # ---- the loop's interface (reppo.loop.seam.SingleProcess is the one-process version) -------
    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (the others pass anything, typically None)."""
        box = [value if self.index == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def any_of(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather_to_leader(self, value: Any) -> list[Any] | None:
        """Every rank's `value`, in rank order, on rank 0; None on the others."""
        out: list[Any] | None = [None] * self.count if self.index == 0 else None
        dist.gather_object(value, out, dst=0)
        return out

    # ---- the trainer's and the agent's ----------------------------------------------------
    def average_gradients(self, params: Iterable[Tensor]) -> None:
        average_gradients(params, self.count)

    def average_tensors_(self, tensors: list[Tensor]) -> None:
        average_tensors_(tensors, self.count)

    def broadcast_tensors(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite `tensors` in place with rank 0's values (one flattened broadcast)."""
        tensors = list(tensors)
        if not tensors:
            return
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0)
            offset = 0
            for tensor in tensors:
                size = tensor.numel()
                tensor.copy_(flat[offset:offset + size].view_as(tensor))
                offset += size

    def update_stats(self, stats: N.RunningStats, batch: Tensor) -> N.RunningStats:
        """`normalizer.update_stats` with every rank's batch: the ranks' batch moments are
        gathered and combined exactly, in rank order, so every rank gets the same statistics."""
        batch = batch.reshape(-1, batch.shape[-1])
        local = torch.cat([
            torch.tensor([float(batch.shape[0])], device=batch.device),
            torch.mean(batch, dim=0),
            torch.var(batch, dim=0, correction=0),
        ])
        gathered = [torch.empty_like(local) for _ in range(self.count)]
        dist.all_gather(gathered, local)
        rows = torch.stack(gathered)
        size = batch.shape[-1]
        count, mean, var = combine_moments(rows[:, 0], rows[:, 1:1 + size], rows[:, 1 + size:])
        return N.merge_moments(stats, count, mean, var)

    def reduce_metrics(self, metrics: Mapping[str, float | bool]) -> dict[str, float | bool]:
        return reduce_metrics(metrics, self.count, device=self.device)

    def _object_device(self) -> torch.device | None:
        return self.device if dist.get_backend() == "nccl" else None


_processes: TorchProcesses | None = None


def process_device(config_device: str, launch: Launch) -> torch.device:
    """cuda:LOCAL_RANK where the config asks for CUDA (or `auto` finds it), else the CPU."""
    wants_cuda = config_device.startswith("cuda") or (
        config_device == "auto" and torch.cuda.is_available()
    )
    if not wants_cuda:
        return torch.device(config_device if config_device != "auto" else "cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError(f"device {config_device!r} was asked for but torch sees no GPU; use "
                          "--device cpu")
    if launch.local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK={launch.local_rank} but this machine has {count} GPU(s): start at most "
            f"{count} processes per machine (--nproc-per-node {count})"
        )
    return torch.device("cuda", launch.local_rank)


def processes_from_env(
    config: Config, environ: Mapping[str, str] | None = None
) -> TorchProcesses | SingleProcess:
    """This process's place in the launch: `SingleProcess()` for a plain start; for a
    torchrun launch the process group, started on the first call (NCCL on CUDA, Gloo on the
    CPU) after checking that the config splits over the ranks."""
    global _processes
    launch = Launch.from_env(environ)
    if launch.world_size == 1:
        return SingleProcess()
    check_divisible(config, launch.world_size)
    if _processes is not None:
        return _processes
    device = process_device(config.device, launch)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method="env://",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=COLLECTIVE_TIMEOUT,
        )
    _processes = TorchProcesses(launch, device)
    return _processes
