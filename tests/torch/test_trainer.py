"""The torch backend end to end: update parity with JAX, resume, determinism, faults.

The math of each loss is compared in test_parity.py; here whole updates and runs are.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from reppo import pytrees  # noqa: E402
from reppo.envs import make_env  # noqa: E402
from reppo.jax import losses as JL  # noqa: E402
from reppo.jax.agent import Agent  # noqa: E402
from reppo.loop.runner import NonFiniteError, train  # noqa: E402
from reppo.runs import latest_checkpoint, load_checkpoint, read_metrics  # noqa: E402
from reppo.torch import losses as TL  # noqa: E402
from reppo.torch.agent import TorchAgent, UpdatePlan  # noqa: E402
from reppo.torch.networks import load_flat, to_flat  # noqa: E402


def _jax_plan(config, key, action_size):
    """The permutations and noise that `reppo.jax.agent.Agent.update` draws from `key`."""
    perms, action_noise, kl_noise = [], [], []
    size = config.steps_per_iteration
    for epoch_key in jax.random.split(key, config.num_epochs):
        k_perm, k_mb = jax.random.split(epoch_key)
        perms.append(jax.random.permutation(k_perm, size).reshape(config.num_minibatches, -1))
        a_e, k_e = [], []
        for mb_key in jax.random.split(k_mb, config.num_minibatches):
            k_action, k_kl = jax.random.split(mb_key)
            a_e.append(jax.random.normal(k_action, (config.minibatch_size, action_size)))
            k_e.append(jax.random.normal(
                k_kl, (config.kl_num_samples, config.minibatch_size, action_size)))
        action_noise.append(jnp.stack(a_e))
        kl_noise.append(jnp.stack(k_e))

    def t(x):
        return torch.from_numpy(np.asarray(x))

    kl = t(jnp.stack(kl_noise)) if config.kl_estimator == "sample" else None
    return UpdatePlan(t(jnp.stack(perms)).long(), t(jnp.stack(action_noise)), kl)


_UPDATE_CASES = {
    "default": {},
    "full-analytic-layer": {"actor_objective": "full", "kl_estimator": "analytic", "norm": "layer"},
    "mse-nonorm": {"use_hl_gauss": False, "norm": "none", "reward_prediction": False},
    "linear-lr": {"lr_schedule": "linear"},
}


# Every variant of the math in eager mode, and the compiled step on the default; the compiled
# step of the other variants (the same math, one more compile each) in the extended tier.
@pytest.mark.parametrize(
    ("torch_mode", "changes"),
    [
        pytest.param(mode, changes, id=f"{mode}-{name}", marks=(
            pytest.mark.extended if mode == "compile" and name != "default" else ()))
        for mode in ("eager", "compile") for name, changes in _UPDATE_CASES.items()
    ],
)
@pytest.mark.e2e
def test_one_update_matches_jax(tiny_config, changes, torch_mode):
    """Same initial weights and the same rollout data: both backends' parameters agree after
    a whole update (TD(lambda) targets, 2 epochs x 2 minibatches of critic, actor and
    temperature steps with Adam and gradient clipping), in every mode of the torch backend
    (eager, and the minibatch step compiled as one program)."""
    if torch_mode == "compile":
        import shutil

        if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
            pytest.skip("torch.compile on CPU needs a C++ compiler")
        torch._dynamo.reset()  # a fresh compile for this config, within the recompile limit
    config = tiny_config.replace(**changes)
    env = make_env(config.env, config.num_envs)
    agent = Agent.create(config, env)
    # The run's second iteration: under the linear schedule its learning rates are scaled.
    iteration = 1
    state = agent.init(jax.random.PRNGKey(3))._replace(iteration=jnp.asarray(iteration))
    # Large learning rates make any disagreement in a step visible in the parameters.
    _, _, data, _, _ = jax.jit(agent.rollout)(state, jax.random.PRNGKey(4))
    targets = JL.soft_td_lambda(
        data.soft_reward, data.next_value, data.terminated, data.truncated, agent.gamma,
        config.lam,
    )
    flat = {
        n: x.reshape(-1, *x.shape[2:]) for n, x in {**data._asdict(), "target": targets}.items()
    }
    update_key = jax.random.PRNGKey(5)
    (actor, critic, temps, *_), jax_metrics = jax.jit(agent.update)(state, flat, update_key)

    t_agent = TorchAgent(
        config.replace(torch_compile=torch_mode == "compile"), env.spec, torch.device("cpu"),
        seed=0,
    )
    for module, params in ((t_agent.actor, state.actor), (t_agent.behaviour, state.behaviour),
                           (t_agent.critic, state.critic)):
        load_flat(module, pytrees.flatten(params))
    with torch.no_grad():
        t_agent.log_alpha.copy_(torch.tensor(float(state.temps.log_alpha)))
        t_agent.log_beta.copy_(torch.tensor(float(state.temps.log_beta)))
    t_data = {n: torch.from_numpy(np.asarray(x)) for n, x in data._asdict().items()}
    t_targets = TL.soft_td_lambda(
        t_data["soft_reward"], t_data["next_value"], t_data["terminated"],
        t_data["truncated"], t_agent.gamma, config.lam,
    )
    np.testing.assert_allclose(t_targets.numpy(), np.asarray(targets), rtol=1e-5, atol=1e-5)
    t_flat = {n: x.reshape(-1, *x.shape[2:]) for n, x in {**t_data, "target": t_targets}.items()}
    t_agent.set_lr_scale(iteration)
    t_metrics = t_agent.update(t_flat, _jax_plan(config, update_key, env.spec.action_size))
    assert (t_agent._compiled_step is not None) == (torch_mode == "compile")

    # float32 sums in different orders drift by ~1e-6 per step; 4 Adam steps stay well inside.
    for name, value in pytrees.flatten(actor).items():
        np.testing.assert_allclose(to_flat(t_agent.actor)[name], value, atol=2e-5, err_msg=name)
    for name, value in pytrees.flatten(critic).items():
        np.testing.assert_allclose(to_flat(t_agent.critic)[name], value, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(float(t_agent.log_alpha), float(temps.log_alpha), atol=1e-6)
    np.testing.assert_allclose(float(t_agent.log_beta), float(temps.log_beta), atol=1e-6)
    for name, value in t_metrics.items():
        np.testing.assert_allclose(float(value), float(jax_metrics[name]), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


# ---- whole runs --------------------------------------------------------------------------------
def _torch_config(tiny_config, **changes):
    return tiny_config.replace(backend="torch", **changes)


def _params(run_dir):
    arrays, _ = load_checkpoint(latest_checkpoint(run_dir))
    return {k: v for k, v in arrays.items() if k.split("/")[0] in ("actor", "critic", "temps")}


@pytest.mark.e2e
def test_torch_run_is_deterministic_and_resumes_exactly(tiny_config, tmp_path):
    config = _torch_config(tiny_config)
    train(config, tmp_path / "a", echo=lambda _: None)
    train(config, tmp_path / "b", echo=lambda _: None)
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    metrics_a = [{k: v for k, v in r.items() if k not in ("wall_time", "sps")}
                 for r in read_metrics(tmp_path / "a")]
    metrics_b = [{k: v for k, v in r.items() if k not in ("wall_time", "sps")}
                 for r in read_metrics(tmp_path / "b")]
    assert metrics_a == metrics_b

    # Half the steps, then a resume to the full budget: identical parameters.
    half = config.replace(total_steps=config.total_steps // 2)
    train(half, tmp_path / "c", echo=lambda _: None)
    train(config, tmp_path / "c", resume=True, echo=lambda _: None)
    c = _params(tmp_path / "c")
    assert all(np.array_equal(a[k], c[k]) for k in a)

    other = _params_of_seed(config.replace(seed=1), tmp_path / "d")
    assert not all(np.array_equal(a[k], other[k]) for k in a)


def _params_of_seed(config, run_dir):
    train(config, run_dir, echo=lambda _: None)
    return _params(run_dir)


@pytest.mark.e2e
def test_torch_checkpoint_names_match_jax(tiny_config, tmp_path):
    """What both backends share is stored under the same names, shapes and dtypes (on the
    still env: names and shapes do not depend on the physics)."""
    from tests.fakes import still_env

    with still_env(episode_length=50) as name:
        still = tiny_config.replace(env=name)
        train(_torch_config(still), tmp_path / "t", echo=lambda _: None)
        train(still, tmp_path / "j", echo=lambda _: None)
    t, _ = load_checkpoint(latest_checkpoint(tmp_path / "t"))
    j, _ = load_checkpoint(latest_checkpoint(tmp_path / "j"))
    shared = ("actor/", "behaviour/", "critic/", "obs_stats/", "temps/")
    t_names = {k for k in t if k.startswith(shared)}
    j_names = {k for k in j if k.startswith(shared)}
    assert t_names == j_names
    for name in t_names:
        assert t[name].shape == j[name].shape and t[name].dtype == j[name].dtype, name


@pytest.mark.e2e
def test_torch_non_finite_stops_with_the_iteration(tiny_config, tmp_path):
    from tests.fakes import still_env

    with still_env(episode_length=50) as name:
        config = _torch_config(tiny_config, env=name, actor_lr=1e30, critic_lr=1e30,
                               max_grad_norm=1e30)
        with pytest.raises(NonFiniteError, match=r"non-finite .* at iteration \d+"):
            train(config, tmp_path / "nan", echo=lambda _: None)


# ---- the stochastic evaluation ---------------------------------------------------------------
@pytest.mark.e2e
def test_torch_every_evaluation_logs_the_stochastic_return(tiny_config, tmp_path):
    config = _torch_config(
        tiny_config, total_steps=256, log_interval_steps=128, eval_interval_steps=128
    )
    train(config, tmp_path / "run", echo=lambda _: None)
    evals = [r for r in read_metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert [r["env_steps"] for r in evals] == [128, 256]
    for record in evals:
        for key in ("eval/return_mean", "eval/return_std", "eval/stochastic_return_mean",
                    "eval/stochastic_return_std"):
            assert np.isfinite(record[key]), key
        # The sampled actions are not the mean actions.
        assert record["eval/stochastic_return_mean"] != record["eval/return_mean"]


@pytest.mark.e2e
def test_torch_stochastic_evaluation_runs_the_deterministic_episodes(tiny_config, monkeypatch):
    """With the sampled action replaced by the mean action, the stochastic evaluation equals
    the deterministic one exactly: both reset with the same seed, to the same initial states."""
    from reppo.torch.trainer import TorchTrainer

    monkeypatch.setattr(TorchAgent, "act_stochastic",
                        lambda self, obs, generator: self.act_deterministic(obs))
    config = _torch_config(tiny_config)
    trainer = TorchTrainer(config)
    report = trainer.evaluate(trainer.init_state())
    assert report.stochastic_returns.shape == report.returns.shape == (1, config.eval_episodes)
    np.testing.assert_array_equal(report.stochastic_returns, report.returns)


def test_torch_stochastic_evaluation_resets_with_the_same_seed():
    """`evaluate_torch_stochastic` resets the env with the seed `evaluate_torch` uses and
    draws the policy's noise from a generator seeded from it (repeatable)."""
    from reppo.envs.contract import EnvSpec, TorchStep
    from reppo.envs.torch_registry import evaluate_torch, evaluate_torch_stochastic

    class Recorder:  # two envs, three steps, reward = action
        spec = EnvSpec("fake", 1, 1, 3, (0.0, 1.0), "test")
        num_envs, device = 2, torch.device("cpu")

        def __init__(self):
            self.seeds = []

        def reset(self, seed):
            self.seeds.append(seed)
            return torch.zeros(2, 1)

        def step(self, action):
            zero = torch.zeros(2)
            return TorchStep(torch.zeros(2, 1), action[:, 0], zero, zero, torch.zeros(2, 1))

    def noisy(obs, generator):
        assert isinstance(generator, torch.Generator)
        return torch.rand(obs.shape[0], 1, generator=generator)

    env = Recorder()
    first = evaluate_torch_stochastic(env, noisy, seed=7)
    again = evaluate_torch_stochastic(env, noisy, seed=7)
    other = evaluate_torch_stochastic(env, noisy, seed=8)
    evaluate_torch(env, lambda obs: torch.zeros(2, 1), seed=7)
    assert env.seeds == [7, 7, 8, 7]
    torch.testing.assert_close(first["returns"], again["returns"])
    assert not torch.equal(first["returns"], other["returns"])
    assert torch.all((first["returns"] > 0) & (first["returns"] < 3))


# ---- correlated exploration noise ----------------------------------------------------------------
class _StillEnv:
    """Envs whose observation never changes: every action is drawn at the same state, so the
    actions' correlation is the noise's."""

    def __init__(self, num_envs, spec):
        from reppo.envs.bridge import TorchStep

        self.num_envs, self.spec, self._step = num_envs, spec, TorchStep
        self.obs = torch.zeros(num_envs, spec.obs_size)

    def step(self, action):
        zeros = torch.zeros(self.num_envs)
        return self._step(self.obs, zeros, zeros, zeros, self.obs)


def _torch_rollout_pre_tanh(tiny_config, rho):
    from reppo.envs.contract import EnvSpec

    spec = EnvSpec("Still", 3, 2, 1000, (0.0, 1.0), "dm_control")
    config = tiny_config.replace(backend="torch", num_envs=64, num_steps=64,
                                 stagger_episodes=False, action_noise_correlation=rho)
    agent = TorchAgent(config, spec, torch.device("cpu"), seed=0)
    env = _StillEnv(config.num_envs, spec)
    data = agent.rollout(env, env.obs, torch.zeros(config.num_envs))[0]
    return np.arctanh(np.clip(data.action.double().numpy(), -0.999999, 0.999999))


@pytest.mark.e2e
def test_torch_correlated_noise_links_consecutive_actions_and_keeps_their_spread(tiny_config):
    def lag_one(u):
        u = u - u.mean(axis=0, keepdims=True)
        return float(np.mean((u[1:] * u[:-1]).mean(0) / np.sqrt(u[1:].var(0) * u[:-1].var(0))))

    independent = _torch_rollout_pre_tanh(tiny_config, 0.0)
    correlated = _torch_rollout_pre_tanh(tiny_config, 0.9)
    assert abs(lag_one(independent)) < 0.1
    assert lag_one(correlated) == pytest.approx(0.9, abs=0.1)
    spread = independent.std()
    assert correlated.std() == pytest.approx(spread, rel=0.1)
    assert correlated[0].std() == pytest.approx(spread, rel=0.25)
    assert correlated[-1].std() == pytest.approx(spread, rel=0.25)


# ---- envs whose state moves ----------------------------------------------------------------------
class _CartEnv:
    """Frictionless carts on a line, pushed by the action (v += 0.1 a, x += 0.1 v; observation
    (x, v), reward exp(-x^2)): the state carries the past actions, unlike `_StillEnv`."""

    def __init__(self, num_envs, spec):
        from reppo.envs.bridge import TorchStep

        self.num_envs, self.spec, self._step = num_envs, spec, TorchStep
        self.obs = torch.zeros(num_envs, 2)

    def step(self, action):
        x, v = self.obs[:, 0], self.obs[:, 1]
        v = v + 0.1 * action[:, 0]
        x = x + 0.1 * v
        self.obs = torch.stack([x, v], dim=1)
        zeros = torch.zeros(self.num_envs)
        return self._step(self.obs, torch.exp(-x * x), zeros, zeros, self.obs)


def _cart_agent(tiny_config, **changes):
    from reppo.envs.contract import EnvSpec

    spec = EnvSpec("Cart", 2, 1, 1000, (0.0, 1.0), "dm_control")
    config = tiny_config.replace(backend="torch", stagger_episodes=False, **changes)
    return TorchAgent(config, spec, torch.device("cpu"), seed=0), _CartEnv(config.num_envs, spec)


def test_torch_several_bootstrap_actions_average_the_value_of_the_same_draws(tiny_config):
    """As the JAX test: with K = 3 bootstrap actions V(x') is the mean of Q(x', a'_k) over the
    K actions the rollout drew, the bonus the mean of their log pi; recomputed by hand from the
    rollout's recorded draws of its generator."""
    from reppo.torch import distributions as TD

    k = 3
    agent, env = _cart_agent(tiny_config, num_envs=8, num_steps=6, num_bootstrap_samples=k)
    with torch.no_grad():  # a fresh critic's values are its prior's: make the actions matter
        for p in agent.critic.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    draws = []
    draw = agent.randn

    def recording_randn(*shape):
        draws.append(draw(*shape))
        return draws[-1]

    agent.randn = recording_randn
    data, raw_obs, *_ = agent.rollout(env, env.obs, torch.zeros(8))
    assert [tuple(d.shape) for d in draws[:2]] == [(8, 1), (k, 8, 1)]  # per step: a, then a'
    alpha = float(torch.exp(agent.log_alpha.detach()))
    single_sample_gap = 0.0
    with torch.no_grad():
        for t in range(6):
            next_obs = agent.normalize(raw_obs[t])
            noise = draws[2 * t + 1]  # step t's draws: its actions', then its a' (K of them)
            actions, _, log_probs = TD.sample_from_noise(agent.behaviour(next_obs), noise)
            latents = agent.critic.encode(next_obs.expand(k, *next_obs.shape), actions)
            values = TL.hl_gauss_value(agent.critic.value_head(latents), agent.support)
            torch.testing.assert_close(data.next_value[t], values.mean(0), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                data.soft_reward[t], data.reward[t] - agent.gamma * alpha * log_probs.mean(0),
                rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(data.next_latent[t], latents[0])
            single_sample_gap = max(single_sample_gap,
                                    float((values[0] - values.mean(0)).abs().max()))
    assert single_sample_gap > 1e-4


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_torch_correlated_noise_leans_the_way_the_state_moves(tiny_config, rho):
    """As the JAX test: with rho > 0 the noise given the state leans in the direction of
    motion; with rho = 0 it is independent of the state."""
    agent, env = _cart_agent(tiny_config, num_envs=64, num_steps=64,
                             action_noise_correlation=rho)
    data = agent.rollout(env, env.obs, torch.zeros(64))[0]
    with torch.no_grad():
        dist = agent.behaviour(data.obs)
    u = np.arctanh(np.clip(data.action.double().numpy(), -0.999999, 0.999999))
    eps = ((u - dist.mean.double().numpy()) / dist.std.double().numpy())[1:, :, 0].ravel()
    velocity = data.obs[1:, :, 1].double().numpy().ravel()
    assert eps.std() == pytest.approx(1.0, abs=0.1)
    slow, fast = np.quantile(velocity, [0.1, 0.9])
    lean = eps[velocity >= fast].mean() - eps[velocity <= slow].mean()
    correlation = np.corrcoef(eps, velocity)[0, 1]
    if rho == 0.0:
        assert abs(correlation) < 0.06 and abs(lean) < 0.25
    else:
        assert correlation > 0.08 and lean > 0.5


# ---- CPU threads ---------------------------------------------------------------------------------
@pytest.fixture
def torch_threads(monkeypatch):
    """torch's intra-op thread count restored after the test, with no thread variables set and
    `count` posing as the count torch starts with on this machine."""
    from reppo.torch import trainer as torch_train

    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch_train, "_start_counts", lambda: {6})
    monkeypatch.setattr(torch_train, "_chosen", None)
    yield torch_train
    torch.set_num_threads(before)


def test_torch_uses_one_cpu_thread_by_default(torch_threads):
    torch.set_num_threads(6)  # what torch starts with
    line = torch_threads.choose_cpu_threads()
    assert torch.get_num_threads() == 1
    assert line == "1 CPU thread (OMP_NUM_THREADS=N for more)"
    # A second run in the same process keeps reppo's own choice.
    assert torch_threads.choose_cpu_threads() == line and torch.get_num_threads() == 1


def test_torch_keeps_the_users_thread_count(torch_threads, monkeypatch):
    torch.set_num_threads(3)  # a program's own torch.set_num_threads
    assert torch_threads.choose_cpu_threads() == "3 CPU threads (torch.set_num_threads)"
    assert torch.get_num_threads() == 3
    torch.set_num_threads(6)
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert torch_threads.choose_cpu_threads() == "6 CPU threads (OMP_NUM_THREADS=6)"
    assert torch.get_num_threads() == 6


@pytest.mark.e2e
def test_torch_the_eval_envs_first_steps_are_compile_time(tiny_config):
    # The eval env builds its programs at its first reset and step: counted as compile time
    # once, so that the time of the first evaluation (the one before training, which the
    # first ETA uses) predicts the next ones'; the warm-up changes no return.
    from reppo.torch.trainer import TorchTrainer
    from tests.fakes import still_env

    with still_env(episode_length=50) as name:
        trainer = TorchTrainer(_torch_config(tiny_config).replace(env=name))
        state = trainer.init_state()
        first = trainer.evaluate(state)
        compiled = trainer.compile_seconds
        assert compiled > 0
        second = trainer.evaluate(state)
        assert trainer.compile_seconds == compiled
        np.testing.assert_array_equal(first.returns, second.returns)
