"""The user's own environments: `register_env`, module-qualified names, the checks of a JAX
functional env and of a Gymnasium env, the Gymnasium adapter's contract, and runs of both that
train, evaluate, export and report (docs/envs.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import reppo
from reppo.envs import WrongBackendError, env_spec, make_env
from reppo.envs.torch_registry import make_torch_env, torch_env_spec
from reppo.envs.user import EnvRegistrationError, lookup, register_env, unregister_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CPU = torch.device("cpu")


@pytest.fixture
def registered():
    """Register names for one test and forget them afterwards."""
    names = []

    def register(name, factory, **kw):
        names.append(name)
        kw.setdefault("episode_length", 10)
        kw.setdefault("reward_range", (0.0, 1.0))
        return register_env(name, factory, **kw)

    yield register
    for name in names:
        unregister_env(name)


# ---- a minimal functional env --------------------------------------------------------------------
class _State(NamedTuple):
    x: jax.Array
    obs: jax.Array
    reward: jax.Array
    done: jax.Array


class Line:
    """x moves by the action; obs (x, 1); reward -|x|; done when |x| > 3."""

    action_size = 1
    obs_fn = staticmethod(lambda x: jnp.stack([x, jnp.ones(())]))

    def reset(self, rng):
        x = jax.random.uniform(rng, (), minval=-1.0, maxval=1.0)
        return _State(x, self.obs_fn(x), jnp.zeros(()), jnp.zeros(()))

    def step(self, s, a):
        x = s.x + a[0]
        return _State(x, self.obs_fn(x), -jnp.abs(x), (jnp.abs(x) > 3.0).astype(jnp.float32))


# ---- register_env --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw, message", [
    ("CartpoleBalance", {}, "built-in"),
    ("pkg:Env", {}, "may not contain ':'"),
    ("", {}, "non-empty"),
    ("Ok", {"episode_length": 0}, "episode_length must be an integer >= 1"),
    ("Ok", {"episode_length": 2.5}, "episode_length must be an integer >= 1"),
    ("Ok", {"reward_range": (1.0, 0.0)}, "low < high"),
    ("Ok", {"reward_range": "wide"}, "pair"),
    ("Ok", {"backend": "tf"}, "backend must be one of"),
])
def test_register_env_refuses_bad_arguments(name, kw, message):
    args = {"episode_length": 10, "reward_range": (0.0, 1.0), **kw}
    with pytest.raises(EnvRegistrationError, match=message):
        register_env(name, Line, **args)
    assert lookup("Ok") is None


def test_register_env_refuses_a_factory_that_is_not_callable():
    with pytest.raises(EnvRegistrationError, match="factory must be callable"):
        register_env("Ok", Line(), episode_length=10, reward_range=(0, 1))


def test_register_env_is_public_and_replaces_an_entry(registered):
    assert reppo.register_env is register_env and "register_env" in reppo.__all__
    first = registered("LineEnv", Line)
    second = registered("LineEnv", Line, episode_length=20)
    assert lookup("LineEnv") is second and first is not second


def test_module_qualified_name_imports_the_module_that_registers(tmp_path, monkeypatch):
    (tmp_path / "my_envs_mod.py").write_text(textwrap.dedent("""
        from typing import NamedTuple

        import jax
        import jax.numpy as jnp

        import reppo


        class S(NamedTuple):
            obs: jax.Array
            reward: jax.Array
            done: jax.Array


        class Drift:
            action_size = 1

            def reset(self, rng):
                return S(jnp.zeros(2), jnp.zeros(()), jnp.zeros(()))

            def step(self, s, a):
                return S(s.obs + a[0], -jnp.abs(a[0]), jnp.zeros(()))


        reppo.register_env("ModLine", Drift, episode_length=7, reward_range=(-5, 0))
    """))
    monkeypatch.chdir(tmp_path)  # the current directory is searched, as `reppo` does
    try:
        entry = lookup("my_envs_mod:ModLine")
        assert entry is not None and entry.episode_length == 7
        spec = env_spec("my_envs_mod:ModLine")
        assert (spec.obs_size, spec.action_size, spec.family) == (2, 1, "custom")
        with pytest.raises(EnvRegistrationError, match="did not register 'Other'"):
            lookup("my_envs_mod:Other")
    finally:
        unregister_env("ModLine")
        sys.modules.pop("my_envs_mod", None)
    with pytest.raises(EnvRegistrationError, match="no module named 'nowhere_mod'"):
        lookup("nowhere_mod:Env")


def test_an_unknown_name_says_how_to_register_it():
    with pytest.raises(ValueError, match="register it with reppo.register_env"):
        env_spec("NoSuchEnvAnywhere")


# ---- the JAX functional env ---------------------------------------------------------------------
def test_a_registered_jax_env_batches_like_a_builtin(registered):
    registered("LineEnv", Line, episode_length=5, reward_range=(-4.0, 0.0))
    spec = env_spec("LineEnv")
    assert (spec.obs_size, spec.action_size, spec.episode_length) == (2, 1, 5)
    assert spec.reward_range == (-4.0, 0.0)
    env = make_env("LineEnv", 3)
    state = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    dones = []
    for _ in range(5):
        state, out = step(state, jnp.full((3, 1), 0.1))
        dones.append(np.asarray(out.truncated))
    np.testing.assert_array_equal(dones[-1], 1.0)  # the registered time limit
    # Terminations come from the env's done flag: pushing past |x| > 3 ends the episode.
    state = env.reset(jax.random.key(1))
    state, out = step(state, jnp.full((3, 1), 5.0))
    np.testing.assert_array_equal(np.asarray(out.terminated), 1.0)
    np.testing.assert_array_equal(np.asarray(out.truncated), 0.0)
    assert np.all(np.abs(np.asarray(out.final_obs)[:, 0]) > 3.0)  # the true last observation
    assert np.all(np.abs(np.asarray(state.obs)[:, 0]) <= 1.0)  # the next episode's first


def test_the_torch_backend_runs_a_registered_jax_env_through_the_bridge(registered):
    registered("LineEnv", Line, episode_length=5)
    assert torch_env_spec("LineEnv").obs_size == 2
    env = make_torch_env("LineEnv", 4, device=CPU)
    obs = env.reset(0)
    out = env.step(torch.zeros(4, 1))
    assert obs.shape == (4, 2) and out.reward.shape == (4,)


@pytest.mark.e2e
def test_a_playground_env_registered_under_its_own_name(registered):
    from mujoco_playground import registry

    registered("MyCartpole", lambda: registry.load("CartpoleBalance"), episode_length=1000)
    mine, builtin = env_spec("MyCartpole"), env_spec("CartpoleBalance")
    assert (mine.obs_size, mine.action_size) == (builtin.obs_size, builtin.action_size)
    assert mine.family == "custom"


@pytest.mark.e2e
def test_a_brax_env_registers_and_steps(registered):
    import brax.envs

    registered(
        "BraxPendulum", lambda: brax.envs.get_environment("inverted_pendulum", backend="mjx"),
        episode_length=100,
    )
    spec = env_spec("BraxPendulum")
    assert (spec.obs_size, spec.action_size) == (4, 1)


class _Bad(Line):
    def __init__(self, **kw):
        self.kw = kw

    def reset(self, rng):
        s = super().reset(rng)
        if self.kw.get("obs_2d"):
            return s._replace(obs=jnp.zeros((2, 2)))
        if self.kw.get("nan"):
            return s._replace(obs=jnp.full(2, jnp.nan))
        if self.kw.get("vector_reward"):
            return s._replace(reward=jnp.zeros(3))
        if self.kw.get("dict_obs"):
            return s._replace(obs={"pixels": jnp.zeros(2)})
        return s

    def step(self, s, a):
        out = super().step(s, a)
        if self.kw.get("grows"):
            return out._replace(obs=jnp.zeros(3))
        if self.kw.get("raises"):
            raise TypeError("bad step")
        return out


@pytest.mark.parametrize("kw, message", [
    ({"obs_2d": True}, r"observation of shape \(2, 2\).*flat vector"),
    ({"nan": True}, "non-finite observation"),
    ({"vector_reward": True}, r"state.reward of shape \(3,\).*scalar"),
    ({"dict_obs": True}, "without a 'state' entry"),
    ({"grows": True}, "same structure, shapes"),
    ({"raises": True}, "step.*failed: TypeError: bad step"),
])
def test_a_broken_jax_env_gets_a_clear_error(registered, kw, message):
    registered("BadEnv", lambda: _Bad(**kw))
    with pytest.raises(EnvRegistrationError, match=message) as info:
        make_env("BadEnv", 2)
    assert "'BadEnv'" in str(info.value) and "docs/envs.md" in str(info.value)


def test_a_jax_env_without_action_size_or_with_the_wrong_backend(registered):
    class NoSize(Line):
        action_size = None

    registered("NoSize", NoSize)
    with pytest.raises(EnvRegistrationError, match="action_size must be an integer"):
        env_spec("NoSize")
    registered("GymOnly", lambda: gym.make("Pendulum-v1"), backend="torch")
    with pytest.raises(WrongBackendError, match="--backend torch"):
        env_spec("GymOnly")
    with pytest.raises(WrongBackendError, match="Gymnasium env.*--backend torch"):
        env_spec("Pendulum-v1")


# ---- Gymnasium envs (torch backend) --------------------------------------------------------------
class Corridor(gym.Env):
    """obs (position,); actions in [-4, 4] move it; terminated past 10, else truncated by its
    own TimeLimit at 50 steps; info['success'] when terminated."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def __init__(self, action_space=None, bad_obs=False):
        self.action_space = action_space or gym.spaces.Box(-4.0, 4.0, (1,), np.float32)
        self.bad_obs = bad_obs
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return self._obs(), {}

    def _obs(self):
        return np.zeros(2, np.float32) if self.bad_obs else np.array([self.x], np.float32)

    def step(self, action):
        self.received.append(float(action[0]))
        self.x += float(action[0])
        done = self.x > 10.0
        return self._obs(), 1.0, done, False, {"success": done}


def _corridor(**kw):
    return lambda: gym.wrappers.TimeLimit(Corridor(**kw), max_episode_steps=50)


def test_gymnasium_adapter_rescales_actions_and_keeps_the_contract(registered):
    registered("Corridor", _corridor(), backend="torch", episode_length=3)
    spec = torch_env_spec("Corridor")
    assert (spec.obs_size, spec.action_size, spec.family) == (1, 1, "custom")
    env = make_torch_env("Corridor", 2, device=CPU)
    env.reset(0)
    out = env.step(torch.tensor([[1.0], [-1.0]]))  # the bounds: +4 and -4
    np.testing.assert_allclose(out.obs.numpy()[:, 0], [4.0, -4.0])
    assert out.success is not None and not out.success.any()
    out = env.step(torch.tensor([[1.0], [0.5]]))  # 8 and -2
    out = env.step(torch.tensor([[1.0], [0.0]]))  # 12 (terminated) and -2 (time limit, 3)
    np.testing.assert_array_equal(out.terminated.numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(out.truncated.numpy(), [0.0, 1.0])
    np.testing.assert_allclose(out.final_obs.numpy()[:, 0], [12.0, -2.0])  # true last obs
    np.testing.assert_allclose(out.obs.numpy()[:, 0], [0.0, 0.0])  # the new episodes
    np.testing.assert_array_equal(out.success.numpy(), [True, False])
    env.close()


def test_gymnasium_stagger_spreads_the_time_limit(registered):
    registered("Corridor", _corridor(), backend="torch", episode_length=40)
    env = make_torch_env("Corridor", 16, device=CPU)
    env.reset(0)
    env.stagger(0)
    first_end = np.full(16, -1)
    for t in range(40):
        out = env.step(torch.zeros(16, 1))
        ended = out.truncated.numpy() > 0
        first_end[(first_end < 0) & ended] = t
    assert np.all(first_end >= 0) and len(set(first_end.tolist())) > 4


@pytest.mark.parametrize("kw, message", [
    ({"action_space": gym.spaces.Discrete(3)}, "action space is Discrete.*Box"),
    ({"action_space": gym.spaces.Box(-np.inf, np.inf, (1,))}, "finite bounds"),
    ({"bad_obs": True}, r"observation of shape \(2,\).*has shape \(1,\)"),
])
def test_a_broken_gymnasium_env_gets_a_clear_error(registered, kw, message):
    registered("BadGym", _corridor(**kw), backend="torch")
    with pytest.raises(EnvRegistrationError, match=message):
        torch_env_spec("BadGym")


def test_a_factory_that_returns_no_gymnasium_env(registered):
    registered("NotGym", Line, backend="torch")
    with pytest.raises(EnvRegistrationError, match="not a gymnasium.Env"):
        torch_env_spec("NotGym")


def _pendulum_vector(num_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED):
    return gym.make_vec("Pendulum-v1", num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": autoreset_mode})


def test_a_vector_env_factory_gives_the_whole_batch(registered):
    registered("VecPendulum", _pendulum_vector, backend="torch", episode_length=5,
               reward_range=(-16.3, 0.0))
    spec = torch_env_spec("VecPendulum")
    assert (spec.obs_size, spec.action_size) == (3, 1)
    env = make_torch_env("VecPendulum", 4, device=CPU)
    env.reset(0)
    for _ in range(5):
        out = env.step(torch.ones(4, 1))
    np.testing.assert_array_equal(out.truncated.numpy(), 1.0)  # reppo's time limit
    assert not np.allclose(out.final_obs.numpy(), out.obs.numpy())  # reset in place
    env.close()


def test_a_vector_env_that_auto_resets_is_refused(registered):
    registered(
        "AutoVec", lambda num_envs: _pendulum_vector(num_envs, gym.vector.AutoresetMode.NEXT_STEP),
        backend="torch",
    )
    with pytest.raises(EnvRegistrationError, match="AutoresetMode.DISABLED"):
        torch_env_spec("AutoVec")


def test_gymnasium_ids_need_no_registration():
    spec = torch_env_spec("Pendulum-v1")
    assert (spec.obs_size, spec.action_size, spec.episode_length) == (3, 1, 200)
    assert spec.family == "gymnasium"
    # Gymnasium's MuJoCo tasks work out of the box (CPU MuJoCo, no registration).
    cheetah = torch_env_spec("HalfCheetah-v5")
    assert (cheetah.obs_size, cheetah.action_size, cheetah.episode_length) == (17, 6, 1000)


# ---- sweeps ----------------------------------------------------------------------------------
def _sweep(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "reppo.cli", "sweep", *args], capture_output=True, text=True,
        cwd=cwd, timeout=300,
    )


def test_custom_suites_sweep_module_qualified_envs_and_gymnasium_ids(tmp_path):
    out = _sweep("--suite", "custom", "--tasks", "point_mass_env:PointMass2D", "--seeds", "2",
                 "--steps", "20000", "--out", str(tmp_path / "a"), "--dry-run", cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr
    assert "--env point_mass_env:PointMass2D --seed 0 --num-seeds 2" in out.stdout
    assert str(tmp_path / "a" / "reppo" / "point_mass_env__PointMass2D") in out.stdout
    out = _sweep("--suite", "custom-torch", "--tasks", "Pendulum-v1,point_mass_env:PointMass2D",
                 "--seeds", "2", "--out", str(tmp_path / "b"), "--dry-run", cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr
    assert "--backend torch --env Pendulum-v1 --seed 1" in out.stdout


@pytest.mark.parametrize("tasks, message", [
    (None, "add --tasks my_envs:Maze"),
    ("PointMass2D", "module-qualified name 'module:PointMass2D'"),
    ("point_mass_env:Nope", "did not register 'Nope'"),
    ("no_such_module_x:Env", "no module named 'no_such_module_x'"),
])
def test_custom_suites_refuse_names_a_child_process_cannot_find(tmp_path, tasks, message):
    args = ["--suite", "custom", "--seeds", "1", "--out", str(tmp_path / "s"), "--dry-run"]
    out = _sweep(*args, *(["--tasks", tasks] if tasks else []), cwd=EXAMPLES)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "s").exists()


# ---- whole runs --------------------------------------------------------------------------------
def _reppo(*args, cwd, timeout=900):
    out = subprocess.run(
        [sys.executable, "-m", "reppo.cli", *args], capture_output=True, text=True, cwd=cwd,
        timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.learning
def test_a_custom_jax_env_learns(tmp_path):
    """examples/custom_jax_env.py: the point mass from about 26 (a still policy) to >= 80."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_jax_env.py")], capture_output=True, text=True,
        cwd=EXAMPLES, timeout=900, env={**os.environ, "REPPO_EXAMPLE_STEPS": "100000"},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("PointMass2D: evaluation"))
    value = float(line.split("return ")[1].split()[0])
    assert value >= 80.0, out.stdout[-2000:]


@pytest.mark.learning
def test_a_gymnasium_env_learns():
    """examples/gymnasium_torch.py: Pendulum-v1 from about -1300 (untrained) to >= -400
    (-140 at 65,536 steps when measured)."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "gymnasium_torch.py")], capture_output=True, text=True,
        cwd=EXAMPLES, timeout=1200,
        # One torch thread: its OpenMP pool slows down many times on a busy core.
        env={**os.environ, "REPPO_EXAMPLE_STEPS": "65536", "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MyPendulum: evaluation"))
    value = float(line.split("return ")[1].split()[0])
    assert value >= -400.0, out.stdout[-2000:]


@pytest.mark.e2e
def test_command_line_trains_evaluates_exports_and_reports_a_custom_env(tmp_path):
    """A module-qualified env name works in every command, in fresh processes."""
    run = tmp_path / "run"
    _reppo("train", "--env", "point_mass_env:PointMass2D", "--total-steps", "16384",
           "--eval-episodes", "8", "--run-dir", str(run), cwd=EXAMPLES)
    assert json.loads((run / "config.json").read_text())["env"] == "point_mass_env:PointMass2D"
    out = _reppo("eval", str(run), "--episodes", "4", cwd=EXAMPLES)
    assert "PointMass2D" in out
    onnx = tmp_path / "policy.onnx"
    _reppo("export", str(run), "--onnx", str(onnx), cwd=tmp_path)  # needs no env at all
    assert onnx.stat().st_size > 0
    report = tmp_path / "report"
    _reppo("report", str(run), "--out", str(report), cwd=tmp_path)
    summary = (report / "summary.md").read_text()
    assert "point_mass_env:PointMass2D (raw return: no normalization is known)" in summary
    # In a directory where the module cannot be imported, eval names the problem and the fix.
    bad = subprocess.run(
        [sys.executable, "-m", "reppo.cli", "eval", str(run)], capture_output=True, text=True,
        cwd=tmp_path, timeout=300,
    )
    assert bad.returncode != 0 and "no module named 'point_mass_env'" in bad.stderr
    assert "PYTHONPATH" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.e2e
def test_command_line_trains_evaluates_exports_and_resumes_a_gymnasium_id(tmp_path):
    run = tmp_path / "run"
    _reppo("train", "--backend", "torch", "--env", "Pendulum-v1", "--total-steps", "8192",
           "--eval-episodes", "4", "--run-dir", str(run), cwd=tmp_path)
    out = _reppo("eval", str(run), "--episodes", "4", cwd=tmp_path)
    assert "Pendulum-v1" in out
    _reppo("export", str(run), "--onnx", str(tmp_path / "pendulum.onnx"), cwd=tmp_path)
    assert (tmp_path / "pendulum.onnx").stat().st_size > 0
    # Resuming continues the learner; the Gymnasium episodes start afresh.
    _reppo("train", "--resume", str(run), "--total-steps", "16384", cwd=tmp_path)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["env_steps"] for r in records) == 16384
