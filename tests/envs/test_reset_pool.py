"""The reset pool: ended envs take fresh initial states drawn once per rollout, and the batch
reset, needed only for ends beyond the pool, stays a branch under a vmap over seeds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo import pytrees
from reppo.envs.autoreset import SEED_AXIS, AutoResetVecEnv
from reppo.envs.reset_pool import reset_pool_size
from tests.envs.test_envs import ACTIONS, FakeEnv, fake_vec_env
from tests.fakes import still_env


def _pooled_rollout(env: AutoResetVecEnv, key, pool_size: int, num_steps: int = 12):
    state = env.with_reset_pool(env.reset(key), pool_size)

    def body(s, _):
        s, out = env.step(s, ACTIONS)
        return s, (out, s.obs, s.step_count)

    final, (outs, obs, counts) = jax.lax.scan(body, state, None, num_steps)
    return state, final, outs, obs, counts


def _ends_in_order(outs) -> list[tuple[int, int]]:
    """(step, env) of every episode end, in the order the pool serves them."""
    done = np.asarray(outs.terminated + outs.truncated) > 0
    return [(int(k), int(i)) for k, i in zip(*np.nonzero(done), strict=True)]


def test_ended_envs_take_pool_states_in_turn():
    env = fake_vec_env(3, episode_length=5)
    start, final, outs, obs, counts = jax.device_get(
        jax.jit(lambda k: _pooled_rollout(env, k, 16))(jax.random.key(0))
    )
    ends = _ends_in_order(outs)
    assert len(ends) == 12  # env 0: 2 truncations, env 1: 4 and env 2: 6 terminations
    pool_obs = start.pool.obs
    for rank, (k, i) in enumerate(ends):
        np.testing.assert_array_equal(obs[k, i], pool_obs[rank])  # the rank-th fresh state
        assert counts[k, i] == 0
    assert int(final.pool_used) == len(ends)
    # The flags and the true final observations are the wrapper's usual ones.
    steps = np.arange(1, 13)
    np.testing.assert_array_equal(outs.truncated[:, 0], np.isin(steps, [5, 10]))
    np.testing.assert_array_equal(outs.terminated[:, 2], steps % 2 == 0)
    # Fresh states: the pool draws new ones, never the batch's first states.
    assert len(np.unique(pool_obs[:, 0])) == 16
    assert not np.isin(pool_obs[:, 0], start.obs[:, 0]).any()


def test_ends_beyond_the_pool_reset_from_fresh_batch_states():
    env = fake_vec_env(3, episode_length=5)
    start, _, outs, obs, _ = jax.device_get(
        jax.jit(lambda k: _pooled_rollout(env, k, 2))(jax.random.key(0))
    )
    ends = _ends_in_order(outs)
    firsts = [obs[k, i, 0] for k, i in ends]
    np.testing.assert_array_equal(firsts[:2], start.pool.obs[:2, 0])
    # Every new episode starts from its own random state, pool or batch reset.
    assert len(np.unique(np.concatenate([start.obs[:, 0], firsts]))) == 3 + len(ends)
    assert all(0.0 <= x < 0.5 for x in firsts)


def test_checkpointed_state_holds_no_pool():
    env = fake_vec_env(3, episode_length=5)
    state = env.reset(jax.random.key(0))
    pooled = env.with_reset_pool(state, 4)
    assert set(pytrees.flatten(pooled)) > set(pytrees.flatten(state))
    assert set(pytrees.flatten(env.without_reset_pool(pooled))) == set(pytrees.flatten(state))
    assert env.with_reset_pool(state, 0) is state


class CountingFakeEnv(FakeEnv):
    """FakeEnv whose reset reports each time it is computed."""

    calls: list[int] = []

    def reset(self, key):
        # An operand makes the callback run once per env and seed of a batch.
        jax.debug.callback(lambda _: CountingFakeEnv.calls.append(1), jax.random.key_data(key))
        return super().reset(key)


@pytest.mark.parametrize("seed_axis", [SEED_AXIS, None])
def test_under_a_seed_vmap_the_batch_reset_runs_only_at_steps_with_an_end(seed_axis):
    from reppo.envs import EnvSpec

    spec = EnvSpec("Fake", 2, 2, 5, (0.0, 100.0), "test")
    env = AutoResetVecEnv(CountingFakeEnv(), 3, spec)
    env.seed_axis = seed_axis
    still = jnp.zeros_like(ACTIONS)  # no termination: only env time limits end episodes

    def run(key):
        state = env.reset(key)

        def body(s, _):
            s, out = env.step(s, still)
            return s, jnp.any(out.truncated > 0)

        return jax.lax.scan(body, state, None, 12)[1]

    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    program = jax.jit(jax.vmap(run, axis_name=SEED_AXIS)).lower(keys).compile()
    CountingFakeEnv.calls.clear()
    ended = np.asarray(program(keys)).any(axis=0)
    jax.effects_barrier()
    # One report per env and seed (2 x 3) each time a reset is computed; the first is the
    # batch's initial reset.
    batch_resets = len(CountingFakeEnv.calls) // 6 - 1
    assert ended.sum() == 2  # the time limit at steps 5 and 10
    if seed_axis is None:
        # A batched predicate: the reset is computed at every step.
        assert batch_resets == 12
    else:
        assert batch_resets == 2  # at those two steps only


def test_pool_size_covers_the_expected_ends_of_a_staggered_rollout():
    assert reset_pool_size(128, 64, 1000) == 21  # 8.2 expected ends + 3 sd + 4
    assert reset_pool_size(1024, 128, 1000) == 170
    assert reset_pool_size(4, 1000, 100) == 4  # never more than the batch
    # Where a batch reset at each end costs fewer resets than the pool, no pool.
    assert reset_pool_size(1, 64, 1000) == 0
    assert reset_pool_size(8, 16, 1000) == 0


@pytest.mark.e2e
def test_both_agents_draw_a_pool_per_rollout_and_drop_it(tiny_config, monkeypatch):
    """The JAX agent's rollout and the torch agent's over the Playground bridge draw a pool
    of reset_pool_size states, and the state they hand back (what checkpoints save) has none
    (on the still env: the wiring, not the physics, is under test)."""
    with still_env(episode_length=1000) as name:
        _draw_and_drop(tiny_config.replace(env=name, num_envs=64, num_steps=16), monkeypatch)


def _draw_and_drop(config, monkeypatch):
    from reppo.envs import make_env
    from reppo.jax.agent import Agent

    size = reset_pool_size(64, 16, 1000)
    assert size == 9
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    assert agent.reset_pool_size == size
    assert Agent.create(config.replace(stagger_episodes=False), env).reset_pool_size == 0
    drawn = []
    original = env.with_reset_pool
    monkeypatch.setattr(env, "with_reset_pool", lambda s, n: drawn.append(n) or original(s, n))
    state = agent.init(jax.random.PRNGKey(0))
    env_state, *_ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(1))
    assert drawn == [size] and env_state.pool is None

    pytest.importorskip("torch")
    from reppo.torch.trainer import TorchTrainer

    trainer = TorchTrainer(config.replace(backend="torch"))
    calls = []
    begin = trainer.env.begin_rollout
    monkeypatch.setattr(trainer.env, "begin_rollout", lambda n: calls.append(n) or begin(n))
    state, _ = trainer.run_chunk(trainer.init_state(), 1)
    assert calls == [size]
    assert trainer.env._state.pool is None
    names = trainer.state_arrays(state)
    assert "env_state/key" in names and not any("pool" in name for name in names)
