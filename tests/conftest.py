"""Shared fixtures: a tiny config for end-to-end runs, and JAX's persistent compile cache."""

import os
from pathlib import Path

import jax
import pytest

from reppo.config import Config

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
