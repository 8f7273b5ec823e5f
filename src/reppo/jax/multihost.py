"""Which processes train one JAX run: joining JAX's distributed runtime when the environment
describes a multi-process (multi-host) run, and the few Python values its processes exchange
for the training loop.

Joining must happen before anything starts JAX's backends (asking for its devices does), so
the entry points call `join_processes` first; it does nothing for a plain start. The mesh over
all processes' devices is `reppo.jax.sharding`'s.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from reppo.config import ConfigError

__all__ = ["PROCESS_VARIABLES", "JaxProcesses", "join_processes"]

# Variables that describe a multi-process run without a cluster manager (all three needed).
PROCESS_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def join_processes(environ: dict[str, str] | None = None) -> bool:
    """Join a multi-process run if the environment describes one; True if one was joined.

    Either the three `PROCESS_VARIABLES` (coordinator `host:port`, process count, this
    process's index), or a SLURM job step of several tasks (`srun --ntasks N`, where JAX reads
    the coordinator, count and index from SLURM's variables). Must run before JAX starts its
    backends. On a CPU the processes exchange data through Gloo.
    """
    environ = dict(os.environ) if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    given = [name for name in PROCESS_VARIABLES if environ.get(name)]
    explicit = len(given) == len(PROCESS_VARIABLES)
    if given and not explicit:
        missing = [name for name in PROCESS_VARIABLES if name not in given]
        raise ConfigError(
            f"a multi-process JAX run needs all of {', '.join(PROCESS_VARIABLES)}; "
            f"{', '.join(missing)} not set (set them on every process, or unset "
            f"{', '.join(given)} for a single-process run)"
        )
    slurm = int(environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1
    if not (explicit or slurm):
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        try:
            count, index = int(environ["JAX_NUM_PROCESSES"]), int(environ["JAX_PROCESS_ID"])
        except ValueError:
            raise ConfigError(
                "JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                f"{environ['JAX_NUM_PROCESSES']!r} and {environ['JAX_PROCESS_ID']!r}"
            ) from None
        if not 0 <= index < count:
            raise ConfigError(f"JAX_PROCESS_ID = {index} must lie in [0, {count})")
        jax.distributed.initialize(environ["JAX_COORDINATOR_ADDRESS"], count, index)
    else:
        jax.distributed.initialize()  # SLURM's variables
    return True


class JaxProcesses:
    """The processes of a multi-process JAX run, for the training loop (`reppo.loop.runner`):
    where this one stands, and the few Python values they exchange outside the jitted
    program (the leader's checks and checkpoint reading, stop requests). Values travel
    pickled through JAX's own collectives; they come from another process of the same run."""

    def __init__(self) -> None:
        self.index = jax.process_index()
        self.count = jax.process_count()

    @staticmethod
    def _bytes(value: Any) -> np.ndarray:
        import pickle

        return np.frombuffer(pickle.dumps(value), np.uint8)

    @staticmethod
    def _value(data: np.ndarray) -> Any:
        import pickle

        return pickle.loads(np.asarray(data, np.uint8).tobytes())  # noqa: S301 (our own run)

    def share(self, value: Any) -> Any:
        """Process 0's `value` on every process."""
        from jax.experimental import multihost_utils

        data = self._bytes(value) if self.index == 0 else np.zeros(0, np.uint8)
        size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
        if self.index != 0:
            data = np.zeros(size, np.uint8)
        return self._value(multihost_utils.broadcast_one_to_all(data))

    def any_of(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))

    def gather_to_leader(self, value: Any) -> list[Any] | None:
        """Every process's `value` on process 0 (None on the others)."""
        from jax.experimental import multihost_utils

        data = self._bytes(value)
        sizes = np.asarray(multihost_utils.process_allgather(np.int64(data.size))).reshape(-1)
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[: data.size] = data
        every = np.asarray(multihost_utils.process_allgather(padded))
        if self.index != 0:
            return None
        return [self._value(row[:size]) for row, size in zip(every, sizes, strict=True)]
