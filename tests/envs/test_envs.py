"""Tests of the env layer: auto-reset wrapper, evaluation, and the Playground registry.

The wrapper and `evaluate` are checked by hand on a tiny fake env whose trajectories are known
exactly; the Playground tests use CartpoleBalance with few envs and steps, since compiling MJX
step functions dominates their cost.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import (
    DMC_TASKS,
    AutoResetVecEnv,
    EnvSpec,
    UnknownEnvError,
    env_spec,
    evaluate,
    evaluate_stochastic,
    list_envs,
    make_env,
)

# ---- a fake inner env ----------------------------------------------------------------------

THRESHOLD = 3.0  # the fake task terminates once pos >= THRESHOLD


class FakeState(NamedTuple):
    obs: Any
    reward: jax.Array
    done: jax.Array
    pos: jax.Array
    t: jax.Array


class FakeEnv:
    """1-D point: reset pos ~ U[0, 0.5); step adds action[0] to pos; obs = [pos, t].

    reward = t + action[1] (so a non-finite reward can be injected on its own); done when
    pos >= THRESHOLD. With action[0] = v the episode terminates after ceil((3 - pos0) / v)
    steps: v=1 -> 3 steps, v=2 -> 2 steps, v=0 -> never.
    """

    action_size = 2

    def __init__(self, dict_obs: bool = False) -> None:
        self.dict_obs = dict_obs

    def _obs(self, pos: jax.Array, t: jax.Array) -> Any:
        obs = jnp.stack([pos, t])
        return {"state": obs, "privileged": obs * 0 - 7.0} if self.dict_obs else obs

    def reset(self, key: jax.Array) -> FakeState:
        pos = jax.random.uniform(key, (), minval=0.0, maxval=0.5)
        t = jnp.zeros(())
        return FakeState(self._obs(pos, t), jnp.zeros(()), jnp.zeros(()), pos, t)

    def step(self, state: FakeState, action: jax.Array) -> FakeState:
        pos, t = state.pos + action[0], state.t + 1.0
        done = (pos >= THRESHOLD).astype(jnp.float32)
        return FakeState(self._obs(pos, t), t + action[1], done, pos, t)


def fake_vec_env(num_envs: int, episode_length: int, dict_obs: bool = False) -> AutoResetVecEnv:
    spec = EnvSpec("Fake", 2, 2, episode_length, (0.0, 100.0), "test")
    return AutoResetVecEnv(FakeEnv(dict_obs), num_envs, spec)


VELOCITIES = jnp.array([0.0, 1.0, 2.0])  # env 0 truncates, envs 1 and 2 terminate
ACTIONS = jnp.stack([VELOCITIES, jnp.zeros(3)], axis=1)


def rollout(env: AutoResetVecEnv, key: jax.Array, actions: jax.Array, num_steps: int):
    """(initial state, per-step StepOutput, per-step next EnvState) with fixed actions."""
    state = env.reset(key)

    def body(s, _):
        s, out = env.step(s, actions)
        return s, (out, s)

    _, (outs, states) = jax.lax.scan(body, state, None, num_steps)
    return state, outs, states


@pytest.fixture(scope="module")
def fake_run():
    env = fake_vec_env(3, episode_length=5)
    run = jax.jit(lambda k: rollout(env, k, ACTIONS, 12))
    return jax.device_get(run(jax.random.key(0)))


def test_flags_match_hand_computed_schedule(fake_run):
    _, outs, _ = fake_run
    steps = np.arange(1, 13)
    # env 0: time limit at steps 5 and 10; env 1: ends every 3 steps; env 2: every 2 steps.
    np.testing.assert_array_equal(outs.truncated[:, 0], np.isin(steps, [5, 10]))
    np.testing.assert_array_equal(outs.terminated[:, 0], 0)
    np.testing.assert_array_equal(outs.terminated[:, 1], steps % 3 == 0)
    np.testing.assert_array_equal(outs.terminated[:, 2], steps % 2 == 0)
    np.testing.assert_array_equal(outs.truncated[:, 1:], 0)
    assert outs.terminated.dtype == np.float32 and outs.truncated.dtype == np.float32
    assert np.all(outs.terminated * outs.truncated == 0)


def test_trajectories_match_reference_simulation(fake_run):
    """Replay every env in plain Python: final obs, rewards, resets and step counts."""
    init, outs, states = fake_run
    for i, v in enumerate(np.asarray(VELOCITIES)):
        pos, t = float(init.obs[i, 0]), 0
        for k in range(12):
            pos, t = pos + v, t + 1
            term, trunc = pos >= THRESHOLD, t >= 5 and pos < THRESHOLD
            assert outs.terminated[k, i] == term and outs.truncated[k, i] == trunc
            assert outs.reward[k, i] == pytest.approx(t)
            # The true last observation, also at termination and truncation.
            np.testing.assert_allclose(outs.final_obs[k, i], [pos, t], rtol=1e-6)
            nxt = states.obs[k, i]
            if term or trunc:
                # A reset observation: t back to 0, a new random start, count back to 0.
                assert nxt[1] == 0 and 0.0 <= nxt[0] < 0.5
                assert states.step_count[k, i] == 0
                pos, t = float(nxt[0]), 0
            else:
                # Untouched by other envs' resets: obs, inner state and count continue.
                np.testing.assert_allclose(nxt, [pos, t], rtol=1e-6)
                assert states.inner.pos[k, i] == pytest.approx(pos)
                assert states.step_count[k, i] == t
                np.testing.assert_array_equal(nxt, outs.final_obs[k, i])


def test_resets_draw_fresh_keys(fake_run):
    init, outs, states = fake_run
    ended = (outs.terminated + outs.truncated) > 0
    starts = np.concatenate([init.obs[:, 0], states.obs[:, :, 0][ended]])
    assert len(starts) == 3 + int(ended.sum())
    assert len(np.unique(starts)) == len(starts)  # never a replayed initial state
    # The reset key advances every step.
    keys = jax.random.key_data(states.key)
    assert len(np.unique(keys.reshape(12, -1), axis=0)) == 12


def test_termination_at_time_limit_is_termination_only():
    # env 1 terminates at step 3, exactly when a time limit of 3 is hit.
    _, outs, _ = jax.jit(lambda k: rollout(fake_vec_env(3, 3), k, ACTIONS, 3))(jax.random.key(1))
    np.testing.assert_array_equal(outs.terminated[2], [0, 1, 0])
    np.testing.assert_array_equal(outs.truncated[2], [1, 0, 0])  # env 2 restarted at step 2


def test_outer_vmap_over_seeds_matches_single_runs(fake_run):
    env = fake_vec_env(3, episode_length=5)
    keys = jnp.stack([jax.random.key(0), jax.random.key(7)])
    batched = jax.jit(jax.vmap(lambda k: rollout(env, k, ACTIONS, 12)))(keys)
    single = fake_run
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched), strict=True):
        if jnp.issubdtype(b.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(np.asarray(b)[0], np.asarray(a), rtol=1e-6)
    _, outs, states = batched
    np.testing.assert_array_equal(outs.terminated[0], outs.terminated[1])  # same dynamics
    assert not np.allclose(states.obs[0], states.obs[1])  # different random resets


def test_dict_observations_use_state_entry():
    env = fake_vec_env(3, 5, dict_obs=True)
    state = env.reset(jax.random.key(0))
    _, out = env.step(state, ACTIONS)
    assert state.obs.shape == (3, 2) and out.final_obs.shape == (3, 2)
    np.testing.assert_allclose(out.final_obs[:, 1], 1.0)


def test_non_finite_physics_terminates_with_safe_values():
    env = fake_vec_env(4, episode_length=5)
    state = env.reset(jax.random.key(3))
    # env 0: NaN position (obs and reward), env 1: inf reward only, env 2: -inf obs, env 3 ok.
    actions = jnp.array([[jnp.nan, 0.0], [0.0, jnp.inf], [-jnp.inf, 0.0], [0.0, 0.0]])
    nxt, out = jax.device_get(jax.jit(env.step)(state, actions))
    np.testing.assert_array_equal(out.terminated, [1, 1, 1, 0])
    np.testing.assert_array_equal(out.truncated, [0, 0, 0, 0])
    np.testing.assert_array_equal(out.reward, [0, 0, 0, 1])
    np.testing.assert_array_equal(out.final_obs[[0, 2]], 0.0)  # garbage obs replaced by zeros
    np.testing.assert_allclose(out.final_obs[1], [state.obs[1, 0], 1.0])  # finite obs kept
    assert np.all(np.isfinite(out.final_obs)) and np.all(np.isfinite(nxt.obs))
    assert np.all(np.isfinite(np.asarray(nxt.inner.pos)))  # the broken physics was reset
    np.testing.assert_array_equal(nxt.obs[:3, 1], 0.0)
    np.testing.assert_array_equal(nxt.step_count, [0, 0, 0, 1])


# ---- evaluate --------------------------------------------------------------------------------


def test_evaluate_sums_rewards_until_first_end():
    env = fake_vec_env(3, episode_length=5)
    act = lambda obs: ACTIONS  # an open-loop "policy" is deterministic too
    result = jax.jit(lambda k: evaluate(env, act, k))(jax.random.key(0))
    # reward at step t is t: env 0 runs 5 steps (1+..+5), env 1 three, env 2 two. Summing past
    # the end would add the next episode's 1, 2, ... to envs 1 and 2.
    np.testing.assert_allclose(result.returns, [15.0, 6.0, 3.0])
    np.testing.assert_array_equal(result.lengths, [5, 3, 2])
    assert result.returns.dtype == jnp.float32 and result.lengths.dtype == jnp.int32
    seeds = jnp.stack([jax.random.key(0), jax.random.key(1)])
    batched = jax.jit(jax.vmap(lambda k: evaluate(env, act, k)))(seeds)
    np.testing.assert_allclose(batched.returns, [[15.0, 6.0, 3.0]] * 2)


def test_evaluate_stochastic_resets_like_evaluate_and_draws_a_key_per_step():
    env = fake_vec_env(3, episode_length=5)

    def act(obs):  # the second action adds the env's current position to the reward
        return ACTIONS.at[:, 1].set(obs[:, 0])

    key = jax.random.key(0)
    deterministic = jax.jit(lambda k: evaluate(env, act, k))(key)
    other = jax.jit(lambda k: evaluate(env, act, k))(jax.random.key(1))
    assert not np.allclose(deterministic.returns, other.returns)  # the reset key matters
    # A key-ignoring "stochastic" policy reproduces the deterministic evaluation exactly, so
    # both reset the envs with the same key, to the same initial states.
    same = jax.jit(lambda k: evaluate_stochastic(env, lambda obs, _: act(obs), k))(key)
    np.testing.assert_array_equal(same.returns, deterministic.returns)
    np.testing.assert_array_equal(same.lengths, deterministic.lengths)

    # Noise u_t shared by the envs at step t: envs that ran 5, 3 and 2 steps get the sums of
    # the first 5, 3 and 2 draws; one key for every step would make their means equal.
    def noisy(obs, step_key):
        return ACTIONS.at[:, 1].set(jax.random.uniform(step_key))

    result = jax.jit(lambda k: evaluate_stochastic(env, noisy, k))(key)
    np.testing.assert_array_equal(result.lengths, [5, 3, 2])
    means = (np.asarray(result.returns) - [15.0, 6.0, 3.0]) / [5.0, 3.0, 2.0]
    assert np.all((means > 0) & (means < 1)) and not np.allclose(means, means[0])
    seeds = jnp.stack([jax.random.key(0), jax.random.key(1)])
    batched = jax.jit(jax.vmap(lambda k: evaluate_stochastic(env, noisy, k)))(seeds)
    np.testing.assert_array_equal(batched.returns[0], result.returns)


# ---- registry (no physics compiled) ----------------------------------------------------------


def test_list_envs_matches_playground():
    from mujoco_playground import registry

    names = list_envs("dm_control")
    assert len(names) == 25 and set(names) == set(registry.dm_control_suite.ALL_ENVS)
    assert {"CartpoleBalance", "CheetahRun", "HumanoidRun"} <= set(names)
    assert tuple(names) == DMC_TASKS


def test_unknown_env_error_suggests_and_lists():
    with pytest.raises(UnknownEnvError) as info:
        make_env("CartpoleBalanc", 4)
    msg = str(info.value)
    assert "'CartpoleBalanc'" in msg and "Did you mean 'CartpoleBalance'" in msg
    assert all(name in msg for name in DMC_TASKS)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownEnvError):
        env_spec("NoSuchTask")


def test_a_gymnasium_id_without_gymnasium_says_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` fails
    with pytest.raises(UnknownEnvError) as info:
        env_spec("HalfCheetah-v5")
    message = str(info.value)
    assert "Unknown environment" not in message
    assert "'HalfCheetah-v5' looks like a Gymnasium id, but Gymnasium is not installed" in message
    assert 'pip install -e ".[torch]"' in message and "--backend torch" in message
    torch_registry = pytest.importorskip("reppo.envs.torch_registry")
    with pytest.raises(UnknownEnvError, match="Gymnasium is not installed"):
        torch_registry.torch_env_spec("HalfCheetah-v5")
    # A name of another shape is still an unknown one.
    with pytest.raises(UnknownEnvError, match="Unknown environment 'NoSuchTask'"):
        env_spec("NoSuchTask")


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_envs"):
        make_env("CartpoleBalance", 0)
    with pytest.raises(ValueError, match="impl"):
        make_env("CartpoleBalance", 4, impl="cuda")
    with pytest.raises(ValueError, match="impl"):
        env_spec("CartpoleBalance", impl="mjx")


@pytest.mark.parametrize(
    "name, obs_size, action_size",
    [("CartpoleBalance", 5, 1), ("CheetahRun", 17, 6), ("HumanoidRun", 67, 21)],
)
def test_env_spec(name, obs_size, action_size):
    spec = env_spec(name)
    assert spec == EnvSpec(name, obs_size, action_size, 1000, (0.0, 1.0), "dm_control")
    assert env_spec(name, episode_length=7).episode_length == 7


# ---- a real Playground env -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_run():
    env = make_env("CartpoleBalance", 4, episode_length=5)
    assert env.num_envs == 4 and env.spec.episode_length == 5
    actions = jnp.linspace(-1.0, 1.0, 4)[:, None]

    def run(key):
        def body(s, _):
            # What the inner env's own step gives, before any wrapper logic.
            expected = jax.vmap(env.inner.step)(s.inner, actions).obs
            s, out = env.step(s, actions)
            return s, (out, s.obs, s.step_count, expected)

        return jax.lax.scan(body, env.reset(key), None, 12)[1]

    return jax.device_get(jax.jit(run)(jax.random.key(0)))


@pytest.mark.e2e
def test_cartpole_truncates_and_keeps_true_final_obs(cartpole_run):
    outs, next_obs, step_count, expected = cartpole_run
    truncated_steps = np.flatnonzero(outs.truncated[:, 0]) + 1
    np.testing.assert_array_equal(truncated_steps, [5, 10])
    np.testing.assert_array_equal(outs.truncated, outs.truncated[:, :1].repeat(4, axis=1))
    np.testing.assert_array_equal(outs.terminated, 0)
    np.testing.assert_array_equal(step_count[:, 0], [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2])
    np.testing.assert_allclose(outs.final_obs, expected, rtol=1e-5, atol=1e-6)
    for k in (4, 9):  # at truncation the next obs is a reset obs, not the final one
        assert np.all(np.abs(outs.final_obs[k] - next_obs[k]).max(axis=-1) > 1e-4)
    mid = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    np.testing.assert_array_equal(outs.final_obs[mid], next_obs[mid])
    assert np.all((outs.reward >= 0) & (outs.reward <= 1))


# ---- videos ----------------------------------------------------------------------------------


def test_render_failure_explains_fix(monkeypatch):
    from reppo.envs import evaluation

    def no_gl(*args, **kwargs):
        raise RuntimeError("libEGL.so.1: cannot open shared object file")

    monkeypatch.setattr(evaluation, "_headless_glfw", lambda: False)
    monkeypatch.setattr(evaluation, "_render_frames", no_gl)
    monkeypatch.setattr(evaluation, "_render_in_subprocess", no_gl)
    with pytest.raises(RuntimeError) as info:
        evaluation.render_frames(None, {}, 32, 24, None)
    msg = str(info.value)
    assert "\n" not in msg and "MUJOCO_GL=egl" in msg and "libosmesa6" in msg
    assert "libEGL.so.1" in msg  # says what is missing



class _Physics(NamedTuple):
    """The fields of MuJoCo's physics state that a frame is drawn from."""

    qpos: jax.Array
    qvel: jax.Array
    mocap_pos: jax.Array
    mocap_quat: jax.Array
    xfrc_applied: jax.Array


class _PhysicsState(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    data: _Physics


class _PhysicsLikeEnv:
    """A registered env shaped like Playground's: a model, a control step, physics data."""

    action_size = 2
    mj_model = object()
    dt = 0.01

    def reset(self, rng: jax.Array) -> _PhysicsState:
        del rng
        physics = _Physics(jnp.zeros(2), jnp.zeros(2), jnp.zeros((0, 3)), jnp.zeros((0, 4)),
                           jnp.zeros((2, 6)))
        return _PhysicsState(jnp.zeros(3), jnp.zeros(()), jnp.zeros(()), physics)

    def step(self, state: _PhysicsState, action: jax.Array) -> _PhysicsState:
        del action
        return state


def test_which_registered_envs_can_be_rendered():
    from reppo.envs.evaluation import video_problem
    from reppo.envs.user import register_env, unregister_env
    from tests.fakes import still_env

    with still_env() as env:
        problem = video_problem(env)
    assert problem is not None and "data" in problem and "\n" not in problem
    register_env("PhysicsLikeForTests", _PhysicsLikeEnv, episode_length=10,
                 reward_range=(0.0, 1.0))
    try:
        assert video_problem("PhysicsLikeForTests") is None
    finally:
        unregister_env("PhysicsLikeForTests")


def test_record_video_refuses_an_env_it_cannot_render(tmp_path):
    from reppo.envs.evaluation import record_video
    from reppo.errors import UserError
    from tests.fakes import still_env

    def act(obs):
        raise AssertionError("an episode was run before the refusal")

    with still_env() as env, pytest.raises(UserError, match=f"cannot render {env}"):
        record_video(env, act, jax.random.key(0), tmp_path / "clip.gif")
    assert not (tmp_path / "clip.gif").exists()


@pytest.mark.e2e
def test_record_video_writes_gif(tmp_path):
    from PIL import Image

    from reppo.envs import record_video

    path = tmp_path / "cartpole.gif"
    act = lambda obs: jnp.zeros((obs.shape[0], 1))
    try:
        info = record_video("CartpoleBalance", act, jax.random.key(0), path, episode_length=20)
    except RuntimeError as e:
        if "OpenGL" not in str(e):
            raise
        pytest.skip(f"no OpenGL backend here: {e}")
    assert info["length"] == 20 and 0 < info["return"] <= 20
    with Image.open(path) as gif:
        # 21 states (reset + 20 steps) at 100 Hz, kept at <= 30 fps: every 4th frame.
        assert gif.n_frames == 6 and gif.size == (320, 240)


# ---- staggered episodes ----------------------------------------------------------------------


def test_stagger_spreads_step_counters_over_the_episode():
    env = fake_vec_env(256, 50)
    state = env.reset(jax.random.PRNGKey(0))
    assert not state.step_count.any()  # a fresh batch starts in lockstep ...
    staggered = env.stagger(state, jax.random.PRNGKey(1))
    counts = np.asarray(staggered.step_count)
    assert counts.dtype == np.int32
    assert counts.min() >= 0 and counts.max() < 50
    assert len(np.unique(counts)) > 40  # ... and staggering spreads it over the 50 steps
    # Only the counter changes: the physics state and observations are those of the reset.
    np.testing.assert_array_equal(staggered.obs, state.obs)
    np.testing.assert_array_equal(staggered.inner.pos, state.inner.pos)


def _truncations_per_step(stagger: bool, num_envs: int = 64, length: int = 20) -> np.ndarray:
    env = fake_vec_env(num_envs, length)
    state = env.reset(jax.random.PRNGKey(0))
    if stagger:
        state = env.stagger(state, jax.random.PRNGKey(1))
    still = jnp.zeros((num_envs, 2))  # velocity 0: the fake task never terminates

    def body(state, _):
        state, out = env.step(state, still)
        return state, out.truncated

    _, truncated = jax.lax.scan(body, state, None, 3 * length)
    return np.asarray(truncated).sum(axis=1)


def test_staggered_truncations_spread_over_steps_not_bunched():
    lockstep = _truncations_per_step(stagger=False)
    # Without staggering every env truncates at the same steps: 20, 40, 60.
    assert sorted(np.flatnonzero(lockstep) + 1) == [20, 40, 60]
    assert set(lockstep[lockstep > 0]) == {64}
    spread = _truncations_per_step(stagger=True)
    # With it each env still truncates once per 20 steps, at its own step.
    assert spread[20:].sum() == 2 * 64
    assert spread.max() <= 16
    assert np.count_nonzero(spread[20:40]) >= 12  # most steps of an episode see a truncation


def test_evaluation_envs_are_not_staggered():
    env = fake_vec_env(8, 7)
    still = lambda obs: jnp.zeros((obs.shape[0], 2))  # noqa: E731
    result = evaluate(env, still, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(result.lengths, 7)  # every episode runs its full length
