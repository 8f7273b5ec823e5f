"""The JAX trainer's evaluation: the deterministic and the sampled episodes as one batched
rollout give the returns of the two separate rollouts, and its program is built once.

One trainer serves every test (two seeds batched with vmap, the default): building it
compiles the training program, the costly part."""

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.e2e

# Float32 returns summed over up to 1,000 steps: programs that differ only in how XLA fuses
# them round differently in the last digits.
CLOSE = {"rtol": 1e-5, "atol": 1e-3}


@pytest.fixture(scope="module")
def trained():
    """A trainer and a state two iterations in, so that the policy is not its init."""
    from reppo.jax.trainer import JaxTrainer
    from tests.conftest import TINY

    trainer = JaxTrainer(TINY.replace(num_seeds=2, eval_episodes=3))
    state, _ = trainer.run_chunk(trainer.init_state(), 2)
    return trainer, state


def test_batched_evaluation_returns_what_the_separate_ones_return(trained):
    trainer, state = trained
    batched = trainer.evaluate(state)
    separate = trainer.evaluate_separately(state)
    assert batched.returns.shape == batched.stochastic_returns.shape == (2, 3)
    # Sampled actions are not the mean action: a sampled return equal to the deterministic
    # one would mean the halves were mixed up.
    assert not np.allclose(batched.returns, batched.stochastic_returns, **CLOSE)
    np.testing.assert_allclose(batched.returns, separate.returns, **CLOSE)
    np.testing.assert_allclose(batched.stochastic_returns, separate.stochastic_returns, **CLOSE)


def test_batched_evaluation_runs_the_eval_seed_episodes(trained):
    """Against `evaluate` and `evaluate_stochastic` themselves, with each seed's key from the
    eval seed scheme (reppo.envs.eval_seed): the episodes every other evaluator runs there."""
    from reppo.envs.evaluation import eval_key, evaluate, evaluate_stochastic

    trainer, state = trained
    config, agent, env = trainer.config, trainer.agent, trainer.eval_env
    report = trainer.evaluate(state)
    env_steps = trainer.iteration_of(state) * config.steps_per_iteration

    @jax.jit
    def both(actor, stats, key):
        det = evaluate(env, lambda obs: agent.act_deterministic(actor, stats, obs), key)
        sto = evaluate_stochastic(
            env, lambda obs, k: agent.act_stochastic(actor, stats, obs, k), key
        )
        return det.returns, sto.returns

    env.seed_axis = None  # one seed at a time here, outside the seeds' vmap
    for i in range(config.num_seeds):
        actor, stats = jax.tree_util.tree_map(lambda x, i=i: x[i], (state.actor, state.obs_stats))
        det, sto = both(actor, stats, eval_key(config.seed + i, env_steps))
        np.testing.assert_allclose(report.returns[i], det, **CLOSE)
        np.testing.assert_allclose(report.stochastic_returns[i], sto, **CLOSE)


def test_evaluation_is_built_once_for_every_evaluation(trained):
    from reppo.envs.autoreset import SEED_AXIS

    trainer, state = trained
    trainer.eval_env.seed_axis = SEED_AXIS
    trainer.prepare(state, 2)  # what the loop does before training: compiles the evaluation
    assert trainer.eval_traces == 1
    compiled = trainer.compile_seconds
    seen = []
    for _ in range(3):
        state, _ = trainer.run_chunk(state, 1)
        seen.append(trainer.evaluate(state).returns)
    assert trainer.eval_traces == 1
    assert trainer.compile_seconds == compiled
    # Each evaluation point runs its own episodes (a fresh eval seed), through the same program.
    assert not np.array_equal(seen[0], seen[1])
