"""Tests of the Brax baselines: the JAX 0.10 shim, tiny Brax PPO and SAC runs writing REPPO run
directories, the evaluation protocol against an independent rollout, schedules and bad input."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.cli import main
from reppo.commands import baseline as baseline_command
from reppo.errors import UserError
from reppo.experiments import baselines
from reppo.experiments.baselines.brax import compat as brax_compat
from reppo.experiments.baselines.brax.schedule import plan_schedule
from reppo.experiments.baselines.hyperparameters import (
    BRAX,
    preset_hyperparameters,
    resolve_hyperparameters,
)
from reppo.runs import read_metrics

# Tiny networks and few envs: these runs check plumbing, not learning.
TINY = {
    "brax-ppo": {
        "num_envs": 4, "batch_size": 4, "num_minibatches": 4, "unroll_length": 16,
        "num_updates_per_batch": 2,
        "network_factory": {"policy_hidden_layer_sizes": [8], "value_hidden_layer_sizes": [8]},
    },
    "brax-sac": {
        "num_envs": 8, "batch_size": 32, "grad_updates_per_step": 1, "min_replay_size": 256,
        "network_factory": {"hidden_layer_sizes": [16]},
    },
}
# (total steps, evaluation interval): two and three evaluation points.
BUDGET = {"brax-ppo": (4000, 2000), "brax-sac": (3000, 1000)}
EPISODES = 2


@pytest.fixture(scope="module")
def fast_compile():
    """XLA's optimizations roughly halve these tiny runs' compile-dominated time when off; the
    results agree to float precision. Restored afterwards so other test modules are unaffected."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fast_compile):
    """One tiny run of each baseline, shared by the tests that inspect them."""
    out = {}
    for algo in BRAX:
        lines: list[str] = []
        steps, interval = BUDGET[algo]
        result = baselines.train_baseline(
            algo, "CartpoleBalance", 0, steps, tmp_path_factory.mktemp(algo) / "run",
            preset="cpu", eval_interval_steps=interval, eval_episodes=EPISODES,
            echo=lines.append, hyperparameters=TINY[algo],
        )
        out[algo] = (result, lines)
    return out


# ---- the JAX shim ------------------------------------------------------------------------------


def test_shim_provides_device_put_replicated_only_inside():
    had = hasattr(jax, "device_put_replicated")
    with brax_compat.jax_compat():
        if not had:  # JAX 0.10 removed it; JAX 0.9 still has its own, which stays
            assert jax.device_put_replicated is brax_compat.device_put_replicated
        tree = {"w": jnp.arange(3.0), "n": 2}
        devices = jax.local_devices()[:1]
        out = brax_compat.device_put_replicated(tree, devices)
        assert out["w"].shape == (1, 3) and out["n"].shape == (1,)
        np.testing.assert_array_equal(out["w"][0], [0.0, 1.0, 2.0])
        assert int(out["n"][0]) == 2
        # Brax reads replicas back shard by shard; each shard is one copy with a leading 1.
        assert out["w"].addressable_shards[0].data.shape == (1, 3)
        # Sharded over Brax's pmap axis name, so pmap reuses the arrays as they are.
        assert out["w"].sharding.mesh.axis_names == (brax_compat.BRAX_PMAP_AXIS,)
    assert hasattr(jax, "device_put_replicated") == had


def test_shim_is_removed_after_an_error_and_absent_in_jax_0_10():
    if hasattr(jax, "device_put_replicated"):
        pytest.skip("this JAX still has device_put_replicated (the shim does nothing)")
    with pytest.raises(KeyError), brax_compat.jax_compat():
        assert jax.device_put_replicated is brax_compat.device_put_replicated
        raise KeyError("boom")
    assert not hasattr(jax, "device_put_replicated")


def test_shim_leaves_an_existing_device_put_replicated_alone(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(jax, "device_put_replicated", sentinel, raising=False)
    with brax_compat.jax_compat():
        assert jax.device_put_replicated is sentinel
    assert jax.device_put_replicated is sentinel


def test_device_put_replicated_needs_devices():
    with pytest.raises(ValueError, match="non-empty"):
        brax_compat.device_put_replicated(jnp.zeros(2), [])


def test_capture_evaluations_swaps_brax_evaluator_and_restores_it():
    from brax.training import acting

    original = acting.Evaluator
    seen = []

    def make_policy(params, deterministic=False):
        return ("policy", params, deterministic)

    with brax_compat.capture_evaluations(lambda f, p: seen.append((f, p))):
        assert acting.Evaluator is not original
        ev = acting.Evaluator(None, functools.partial(make_policy, deterministic=False), 4,
                              1000, 1, None)
        assert ev.run_evaluation("params", {"training/loss": 1.5}) == {"training/loss": 1.5}
    assert acting.Evaluator is original
    factory, params = seen[0]
    # Whatever the trainer asked for, the captured factory builds the deterministic policy.
    assert factory(params) == ("policy", "params", True)


def test_capture_refuses_an_unknown_policy_factory_shape():
    with brax_compat.capture_evaluations(lambda f, p: None):
        from brax.training import acting

        with pytest.raises(RuntimeError, match="Brax 0.14.2"):
            acting.Evaluator(None, lambda params: None, 1, 1000, 1, None)


# ---- hyperparameters and schedules ---------------------------------------------------------------


def test_playground_presets_are_playgrounds_values():
    from mujoco_playground.config import dm_control_suite_params as params

    ppo = preset_hyperparameters("brax-ppo", "CartpoleBalance", "playground")
    ref = params.brax_ppo_config("CartpoleBalance").to_dict()
    for key in ("num_envs", "batch_size", "unroll_length", "num_minibatches", "discounting",
                "learning_rate", "entropy_cost", "reward_scaling", "num_updates_per_batch",
                "num_resets_per_eval", "normalize_observations"):
        assert ppo[key] == ref[key], key
    assert "num_timesteps" not in ppo and "num_evals" not in ppo
    assert ppo["episode_length"] == 1000 and ppo["action_repeat"] == 1

    sac = preset_hyperparameters("brax-sac", "PendulumSwingup", "playground")
    assert sac["num_envs"] == 128 and sac["grad_updates_per_step"] == 8
    assert sac["max_replay_size"] == 4_194_304 and sac["min_replay_size"] == 8192
    assert sac["network_factory"] == {"q_network_layer_norm": True}
    assert "num_resets_per_eval" not in sac  # Brax 0.14.2's SAC has no such argument
    assert sac["action_repeat"] == 1


def test_cpu_presets_resize_parallelism_only():
    play = preset_hyperparameters("brax-ppo", "CartpoleBalance", "playground")
    cpu = preset_hyperparameters("brax-ppo", "CartpoleBalance", "cpu")
    changed = {k for k in play if play[k] != cpu[k]}
    assert changed == {"num_envs", "batch_size", "num_minibatches"}
    # Each env still collects 16 unrolls of 30 steps per update, as in Playground's preset.
    assert cpu["batch_size"] * cpu["num_minibatches"] // cpu["num_envs"] == 16
    assert play["batch_size"] * play["num_minibatches"] // play["num_envs"] == 16

    sac = resolve_hyperparameters("brax-sac", "CartpoleBalance", "cpu", 100_000)
    play_sac = preset_hyperparameters("brax-sac", "CartpoleBalance", "playground")
    assert sac["max_replay_size"] == 100_000  # never more than the run collects
    # Gradient updates per env step are kept: 8 per 128 env steps = 2 per 32.
    assert (sac["grad_updates_per_step"] / sac["num_envs"]
            == play_sac["grad_updates_per_step"] / play_sac["num_envs"])
    assert sac["batch_size"] == play_sac["batch_size"]


def test_paper_tuned_preset_is_the_papers_ppo():
    """The REPPO paper's PPO tuned for Playground's DM Control suite: 2048 envs x 64 steps,
    32 minibatches, 16 epochs, lr 3e-4, clip 0.2, GAE lambda 0.95, no entropy bonus, value
    clipping, advantage and observation normalization; the rest is Playground's preset."""
    play = preset_hyperparameters("brax-ppo", "BallInCup", "playground")
    tuned = preset_hyperparameters("brax-ppo", "BallInCup", "paper-tuned")
    assert (tuned["num_envs"], tuned["unroll_length"]) == (2048, 64)
    assert tuned["batch_size"] * tuned["unroll_length"] * tuned["num_minibatches"] == 2048 * 64
    assert (tuned["num_minibatches"], tuned["num_updates_per_batch"]) == (32, 16)
    assert (tuned["learning_rate"], tuned["clipping_epsilon"]) == (3e-4, 0.2)
    assert (tuned["gae_lambda"], tuned["entropy_cost"]) == (0.95, 0.0)
    assert tuned["clipping_epsilon_value"] == 0.2
    assert tuned["normalize_advantage"] and tuned["normalize_observations"]
    # 64 steps per env per update: a forced reset after each would cut every episode there.
    assert tuned["num_resets_per_eval"] == 0
    # The task's own discount (0.95 on BallInCup) and Playground's reward scaling stay.
    assert tuned["discounting"] == play["discounting"] == 0.95
    assert tuned["reward_scaling"] == play["reward_scaling"]
    # Every key is an argument of Brax's PPO train().
    from reppo.experiments.baselines.brax import hyperparameters as baseline_hyperparameters

    train_keys, _ = baseline_hyperparameters.allowed_keys("brax-ppo")
    assert set(tuned) - {"network_factory", "episode_length", "action_repeat"} <= train_keys

    # 500k steps: four updates of 131,072 steps, evaluated after each, no forced reset.
    plan = plan_schedule("brax-ppo", tuned, 500_000, 50_000)
    assert (plan.env_steps_per_update, plan.num_evals, plan.planned_env_steps) == (
        131_072, 4, 524_288)
    assert plan.num_resets_per_eval == 0
    assert plan.eval_steps() == [131_072, 262_144, 393_216, 524_288]


def test_paper_tuned_is_a_ppo_preset_only(tmp_path):
    with pytest.raises(UserError, match="'paper-tuned' is brax-ppo's only; brax-sac has"):
        baselines.run_baseline("brax-sac", "CartpoleBalance", 0, 100_000, tmp_path / "run",
                               preset="paper-tuned", echo=None)
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_paper_tuned_run_trains_with_value_clipping(tmp_path, fast_compile):
    """The preset's path through Brax (value clipping, no resets, advantage normalization), at
    a width that fits CI: 8 sequences of 64 steps x 32 minibatches = 16,384 steps per update."""
    result = baselines.train_baseline(
        "brax-ppo", "CartpoleBalance", 0, 32_768, tmp_path / "run", preset="paper-tuned",
        eval_interval_steps=16_384, eval_episodes=EPISODES, echo=None,
        hyperparameters={"num_envs": 256, "batch_size": 8,
                         "network_factory": {"policy_hidden_layer_sizes": [8],
                                             "value_hidden_layer_sizes": [8]}},
    )
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["preset"] == "paper-tuned"
    assert config["hyperparameters"]["clipping_epsilon_value"] == 0.2
    assert config["schedule"]["num_resets_per_eval"] == 0
    assert [r["env_steps"] for r in result.records] == [16_384, 32_768]
    assert all(np.isfinite(r["brax/training/v_loss"]) for r in result.records)


def test_schedules_by_hand():
    cpu = preset_hyperparameters("brax-ppo", "CartpoleBalance", "cpu")
    # One update = 32 * 30 * 16 = 15,360 steps; 100k steps = 7 updates; 10k interval -> 1.
    s = plan_schedule("brax-ppo", cpu, 100_000, 10_000)
    assert (s.env_steps_per_update, s.updates_per_eval, s.num_evals) == (15_360, 1, 7)
    assert s.planned_env_steps == 107_520 and s.num_resets_per_eval == 1
    assert s.eval_steps() == [15_360 * j for j in range(1, 8)]
    # 30k interval -> 2 updates per evaluation (a reset after each), 4 evaluations.
    s = plan_schedule("brax-ppo", cpu, 100_000, 30_000)
    assert (s.updates_per_eval, s.num_evals, s.planned_env_steps) == (2, 4, 122_880)
    assert s.brax_arguments() == {"num_evals": 5, "num_resets_per_eval": 2}
    # Only at the end.
    s = plan_schedule("brax-ppo", cpu, 100_000, 0)
    assert (s.num_evals, s.planned_env_steps) == (1, 107_520)

    sac = resolve_hyperparameters("brax-sac", "CartpoleBalance", "cpu", 100_000)
    # Prefill 8192; 91,808 steps left = 2,869 steps of 32 envs; 10k interval -> 312 per
    # evaluation -> 10 evaluations of ceil(91,808 / 320) = 287 steps.
    s = plan_schedule("brax-sac", sac, 100_000, 10_000)
    assert (s.prefill_env_steps, s.num_evals, s.updates_per_eval) == (8192, 10, 287)
    assert s.planned_env_steps == 8192 + 10 * 287 * 32 == 100_032
    assert s.eval_steps()[0] == 8192 + 287 * 32


# ---- tiny runs -----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("algo", BRAX)
def test_tiny_run_writes_a_valid_run_dir(runs, algo):
    result, lines = runs[algo]
    run_dir = result.run_dir
    steps, interval = BUDGET[algo]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == algo and config["env"] == "CartpoleBalance"
    assert (config["seed"], config["num_seeds"], config["total_steps"]) == (0, 1, steps)
    assert (config["eval_episodes"], config["eval_interval_steps"]) == (EPISODES, interval)
    assert config["preset"] == "cpu"
    assert config["hyperparameters"]["num_envs"] == TINY[algo]["num_envs"]
    assert "packages" in json.loads((run_dir / "versions.json").read_text())

    records = read_metrics(run_dir)
    assert records == result.records and len(records) >= 2
    assert [r["env_steps"] for r in records] == config["schedule"]["eval_steps"]
    for i, r in enumerate(records):
        assert isinstance(r["env_steps"], int) and isinstance(r["wall_time"], float)
        assert r["eval/episodes"] == EPISODES
        assert r["eval/return_per_seed"] == [r["eval/return_mean"]]
        # Cartpole rewards are in [0, 1] per step over 1000-step episodes.
        assert 0.0 <= r["eval/return_mean"] <= 1000.0 and r["eval/return_std"] >= 0.0
        assert "brax/training/sps" in r
        assert r.get("final", False) == (i == len(records) - 1)
    times = [r["wall_time"] for r in records]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert records[-1]["env_steps"] >= steps > records[-2]["env_steps"]
    assert result.final_record == records[-1]
    # A start line, then one progress line per evaluation.
    assert len(lines) == 1 + len(records) and "eval" in lines[-1]
    assert (run_dir / "learning_curve.png").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize("algo", BRAX)
def test_reported_return_is_an_independent_rollout_of_the_brax_policy(runs, algo):
    """Re-evaluate the final policy without the project's evaluator: the Brax deterministic
    policy stepping the Playground env directly from the same initial states, 1000 steps,
    summing rewards. Equal returns mean the reported metric is exactly this protocol."""
    from reppo.envs.evaluation import eval_key
    from reppo.envs.registry import make_env

    result, _ = runs[algo]
    final = result.final_record
    env = make_env("CartpoleBalance", EPISODES, impl="jax")
    policy = result.policy_factory(result.params)
    step = jax.vmap(env.inner.step)

    def body(carry, _):
        state, total, running = carry
        action, _ = policy(state.obs, jax.random.PRNGKey(123))
        state = step(state, action)
        total = total + running * state.reward
        return (state, total, running * (1.0 - state.done)), None

    @jax.jit
    def rollout(key):
        start = env.reset(key).inner  # the evaluation's initial states (one compile for all)
        init = (start, jnp.zeros(EPISODES), jnp.ones(EPISODES))
        return jax.lax.scan(body, init, None, 1000)[0][1]

    returns = np.asarray(rollout(eval_key(0, final["env_steps"])), np.float64)
    np.testing.assert_allclose(returns.mean(), final["eval/return_mean"], rtol=1e-5)
    np.testing.assert_allclose(returns.std(), final["eval/return_std"], rtol=1e-4, atol=1e-3)


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algo": "brax-td3"}, "unknown baseline 'brax-td3'"),
        ({"env": "CartpoleBalence"}, "Did you mean 'CartpoleBalance'"),
        ({"env": "PickCube-v1"}, "ManiSkill3 task"),
        ({"preset": "paper"}, "unknown preset 'paper'"),
        ({"total_steps": 0}, "total_steps must be an integer >= 1"),
        ({"total_steps": 1.5e5}, "total_steps must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"eval_episodes": 0}, "eval_episodes must be an integer >= 1"),
        ({"eval_interval_steps": -5}, "eval_interval_steps must be an integer >= 0"),
        ({"hyperparameters": {"num_timesteps": 5}}, "set by the baseline runner"),
        ({"hyperparameters": {"learning_rte": 1e-3}}, "unknown brax-ppo hyperparameter"),
        ({"hyperparameters": {"network_factory": {"width": 3}}}, "network_factory argument"),
        ({"hyperparameters": {"num_envs": 3}}, "multiple of num_envs"),
        ({"preset": "playground", "total_steps": 100_000}, "more than the budget"),
        # Two Playground-sized updates (2 x 983,040 steps) for a budget of 1.2M.
        ({"preset": "playground", "total_steps": 1_200_000}, "would run 1,966,080 env steps"),
        ({"algo": "brax-sac", "total_steps": 8000}, "min_replay_size=8192"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, kwargs, message):
    args = {"algo": "brax-ppo", "env": "CartpoleBalance", "seed": 0, "total_steps": 100_000,
            "run_dir": tmp_path / "run", "preset": "cpu", **kwargs}
    with pytest.raises(UserError, match=message):
        baselines.run_baseline(
            args.pop("algo"), args.pop("env"), args.pop("seed"), args.pop("total_steps"),
            args.pop("run_dir"), echo=None, **args,
        )
    assert not (tmp_path / "run").exists()


def test_an_existing_run_dir_is_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="cannot be resumed"):
        baselines.run_baseline("brax-ppo", "CartpoleBalance", 0, 100_000, run_dir,
                               preset="cpu", echo=None)
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "mine"


def _cli(argv, capsys):
    status = main(["baseline", *argv])
    return status, capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "ppo"], "unknown baseline (--algo) 'ppo'"),
        (["--steps", "abc"], "--steps must be an integer >= 1"),
        (["--steps", "0"], "--steps must be an integer >= 1"),
        (["--steps", "1.5"], "--steps must be an integer >= 1"),
        (["--env", "Nope"], "Unknown environment 'Nope'"),
        (["--preset", "gpu"], "unknown preset (--preset) 'gpu'"),
        (["--eval-episodes", "0"], "--eval-episodes must be an integer >= 1"),
    ],
)
def test_cli_bad_input_is_one_line_with_status_2(tmp_path, capsys, argv, message):
    base = {"--algo": "brax-ppo", "--env": "CartpoleBalance", "--steps": "100k",
            "--run-dir": str(tmp_path / "run"), "--preset": "cpu"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    status, out = _cli([x for kv in base.items() for x in kv], capsys)
    assert status == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reppo: error: ") and message in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_reports_missing_flags(capsys):
    status, out = _cli(["--algo", "brax-sac"], capsys)
    assert status == 2 and "missing --env, --steps, --run-dir" in out.err


def test_cli_passes_parsed_values_to_run_baseline(tmp_path, capsys, monkeypatch):
    calls = []

    def fake(algo, env, seed, steps, run_dir, **kwargs):
        calls.append((algo, env, seed, steps, run_dir, kwargs))
        return {"env_steps": steps, "eval/return_mean": 1.0, "eval/return_std": 0.0}

    monkeypatch.setattr(baseline_command, "run_baseline", fake)
    status, out = _cli(["--algo", "brax-sac", "--env", "PendulumSwingup", "--seed", "3",
                        "--steps", "1.5M", "--run-dir", str(tmp_path / "r"), "--preset", "cpu",
                        "--eval-interval-steps", "100_000", "--eval-episodes", "8"], capsys)
    assert status == 0, out.err
    algo, env, seed, steps, run_dir, kwargs = calls[0]
    assert (algo, env, seed, steps) == ("brax-sac", "PendulumSwingup", 3, 1_500_000)
    assert kwargs["preset"] == "cpu" and kwargs["eval_interval_steps"] == 100_000
    assert kwargs["eval_episodes"] == 8
    assert "final evaluation at 1,500,000 env steps" in out.out


def test_a_signal_stops_a_baseline_at_its_next_evaluation_point(tmp_path):
    # A baseline keeps no checkpoint: the first SIGINT or SIGTERM is a request that the next
    # evaluation point acts on, by raising KeyboardInterrupt from plain Python (where Python's
    # own handler, firing inside JAX, can be swallowed and leave the run training to its end).
    import os
    import signal
    import time

    from reppo.experiments.baselines.evaluation import Recorder
    from reppo.runs.signals import StopSignals

    class NoEvaluator:
        def evaluate(self, *args):
            raise AssertionError("a stopping run is not evaluated")

    recorder = Recorder(evaluator=NoEvaluator(), logger=None, seed=0, total_steps=100,
                        echo=None, start=time.perf_counter())
    recorder.capture(lambda params: None, {})
    announced = []
    with StopSignals(on_first=announced.append):
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            recorder.progress(50, {})
    assert announced == ["SIGTERM"]
