"""Which processes train one run, and how the training loop's leader (process 0) shares its
decisions with the followers.

A plain start is one process (`reppo.loop.seam.SingleProcess`); a torchrun launch of the torch
backend (`reppo.torch.distributed`) or a multi-process JAX run (`reppo.jax.multihost`) gives an
object with the same interface: `index`, `count`, `share`, `any_of`, `gather_to_leader`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from reppo.config import Config, ConfigError
from reppo.loop.seam import SingleProcess

__all__ = ["LeaderStopped", "from_leader", "launched_processes", "on_leader"]


def launched_processes(config: Config) -> Any:
    """Where this process stands among the processes that train one run (`index` of `count`,
    with `share` and `any_of` collectives): `SingleProcess()` for a plain start. A torchrun
    launch of the torch backend starts its process group here (`reppo.torch.distributed`), a
    multi-process JAX run joins JAX's distributed runtime (`reppo.jax.multihost`); a
    ConfigError names what is wrong with a launch before anything is written."""
    if config.backend == "torch":
        from reppo.torch.distributed import processes_from_env

        return processes_from_env(config)
    world_size = os.environ.get("WORLD_SIZE", "1").strip()
    if world_size not in ("", "1"):
        raise ConfigError(
            f"WORLD_SIZE={world_size}: torchrun's launch trains several processes with "
            "--backend torch; a JAX run spans processes through JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID or a SLURM job step (docs/backends.md)"
        )
    from reppo.jax.multihost import JaxProcesses, join_processes

    if join_processes():
        return JaxProcesses()
    return SingleProcess()


class LeaderStopped(RuntimeError):
    """A follower's error when the leader (process 0) failed at a step they share."""


def on_leader(processes: Any, step: Callable[[], Any]) -> Any:
    """`step()` on the leader, its result shared with the followers (`from_leader`); an
    error of the leader's stops the followers too, naming it, instead of leaving them waiting."""
    if processes.count == 1:
        return step()
    try:
        value = step()
    except BaseException as err:
        processes.share((None, f"{type(err).__name__}: {err}"))
        raise
    processes.share((value, None))
    return value


def from_leader(processes: Any) -> Any:
    value, problem = processes.share(None)
    if problem is not None:
        raise LeaderStopped(f"process 0 (the leader) stopped the run: {problem}")
    return value
