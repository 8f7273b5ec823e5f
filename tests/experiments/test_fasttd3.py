"""FastTD3: the distributional projection, clipped double Q, target smoothing, exploration
noise, delayed actor updates and the replay buffer against hand-computed cases; presets and
bad input; a tiny run's directory; learning CartpoleBalance on CPU."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.errors import UserError
from reppo.experiments import baselines
from reppo.experiments.baselines.fasttd3 import agent as F
from reppo.experiments.baselines.fasttd3 import buffer as B
from reppo.experiments.baselines.fasttd3 import losses as M
from reppo.runs import read_metrics

# ---- the C51 projection -------------------------------------------------------------------------


def test_projection_by_hand():
    """Support {0, 1, 2, 3, 4} (width 1). Row 0: r = 0.5, discount 1, all mass on atom 1:
    shifted atom 1.5 splits half-half between atoms 1 and 2. Row 1: r = 1, discount 0.5, mass
    0.5/0.5 on atoms 2 and 4: shifted to 2 (exactly an atom) and 3. Row 2: r = 10 beyond v_max:
    everything at atom 4. Row 3: a termination (no bootstrap): everything at r = 2.25, split
    0.75 / 0.25 between atoms 2 and 3."""
    probs = jnp.array([[0, 1, 0, 0, 0], [0, 0, 0.5, 0, 0.5], [0.2] * 5, [0, 0, 0, 0, 1.0]])
    out = M.project(probs, reward=jnp.array([0.5, 1.0, 10.0, 2.25]),
                    discount=jnp.array([1.0, 0.5, 0.9, 0.9]),
                    bootstrap=jnp.array([1.0, 1.0, 1.0, 0.0]), v_min=0.0, v_max=4.0)
    expected = np.array([[0, 0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5, 0], [0, 0, 0, 0, 1.0],
                         [0, 0, 0.75, 0.25, 0]])
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-6)


def test_projection_keeps_mass_and_the_clipped_mean():
    """Whatever the inputs, each row stays a distribution, and where no shifted atom leaves
    the support its mean is exactly reward + bootstrap * discount * mean."""
    key = jax.random.PRNGKey(0)
    probs = jax.nn.softmax(jax.random.normal(key, (64, 51)), axis=-1)
    reward = jax.random.uniform(jax.random.fold_in(key, 1), (64,), minval=-2, maxval=2)
    discount = jnp.full((64,), 0.97**3)
    bootstrap = (jax.random.uniform(jax.random.fold_in(key, 2), (64,)) > 0.2).astype(jnp.float32)
    out = M.project(probs, reward, discount, bootstrap, -10.0, 10.0)
    np.testing.assert_allclose(np.asarray(out.sum(-1)), 1.0, atol=1e-5)
    assert np.all(np.asarray(out) >= 0)
    # Keep the shifted support inside [-10, 10]: scale the distribution's atoms by 0.9 < 1
    # and rewards within +-0.5 never leave it.
    small = reward / 4
    out = M.project(probs, small, jnp.full((64,), 0.9), jnp.ones(64), -10.0, 10.0)
    mean = M.expected_value(probs, -10.0, 10.0)
    np.testing.assert_allclose(np.asarray(M.expected_value(out, -10.0, 10.0)),
                               np.asarray(small + 0.9 * mean), atol=1e-4)


def test_clipped_double_q_takes_the_lower_critics_distribution():
    low = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])  # means -1 and +1 on support {-1, 0, 1}
    high = jnp.array([[0, 1.0, 0], [1.0, 0, 0]])  # means 0 and -1
    out = M.clipped_double_q_target(low, high, -1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(out), [[1.0, 0, 0], [1.0, 0, 0]])


def test_actor_objective_min_or_mean():
    # Logits giving certain atoms: critic 1 says 1.0, critic 2 says -1.0 (support {-1, 0, 1}).
    big = 50.0
    l1 = jnp.array([[0, 0, big]])
    l2 = jnp.array([[big, 0, 0]])
    assert float(M.actor_objective(l1, l2, -1.0, 1.0, use_cdq=True)) == pytest.approx(1.0)
    assert float(M.actor_objective(l1, l2, -1.0, 1.0, use_cdq=False)) == pytest.approx(0.0)


def test_cross_entropy_is_the_c51_loss_and_does_not_move_the_target():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    target = jnp.array([[0.0, 1.0, 0.0]])
    assert float(M.cross_entropy(logits, target)) == pytest.approx(np.log(4.0))
    grad = jax.grad(lambda t: M.cross_entropy(logits, t))(target)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


# ---- noise and the target update ----------------------------------------------------------------


def test_target_smoothing_noise_is_clipped_then_the_action():
    action = jnp.zeros((20000, 2))
    out = np.asarray(M.smoothed_target_action(action, jax.random.PRNGKey(1), 1.0, 0.5))
    assert out.min() >= -0.5 and out.max() <= 0.5
    assert np.mean(np.abs(out) == 0.5) > 0.5  # std 1 clipped at 0.5: most samples on the clip
    near_edge = M.smoothed_target_action(jnp.full((1000, 1), 0.9), jax.random.PRNGKey(2),
                                         0.2, 0.5)
    assert float(near_edge.max()) == 1.0  # clipped to the action box
    tiny = np.asarray(M.smoothed_target_action(action, jax.random.PRNGKey(3), 0.01, 0.5))
    assert 0.008 < tiny.std() < 0.012  # unclipped: the std given


def test_noise_scales_per_env_and_redrawn_only_where_episodes_ended():
    scales = M.draw_noise_scales(jax.random.PRNGKey(0), 1000, 0.1, 0.4)
    assert scales.shape == (1000, 1)
    assert float(scales.min()) >= 0.1 and float(scales.max()) < 0.4
    assert 0.23 < float(scales.mean()) < 0.27
    ended = jnp.zeros(1000).at[:10].set(1.0)
    new = M.refresh_noise_scales(scales, ended, jax.random.PRNGKey(5), 0.1, 0.4)
    np.testing.assert_array_equal(np.asarray(new[10:]), np.asarray(scales[10:]))
    assert not np.any(np.asarray(new[:10]) == np.asarray(scales[:10]))


def test_soft_update_by_hand():
    target = {"w": jnp.array([0.0, 10.0])}
    online = {"w": jnp.array([1.0, 0.0])}
    np.testing.assert_allclose(np.asarray(M.soft_update(target, online, 0.1)["w"]), [0.1, 9.0])


# ---- the replay buffer -------------------------------------------------------------------------


def _filled(capacity: int, steps: int, num_envs: int = 2, term_at=(), trunc_at=()):
    """A buffer after `steps` writes: obs = step index, next_obs = step + 0.5 (so windows can
    be read back), reward = 1 + step, done flags at the given (step, env) pairs."""
    buf = B.init_buffer(capacity, num_envs, 1, 1)
    for t in range(steps):
        term = jnp.array([1.0 if (t, e) in term_at else 0.0 for e in range(num_envs)])
        trunc = jnp.array([1.0 if (t, e) in trunc_at else 0.0 for e in range(num_envs)])
        obs = jnp.full((num_envs, 1), float(t))
        buf = B.add(buf, obs, -obs, 1.0 + obs[:, 0], term, trunc, obs + 0.5)
    return buf


def test_buffer_is_circular_per_env_and_counts_its_bytes():
    buf = _filled(capacity=4, steps=6)
    assert int(buf.size) == 4 and int(buf.position) == 2
    # Slots 0, 1 were overwritten by steps 4, 5.
    np.testing.assert_array_equal(np.asarray(buf.obs[:, 0, 0]), [4, 5, 2, 3])
    assert buf.nbytes() == 4 * 2 * (1 + 1 + 1 + 1 + 1 + 1) * 4 + 2 * 4


def test_n_step_windows_by_hand():
    """Three-step windows with gamma 0.5; env 1 terminates at step 3 and env 0 is truncated at
    step 4. Windows starting at step 2: env 0 runs 2, 3, 4 (truncated at its last step, so it
    bootstraps from step 4's true final obs); env 1 stops at 3 (terminated: no bootstrap)."""
    buf = _filled(capacity=16, steps=8, term_at={(3, 1)}, trunc_at={(4, 0)})
    gamma = 0.5
    seen: dict[tuple[int, int], tuple] = {}
    for i in range(40):
        batch = B.sample(buf, jax.random.PRNGKey(i), batch_size=8, n_step=3, gamma=gamma)
        for row in range(8):
            env = row % 2
            start = int(batch.obs[row, 0])
            seen[(start, env)] = (float(batch.reward[row]), float(batch.discount[row]),
                                  float(batch.bootstrap[row]), float(batch.next_obs[row, 0]),
                                  float(batch.action[row, 0]))
    # Starts never reach past the newest step: 8 steps, windows of 3 -> starts 0..5.
    assert {s for s, _ in seen} == set(range(6))
    r = lambda t: 1.0 + t  # noqa: E731
    assert seen[(2, 0)] == pytest.approx((r(2) + 0.5 * r(3) + 0.25 * r(4), 0.125, 1.0, 4.5, -2.0))
    assert seen[(2, 1)] == pytest.approx((r(2) + 0.5 * r(3), 0.25, 0.0, 3.5, -2.0))
    assert seen[(3, 1)] == pytest.approx((r(3), 0.5, 0.0, 3.5, -3.0))
    assert seen[(4, 0)] == pytest.approx((r(4), 0.5, 1.0, 4.5, -4.0))
    assert seen[(5, 1)] == pytest.approx((r(5) + 0.5 * r(6) + 0.25 * r(7), 0.125, 1.0, 7.5,
                                          -5.0))


def test_windows_of_a_full_buffer_start_at_the_oldest_step():
    buf = _filled(capacity=4, steps=10)  # holds steps 6..9
    starts = set()
    for i in range(30):
        batch = B.sample(buf, jax.random.PRNGKey(i), batch_size=4, n_step=2, gamma=0.9)
        starts |= {int(x) for x in np.asarray(batch.obs[:, 0])}
        # Each window is two consecutive steps: next obs is start + 1 + 0.5.
        np.testing.assert_allclose(np.asarray(batch.next_obs[:, 0]),
                                   np.asarray(batch.obs[:, 0]) + 1.5)
    assert starts == {6, 7, 8}


def test_every_env_gives_the_same_share_of_a_batch():
    batch = B.sample(_filled(capacity=8, steps=8, num_envs=4), jax.random.PRNGKey(0), 12, 1, 0.9)
    assert batch.obs.shape == (12, 1)


# ---- presets and settings ------------------------------------------------------------------------


def test_playground_preset_is_fasttd3s_published_dmc_configuration():
    hp = F.preset_hyperparameters("fasttd3", "playground", 50_000_000)
    assert (hp.num_envs, hp.buffer_transitions, hp.buffer_per_env) == (1024, 10_485_760, 10_240)
    assert (hp.batch_size, hp.num_updates, hp.policy_frequency) == (32_768, 2, 2)
    assert (hp.n_step, hp.gamma, hp.tau) == (3, 0.97, 0.1)
    assert (hp.v_min, hp.v_max, hp.num_atoms) == (-500.0, 500.0, 101)
    assert (hp.std_min, hp.std_max, hp.policy_noise, hp.noise_clip) == (0.1, 0.4, 0.1, 0.5)
    assert (hp.critic_hidden_dim, hp.actor_hidden_dim) == (1024, 512)
    assert (hp.actor_lr, hp.critic_lr, hp.weight_decay) == (3e-4, 3e-4, 0.1)
    assert hp.use_cdq and hp.normalize_observations
    small = F.preset_hyperparameters("fasttd3-small", "playground", 50_000_000)
    assert dataclasses.replace(small, buffer_transitions=10_485_760) == hp
    assert small.buffer_transitions == 32_768 and small.buffer_per_env == 32


def test_cpu_preset_resizes_and_keeps_samples_per_env_step():
    play = F.preset_hyperparameters("fasttd3", "playground", 500_000)
    cpu = F.preset_hyperparameters("fasttd3", "cpu", 500_000)
    changed = {f.name for f in dataclasses.fields(F.Hyperparameters)
               if getattr(play, f.name) != getattr(cpu, f.name)}
    assert changed == {"num_envs", "batch_size", "critic_hidden_dim", "actor_hidden_dim",
                       "buffer_transitions"}
    per_step = lambda h: h.num_updates * h.batch_size / h.num_envs  # noqa: E731
    assert per_step(cpu) == per_step(play) == 64
    assert cpu.buffer_transitions == 500_096  # all 3,907 iterations x 128 envs it collects
    small = F.preset_hyperparameters("fasttd3-small", "cpu", 500_000)
    assert small.buffer_transitions == 32_768 and small.buffer_per_env == 256


@pytest.mark.parametrize(
    ("overrides", "steps", "message"),
    [
        ({"batch_sise": 4}, 100_000, "unknown fasttd3 hyperparameter"),
        ({"batch_size": 100}, 100_000, "must be a multiple of num_envs"),
        ({"buffer_transitions": 256}, 100_000, "holds 2 step"),
        ({"num_atoms": 1}, 100_000, "num_atoms >= 2"),
        ({}, 1280, "before its first update"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, overrides, steps,
                                                             message):
    with pytest.raises(UserError, match=message):
        baselines.run_baseline("fasttd3", "CartpoleBalance", 0, steps, tmp_path / "run",
                               preset="cpu", echo=None, hyperparameters=overrides)
    assert not (tmp_path / "run").exists()


def test_schedule_whole_iterations_and_evaluation_points():
    from reppo.experiments.baselines.iterations import plan_iterations

    hp = F.preset_hyperparameters("fasttd3", "cpu", 500_000)
    plan = plan_iterations(hp.num_envs, 500_000, 50_000)  # an iteration: a step of every env
    assert (plan.iterations, plan.iterations_per_eval) == (3907, 391)
    steps = plan.eval_steps()
    assert len(steps) == 10 and steps[0] == 391 * 128 and steps[-1] == 3907 * 128 == 500_096
    assert plan_iterations(hp.num_envs, 500_000, 0).eval_steps() == [500_096]


# ---- delayed actor updates --------------------------------------------------------------------


@pytest.mark.e2e
def test_actor_updates_once_per_policy_frequency_critic_updates():
    """With num_updates 2 and policy_frequency 2: two critic updates and one actor update per
    iteration, and none of either before learning starts."""
    from reppo.envs.registry import make_env

    hp = dataclasses.replace(
        F.preset_hyperparameters("fasttd3-small", "cpu", 10_000), num_envs=4, batch_size=8,
        buffer_transitions=64, critic_hidden_dim=8, actor_hidden_dim=8, learning_starts=3)
    agent = F.FastTD3(hp, make_env("CartpoleBalance", 4, impl="jax"))
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    run = jax.jit(agent.run)
    state = run(state, np.int32(3))
    assert int(state.updates) == 0 and int(state.actor_opt[0].count) == 0
    before = state.critic_target
    state = run(state, np.int32(2))
    assert int(state.updates) == 4 and int(state.iteration) == 5
    assert int(state.actor_opt[0].count) == 2  # AdamW's step count: one actor step per 2
    assert int(state.critic_opt[0].count) == 4
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), before, state.critic_target)
    assert max(jax.tree.leaves(moved)) > 0  # the target follows the critic


# ---- a tiny run and learning -------------------------------------------------------------------

TINY = {"num_envs": 8, "batch_size": 64, "critic_hidden_dim": 16, "actor_hidden_dim": 8}


# Both variants are one code path with other sizes: CI's tier runs the smaller one.
@pytest.mark.e2e
@pytest.mark.parametrize("algo", [pytest.param("fasttd3", marks=pytest.mark.extended),
                                  "fasttd3-small"])
def test_tiny_run_writes_a_valid_run_dir(tmp_path, algo):
    lines: list[str] = []
    result = baselines.train_baseline(
        algo, "CartpoleBalance", 0, 2000, tmp_path / "run", preset="cpu",
        eval_interval_steps=1000, eval_episodes=2, echo=lines.append, hyperparameters=TINY)
    run_dir = result.run_dir
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["algo"], config["env"], config["seed"], config["num_seeds"]) == (
        algo, "CartpoleBalance", 0, 1)
    assert config["hyperparameters"]["num_envs"] == 8
    expected_buffer = 2000 if algo == "fasttd3" else 32_768
    assert config["hyperparameters"]["buffer_transitions"] == expected_buffer
    records = read_metrics(run_dir)
    assert [r["env_steps"] for r in records] == config["schedule"]["eval_steps"] == [1000, 2000]
    assert records[-1]["final"] and "final" not in records[0]
    for r in records:
        assert 0.0 <= r["eval/return_mean"] <= 1000.0 and r["eval/episodes"] == 2
        assert np.isfinite(r["fasttd3/critic_loss"]) and np.isfinite(r["fasttd3/actor_loss"])
    assert records[-1]["fasttd3/buffer_transitions"] == min(2000, expected_buffer)
    assert len(lines) == 1 + len(records) and "FastTD3" in lines[0]
    assert (run_dir / "learning_curve.png").is_file()

    # The logged return is the project's protocol: the final actor, stepping the env directly.
    from reppo.envs.evaluation import eval_key, evaluate
    from reppo.envs.registry import make_env

    env = make_env("CartpoleBalance", 2, impl="jax")
    policy = result.policy_factory(result.params)
    again = evaluate(env, lambda obs: policy(obs, None)[0], eval_key(0, 2000)).returns
    assert float(np.mean(np.asarray(again))) == pytest.approx(records[-1]["eval/return_mean"],
                                                               rel=1e-5)


# A reference method's learning (its runs are the evidence in docs/experiments.md): CI's tier
# checks its updates and its run files.
@pytest.mark.learning
@pytest.mark.extended
def test_fasttd3_learns_cartpole_balance(tmp_path):
    """The cpu preset, seed 0, 150,016 env steps (1,172 iterations of 128 envs), evaluated once
    at the end with 32 episodes: about three minutes on one core. A random policy scores about
    200 here; this run reaches about 580 (it passes 600 at 300k steps, docs/baselines.md)."""
    result = baselines.train_baseline(
        "fasttd3", "CartpoleBalance", 0, 150_000, tmp_path / "run", preset="cpu",
        eval_interval_steps=0, eval_episodes=32, echo=print)
    assert result.final_record["env_steps"] == 150_016
    assert result.final_record["eval/return_mean"] >= 400, result.final_record
