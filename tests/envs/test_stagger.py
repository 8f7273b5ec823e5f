"""Staggered episodes in every training env: JAX Playground, the torch bridge and ManiSkill3.

A fresh batch of envs starts every episode at step 0; a DM Control task never terminates, so
without staggering all envs truncate together and each iteration trains on the same slice of
the episode. The wrapper-level behaviour is tested in test_envs.py; these tests check that
each training path staggers, that evaluation does not, and that the config can switch it off.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from reppo.config import Config
from reppo.envs import make_env
from reppo.jax.agent import Agent


def _counters(config: Config) -> np.ndarray:
    env = make_env(config.env, config.num_envs)
    state = jax.jit(Agent.create(config, env).init)(jax.random.PRNGKey(0))
    return np.asarray(state.env_state.step_count)


def test_stagger_is_on_by_default():
    assert Config().stagger_episodes is True


@pytest.mark.e2e
def test_jax_training_envs_start_spread_over_the_episode(tiny_config):
    config = tiny_config.replace(num_envs=64)
    counts = _counters(config)
    assert counts.min() >= 0 and counts.max() < 1000
    assert len(np.unique(counts)) > 50 and counts.std() > 200
    # Different seeds draw different counters.
    env = make_env(config.env, config.num_envs)
    other = jax.jit(Agent.create(config, env).init)(jax.random.PRNGKey(1))
    assert not np.array_equal(np.asarray(other.env_state.step_count), counts)


@pytest.mark.e2e
def test_jax_stagger_can_be_switched_off(tiny_config):
    counts = _counters(tiny_config.replace(num_envs=16, stagger_episodes=False))
    assert not counts.any()


@pytest.mark.e2e
def test_torch_bridge_staggers_training_envs(tiny_config):
    torch = pytest.importorskip("torch")
    from reppo.torch.trainer import TorchTrainer

    trainer = TorchTrainer(tiny_config.replace(backend="torch", num_envs=64))
    trainer.init_state()
    counts = np.asarray(trainer.env._state.step_count)
    assert len(np.unique(counts)) > 50 and counts.max() < 1000
    # The evaluation env is a separate batch and is never staggered.
    assert trainer.eval_env._state is None or not np.asarray(
        trainer.eval_env._state.step_count
    ).any()
    off = TorchTrainer(tiny_config.replace(backend="torch", num_envs=8, stagger_episodes=False))
    off.init_state()
    assert not np.asarray(off.env._state.step_count).any()
    del torch
