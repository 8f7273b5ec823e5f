"""The JAX backend under the loop, end to end on the tiny config: checkpoints, exact resume,
determinism, seeds, non-finite training, the stochastic evaluation. (The loop's own
bookkeeping is tested with the scripted trainer in tests/loop/test_faults.py.)"""

import math

import numpy as np
import pytest

from reppo.loop.runner import NonFiniteError, make_trainer, train
from reppo.runs import latest_checkpoint, list_checkpoints, load_checkpoint, read_metrics
from tests.fakes import still_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def still(tiny_config):
    """The tiny config on the still env: the trainer's bookkeeping (seeds, determinism,
    non-finite stops) without the cost of compiling a simulator."""
    with still_env(episode_length=50) as name:
        yield tiny_config.replace(env=name)


def _final_arrays(run_dir):
    arrays, metadata = load_checkpoint(latest_checkpoint(run_dir))
    return arrays, metadata


def _quiet(_line):
    pass


_STOCHASTIC_KEYS = ("eval/stochastic_return_mean", "eval/stochastic_return_std")


def test_checkpoint_holds_the_full_training_state(tmp_path, tiny_config):
    result = train(tiny_config.replace(eval_interval_steps=256), tmp_path / "run", echo=_quiet)
    assert result.env_steps == 512 and not result.interrupted
    arrays, metadata = _final_arrays(tmp_path / "run")
    prefixes = {name.split("/")[0] for name in arrays}
    assert {
        "actor", "behaviour", "critic", "temps", "actor_opt", "critic_opt", "temp_opt",
        "obs_stats", "env_state", "episode_return", "key", "iteration",
    } <= prefixes
    assert metadata["env_steps"] == 512 and metadata["backend"] == "jax"
    assert int(arrays["iteration"][0]) == 4
    # The behaviour policy equals the actor at iteration boundaries (theta' <- theta).
    for name in (n for n in arrays if n.startswith("actor/")):
        np.testing.assert_array_equal(arrays[name], arrays["behaviour/" + name[6:]])
    for name in ("config.json", "versions.json", "metrics.jsonl", "learning_curve.png"):
        assert (tmp_path / "run" / name).is_file()
    records = read_metrics(tmp_path / "run")
    assert [r["env_steps"] for r in records] == [256, 512]
    for key in ("env_steps", "wall_time", "sps", "temp/alpha", "temp/beta", "kl", "entropy",
                "loss/critic", "loss/actor", "loss/aux", "critic/value_error"):
        assert key in records[-1]
    # Every evaluation (here at each record, the last the final one) logs the deterministic
    # and the stochastic return.
    for record in records:
        for key in ("eval/return_mean", "eval/return_std", *_STOCHASTIC_KEYS):
            assert math.isfinite(record[key]), key
        assert record["eval/stochastic_return_std"] >= 0.0
        # The sampled actions are not the mean actions.
        assert record["eval/stochastic_return_mean"] != record["eval/return_mean"]


def test_resume_continues_exactly(tmp_path, tiny_config):
    # With correlated exploration noise (the cpu preset's): its chain restarts at every
    # rollout from the state's own key, so a checkpoint between iterations holds all it needs.
    # Without it the rollout is the same code less one key split.
    tiny_config = tiny_config.replace(action_noise_correlation=0.9)
    straight = train(tiny_config, tmp_path / "straight", echo=_quiet)
    half = tiny_config.replace(total_steps=256)
    train(half, tmp_path / "split", echo=_quiet)
    resumed = train(tiny_config, tmp_path / "split", resume=True, echo=_quiet)
    assert straight.env_steps == resumed.env_steps == 512
    a, _ = _final_arrays(tmp_path / "straight")
    b, _ = _final_arrays(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The resumed run's metrics continue where the checkpoint was, without duplicates.
    steps = [r["env_steps"] for r in read_metrics(tmp_path / "split")]
    assert steps == [256, 512]


def test_same_seed_same_metrics_different_seed_differs(tmp_path, still):
    volatile = {"wall_time", "sps"}

    def metrics(seed, name):
        result = train(still.replace(seed=seed), tmp_path / name, echo=_quiet)
        return [{k: v for k, v in r.items() if k not in volatile} for r in result.history]

    first, again, other = metrics(0, "a"), metrics(0, "b"), metrics(1, "c")
    assert first == again
    assert first != other


@pytest.mark.parametrize("batching", ["map", "vmap"])
def test_num_seeds_trains_independent_seeds(tmp_path, still, batching):
    config = still.replace(num_seeds=2, total_steps=256, seed=3, seed_batching=batching)
    result = train(config, tmp_path / "two", echo=_quiet)
    assert result.eval_returns.shape == (2, still.eval_episodes)
    assert all(math.isfinite(result.history[-1][k]) for k in _STOCHASTIC_KEYS)
    pair, _ = _final_arrays(tmp_path / "two")
    single = train(still.replace(total_steps=256, seed=4), tmp_path / "one", echo=_quiet)
    assert single.env_steps == 256
    one, _ = _final_arrays(tmp_path / "one")
    kernel = "actor/hidden_0/linear/kernel"
    assert pair[kernel].shape[0] == 2
    # Seed 4 is the second member of the pair (seeds 3, 4), and differs from seed 3.
    np.testing.assert_allclose(pair[kernel][1], one[kernel][0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(pair[kernel][0], pair[kernel][1])


def test_non_finite_training_stops_and_keeps_the_last_checkpoint(tmp_path, still):
    run = tmp_path / "run"
    train(still.replace(total_steps=256), run, echo=_quiet)
    before = {p.name: p.read_bytes() for p in list_checkpoints(run)}
    # A resumed run keeps its config (the loop refuses another learning rate), so the
    # explosion comes from a trainer built with one, restored from the run's checkpoint.
    exploding = make_trainer(still.replace(critic_lr=1e30, actor_lr=1e30))
    with pytest.raises(NonFiniteError, match=r"non-finite .* at iteration 3"):
        train(still, run, resume=True, echo=_quiet, trainer=exploding)
    after = {p.name: p.read_bytes() for p in list_checkpoints(run)}
    assert after == before


# ---- the stochastic evaluation ---------------------------------------------------------------


def test_stochastic_evaluation_runs_the_deterministic_episodes(tiny_config, monkeypatch):
    """The sampling policy's episodes start from the deterministic evaluation's states: with
    its sampled action replaced by the mean action both evaluations agree exactly, for every
    seed (the env reset keys are the same)."""
    from reppo.jax.agent import Agent
    from reppo.jax.trainer import JaxTrainer

    def mean_action(self, actor, stats, obs, key):
        del key
        return self.act_deterministic(actor, stats, obs)

    monkeypatch.setattr(Agent, "act_stochastic", mean_action)
    config = tiny_config.replace(num_seeds=2)
    trainer = JaxTrainer(config)
    report = trainer.evaluate(trainer.init_state())
    assert report.stochastic_returns.shape == report.returns.shape == (2, config.eval_episodes)
    assert not np.array_equal(report.returns[0], report.returns[1])
    np.testing.assert_array_equal(report.stochastic_returns, report.returns)


@pytest.mark.timeout(300, method="thread")
def test_batched_seeds_initialise_like_single_seeds():
    """Under vmap the orthogonal initialisations of actor and critic at the cpu preset's widths
    deadlocked in jaxlib 0.10 (batched QR on the CPU); seeds are initialised one by one, and
    each equals its own single-seed initialisation."""
    import jax

    from reppo import preset
    from reppo.jax.trainer import JaxTrainer

    config = preset("cpu", env="CartpoleBalance", num_envs=8, num_seeds=2, seed=5)
    assert config.seed_batching == "vmap"
    pair = JaxTrainer(config).init_state()
    jax.block_until_ready(pair)
    single = JaxTrainer(config.replace(num_seeds=1, seed=6)).init_state()
    for name in ("actor", "critic"):
        a, b = getattr(pair, name), getattr(single, name)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x)[1], np.asarray(y)[0])
