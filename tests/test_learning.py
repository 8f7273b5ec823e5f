"""REPPO learns: a short CPU run on a cheap task beats a return threshold."""

import pytest

from reppo.presets import get_preset
from reppo.training import train


@pytest.mark.slow
def test_reppo_learns_cartpole_balance(tmp_path):
    # Exactly what `reppo train` runs on a CPU machine (the cpu preset on its default task,
    # 1.2M env steps, seed 0), without the intermediate evaluations, which do not change what
    # is learned. A few minutes on 2 cores.
    config = get_preset("cpu").replace(eval_interval_steps=0)
    assert (config.env, config.total_steps, config.seed) == ("CartpoleBalance", 1_200_000, 0)
    result = train(config, tmp_path / "run", echo=print)
    assert result.eval_returns is not None
    # A random policy scores about 200 here; a balancing one close to 1000.
    assert result.eval_return_mean >= 700, result.eval_return_mean


@pytest.mark.slow
def test_reppo_learns_cartpole_balance_with_torch(tmp_path):
    pytest.importorskip("torch")
    # The torch backend on the same task and preset (its own random stream, so its own
    # trajectory): seed 0 evaluates 991 at 1,048,576 env steps (about 4 minutes on 2 cores).
    config = get_preset("cpu", backend="torch").replace(
        backend="torch", env="CartpoleBalance", total_steps=1_048_576, eval_interval_steps=0,
        seed=0,
    )
    result = train(config, tmp_path / "run", echo=print)
    assert result.eval_returns is not None
    assert result.eval_return_mean >= 700, result.eval_return_mean
