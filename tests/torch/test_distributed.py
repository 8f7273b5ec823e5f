"""Several processes training one torch run (`reppo.torch.distributed`), on the CPU with Gloo.

The helpers against hand-computed values, one update of two ranks against one process on the
union of their data, and whole two-process runs started by torchrun (this file is also the
workers' script: see `_worker` at the end).
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from reppo.config import Config, ConfigError  # noqa: E402
from reppo.envs.contract import EnvSpec  # noqa: E402
from reppo.torch import losses as L  # noqa: E402
from reppo.torch import normalizer as N  # noqa: E402
from reppo.torch.distributed import (  # noqa: E402
    Launch,
    TorchProcesses,
    check_divisible,
    combine_moments,
    processes_from_env,
    rank_seed,
)

SPEC = EnvSpec("fake", 5, 2, 100, (0.0, 1.0), "test")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


# ---- launches, config checks and seeds (no process group) -----------------------------------
def test_a_plain_start_is_one_process():
    assert Launch.from_env({}) == Launch(0, 0, 1)
    assert Launch.from_env({"WORLD_SIZE": "1"}) == Launch(0, 0, 1)
    full = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
            "MASTER_PORT": "1"}
    assert Launch.from_env(full) == Launch(3, 1, 4)


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2"}, r"RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set.*torchrun"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "h"},
     r"MASTER_PORT is not set.*torchrun"),
    ({"WORLD_SIZE": "two"}, r"WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
      "MASTER_PORT": "1"}, r"RANK=2 is outside \[0, WORLD_SIZE=2\)"),
])
def test_a_broken_launch_names_the_fix(environ, message):
    with pytest.raises(ConfigError, match=message):
        Launch.from_env(environ)


def test_the_config_must_split_over_the_processes(tmp_path):
    config = Config(backend="torch", num_envs=6, num_steps=4, num_minibatches=4)
    check_divisible(config, 2)  # 3 envs x 4 steps = 12 transitions per rank, 4 minibatches
    with pytest.raises(ConfigError, match=r"num_envs \(6, the total .*not divisible by the 4"):
        check_divisible(config, 4)
    with pytest.raises(ConfigError, match=r"= 12 transitions .* num_minibatches = 8"):
        check_divisible(config.replace(num_minibatches=8), 2)
    with pytest.raises(ConfigError, match=r"--backend torch only"):
        check_divisible(config.replace(backend="jax"), 2)
    # Checked before any process group is started (and so before anything is written).
    environ = {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": "1"}
    with pytest.raises(ConfigError, match="num_envs"):
        processes_from_env(config, environ)
    assert not dist.is_initialized() and not any(tmp_path.iterdir())


def test_the_jax_backend_refuses_a_torchrun_launch(monkeypatch):
    from reppo.loop.processes import launched_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="JAX_COORDINATOR_ADDRESS"):
        launched_processes(Config(backend="jax"))


def test_rank_seeds_are_distinct_and_rank_0_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, r) for r in range(64)} | {rank_seed(8, r) for r in range(1, 64)}
    assert len(seeds) == 127 and all(0 <= s < 2**31 for s in seeds)
    assert rank_seed(7, 1) == rank_seed(7, 1) and rank_seed(7, 1) not in range(7, 71)


def test_combined_moments_are_those_of_the_union():
    counts = torch.tensor([2.0, 3.0])
    # Hand values: {1, 3} has mean 2, variance 1; {2, 2, 8} has mean 4, variance 8. The union
    # {1, 3, 2, 2, 8} has mean 16/5 and variance (1 + 9 + 4 + 4 + 64)/5 - (16/5)^2 = 6.16.
    count, mean, var = combine_moments(
        counts, torch.tensor([[2.0], [4.0]]), torch.tensor([[1.0], [8.0]])
    )
    assert float(count) == 5.0
    assert math.isclose(float(mean[0]), 3.2, rel_tol=1e-6)
    assert math.isclose(float(var[0]), 6.16, rel_tol=1e-6)
    # Merged into running statistics: as if both batches were one.
    rng = np.random.default_rng(0)
    old, a, b = (torch.tensor(rng.normal(size=(n, 3)) * 3 + 1, dtype=torch.float32)
                 for n in (7, 10, 30))
    stats = N.update_stats(N.init_stats(3), old)
    parts = [N.update_stats(N.init_stats(3), part) for part in (a, b)]
    merged = N.merge_moments(stats, *combine_moments(
        torch.stack([p.count for p in parts]), torch.stack([p.mean for p in parts]),
        torch.stack([p.var for p in parts]),
    ))
    whole = N.update_stats(stats, torch.cat([a, b]))
    for got, want in zip(merged, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    everything = torch.cat([old, a, b]).double()
    torch.testing.assert_close(merged.var.double(), everything.var(0, correction=0),
                               rtol=1e-5, atol=1e-6)


def test_a_checkpoint_says_how_many_processes_wrote_it():
    from reppo.torch.trainer import checkpoint_ranks

    assert checkpoint_ranks({"actor/x": 0, "env_obs": 0}) == 1
    assert checkpoint_ranks({"actor/x": 0, "rank1/env_obs": 0, "rank3/rng/torch": 0}) == 4


def test_half_batch_gradients_average_to_the_full_batch_gradient():
    """The REPPO losses are means over the minibatch: the mean of the two halves' gradients
    is the gradient of the whole (the aux loss divides by the alive transitions, so this
    holds where both halves have as many; here nothing terminates)."""
    from reppo.torch.agent import TorchAgent

    agent = TorchAgent(_agent_config(16), SPEC, torch.device("cpu"), seed=0)
    batch = _data(agent, 32, seed=1)
    noise = torch.randn(32, SPEC.action_size, generator=torch.Generator().manual_seed(2))

    def grads(rows: slice) -> list[torch.Tensor]:
        part = {k: v[rows] for k, v in batch.items()}
        critic_batch = L.CriticBatch(part["obs"], part["action"], part["reward"],
                                     part["target"], part["next_latent"], part["terminated"])
        loss, _ = L.critic_loss(agent.critic, critic_batch, agent.support, 1.0, True)
        with torch.no_grad():
            old = agent.behaviour(part["obs"])
        actor_loss, metrics = L.actor_loss(
            agent.actor, agent.critic, old, part["obs"], agent.log_alpha, agent.log_beta,
            noise[rows], None, agent.support, "clipped", 0.1,
        )
        temp_loss = L.temperature_loss(agent.log_alpha, agent.log_beta, metrics["entropy"],
                                       metrics["kl"], -1.0, 0.1)
        params = [*agent.critic.parameters(), *agent.actor.parameters(), agent.log_alpha,
                  agent.log_beta]
        return torch.autograd.grad(loss + actor_loss + temp_loss, params, allow_unused=True)

    whole = grads(slice(0, 32))
    halves = zip(grads(slice(0, 16)), grads(slice(16, 32)), strict=True)
    for full, (first, second) in zip(whole, halves, strict=True):
        if full is None:
            assert first is None and second is None
            continue
        torch.testing.assert_close((first + second) / 2, full, rtol=1e-4, atol=1e-6)


# ---- two processes (Gloo) --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_two_processes(fn, *args) -> None:
    mp.spawn(_rank_main, args=(fn, _free_port(), args), nprocs=2, join=True)


def _rank_main(rank: int, fn, port: int, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        fn(rank, TorchProcesses(Launch(rank, rank, 2), torch.device("cpu")), *args)
    finally:
        dist.destroy_process_group()


def _collectives(rank: int, processes: TorchProcesses) -> None:
    # Gradients: rank 0 holds [1, 2] and [[10]], rank 1 [3, 4] and [[30]]: means [2, 3], [[20]];
    # a parameter without a gradient keeps none.
    a, b, unused = (torch.zeros(2, requires_grad=True), torch.zeros(1, 1, requires_grad=True),
                    torch.zeros(3, requires_grad=True))
    a.grad = torch.tensor([1.0, 2.0]) + 2 * rank
    b.grad = torch.tensor([[10.0]]) * (1 + 2 * rank)
    processes.average_gradients([a, unused, b])
    assert a.grad.tolist() == [2.0, 3.0] and b.grad.tolist() == [[20.0]] and unused.grad is None

    # Observation statistics: rank 0 saw {1, 3}, rank 1 saw {2, 2, 8} (see above).
    batch = torch.tensor([[1.0], [3.0]]) if rank == 0 else torch.tensor([[2.0], [2.0], [8.0]])
    stats = processes.update_stats(N.init_stats(1), batch)
    assert float(stats.count) == 5.0
    assert math.isclose(float(stats.mean[0]), 3.2, rel_tol=1e-6)
    assert math.isclose(float(stats.var[0]), 6.16, rel_tol=1e-6)

    # Metrics: means; episodes summed; the episode return weighted by episodes (rank 1
    # finished none); a finite flag false on any rank is false.
    metrics = processes.reduce_metrics({
        "loss/critic": 1.0 + 2 * rank,
        "train/episodes": 2.0 if rank == 0 else 0.0,
        "train/episode_return": 10.0 if rank == 0 else math.nan,
        "finite/actor": True,
        "finite/observations": rank == 0,
    })
    assert metrics == {"loss/critic": 2.0, "train/episodes": 2.0,
                       "train/episode_return": 10.0, "finite/actor": True,
                       "finite/observations": False}
    nobody = processes.reduce_metrics({"train/episodes": 0.0, "train/episode_return": math.nan})
    assert math.isnan(nobody["train/episode_return"])

    # Rank 0's values everywhere; a flag of any rank; every rank's value on rank 0.
    weights = [torch.full((2,), float(rank)), torch.full((1,), 5.0 + rank)]
    processes.broadcast_tensors(weights)
    assert weights[0].tolist() == [0.0, 0.0] and weights[1].tolist() == [5.0]
    assert processes.share({"rank": rank}) == {"rank": 0}
    assert processes.any_of(rank == 1) and not processes.any_of(False)
    gathered = processes.gather_to_leader(f"from {rank}")
    assert gathered == (["from 0", "from 1"] if rank == 0 else None)


@pytest.mark.multiprocess
def test_the_collectives_on_two_processes():
    _on_two_processes(_collectives)


def _agent_config(num_envs: int) -> Config:
    return Config(
        backend="torch", num_envs=num_envs, num_steps=2, num_epochs=2, num_minibatches=2,
        actor_hidden_dim=16, critic_hidden_dim=16, num_bins=21, kl_num_samples=4,
        total_steps=1024,
    )


def _data(agent, size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, SPEC.obs_size, generator=g)
    action = torch.rand(size, SPEC.action_size, generator=g) * 2 - 1
    with torch.no_grad():
        next_latent = agent.critic.encode(torch.randn(size, SPEC.obs_size, generator=g), action)
    return {
        "obs": obs, "action": action, "reward": torch.rand(size, generator=g),
        "target": torch.rand(size, generator=g) * 50, "next_latent": next_latent,
        "terminated": torch.zeros(size),
    }


def _plans(config: Config, per_rank: int, seed: int):
    """Each rank's UpdatePlan over its `per_rank` rows, and the one plan over both ranks' rows
    (rank 0's then rank 1's) whose minibatch m is the union of the ranks' minibatches m."""
    from reppo.torch.agent import UpdatePlan

    g = torch.Generator().manual_seed(seed)
    e, m, b = config.num_epochs, config.num_minibatches, per_rank // config.num_minibatches
    plans = []
    for _ in range(2):
        perms = torch.stack([torch.randperm(per_rank, generator=g) for _ in range(e)])
        plans.append(UpdatePlan(
            perms.reshape(e, m, b), torch.randn(e, m, b, SPEC.action_size, generator=g),
            torch.randn(e, m, config.kl_num_samples, b, SPEC.action_size, generator=g),
        ))
    union = UpdatePlan(
        torch.cat([plans[0].perms, plans[1].perms + per_rank], dim=2),
        torch.cat([plans[0].action_noise, plans[1].action_noise], dim=2),
        torch.cat([plans[0].kl_noise, plans[1].kl_noise], dim=3),
    )
    return plans, union


def _update_on_two_ranks(rank: int, processes: TorchProcesses) -> None:
    from reppo.torch.agent import TorchAgent
    from reppo.torch.networks import to_flat

    per_rank = 16
    agent = TorchAgent(_agent_config(8), SPEC, torch.device("cpu"), seed=0)
    agent.data_parallel = processes
    data = _data(agent, 2 * per_rank, seed=1)  # the same on both ranks: each takes its half
    plans, union = _plans(agent.config, per_rank, seed=2)
    mine = {k: v[rank * per_rank:(rank + 1) * per_rank] for k, v in data.items()}
    agent.update(mine, plans[rank])

    def params(a) -> dict[str, np.ndarray]:
        return {**to_flat(a.actor, "actor/"), **to_flat(a.critic, "critic/"),
                "log_alpha": a.log_alpha.detach().numpy(), "log_beta": a.log_beta.detach().numpy()}

    ours = params(agent)
    everyone = processes.gather_to_leader(ours)
    if rank != 0:
        return
    # The ranks agree exactly.
    assert all(np.array_equal(ours[k], everyone[1][k]) for k in ours)
    # One process with both ranks' data in minibatches twice as large takes the same steps
    # (float32 means over 16 rows vs two of 8 differ in the last bits).
    single = TorchAgent(_agent_config(16), SPEC, torch.device("cpu"), seed=0)
    single.update(data, union)
    reference = params(single)
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=2e-6, err_msg=name)
    initial = params(TorchAgent(_agent_config(8), SPEC, torch.device("cpu"), seed=0))
    assert not all(np.allclose(ours[k], initial[k]) for k in ours)


@pytest.mark.multiprocess
def test_two_ranks_update_like_one_process_on_their_union():
    _on_two_processes(_update_on_two_ranks)


# ---- whole runs under torchrun ---------------------------------------------------------------
def _tiny_torch_flags(**changes) -> list[str]:
    from tests.conftest import TINY, tiny_flags

    config = TINY.replace(backend="torch", total_steps=256, log_interval_steps=128,
                          checkpoint_interval_steps=128, **changes)
    return ["--preset", "cpu", *tiny_flags(config)]


def _torchrun(out: Path, cwd: Path, *cli_args: str) -> None:
    """`reppo train` on two processes; each leaves its output, exit status and final
    parameters under `out` (rank{r}.out/.err/.npz)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*TORCHRUN, str(Path(__file__).resolve()), str(out), *cli_args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=420,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(out.glob("rank*.*"))
                     if p.suffix in (".out", ".err"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs}"


def _final_params(out: Path, rank: int) -> dict[str, np.ndarray]:
    with np.load(out / f"rank{rank}.npz") as saved:
        return {k: saved[k] for k in saved.files}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    cwd = base / "cwd"
    cwd.mkdir()
    # Rank 1 is given a run directory of its own: a follower must never create it.
    _torchrun(base / "out", cwd, "train", *_tiny_torch_flags(),
              "--run-dir", str(base / "run{rank}"))
    return base


@pytest.mark.multiprocess
def test_two_processes_train_one_run_written_by_rank_0(two_process_run):
    from reppo.runs import latest_checkpoint, load_checkpoint, read_metrics

    base = two_process_run
    run, out = base / "run0", base / "out"
    assert not (base / "run1").exists() and not any((base / "cwd").iterdir())
    assert (out / "rank1.out").read_text() == "" and (out / "rank1.err").read_text() == ""
    leader = (out / "rank0.out").read_text()
    assert "REPPO (torch) on CartpoleBalance" in leader and "final evaluation" in leader

    for name in ("config.json", "versions.json", "metrics.jsonl", "learning_curve.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "versions.json").read_text())["processes"] == 2
    records = read_metrics(run)
    assert [r["env_steps"] for r in records] == [128, 256]
    assert records[-1]["eval/episodes"] == 2 and np.isfinite(records[-1]["eval/return_mean"])
    arrays, metadata = load_checkpoint(latest_checkpoint(run))
    assert metadata["env_steps"] == 256 and metadata["config"]["num_envs"] == 8
    # Rank 0's own state under the plain names, rank 1's under rank1/, 4 envs each.
    assert arrays["env_obs"].shape[:2] == arrays["rank1/env_obs"].shape[:2] == (1, 4)
    assert "rank1/rng/torch" in arrays and "rank1/env_state/obs" in arrays
    assert not np.array_equal(arrays["env_obs"], arrays["rank1/env_obs"])

    # Both ranks end with the same parameters, and rank 0's are the checkpoint's.
    first, second = _final_params(out, 0), _final_params(out, 1)
    assert first.keys() == second.keys() and len(first) > 4
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert all(np.array_equal(first[k], arrays[k.replace("|", "/")][0])
               for k in first if k.startswith(("actor|", "critic|")))


# Resuming is one process's code once the leader has read the checkpoint; CI's tier checks
# the two-process run itself and the one-process resume.
@pytest.mark.multiprocess
@pytest.mark.extended
def test_a_two_process_run_resumes(two_process_run, tmp_path):
    from reppo.runs import read_metrics

    run = tmp_path / "run"
    shutil.copytree(two_process_run / "run0", run)
    out = tmp_path / "out"
    _torchrun(out, tmp_path, "train", "--resume", str(run), "--total-steps", "384")
    leader = (out / "rank0.out").read_text()
    assert "resuming" in leader and "(256 env steps)" in leader
    assert (out / "rank1.out").read_text() == ""
    assert [r["env_steps"] for r in read_metrics(run)] == [128, 256, 384]
    first, second = _final_params(out, 0), _final_params(out, 1)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    before = _final_params(two_process_run / "out", 0)
    assert not all(np.array_equal(first[k], before[k]) for k in first)


def _worker(out: Path, cli_args: list[str]) -> None:
    """One torchrun process: `reppo train` (args with "{rank}" replaced by its rank) with its
    output in out/rank{r}.out/.err, then its trainer's parameters in out/rank{r}.npz."""
    from reppo.cli import main
    from reppo.loop import runner as training
    from reppo.torch.networks import to_flat

    rank = int(os.environ["RANK"])
    made = []
    make_trainer = training.make_trainer

    def keep(config):
        made.append(make_trainer(config))
        return made[-1]

    training.make_trainer = keep
    args = [a.replace("{rank}", str(rank)) for a in cli_args]
    with ExitStack() as stack:
        stdout = stack.enter_context(open(out / f"rank{rank}.out", "w"))
        stderr = stack.enter_context(open(out / f"rank{rank}.err", "w"))
        stack.enter_context(redirect_stdout(stdout))
        stack.enter_context(redirect_stderr(stderr))
        code = main(args)
    agent = made[0].agent
    flat = {**to_flat(agent.actor, "actor/"), **to_flat(agent.critic, "critic/"),
            "temps/log_alpha": agent.log_alpha.detach().numpy(),
            "obs_stats/mean": agent.obs_stats.mean.numpy()}
    np.savez(out / f"rank{rank}.npz", **{k.replace("/", "|"): v for k, v in flat.items()})
    sys.exit(code)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2:])
