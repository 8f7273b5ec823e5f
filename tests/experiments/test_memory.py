"""`reppo memory`: byte counts against hand computation, the printed table and the JSON file.

The tiny config on CartpoleBalance (obs 5, action 1) gives 16 steps x 8 envs = 128 transitions
per iteration, with a critic width (and so a self-prediction latent) of 16.
"""

from __future__ import annotations

import json

import pytest

from reppo.cli import main
from reppo.experiments.memory.storage import replay_buffer_bytes, rollout_storage
from tests.conftest import TINY

T, N = TINY.num_steps, TINY.num_envs  # 16 x 8
OBS, ACT, LATENT = 5, 1, TINY.critic_hidden_dim  # CartpoleBalance; the critic is 16 wide
F32 = 4

TINY_SET = [
    "--set", f"num_envs={N}", "--set", f"num_steps={T}", "--set", "num_minibatches=2",
    "--set", "actor_hidden_dim=16", "--set", f"critic_hidden_dim={LATENT}",
    "--set", "num_bins=21", "--set", "eval_episodes=2",
]


def test_replay_buffer_bytes_by_hand():
    # obs + next obs + action + reward + done + truncation, float32.
    assert replay_buffer_bytes(17, 6, 10_485_760) == 10_485_760 * 4 * (17 + 17 + 6 + 3)
    assert replay_buffer_bytes(17, 6, 10_485_760) == 1_803_550_720  # CheetahRun
    assert replay_buffer_bytes(5, 1, 32_768) == 32_768 * 56 == 1_835_008


@pytest.mark.e2e
def test_rollout_storage_matches_the_hand_count():
    storage = rollout_storage(TINY)
    assert (storage.obs_size, storage.action_size) == (OBS, ACT)
    by_name = {a.name: (a.shape, a.dtype, a.nbytes) for a in storage.rollout}
    per_step = {
        "rollout.obs": (OBS,), "rollout.action": (ACT,), "rollout.reward": (),
        "rollout.soft_reward": (), "rollout.next_value": (), "rollout.next_latent": (LATENT,),
        "rollout.terminated": (), "rollout.truncated": (), "raw_obs": (OBS,),
        "td_lambda_target": (),
    }
    assert by_name == {
        name: ((T, N, *tail), "float32", T * N * F32 * (tail[0] if tail else 1))
        for name, tail in per_step.items()
    }
    # 5 + 1 + 1 + 1 + 1 + 16 + 1 + 1 + 5 + 1 = 33 floats per transition.
    assert storage.rollout_bytes == 128 * 33 * 4 == 16_896
    # The per-epoch shuffled copy gathers every transition field and the target (not raw obs).
    assert storage.shuffled_bytes == 128 * 28 * 4 == 14_336


@pytest.mark.e2e
def test_command_prints_the_table_and_writes_json_once(tmp_path, capsys):
    path = tmp_path / "memory.json"
    argv = ["memory", "--env", "CartpoleBalance", "--preset", "cpu", *TINY_SET,
            "--measure-steps", "0", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "8 envs x 16 steps = 128 transitions per iteration" in out
    assert "REPPO rollout storage (per iteration)" in out and "16,896" in out
    assert "replay buffer, 10,485,760 transitions" in out
    assert f"{10_485_760 * 56:,}" in out and f"{32_768 * 56:,}" in out
    assert "rollout.next_latent  16x8x16" in out
    assert "measured" not in out  # --measure-steps 0
    rep = json.loads(path.read_text())
    assert rep["rollout_bytes"] == 16_896 and rep["transitions_per_iteration"] == 128
    assert [b["bytes"] for b in rep["replay_buffers"]] == [10_485_760 * 56, 32_768 * 56]
    assert rep["measured"] is None
    # FastTD3's buffers as its code allocates them (Cartpole: obs 5, action 1): per slot obs,
    # action, reward, terminated, truncated, next obs = 5 + 1 + 1 + 1 + 1 + 5 = 14 floats.
    fasttd3 = {e["buffer"]["algo"]: e["buffer"] for e in rep["fasttd3"]}
    assert fasttd3["fasttd3"]["transitions"] == 10_485_760
    assert fasttd3["fasttd3"]["bytes"] == 10_485_760 * 14 * 4 + 8
    assert fasttd3["fasttd3-small"]["transitions"] == 32_768
    assert fasttd3["fasttd3-small"]["bytes"] == 32_768 * 14 * 4 + 8
    assert "fasttd3-small        32,768 transitions (32 per env)" in out
    assert all("measured" not in e for e in rep["fasttd3"])

    before = path.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reppo: error: ") and "already exists" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--env", "PickCube-v1"], "ManiSkill3 task"),
        (["--env", "Cheetah"], "Unknown environment"),
        (["--preset", "huge"], "unknown preset"),
        (["--set", "env=WalkerRun"], "--env"),
        (["--set", "num_minibatches=7"], "not divisible"),
        (["--measure-steps", "-1"], "--measure-steps must be >= 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, argv, needle):
    measure = [] if "--measure-steps" in argv else ["--measure-steps", "0"]
    assert main(["memory", *argv, *measure]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reppo: error: ") and err.count("\n") == 1 and needle in err, err


@pytest.mark.e2e
def test_measured_peak_of_a_short_run(tmp_path, capsys):
    # The child uses the tests' compilation cache (REPPO_JAX_CACHE, set by conftest) when warm.
    path = tmp_path / "memory.json"
    assert main(["memory", "--env", "CartpoleBalance", "--preset", "cpu", *TINY_SET,
                 "--measure-steps", "1", "--fasttd3-preset", "none", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "measuring 1 iteration(s)" in out
    result = json.loads(path.read_text())["measured"]
    assert result["iterations"] == 1 and result["env_steps"] == 128
    assert "1 iteration(s) = 128 env steps:" in out
    if result["platform"] != "cpu":
        assert result["kind"] == "device peak_bytes_in_use" and result["peak_bytes"] > 0
        return
    assert result["kind"] in ("process RSS", "process peak RSS")
    peak, before, whole = (result[k] for k in ("peak_bytes", "before_bytes",
                                               "process_peak_bytes"))
    # JAX, XLA and MuJoCo alone take far more than 100 MiB. The peak while training starts
    # from the RSS before it, and the whole process's peak bounds both (the two kernel
    # counters are read differently, hence the 1% slack).
    assert before > 100 * 2**20
    assert peak >= 0.99 * before and whole >= 0.99 * peak
    assert f"{peak / 2**20:,.1f} MiB" in out


# The same child process as REPPO's measured run above, with FastTD3's trainer.
@pytest.mark.e2e
@pytest.mark.extended
def test_measured_fasttd3_run_in_a_fresh_process():
    """A small FastTD3 run in its own process: its buffer's bytes, and a peak that includes
    them (the buffer is allocated before the iterations and kept)."""
    from reppo.experiments.memory import fasttd3 as fasttd3_memory

    small = {"num_envs": 8, "batch_size": 64, "critic_hidden_dim": 16, "actor_hidden_dim": 8,
             "buffer_transitions": 80_000}
    result = fasttd3_memory.measure("fasttd3", "CartpoleBalance", "cpu", 1_000_000, small)
    buffer = fasttd3_memory.buffer_arrays("fasttd3", "CartpoleBalance", "cpu", 1_000_000, small)
    assert result["buffer_bytes"] == buffer["bytes"] == 80_000 * 14 * 4 + 8
    assert result["iterations"] == 12 and result["updates"] == 4  # 10 collecting, 2 updating
    if result["platform"] != "cpu":
        assert result["peak_bytes"] >= result["buffer_bytes"]
        return
    assert result["before_bytes"] > result["buffer_bytes"] + 100 * 2**20
    assert result["process_peak_bytes"] >= 0.99 * result["peak_bytes"]
    lines = fasttd3_memory.format_section([{"buffer": buffer, "measured": result}])
    assert any("measured, fasttd3: 12 iterations (4 updates)" in line for line in lines)
