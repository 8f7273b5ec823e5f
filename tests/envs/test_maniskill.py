"""The ManiSkill3 adapter (CPU simulator, tiny batches) and the generic torch evaluator.

Skipped as a whole, with the reason, where torch or ManiSkill is missing or SAPIEN finds no
Vulkan device (`scripts/install-system-deps.sh` installs one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch", reason="the ManiSkill adapter needs torch")

from reppo.envs import maniskill as ms  # noqa: E402
from reppo.envs.contract import EnvSpec, TorchStep  # noqa: E402
from reppo.envs.torch_registry import evaluate_torch  # noqa: E402

try:
    ms.check_maniskill()
except ms.ManiSkillError as e:
    if os.environ.get("CI"):
        # CI installs ManiSkill and its Vulkan driver (.ci/run): a skip there would hide it.
        raise
    pytest.skip(str(e), allow_module_level=True)

from mani_skill.utils.structs.pose import Pose  # noqa: E402

# ManiSkill's CPU path calls np.isnan on torch actions (NumPy 2 deprecation noise).
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

TASK = "PushCube-v1"  # the cheapest task on the CPU simulator


def random_actions(n: int, steps: int, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, size, generator=g) * 2 - 1 for _ in range(steps)]


def force_success(env: ms.ManiSkillVecEnv, i: int) -> None:
    """Put env i's cube on its goal (CPU simulator: one inner env per env), so that the next
    step reports success."""
    raw = env.inner_envs[i]
    p = raw.goal_region.pose.p.clone()
    p[:, 2] = raw.cube_half_size
    raw.obj.set_pose(Pose.create_from_pq(p=p))


@pytest.fixture(scope="module")
def env() -> Iterator[ms.ManiSkillVecEnv]:
    """Two PushCube envs in training mode, time limit 3 (tests reset it before use)."""
    e = ms.make_maniskill_env(TASK, 2, device="cpu", episode_length=3)
    yield e
    e.close()


@pytest.mark.e2e
def test_specs() -> None:
    pick = ms.maniskill_spec("PickCube-v1")
    assert pick == EnvSpec("PickCube-v1", 42, 8, 50, (0.0, 1.0), "maniskill")
    push = ms.maniskill_spec("PushCube-v1")
    assert (push.obs_size, push.action_size, push.episode_length) == (35, 8, 50)
    assert push.reward_range == (0.0, 1.0) and push.family == "maniskill"
    assert ms.maniskill_spec("PushCube-v1", episode_length=7).episode_length == 7
    with pytest.raises(ValueError):
        ms.maniskill_spec("PushCube-v1", episode_length=0)
    assert set(ms.ASSET_TASKS) < set(ms.MANISKILL_TASKS)


@pytest.mark.e2e
def test_reset_and_step_shapes(env: ms.ManiSkillVecEnv) -> None:
    assert env.num_envs == 2 and env.device == torch.device("cpu")
    assert env.spec.episode_length == 3 and env.spec.obs_size == 35
    obs = env.reset(0)
    assert obs.shape == (2, 35) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    assert not torch.equal(obs[0], obs[1])  # the two envs start differently
    out = env.step(torch.zeros(2, 8))
    assert isinstance(out, TorchStep)
    for x in (out.obs, out.final_obs):
        assert x.shape == (2, 35) and x.dtype == torch.float32 and x.device.type == "cpu"
    for x in (out.reward, out.terminated, out.truncated):
        assert x.shape == (2,) and x.dtype == torch.float32
    assert out.success is not None
    assert out.success.shape == (2,) and out.success.dtype == torch.bool
    assert ((out.reward >= 0) & (out.reward <= 1)).all()
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(2, 7))


@pytest.mark.e2e
def test_truncation_keeps_final_obs() -> None:
    """At the time limit both envs are reset; `final_obs` is the observation the step really
    reached: the one an env with a longer limit, same seed and same actions reaches."""
    short = ms.make_maniskill_env(TASK, 2, device="cpu", episode_length=3)
    long = ms.make_maniskill_env(TASK, 2, device="cpu", episode_length=10)
    try:
        first = short.reset(5)
        assert torch.equal(first, long.reset(5))
        for t, a in enumerate(random_actions(2, 4), start=1):
            s, lo = short.step(a), long.step(a)
            assert (s.terminated == 0).all() and (lo.truncated == 0).all()
            if t < 3:
                assert (s.truncated == 0).all()
                assert torch.equal(s.obs, s.final_obs) and torch.equal(s.obs, lo.obs)
            elif t == 3:
                assert (s.truncated == 1).all()
                assert torch.equal(s.final_obs, lo.obs)  # the true last observation
                assert not torch.isclose(s.obs, s.final_obs).all(-1).any()  # reset ones
            else:  # a new episode has started
                assert (s.truncated == 0).all() and torch.equal(s.obs, s.final_obs)
    finally:
        short.close()
        long.close()


@pytest.mark.e2e
def test_stagger_spreads_truncations() -> None:
    """After `stagger`, envs truncate at different steps: each at its own counter's end."""
    e = ms.make_maniskill_env(TASK, 4, device="cpu", episode_length=8)
    try:
        e.reset(3)
        e.stagger(11)
        start = e._steps.clone()
        assert int(start.min()) >= 0 and int(start.max()) < 8
        assert len(set(start.tolist())) > 1
        first_end = [None] * 4
        for t, a in enumerate(random_actions(4, 8), start=1):
            out = e.step(a)
            for i in range(4):
                if out.truncated[i] and first_end[i] is None:
                    first_end[i] = t
        assert first_end == [8 - int(s) for s in start]  # only the first episode is shorter
        # The draw is reproducible from the seed.
        e.reset(3)
        e.stagger(11)
        assert torch.equal(e._steps, start)
    finally:
        e.close()
    ev = ms.make_maniskill_env(TASK, 1, device="cpu", evaluation=True, episode_length=4)
    try:
        with pytest.raises(RuntimeError, match="never staggered"):
            ev.stagger(0)
    finally:
        ev.close()


@pytest.mark.e2e
def test_termination_resets_only_that_env(env: ms.ManiSkillVecEnv) -> None:
    env.reset(1)
    zero = torch.zeros(2, 8)
    flags = []

    force_success(env, 0)  # env 0 succeeds at its step 1 and is reset; env 1 goes on
    out = env.step(zero)
    flags.append(out)
    assert out.success.tolist() == [True, False]
    assert out.terminated.tolist() == [1.0, 0.0] and out.truncated.tolist() == [0.0, 0.0]
    assert out.reward[0] == pytest.approx(1.0)  # normalized_dense: success earns the maximum
    assert not torch.isclose(out.obs[0], out.final_obs[0]).all()
    assert torch.equal(out.obs[1], out.final_obs[1])

    flags.append(env.step(zero))  # env 0 at step 1, env 1 at step 2: nothing ends
    assert flags[-1].terminated.sum() == 0 and flags[-1].truncated.sum() == 0

    out = env.step(zero)  # env 1 hits the time limit alone
    flags.append(out)
    assert out.truncated.tolist() == [0.0, 1.0] and out.terminated.tolist() == [0.0, 0.0]
    assert torch.equal(out.obs[0], out.final_obs[0])
    assert not torch.isclose(out.obs[1], out.final_obs[1]).all()

    force_success(env, 0)  # success exactly at env 0's time limit: terminated, not truncated
    out = env.step(zero)
    flags.append(out)
    assert out.terminated.tolist() == [1.0, 0.0] and out.truncated.tolist() == [0.0, 0.0]

    for f in flags:
        assert (f.terminated * f.truncated == 0).all()


@pytest.mark.e2e
def test_evaluation_mode_runs_full_episodes() -> None:
    ev = ms.make_maniskill_env(TASK, 2, device="cpu", evaluation=True, episode_length=4)
    try:
        assert ev.evaluation
        ev.reset(2)
        force_success(ev, 0)
        for t in range(1, 5):
            out = ev.step(torch.zeros(2, 8))
            assert (out.terminated == 0).all()
            if t == 1:
                assert out.success[0]
            if t < 4:
                assert (out.truncated == 0).all() and torch.equal(out.obs, out.final_obs)
            else:
                assert (out.truncated == 1).all()
                assert not torch.isclose(out.obs, out.final_obs).all(-1).any()

        calls = []

        def act(obs: torch.Tensor) -> torch.Tensor:
            assert not torch.is_grad_enabled()
            calls.append(obs)
            if len(calls) == 2:
                force_success(ev, 1)
            return torch.zeros(2, 8)

        res = evaluate_torch(ev, act)
        assert len(calls) == 4
        assert res["lengths"].tolist() == [4, 4]
        assert res["returns"].shape == (2,) and (res["returns"] > 0).all()
        assert res["returns"].max() <= 4.0
        once, end = res["success_once"], res["success_at_end"]
        assert once.dtype == torch.bool and end.dtype == torch.bool
        assert once[1] and (once >= end).all()
        # Reproducible: the same seed gives the same episodes.
        zero = lambda obs: torch.zeros(2, 8)
        first, second = evaluate_torch(ev, zero, seed=3), evaluate_torch(ev, zero, seed=3)
        assert torch.equal(first["returns"], second["returns"])
    finally:
        ev.close()


@pytest.mark.e2e
def test_seeded_resets_are_reproducible(env: ms.ManiSkillVecEnv) -> None:
    """The same seed and actions give the same observations, auto-resets included."""

    def rollout(seed: int) -> torch.Tensor:
        obs = [env.reset(seed)]
        for a in random_actions(2, 5):  # the time limit (3) resets both envs once
            out = env.step(a)
            obs += [out.obs, out.final_obs]
        return torch.stack(obs)

    a, b, c = rollout(11), rollout(11), rollout(12)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0])  # another seed, other initial states
    assert not torch.equal(a[5], a[0])  # the auto-reset state (step 3) is a new one


class _ScriptedEnv:
    """A fake TorchVecEnv: reward 1 per step; env 0 terminates at step 1, env 1 at step 2 (both
    are reset), env 2 runs to the time limit 5; success at the scripted steps below."""

    SUCCESS = torch.tensor(  # [step - 1, env]
        [[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool
    )

    def __init__(self) -> None:
        self.spec = EnvSpec("Fake", 1, 1, 5, (0.0, 1.0), "fake")
        self.num_envs, self.device = 3, torch.device("cpu")

    def reset(self, seed: int) -> torch.Tensor:
        self.k, self.t = 0, torch.zeros(3)
        return self.t[:, None].clone()

    def step(self, action: torch.Tensor) -> TorchStep:
        self.k += 1
        self.t += 1
        term = (self.t == torch.tensor([1.0, 2.0, 9.0])).float()
        trunc = (self.t >= 5).float() * (1 - term)
        final = self.t[:, None].clone()
        self.t = torch.where((term + trunc) > 0, torch.zeros(3), self.t)
        success = self.SUCCESS[self.k - 1].clone()
        return TorchStep(self.t[:, None].clone(), torch.ones(3), term, trunc, final, success)

    def close(self) -> None:
        pass


def test_evaluator_counts_until_first_end() -> None:
    """Rewards and successes after an env's first end belong to another episode."""
    res = evaluate_torch(_ScriptedEnv(), lambda obs: torch.zeros(3, 1))
    assert res["returns"].tolist() == [1.0, 2.0, 5.0]
    assert res["lengths"].tolist() == [1, 2, 5]
    assert res["success_once"].tolist() == [False, True, True]
    assert res["success_at_end"].tolist() == [False, False, True]


@pytest.mark.e2e
def test_errors_are_actionable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ms.ManiSkillError, match="Did you mean 'PushCube-v1'"):
        ms.make_maniskill_env("PushCube-v2", 1)
    with pytest.raises(ms.ManiSkillError, match="Unknown ManiSkill task"):
        ms.maniskill_spec("CheetahRun")

    from mani_skill.utils import assets

    if not assets.is_data_source_downloaded("ycb"):  # offline: fails at once, no prompt
        start = time.monotonic()
        with pytest.raises(ms.ManiSkillError, match="download_asset PickSingleYCB-v1"):
            ms.make_maniskill_env("PickSingleYCB-v1", 1, device="cpu")
        assert time.monotonic() - start < 5

    monkeypatch.setitem(sys.modules, "mani_skill.envs", None)  # as if not installed
    with pytest.raises(ms.ManiSkillError, match=r'pip install -e "\.\[maniskill\]"'):
        ms.make_maniskill_env(TASK, 1, device="cpu")


def test_missing_vulkan_driver_is_explained() -> None:
    """Without a Vulkan driver (hidden through the loader's variables), creating an env says to
    run the system script."""
    code = (
        "from reppo.envs import maniskill as ms\n"
        "try:\n"
        "    ms.make_maniskill_env('PushCube-v1', 1, device='cpu')\n"
        "except ms.ManiSkillError as e:\n"
        "    print('ERROR:', e)\n"
    )
    hidden = {"VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json"}
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env={**os.environ, **hidden},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ERROR:" in run.stdout, run.stdout + run.stderr
    assert "install-system-deps.sh" in run.stdout


@pytest.mark.e2e
def test_a_few_training_iterations_through_the_trainer(tmp_path):
    """PushCube-v1 on the CPU simulator: the torch trainer runs, logs success, checkpoints,
    resumes (restarting the episodes in progress) and evaluates with success metrics."""
    from reppo.loop.runner import train
    from reppo.runs import latest_checkpoint, load_checkpoint, read_metrics
    from tests.conftest import TINY

    config = TINY.replace(
        backend="torch", env="PushCube-v1", num_envs=2, num_steps=8, total_steps=32,
        log_interval_steps=16, checkpoint_interval_steps=16, eval_episodes=2,
    )
    result = train(config.replace(total_steps=16), tmp_path / "run", echo=lambda _: None)
    assert result.env_steps == 16
    result = train(config, tmp_path / "run", resume=True, echo=lambda _: None)
    assert result.env_steps == 32
    records = read_metrics(tmp_path / "run")
    assert [r["env_steps"] for r in records] == [16, 32]
    last = records[-1]
    assert "train/success_rate" in last
    assert 0.0 <= last["eval/success_once"] <= 1.0
    assert last["eval/success_at_end"] <= last["eval/success_once"]
    _, metadata = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert metadata["backend"] == "torch" and metadata["env_steps"] == 32
