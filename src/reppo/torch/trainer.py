"""The torch backend's trainer: iterations as an eager (optionally compiled) loop.

`reppo.loop.runner.train` drives it exactly like the JAX trainer, so run directories, metrics,
checkpoints, resuming and progress lines are the same. One seed per process (`num_seeds` 1).

Several processes can train one run (`torchrun --nproc-per-node N -m reppo.cli train
--backend torch ...`; `reppo.torch.distributed`): `num_envs` stays the total, each rank steps
`num_envs / N` envs seeded with `rank_seed(seed, rank)`, splits its batch into the run's
`num_minibatches`, and averages every minibatch gradient (critic, actor, temperatures) over the
ranks before the optimizer step, so one step equals a step on the N times larger minibatch of
all ranks and the ranks' parameters stay identical. Observation statistics are merged exactly
and metrics averaged over the ranks (`train/episodes` summed). Rank 0 evaluates (the whole
`eval_episodes`, as a single process would) and shares its report; rank 0 alone writes the
run directory, and its checkpoints hold every other rank's own state (envs, episode returns,
generator) under `rank{r}/...`, from which every rank resumes.

Checkpoints use the JAX backend's names for what both backends share (`actor/...`,
`critic/...`, `behaviour/...`, `obs_stats/...`, `temps/...`, with a leading seed axis of 1),
so either backend evaluates and exports the other's runs. Torch-only state (Adam moments, the
generator) is stored under `actor_opt/`, `critic_opt/`, `temp_opt/` and `rng/`.

Each process computes with one CPU thread unless the user chose otherwise
(`choose_cpu_threads`).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reppo.config import Config
from reppo.envs.torch_registry import (
    evaluate_torch,
    evaluate_torch_stochastic,
    make_torch_env,
    resolve_device,
)
from reppo.loop.seam import EvalReport, StateMismatchError, eval_seed
from reppo.runs import CheckpointError
from reppo.torch import distributed
from reppo.torch import normalizer as N
from reppo.torch.agent import TorchAgent
from reppo.torch.networks import FlatMismatchError, load_flat, to_flat
from reppo.torch.optim import Adam

__all__ = ["TorchTrainer"]


class _State:
    """The mutable training state the loop hands back and forth (the agent holds the rest)."""

    def __init__(self, obs: torch.Tensor, episode_return: torch.Tensor, iteration: int) -> None:
        self.obs = obs
        self.episode_return = episode_return
        self.iteration = iteration


def _seed_axis(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value[None] for name, value in flat.items()}


def _optimizer_flat(opt: Adam, names: list[str], prefix: str) -> dict[str, np.ndarray]:
    return {
        prefix + key: value.detach().cpu().numpy().astype(np.float32)
        for key, value in opt.state_arrays(names).items()
    }


def _load_optimizer(
    opt: Adam, names: list[str], prefix: str, flat: dict[str, np.ndarray]
) -> None:
    opt.load_arrays(
        names, {k.removeprefix(prefix): v[0] for k, v in flat.items() if k.startswith(prefix)}
    )


# Environment variables torch reads its intra-op thread count from when it starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_chosen: int | None = None  # the count `choose_cpu_threads` set in this process, if any


def _start_counts() -> set[int]:
    """The thread counts torch may start with here, without a thread variable: one per core,
    logical or physical, of the machine or of this process's CPU affinity."""
    counts = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        counts.add(len(os.sched_getaffinity(0)))
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            continue
    if cores:
        counts.add(len(cores))
    return counts


def choose_cpu_threads() -> str:
    """Set torch's intra-op thread count for a run and say what it is (the run's setup line).

    One thread per process: torch starts one per core, and on a small or busy machine those
    threads wait on cores the simulator (or another run) is using, which slows a CPU run many
    times over. The user's own choice is kept: a thread variable (`THREAD_VARIABLES`, which
    torch read when it started), or a `torch.set_num_threads(n)` made before the run, seen as
    a count torch does not start with (so a count of one per core is set with the variable).
    """
    global _chosen
    count = torch.get_num_threads()
    plural = "s" if count != 1 else ""
    for name in THREAD_VARIABLES:
        if os.environ.get(name, "").strip():
            return f"{count} CPU thread{plural} ({name}={os.environ[name].strip()})"
    if count != _chosen and count not in _start_counts():
        return f"{count} CPU thread{plural} (torch.set_num_threads)"
    torch.set_num_threads(1)
    _chosen = 1
    return "1 CPU thread (OMP_NUM_THREADS=N for more)"


# Where a checkpoint keeps rank r's own state (r >= 1; rank 0's has the plain names).
RANK_PREFIX = "rank{}/"


def checkpoint_ranks(arrays: dict[str, np.ndarray]) -> int:
    """How many processes wrote the checkpoint: 1 + the highest `rank{r}/` prefix."""
    highest = 0
    for name in arrays:
        head, _, rest = name.partition("/")
        if rest and head.startswith("rank") and head[4:].isdigit():
            highest = max(highest, int(head[4:]))
    return highest + 1


class TorchTrainer:
    """Builds the envs and the agent for one config (`reppo.loop.runner.Trainer`)."""

    def __init__(self, config: Config) -> None:
        if config.num_seeds != 1:
            raise ValueError("the torch backend trains one seed per process")
        self.config = config
        threads = choose_cpu_threads()  # before any computation starts the thread pool
        self.processes = distributed.processes_from_env(config)
        self.process_index = self.processes.index
        self.process_count = self.processes.count
        parallel = self.process_count > 1
        self.device = self.processes.device if parallel else resolve_device(config.device)
        # What the loop prints before training (`reppo.loop.seam.Trainer.setup_lines`).
        self.setup_lines = [f"torch on {self.device}, {threads}"]
        # Each rank's own share of the run: its envs, and the batch they collect (the same
        # number of iterations, so the learning-rate schedule is the run's).
        local = config
        if parallel:
            num_envs = config.num_envs // self.process_count
            local = config.replace(
                num_envs=num_envs,
                total_steps=config.num_iterations * num_envs * config.num_steps,
            )
        self.seed = distributed.rank_seed(config.seed, self.process_index)
        self.env = make_torch_env(
            config.env, local.num_envs, device=self.device, seed=self.seed, impl=config.impl
        )
        # Rank 0 runs the whole evaluation protocol; the other ranks receive its report.
        self.eval_env = make_torch_env(
            config.env, config.eval_episodes, device=self.device, seed=config.seed,
            evaluation=True, impl=config.impl,
        ) if self.process_index == 0 else None
        self.agent = TorchAgent(local, self.env.spec, self.device, self.seed)
        if parallel:
            a = self.agent
            self.agent.data_parallel = self.processes
            # Every rank starts from rank 0's weights (their seeds, and so their draws, differ).
            self.processes.broadcast_tensors([
                *a.actor.parameters(), *a.actor.buffers(), *a.behaviour.parameters(),
                *a.behaviour.buffers(), *a.critic.parameters(), *a.critic.buffers(),
                a.log_alpha, a.log_beta,
            ])
        self.compile_seconds = 0.0
        self._compiled = not config.torch_compile
        self._eval_env_warm = False

    # ---- the loop's interface ------------------------------------------------------------------
    def init_state(self) -> _State:
        obs = self.env.reset(self.seed)
        if self.config.stagger_episodes:
            self.env.stagger(self.seed)
        return _State(obs, torch.zeros(self.env.num_envs, device=self.device), 0)

    def iteration_of(self, state: _State) -> int:
        return state.iteration

    def device_description(self) -> dict[str, Any]:
        name = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
            else platform.processor() or platform.machine()
        )
        description = {
            "torch": torch.__version__, "torch_device": str(self.device), "devices": [name],
        }
        if self.process_count > 1:
            description["processes"] = self.process_count
        return description

    def run_chunk(self, state: _State, num_iterations: int):
        rows: list[dict[str, float]] = []
        obs, episode_return = state.obs, state.episode_return
        for i in range(num_iterations):
            start = time.perf_counter()
            obs, episode_return, metrics = self.agent.iteration(
                self.env, obs, episode_return, state.iteration + i
            )
            if not self._compiled:
                # torch.compile compiles during the first iteration; count it as compile time.
                self.compile_seconds += time.perf_counter() - start
                self._compiled = True
            if self.process_count > 1:
                # The same metrics (and finite flags) on every rank, so all stop together.
                metrics = self.processes.reduce_metrics(metrics)
            rows.append(metrics)
            if not all(v for k, v in metrics.items() if k.startswith("finite/")):
                num_iterations = i + 1
                break
        new_state = _State(obs, episode_return, state.iteration + num_iterations)
        names = rows[0].keys()
        return new_state, {k: np.array([[row[k] for row in rows]]) for k in names}

    def evaluate(self, state: _State) -> EvalReport:
        if self.eval_env is not None and not self._eval_env_warm:
            self._warm_up_the_eval_env()
        report = self._evaluate(state) if self.process_index == 0 else None
        return self.processes.share(report) if self.process_count > 1 else report

    def _warm_up_the_eval_env(self) -> None:
        """The eval env's first reset and step build its programs (a Playground env's through
        JAX): a one-off, counted as compile time, so that an evaluation's time predicts the
        next ones'. Every evaluation resets the env with its own seed afterwards."""
        start = time.perf_counter()
        env = self.eval_env
        env.reset(self.config.seed)
        env.step(torch.zeros(env.num_envs, env.spec.action_size, device=self.device))
        self.compile_seconds += time.perf_counter() - start
        self._eval_env_warm = True

    def _evaluate(self, state: _State) -> EvalReport:
        seed = eval_seed(self.config.seed, state.iteration * self.config.steps_per_iteration)
        result = evaluate_torch(self.eval_env, self.agent.act_deterministic, seed=seed)
        # The same episodes (reset with the same seed) with actions sampled from the policy;
        # the success metrics stay those of the deterministic policy.
        stochastic = evaluate_torch_stochastic(
            self.eval_env, self.agent.act_stochastic, seed=seed
        )

        def row(x: torch.Tensor | None) -> np.ndarray | None:
            return None if x is None else x.float().cpu().numpy()[None]

        return EvalReport(
            returns=row(result["returns"]),
            success_once=row(result["success_once"]),
            success_at_end=row(result["success_at_end"]),
            stochastic_returns=row(stochastic["returns"]),
        )

    # ---- checkpoints ---------------------------------------------------------------------------
    def _own_state(self, state: _State) -> dict[str, np.ndarray]:
        """What differs between ranks: this rank's envs, episode returns and generator."""
        flat = {
            "episode_return": state.episode_return.cpu().numpy(),
            "env_obs": state.obs.cpu().numpy(),
            "rng/torch": self.agent.generator.get_state().cpu().numpy(),
        }
        if hasattr(self.env, "get_state"):
            flat.update({f"env_state/{k}": v for k, v in self.env.get_state().items()})
        return _seed_axis(flat)

    def _flat_state(self, state: _State) -> dict[str, np.ndarray]:
        a = self.agent
        flat = {
            **to_flat(a.actor, "actor/"),
            **to_flat(a.behaviour, "behaviour/"),
            **to_flat(a.critic, "critic/"),
            "temps/log_alpha": a.log_alpha.detach().cpu().numpy(),
            "temps/log_beta": a.log_beta.detach().cpu().numpy(),
            **{f"obs_stats/{k}": v.cpu().numpy() for k, v in a.obs_stats._asdict().items()},
            "iteration": np.asarray(state.iteration, np.int32),
            **_optimizer_flat(a.actor_opt, self._names(a.actor), "actor_opt/"),
            **_optimizer_flat(a.critic_opt, self._names(a.critic), "critic_opt/"),
            **_optimizer_flat(a.temp_opt, ["log_alpha", "log_beta"], "temp_opt/"),
        }
        return {**_seed_axis(flat), **self._own_state(state)}

    @staticmethod
    def _names(module: torch.nn.Module) -> list[str]:
        return [name.replace(".", "/") for name, _ in module.named_parameters()]

    backend = "torch"

    def policy_sizes(self) -> tuple[int, int]:
        return self.env.spec.obs_size, self.env.spec.action_size

    def state_arrays(self, state: _State) -> dict[str, np.ndarray]:
        """The checkpoint's arrays (rank 0's state, and with several processes every other
        rank's own state under `rank{r}/`). Every rank calls it; the others get {}."""
        if self.process_count == 1:
            return self._flat_state(state)
        gathered = self.processes.gather_to_leader(
            self._own_state(state) if self.process_index > 0 else None
        )
        if gathered is None:
            return {}
        flat = self._flat_state(state)
        for rank, own in enumerate(gathered[1:], start=1):
            flat.update({f"{RANK_PREFIX.format(rank)}{k}": v for k, v in own.items()})
        return flat

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> _State:
        """Every rank restores from the same arrays: the shared state, and its own part (rank
        0's under the plain names, rank r's under `rank{r}/`)."""
        a, dev = self.agent, self.device
        ranks = checkpoint_ranks(arrays)
        if ranks != self.process_count:
            # Not a config mismatch (no other checkpoint of the run would fit better).
            raise CheckpointError(
                f"the checkpoint holds the state of {ranks} process(es) and this run has "
                f"{self.process_count}; resume it with {ranks} process(es) in all ("
                + ("a plain `reppo train --resume`" if ranks == 1 else
                   f"torchrun with --nnodes x --nproc-per-node = {ranks}")
                + ")"
            )
        if self.process_index > 0:
            prefix = RANK_PREFIX.format(self.process_index)
            arrays = {**arrays, **{
                k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)
            }}
        try:
            for module, prefix in ((a.actor, "actor/"), (a.behaviour, "behaviour/"),
                                   (a.critic, "critic/")):
                load_flat(module, arrays, prefix, index=0)
            with torch.no_grad():
                a.log_alpha.copy_(torch.as_tensor(arrays["temps/log_alpha"][0]))
                a.log_beta.copy_(torch.as_tensor(arrays["temps/log_beta"][0]))
            a.obs_stats = N.RunningStats(*(
                torch.as_tensor(arrays[f"obs_stats/{k}"][0], device=dev)
                for k in N.RunningStats._fields
            ))
            _load_optimizer(a.actor_opt, self._names(a.actor), "actor_opt/", arrays)
            _load_optimizer(a.critic_opt, self._names(a.critic), "critic_opt/", arrays)
            _load_optimizer(a.temp_opt, ["log_alpha", "log_beta"], "temp_opt/", arrays)
            a.generator.set_state(torch.as_tensor(arrays["rng/torch"][0]))
            episode_return = torch.as_tensor(arrays["episode_return"][0], device=dev)
            env_state = {
                k.removeprefix("env_state/"): v[0]
                for k, v in arrays.items() if k.startswith("env_state/")
            }
            if env_state and hasattr(self.env, "set_state"):
                obs = self.env.set_state(env_state)
            else:
                # Simulators whose state cannot be saved (ManiSkill) restart their episodes.
                restart_seed = self.seed + iteration
                obs = self.env.reset(restart_seed)
                if self.config.stagger_episodes:
                    self.env.stagger(restart_seed)
                episode_return = torch.zeros_like(episode_return)
        except (KeyError, FlatMismatchError, ValueError, RuntimeError) as err:
            raise StateMismatchError(str(err)) from None
        return _State(obs, episode_return, iteration)


