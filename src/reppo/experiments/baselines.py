"""Brax PPO and Brax SAC baselines that write REPPO's run-directory format.

The baselines are Brax's own trainers (`brax.training.agents.ppo.train`,
`brax.training.agents.sac.train`) with MuJoCo Playground's tuned per-task hyperparameters, on
the same Playground DM Control tasks with the same settings as REPPO runs (MJX physics, the
task's 1000-step episodes, no action repeat). What makes them comparable with REPPO is the
evaluation: at every evaluation point the current Brax policy is evaluated with this project's
protocol (`reppo.envs.evaluation.evaluate`: deterministic actions, `eval_episodes` fresh
episodes in parallel, undiscounted return of each env's first episode) on a
`reppo.envs.registry.make_env` batch, and the result is logged exactly as REPPO logs its own.
Brax's evaluation is not run (see `brax_compat.capture_evaluations`).

Run directory (see `reppo.runs`): `config.json` with `algo`, `env`, `seed`, `num_seeds` (1),
`total_steps`, `eval_episodes`, `eval_interval_steps`, `preset`, `hyperparameters` (the
preset's values after overrides) and `schedule` (how the budget is cut into evaluation
periods, including the `num_evals` and `num_resets_per_eval` actually given to Brax);
`versions.json`; `metrics.jsonl` with one record per evaluation point (`env_steps`,
`wall_time`, `sps`, `eval/*`, and Brax's training metrics under `brax/`). The last record has
`env_steps >= total_steps` and `"final": true`. Brax cannot resume a run from these files: an
interrupted run directory is incomplete for good and must be run again from scratch.

Usage: `python -m reppo.experiments.baselines --algo brax-ppo --env CartpoleBalance --seed 0
--steps 100000 --run-dir runs/ppo-cartpole --preset cpu`; docs/baselines.md has the details.

Nothing heavy is imported at module level (JAX, Brax and Playground load when a run starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reppo.cli import UserError
from reppo.config import ConfigError
from reppo.experiments.suites import EVALS_PER_RUN, default_eval_interval
from reppo.runs import (
    MetricsLogger,
    RunDirError,
    create_run_dir,
    format_progress,
    plot_learning_curve,
    read_metrics,
)
from reppo.runs.versions import collect_versions

BASELINES = ("brax-ppo", "brax-sac")
PRESETS = ("playground", "cpu")
# Evaluations per run when no interval is given: Playground's presets use num_evals=10.
DEFAULT_NUM_EVALS = EVALS_PER_RUN
# Brax trains in whole evaluation periods; a plan longer than this times the budget is refused.
MAX_OVERSHOOT = 1.25
IMPL = "jax"  # MJX physics, as REPPO runs use on CPU (reppo.envs.registry: impl "auto")
_EVAL_STREAM = 0xE7A1  # folded into the seed for evaluation keys, apart from Brax's own streams

# The "cpu" presets keep every algorithmic setting of the Playground preset and resize only
# what sets the parallelism and memory (documented in docs/baselines.md):
# - PPO: 32 envs instead of 2048, each still collecting 16 unrolls of 30 steps (480 steps)
#   per update, in 16 minibatches of 32 sequences instead of 32 of 1024; every transition is
#   still used num_updates_per_batch=16 times. One update is 15,360 env steps (Playground:
#   983,040), small enough for budgets of 100k steps.
# - SAC: 32 envs instead of 128 with grad_updates_per_step 2 instead of 8, which keeps the
#   gradient updates per env step (1/16) and the batch size; the replay buffer holds at most
#   total_steps transitions (never more than the run collects; Playground: 4,194,304).
_CPU_CHANGES: dict[str, dict[str, Any]] = {
    "brax-ppo": {"num_envs": 32, "batch_size": 32, "num_minibatches": 16},
    "brax-sac": {"num_envs": 32, "grad_updates_per_step": 2},
}

# Arguments of Brax's train() that this module sets itself; a hyperparameter override of one
# of them would break the run's contract (budget, evaluation protocol, env settings).
_RESERVED = frozenset({
    "environment", "num_timesteps", "num_evals", "episode_length", "action_repeat", "seed",
    "wrap_env", "wrap_env_fn", "eval_env", "num_eval_envs", "deterministic_eval", "run_evals",
    "progress_fn", "policy_params_fn", "randomization_fn", "max_devices_per_host", "vision",
    "augment_pixels", "log_training_metrics", "training_metrics_steps", "save_checkpoint_path",
    "restore_checkpoint_path", "restore_params", "restore_value_fn", "checkpoint_logdir",
    "use_pmap_on_reset",
})


def _brax_train(algo: str) -> Callable[..., Any]:
    if algo == "brax-ppo":
        from brax.training.agents.ppo import train as ppo

        return ppo.train
    from brax.training.agents.sac import train as sac

    return sac.train


def _network_factory(algo: str) -> Callable[..., Any]:
    if algo == "brax-ppo":
        from brax.training.agents.ppo import networks

        return networks.make_ppo_networks
    from brax.training.agents.sac import networks

    return networks.make_sac_networks


# ---- input checks ----------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown {name} {value!r}{hint}; choose one of {', '.join(choices)}")
    return value


def _check_env(env: str) -> None:
    """Brax's trainers run the Playground DM Control tasks (JAX envs), not ManiSkill's."""
    from reppo.envs.registry import DMC_TASKS, UnknownEnvError, list_envs

    if env in DMC_TASKS:
        return
    if env in list_envs("maniskill"):
        raise UserError(
            f"{env} is a ManiSkill3 task; the Brax baselines run the MuJoCo Playground DM "
            f"Control tasks only (`reppo envs --family dm_control` lists them)"
        )
    raise UserError(str(UnknownEnvError(env)))


# ---- hyperparameters -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-friendly copy: tuples to lists, nested dicts copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def preset_hyperparameters(algo: str, env: str, preset: str = "playground") -> dict[str, Any]:
    """The keyword arguments of Brax's `train` for `algo` on `env` under `preset`.

    "playground" is `mujoco_playground.config.dm_control_suite_params.brax_ppo_config(env)` /
    `brax_sac_config(env)` as it resolves for `env`, less what the caller decides
    (`num_timesteps`: the budget; `num_evals`: the evaluation cadence) and, for SAC,
    `num_resets_per_eval` (Brax 0.14.2's SAC has no such argument). `episode_length` and
    `action_repeat` are those of REPPO runs (the task's own episode length, no repeat).
    "cpu" is the same with the changes of `_CPU_CHANGES` (SAC's replay size is set by
    `resolve_hyperparameters`, which knows the budget). `network_factory` is a dict of
    keyword arguments for Brax's `make_ppo_networks` / `make_sac_networks`.
    """
    _check_choice("baseline", algo, BASELINES)
    _check_choice("preset", preset, PRESETS)
    _check_env(env)
    from mujoco_playground.config import dm_control_suite_params

    from reppo.envs.registry import env_spec

    make = (
        dm_control_suite_params.brax_ppo_config
        if algo == "brax-ppo"
        else dm_control_suite_params.brax_sac_config
    )
    hp = _plain(make(env).to_dict())
    for key in ("num_timesteps", "num_evals"):
        hp.pop(key, None)
    if algo == "brax-sac":
        hp.pop("num_resets_per_eval", None)
    hp["episode_length"] = env_spec(env, impl=IMPL).episode_length
    hp["action_repeat"] = 1
    hp.setdefault("network_factory", {})
    if preset == "cpu":
        hp.update(_CPU_CHANGES[algo])
    return hp


def _allowed_keys(algo: str) -> tuple[set[str], set[str]]:
    train_keys = set(inspect.signature(_brax_train(algo)).parameters) - _RESERVED
    factory = inspect.signature(_network_factory(algo)).parameters
    net_keys = set(factory) - {"observation_size", "action_size", "preprocess_observations_fn"}
    return train_keys, net_keys


def resolve_hyperparameters(
    algo: str,
    env: str,
    preset: str,
    total_steps: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preset's hyperparameters with `overrides` applied (checked against Brax's `train`
    and network-factory signatures; `network_factory` entries are merged key by key)."""
    hp = preset_hyperparameters(algo, env, preset)
    if algo == "brax-sac" and preset == "cpu":
        hp["max_replay_size"] = min(int(hp["max_replay_size"]), total_steps)
    if not overrides:
        return hp
    train_keys, net_keys = _allowed_keys(algo)
    for key, value in overrides.items():
        if key in _RESERVED:
            raise UserError(
                f"hyperparameter {key!r} is set by the baseline runner itself (budget, "
                f"evaluation or env settings) and cannot be overridden"
            )
        if key not in train_keys:
            raise UserError(
                f"unknown {algo} hyperparameter {key!r}; valid: {', '.join(sorted(train_keys))}"
            )
        if key == "network_factory":
            if not isinstance(value, Mapping):
                raise UserError("network_factory must be a mapping of network keyword arguments")
            unknown = sorted(set(value) - net_keys)
            if unknown:
                raise UserError(
                    f"unknown network_factory argument(s) {', '.join(unknown)}; valid: "
                    f"{', '.join(sorted(net_keys))}"
                )
            hp["network_factory"] = {**hp["network_factory"], **_plain(value)}
        else:
            hp[key] = _plain(value)
    return hp


# ---- the budget, cut into evaluation periods -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How Brax's trainer will spend the budget: `num_evals` evaluation periods (Brax's
    `num_evals` argument is one more: it counts an initial evaluation at step 0, which is
    skipped here), ending at `eval_steps`; the last one is `planned_env_steps >= total_steps`.
    """

    env_steps_per_update: int  # PPO: env steps per training step; SAC: per actor step
    updates_per_eval: int
    num_evals: int
    prefill_env_steps: int  # SAC's replay prefill (counted as env steps by Brax); PPO: 0
    planned_env_steps: int
    num_resets_per_eval: int | None  # PPO only

    def eval_steps(self) -> list[int]:
        per_eval = (self.planned_env_steps - self.prefill_env_steps) // self.num_evals
        return [self.prefill_env_steps + per_eval * (j + 1) for j in range(self.num_evals)]

    def brax_arguments(self) -> dict[str, int]:
        args = {"num_evals": self.num_evals + 1}
        if self.num_resets_per_eval is not None:
            args["num_resets_per_eval"] = self.num_resets_per_eval
        return args


def plan_schedule(
    algo: str, hp: Mapping[str, Any], total_steps: int, eval_interval_steps: int
) -> Schedule:
    """Evaluation periods of about `eval_interval_steps` (0: one period) covering `total_steps`.

    Brax trains in whole updates (PPO: `batch_size * unroll_length * num_minibatches` env
    steps; SAC: one step of every env) and in evaluation periods of equal length, so the run
    ends at the first period boundary at or after `total_steps`: at most one period (or one
    update, if that is longer) beyond it.

    PPO: Playground's preset (`num_resets_per_eval=10` with `num_evals=10` at its own budget)
    resets every env after every update; `num_resets_per_eval` is set to the updates per
    period so that this holds at any budget and cadence (a preset value of 0, no resets, is
    kept). SAC: Brax first fills the replay buffer with `min_replay_size` transitions, which
    count towards the budget.
    """
    if algo == "brax-ppo":
        per_update = int(hp["batch_size"]) * int(hp["unroll_length"]) * int(hp["num_minibatches"])
        per_update *= int(hp["action_repeat"])
        if per_update > total_steps:
            raise UserError(
                f"one brax-ppo update of these hyperparameters collects {per_update:,} env "
                f"steps (batch_size * unroll_length * num_minibatches), more than the budget "
                f"of {total_steps:,}; raise the budget or use --preset cpu"
            )
        updates = math.ceil(total_steps / per_update)
        per_eval = _per_eval(updates, per_update, eval_interval_steps)
        num_evals = math.ceil(updates / per_eval)
        if int(hp.get("num_resets_per_eval", 0)) > 0:
            resets, epoch_updates = per_eval, 1  # one update per epoch, a reset after each
        else:
            resets = 0
            epoch_updates = math.ceil(total_steps / (num_evals * per_update))
        planned = num_evals * max(resets, 1) * epoch_updates * per_update
        return Schedule(per_update, max(resets, 1) * epoch_updates, num_evals, 0, planned, resets)

    num_envs = int(hp["num_envs"])
    per_step = num_envs * int(hp["action_repeat"])
    min_replay = int(hp.get("min_replay_size", 0))
    prefill = -(-min_replay // num_envs) * per_step
    if total_steps - prefill < per_step:
        raise UserError(
            f"brax-sac first collects min_replay_size={min_replay} transitions "
            f"({prefill:,} env steps with {num_envs} envs), which leaves no training within "
            f"{total_steps:,} steps; raise the budget above {prefill + per_step:,} steps"
        )
    steps = math.ceil((total_steps - prefill) / per_step)
    per_eval = _per_eval(steps, per_step, eval_interval_steps)
    num_evals = math.ceil(steps / per_eval)
    epoch_steps = -(-(total_steps - prefill) // (num_evals * per_step))  # Brax's formula
    planned = prefill + num_evals * epoch_steps * per_step
    return Schedule(per_step, epoch_steps, num_evals, prefill, planned, None)


def _check_overshoot(algo: str, schedule: Schedule, total_steps: int) -> None:
    """Refuse plans that would train far past the budget (comparisons at equal budgets)."""
    if schedule.planned_env_steps <= MAX_OVERSHOOT * total_steps:
        return
    raise UserError(
        f"{algo} trains in evaluation periods of whole updates ({schedule.updates_per_eval} x "
        f"{schedule.env_steps_per_update:,} env steps here), so it would run "
        f"{schedule.planned_env_steps:,} env steps for a budget of {total_steps:,}; choose a "
        f"budget close to a multiple of the period, a shorter --eval-interval-steps, or "
        f"--preset cpu"
    )


def _per_eval(updates: int, per_update: int, eval_interval_steps: int) -> int:
    if eval_interval_steps == 0:
        return updates
    return min(updates, max(1, round(eval_interval_steps / per_update)))


def _check_hyperparameters(algo: str, hp: Mapping[str, Any], total_steps: int) -> None:
    """Brax asserts these deep inside train(); say what to change instead."""
    for key in ("num_envs", "batch_size") + (
        ("unroll_length", "num_minibatches", "num_updates_per_batch")
        if algo == "brax-ppo"
        else ("grad_updates_per_step",)
    ):
        _check_int(f"hyperparameter {key}", hp.get(key), 1)
    if algo == "brax-ppo":
        if hp["batch_size"] * hp["num_minibatches"] % hp["num_envs"]:
            raise UserError(
                f"brax-ppo needs batch_size * num_minibatches ({hp['batch_size']} * "
                f"{hp['num_minibatches']}) to be a multiple of num_envs ({hp['num_envs']})"
            )
        return
    max_replay = hp.get("max_replay_size") or total_steps
    if max_replay < hp["num_envs"]:
        raise UserError(
            f"brax-sac's max_replay_size ({max_replay}) must hold one step of all "
            f"{hp['num_envs']} envs"
        )


# ---- evaluation ------------------------------------------------------------------------------


def eval_key(seed: int, env_steps: int) -> Any:
    """The key of the evaluation at `env_steps` of a run with `seed` (fresh episodes at every
    evaluation point, the same ones for every algorithm run with that seed)."""
    import jax

    key = jax.random.fold_in(jax.random.PRNGKey(seed), _EVAL_STREAM)
    return jax.random.fold_in(key, env_steps % 2**32)


class ProtocolEvaluator:
    """The project's evaluation protocol applied to Brax policies.

    `evaluate(policy_factory, params, key)` runs one episode in each of `eval_episodes` envs of
    `make_env(env, eval_episodes)` with the deterministic policy `policy_factory(params)`
    (Brax's `make_policy(params, deterministic=True)`: the tanh of the Gaussian's mean, after
    Brax's observation normalization) and returns the (eval_episodes,) undiscounted returns.
    The rollout is compiled once per policy factory.
    """

    def __init__(self, env: str, eval_episodes: int) -> None:
        from reppo.envs.registry import make_env

        self.env = make_env(env, eval_episodes, impl=IMPL)
        self._compiled: dict[int, tuple[Callable, Callable]] = {}

    def _rollout(self, policy_factory: Callable) -> Callable:
        import jax

        from reppo.envs.evaluation import evaluate

        entry = self._compiled.get(id(policy_factory))
        if entry is None or entry[0] is not policy_factory:
            env = self.env

            def run(params: Any, key: jax.Array) -> jax.Array:
                policy = policy_factory(params)
                unused = jax.random.PRNGKey(0)  # deterministic policies draw no noise
                return evaluate(env, lambda obs: policy(obs, unused)[0], key).returns

            entry = (policy_factory, jax.jit(run))
            self._compiled[id(policy_factory)] = entry
        return entry[1]

    def evaluate(self, policy_factory: Callable, params: Any, key: Any) -> Any:
        import numpy as np

        return np.asarray(self._rollout(policy_factory)(params, key), dtype=np.float64)


# ---- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class BaselineResult:
    """What `train_baseline` returns: the final evaluation record and the final policy."""

    run_dir: Path
    final_record: dict[str, Any]
    records: list[dict[str, Any]]
    policy_factory: Callable  # params -> deterministic Brax policy(obs, key) -> (action, extras)
    params: Any  # Brax's final params (normalizer, policy[, value])


def _versions(algo: str) -> dict[str, Any]:
    import jax

    return collect_versions({
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
        "baseline": algo,
    })


def _refuse_existing(run_dir: Path) -> None:
    """A baseline never writes into a directory that holds anything (Brax cannot resume)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        what = "is a file" if not run_dir.is_dir() else "is not empty"
        raise UserError(
            f"{run_dir} {what}; nothing was changed. Brax runs cannot be resumed: pick a new "
            f"--run-dir (or move this one aside to run it again from scratch)"
        )


class _Recorder:
    """Turns Brax's callbacks into REPPO-format records: the capture hook stores the params of
    the coming evaluation point, `progress` (Brax's progress_fn) evaluates them and logs."""

    def __init__(
        self,
        *,
        evaluator: ProtocolEvaluator,
        logger: MetricsLogger,
        seed: int,
        total_steps: int,
        echo: Callable[[str], None] | None,
        start: float,
    ) -> None:
        self.evaluator = evaluator
        self.logger = logger
        self.seed = seed
        self.total_steps = total_steps
        self.echo = echo
        self.start = start
        self.factory: Callable | None = None
        self.params: Any = None
        self.records: list[dict[str, Any]] = []
        self._last_steps = 0
        self._last_time = start
        self._eval_seconds = 0.0

    def capture(self, policy_factory: Callable, params: Any) -> None:
        self.factory, self.params = policy_factory, params

    def progress(self, step: int, metrics: Mapping[str, Any]) -> None:
        step = int(step)
        if step <= 0:  # Brax's initial evaluation, before any training: REPPO has none
            return
        if self.factory is None:
            raise RuntimeError("Brax reported progress without handing over its params")
        now = time.perf_counter()
        train_seconds = now - self._last_time - self._eval_seconds
        t0 = time.perf_counter()
        returns = self.evaluator.evaluate(self.factory, self.params, eval_key(self.seed, step))
        self._eval_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "env_steps": step,
            "wall_time": time.perf_counter() - self.start,
            "sps": (step - self._last_steps) / max(train_seconds, 1e-9),
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/return_per_seed": [float(returns.mean())],
            "eval/episodes": int(returns.size),
            **{f"brax/{k}": v for k, v in metrics.items()},
        }
        if step >= self.total_steps:
            record["final"] = True
        self._last_steps, self._last_time = step, now
        clean = self.logger.log(record)
        self.records.append(clean)
        if self.echo is not None:
            self.echo(format_progress(clean, self.total_steps, clean["eval/return_mean"]))


def train_baseline(
    algo: str,
    env: str,
    seed: int,
    total_steps: int,
    run_dir: Path,
    *,
    preset: str = "playground",
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
) -> BaselineResult:
    """Train Brax `algo` on `env` for `total_steps` env steps into the new `run_dir`.

    `eval_interval_steps` None evaluates about `DEFAULT_NUM_EVALS` times, 0 only at the end.
    `hyperparameters` overrides entries of the preset (keys of Brax's `train`, and
    `network_factory` keys of its network factory). Raises `UserError` for bad input before
    anything is written.
    """
    _check_choice("baseline", algo, BASELINES)
    _check_choice("preset", preset, PRESETS)
    _check_int("seed", seed, 0)
    _check_int("total_steps", total_steps, 1)
    _check_int("eval_episodes", eval_episodes, 1)
    if eval_interval_steps is None:
        eval_interval_steps = default_eval_interval(total_steps)
    _check_int("eval_interval_steps", eval_interval_steps, 0)
    _check_env(env)
    run_dir = Path(run_dir)
    _refuse_existing(run_dir)

    hp = resolve_hyperparameters(algo, env, preset, total_steps, hyperparameters)
    _check_hyperparameters(algo, hp, total_steps)
    schedule = plan_schedule(algo, hp, total_steps, eval_interval_steps)
    _check_overshoot(algo, schedule, total_steps)
    config = {
        "algo": algo,
        "env": env,
        "seed": seed,
        "num_seeds": 1,
        "total_steps": total_steps,
        "eval_episodes": eval_episodes,
        "eval_interval_steps": eval_interval_steps,
        "preset": preset,
        "impl": IMPL,
        "hyperparameters": hp,
        "schedule": {**dataclasses.asdict(schedule), "eval_steps": schedule.eval_steps()},
    }

    start = time.perf_counter()
    from mujoco_playground import wrapper

    from reppo.experiments import brax_compat

    evaluator = ProtocolEvaluator(env, eval_episodes)
    environment = evaluator.env.inner  # the Playground env REPPO runs train on
    train_fn = _brax_train(algo)
    kwargs = {k: v for k, v in hp.items() if k != "network_factory"}
    kwargs.update(schedule.brax_arguments())
    network_factory = functools.partial(_network_factory(algo), **_network_kwargs(hp))

    create_run_dir(run_dir, config, _versions(algo))
    name = {"brax-ppo": "Brax PPO", "brax-sac": "Brax SAC"}[algo]
    if echo is not None:
        echo(
            f"{name} ({preset} preset) on {env}, seed {seed}: {total_steps:,} env steps "
            f"(Brax runs {schedule.planned_env_steps:,}), {schedule.num_evals} evaluation(s) "
            f"of {eval_episodes} episodes -> {run_dir}"
        )
    with MetricsLogger(run_dir) as logger:
        recorder = _Recorder(
            evaluator=evaluator, logger=logger, seed=seed, total_steps=total_steps, echo=echo,
            start=start,
        )
        with brax_compat.jax_compat(), brax_compat.capture_evaluations(recorder.capture):
            make_policy, params, _ = train_fn(
                environment=environment,
                num_timesteps=total_steps,
                seed=seed,
                wrap_env_fn=wrapper.wrap_for_brax_training,
                network_factory=network_factory,
                progress_fn=recorder.progress,
                deterministic_eval=True,
                num_eval_envs=eval_episodes,
                **kwargs,
            )
    records = read_metrics(run_dir)
    if not records or not records[-1].get("final"):
        raise RuntimeError(f"Brax stopped before {total_steps:,} env steps; {run_dir} is partial")
    plot_learning_curve(records, run_dir / "learning_curve.png", f"{name} on {env}")
    return BaselineResult(
        run_dir=run_dir,
        final_record=recorder.records[-1],
        records=recorder.records,
        policy_factory=functools.partial(make_policy, deterministic=True),
        params=params,
    )


def _network_kwargs(hp: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples Brax's network factories expect."""
    return {
        k: tuple(v) if isinstance(v, list) else v for k, v in hp["network_factory"].items()
    }


def run_baseline(
    algo: str,
    env: str,
    seed: int,
    total_steps: int,
    run_dir: Path,
    *,
    preset: str = "playground",
    eval_interval_steps: int | None = None,
    eval_episodes: int = 16,
    echo: Callable[[str], None] | None = print,
    hyperparameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one baseline run (see `train_baseline`); returns its final evaluation record."""
    return train_baseline(
        algo, env, seed, total_steps, run_dir, preset=preset,
        eval_interval_steps=eval_interval_steps, eval_episodes=eval_episodes, echo=echo,
        hyperparameters=hyperparameters,
    ).final_record


# ---- command line ----------------------------------------------------------------------------


def _parse_count(flag: str, text: str | None, minimum: int) -> int | None:
    """'100000', '100_000', '1e5', '100k', '1.5M' -> int; a UserError names the flag."""
    if text is None:
        return None
    raw = text.strip().replace("_", "").replace(",", "")
    scale = 1
    if raw[-1:].lower() in ("k", "m"):
        scale = 1_000 if raw[-1].lower() == "k" else 1_000_000
        raw = raw[:-1]
    try:
        number = float(raw) * scale
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise UserError(f"{flag} must be an integer >= {minimum} (e.g. 100000 or 100k), "
                        f"got {text!r}")
    return int(number)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", metavar="{" + ",".join(BASELINES) + "}",
                        help="the baseline to train")
    parser.add_argument("--env", metavar="TASK",
                        help="Playground DM Control task, e.g. CartpoleBalance")
    parser.add_argument("--seed", default="0", metavar="INT", help="random seed (default 0)")
    parser.add_argument("--steps", metavar="N",
                        help="env steps to train for, summed over envs (e.g. 100000 or 100k)")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="new run directory (must not exist, or be empty)")
    parser.add_argument("--preset", default="playground", metavar="{" + ",".join(PRESETS) + "}",
                        help="hyperparameters: playground (Playground's tuned values, the "
                             "default) or cpu (resized for a small CPU)")
    parser.add_argument("--eval-interval-steps", default=None, metavar="N",
                        help=f"env steps between evaluations (default: total / "
                             f"{DEFAULT_NUM_EVALS}; 0: only at the end)")
    parser.add_argument("--eval-episodes", default="16", metavar="N",
                        help="deterministic evaluation episodes (default 16)")


def run(args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--algo", args.algo), ("--env", args.env),
                                        ("--steps", args.steps), ("--run-dir", args.run_dir))
               if value is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (see --help)")
    algo = _check_choice("baseline (--algo)", args.algo, BASELINES)
    preset = _check_choice("preset (--preset)", args.preset, PRESETS)
    steps = _parse_count("--steps", args.steps, 1)
    seed = _parse_count("--seed", args.seed, 0)
    interval = _parse_count("--eval-interval-steps", args.eval_interval_steps, 0)
    episodes = _parse_count("--eval-episodes", args.eval_episodes, 1)
    from reppo.cli import enable_compilation_cache

    enable_compilation_cache()

    def echo(line: str) -> None:
        print(line, flush=True)

    record = run_baseline(
        algo, args.env, seed, steps, args.run_dir, preset=preset,
        eval_interval_steps=interval, eval_episodes=episodes, echo=echo,
    )
    echo(f"final evaluation at {record['env_steps']:,} env steps: return "
         f"{record['eval/return_mean']:.1f} ± {record['eval/return_std']:.1f}; run saved in "
         f"{args.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reppo.experiments.baselines",
        description="Train a Brax PPO or SAC baseline into a REPPO-format run directory.",
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UserError, ConfigError, RunDirError) as err:
        print(f"reppo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reppo: interrupted; {args.run_dir} is incomplete and cannot be resumed (Brax "
              "keeps no checkpoint here): run it again in a new directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
