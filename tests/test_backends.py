"""What both backends emit alike, checked on real runs of each (on the still env of
tests/fakes.py, so that the runs cost their compilation and little else)."""

import pytest

from reppo.loop.runner import train
from reppo.runs import read_metrics
from tests.fakes import still_env


@pytest.mark.e2e
def test_both_backends_log_the_same_metrics_at_every_iteration(tmp_path, tiny_config):
    pytest.importorskip("torch")
    keys = {}
    with still_env(episode_length=40) as name:
        # One record per iteration (128 env steps); episodes of 40 steps end in iterations 3
        # and 4 (with episode staggering, earlier), and the last record holds the final
        # evaluation.
        config = tiny_config.replace(env=name, total_steps=512, log_interval_steps=128,
                                     eval_interval_steps=256)
        for backend in ("jax", "torch"):
            run = tmp_path / backend
            train(config.replace(backend=backend), run, echo=lambda line: None)
            keys[backend] = [sorted(record) for record in read_metrics(run)]
    assert len(keys["jax"]) == 4
    assert any("eval/return_mean" in record for record in keys["jax"][:-1])
    assert keys["jax"] == keys["torch"]
