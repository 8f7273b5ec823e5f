"""REPPO learns: a short CPU run on a cheap task beats a return threshold."""

import pytest

from reppo.presets import get_preset
from reppo.training import train


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


@pytest.mark.learning
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
