"""REPPO learns: a short CPU run on a cheap task beats a return threshold."""

import os

import pytest

from reppo.loop.runner import train
from reppo.presets import get_preset

# The ManiSkill3 learning test's budget and threshold (measured: docs/experiments.md).
PUSH_CUBE_STEPS = 51_200
PUSH_CUBE_SUCCESS = 0.8


@pytest.mark.learning
def test_reppo_learns_cartpole_balance(tmp_path):
    # Exactly what `reppo train` runs on a CPU machine (the cpu preset on its default task,
    # 507,904 env steps, seed 0), without the intermediate evaluations, which do not change
    # what is learned. About two and a half minutes on one core.
    config = get_preset("cpu").replace(eval_interval_steps=0)
    assert (config.env, config.total_steps, config.seed) == ("CartpoleBalance", 507_904, 0)
    result = train(config, tmp_path / "run", echo=print)
    assert result.eval_returns is not None
    # A random policy scores about 200 here; a balancing one close to 1000 (seed 0: 1000).
    assert result.eval_return_mean >= 900, result.eval_return_mean


# The torch backend's learning in CI: PushCube below and the gymnasium Pendulum example
# (tests/envs/test_user_envs.py), with each update checked against JAX's
# (tests/torch/test_trainer.py).
@pytest.mark.learning
@pytest.mark.extended
def test_reppo_learns_cartpole_balance_with_torch(tmp_path):
    pytest.importorskip("torch")
    # Exactly what `reppo train --backend torch` runs on a CPU machine, without the
    # intermediate evaluations: the same task, preset and budget as the JAX test, with the
    # torch backend's own random stream (so its own trajectory).
    config = get_preset("cpu", backend="torch").replace(backend="torch", eval_interval_steps=0)
    assert (config.env, config.total_steps, config.seed) == ("CartpoleBalance", 507_904, 0)
    result = train(config, tmp_path / "run", echo=print)
    assert result.eval_returns is not None
    assert result.eval_return_mean >= 900, result.eval_return_mean


@pytest.mark.learning
def test_reppo_learns_push_cube_on_maniskills_cpu_simulator(tmp_path):
    torch = pytest.importorskip("torch")
    from reppo.envs import maniskill

    try:
        maniskill.check_maniskill()
    except maniskill.ManiSkillError as e:
        if os.environ.get("CI"):  # CI installs ManiSkill and its Vulkan driver (.ci/run)
            raise
        pytest.skip(str(e))
    torch.set_num_threads(1)
    # What `reppo train --env PushCube-v1` runs on a machine without CUDA (the maniskill-cpu
    # preset, seed 0), stopped after its first PUSH_CUBE_STEPS steps, with one evaluation of
    # 32 deterministic episodes at the end (evaluations do not change what is learned).
    config = get_preset("auto", backend="torch", env="PushCube-v1").replace(
        total_steps=PUSH_CUBE_STEPS, eval_interval_steps=0, device="cpu",
    )
    assert (config.backend, config.seed, config.eval_episodes) == ("torch", 0, 32)
    result = train(config, tmp_path / "run", echo=print)
    final = [row for row in result.history if "eval/success_once" in row][-1]
    # Neither zero nor uniformly random actions push the cube onto the goal in any of 32
    # episodes; seed 0 of the preset does in most by now (docs/experiments.md, "ManiSkill3 on
    # a CPU").
    assert final["eval/success_once"] >= PUSH_CUBE_SUCCESS, final
