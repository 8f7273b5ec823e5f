"""Shared fixtures: a tiny config for end-to-end runs, and JAX's persistent compile cache."""

import os
from pathlib import Path

# Under pytest-xdist (`-n 2`, as CI runs) every worker shares the machine's cores with the
# others: one compute thread per worker keeps XLA's and torch's thread pools from
# oversubscribing them (torch's OpenMP pool slows down many times when a core it waits on is
# busy). Must be set before JAX starts its CPU backend.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from reppo.config import Config  # noqa: E402

if _WORKER:
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)

# Tests compile the same chunks many times across processes; the persistent cache makes the
# repeats cheap. REPPO_JAX_CACHE is also what the CLI uses.
_CACHE = os.environ.setdefault(
    "REPPO_JAX_CACHE", str(Path.home() / ".cache" / "reppo" / "jax-tests")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


TINY = Config(
    env="CartpoleBalance",
    total_steps=512,
    num_envs=8,
    num_steps=16,
    num_epochs=2,
    num_minibatches=2,
    actor_hidden_dim=16,
    critic_hidden_dim=16,
    num_bins=21,
    kl_num_samples=4,
    log_interval_steps=256,
    eval_interval_steps=0,
    eval_episodes=2,
    checkpoint_interval_steps=256,
)


@pytest.fixture
def tiny_config() -> Config:
    return TINY


def tiny_flags(config: Config = TINY) -> list[str]:
    """The tiny config as `reppo train` flags."""
    flags = []
    for name, value in config.to_dict().items():
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def pytest_collection_modifyitems(config, items):
    """Under xdist, start the longest tests first: the scheduler deals the first tests out
    one per worker in turn, so the two learning tests run side by side on separate workers
    instead of one after the other at the end."""
    if not _WORKER:
        return

    def rank(item) -> int:
        if item.path.name == "test_learning.py":
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)
