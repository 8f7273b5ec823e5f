"""Data parallelism over the devices of one machine: a mesh with one axis, the envs split on it.

Everything else of the training state (networks, optimizers, temperatures, normaliser, keys)
is replicated on every device. The program stays the one-device program: `jax.jit` with the
state's shardings lets the compiler (GSPMD) partition the rollout env by env, and every
minibatch is constrained to be split over the devices too, so each device computes the
losses of its share and the compiler inserts the all-reduce that averages the gradients. No
collective is written by hand, and the arithmetic is the one-device arithmetic up to the order
of floating-point sums, which is why checkpoints do not depend on the device count.

Several processes (one per host, or per GPU) form one run when the environment describes
them (`reppo.jax.multihost`): the mesh then holds every process's devices, each process steps the
envs on its own devices, and the compiler's collectives cross hosts. Every process runs the
same loop; only process 0 writes the run directory (`reppo.loop.runner`).

Why not `shard_map` over the envs: each device would then shuffle and split its own
transitions, which is another algorithm than the one-device run (minibatches drawn per device,
not from the whole batch); the compiler's partitioning keeps the math and needs nothing from
the simulator. An explicit-sharding (`AxisType.Explicit`) mesh is not used either: MJX's
step contains scatters whose sharding cannot be typed there.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from reppo.config import Config, ConfigError

__all__ = ["ENV_AXIS", "DataParallel", "resolve_num_devices"]

ENV_AXIS = "envs"


def _minibatch_size(config: Config) -> int:
    return config.steps_per_iteration // config.num_minibatches


def resolve_num_devices(config: Config, devices: list[Any] | None = None) -> int:
    """How many local devices a run uses: `config.num_devices`, checked against the machine,
    or with 0 every GPU/TPU whose count divides the envs and the minibatch (the largest such
    count), and 1 on a CPU."""
    devices = jax.local_devices() if devices is None else devices
    if config.num_devices:
        if config.num_devices > len(devices):
            raise ConfigError(
                f"num_devices = {config.num_devices}, but this machine has {len(devices)} "
                f"{devices[0].platform.upper()} device(s); use --num-devices "
                f"{len(devices)} or fewer (0 picks them automatically)"
            )
        return config.num_devices
    if devices[0].platform == "cpu":
        # Forced host devices split the same cores: more of them only adds communication.
        return 1
    for count in range(len(devices), 0, -1):
        if config.num_envs % count == 0 and _minibatch_size(config) % count == 0:
            return count
    return 1


class DataParallel:
    """The mesh of a run and the shardings of its state and minibatches."""

    def __init__(self, config: Config, num_devices: int):
        """`num_devices` of each process's local devices; the mesh holds all processes'."""
        self.config = config
        devices = [
            device
            for process in range(jax.process_count())
            for device in jax.local_devices(process_index=process)[:num_devices]
        ]
        self.num_devices = len(devices)
        minibatch = _minibatch_size(config)
        for name, size in (("num_envs", config.num_envs), ("the minibatch", minibatch)):
            if size % self.num_devices:
                raise ConfigError(
                    f"{name} ({size}) is not divisible by the {self.num_devices} devices of "
                    f"{jax.process_count()} process(es); pick num_envs, num_minibatches or "
                    "--num-devices so that it is"
                )
        self.mesh = Mesh(np.asarray(devices), (ENV_AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        # Arrays of the training state have a leading seed axis; their env axis comes next.
        self.env_sharded = NamedSharding(self.mesh, PartitionSpec(None, ENV_AXIS))

    @property
    def batch_sharding(self) -> NamedSharding | None:
        """The sharding of one minibatch (leading transition axis split), or None on one
        device, where a constraint would only add a no-op to the program."""
        if self.num_devices == 1:
            return None
        return NamedSharding(self.mesh, PartitionSpec(ENV_AXIS))

    def _by_envs(self, leaf: Any) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        if len(shape) >= 2 and shape[1] == self.config.num_envs:
            return self.env_sharded
        return self.replicated

    def state_shardings(self, state_shape: Any) -> Any:
        """Shardings for a training state (or its `jax.eval_shape`): the envs' observations,
        step counters, simulator states and running episode returns split over the devices,
        everything else replicated. The env's reset key is replicated whatever its shape."""
        shardings = jax.tree_util.tree_map(lambda _: self.replicated, state_shape)
        env = state_shape.env_state
        env_shardings = env._replace(
            obs=self.env_sharded,
            inner=jax.tree_util.tree_map(self._by_envs, env.inner),
            step_count=self.env_sharded,
            key=jax.tree_util.tree_map(lambda _: self.replicated, env.key),
        )
        return shardings._replace(env_state=env_shardings, episode_return=self.env_sharded)

    def place(self, tree: Any, shardings: Any) -> Any:
        """Host arrays (the same on every process) -> arrays laid out by `shardings`."""
        if jax.process_count() == 1:
            return jax.device_put(tree, shardings)

        def put(value: Any, sharding: NamedSharding) -> jax.Array:
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, sharding, lambda i: value[i])

        return jax.tree_util.tree_map(put, tree, shardings)

    @staticmethod
    def gather(tree: Any) -> Any:
        """Arrays split over the devices of several processes -> whole host arrays on every
        process (one process: unchanged, numpy gathers its own devices' shards)."""
        if jax.process_count() == 1:
            return tree
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)

