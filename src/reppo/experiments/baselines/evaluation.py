"""The evaluation of Brax baselines with this project's protocol.

`ProtocolEvaluator` runs `reppo.envs.evaluation.evaluate` on Brax's deterministic policy, with
the keys of `reppo.envs.evaluation.eval_key` (the episodes REPPO's evaluation of the same seed
and env steps runs); `Recorder` captures the params Brax hands over at each evaluation point
(through `brax.compat.capture_evaluations`), evaluates them when Brax reports progress, and logs
the result as a REPPO-format metrics record. JAX is imported inside the functions, so that
`reppo --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from reppo.loop.seam import EvalReport
from reppo.runs import MetricsLogger, format_progress
from reppo.runs.metrics import EVAL_RETURN
from reppo.runs.rundir import check_output_directory
from reppo.runs.signals import raise_if_stop_requested
from reppo.runs.versions import collect_versions

# The physics of the DM Control baselines' envs, for training and for the protocol's
# evaluations: MJX, as REPPO runs use on CPU (`reppo.envs.registry`, impl "auto").
IMPL = "jax"

# ---- evaluation ------------------------------------------------------------------------------


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

    def evaluate(self, policy_factory: Callable, params: Any, seed: int, env_steps: int
                 ) -> EvalReport:
        """The evaluation at `env_steps` of a run with `seed` (`eval_key(seed, env_steps)`)."""
        import numpy as np

        from reppo.envs.evaluation import eval_key

        returns = self._rollout(policy_factory)(params, eval_key(seed, env_steps))
        return EvalReport(returns=np.asarray(returns, dtype=np.float64)[None])


class Evaluator(Protocol):
    """What `Recorder` evaluates with: `ProtocolEvaluator` (JAX envs) or ManiSkill PPO's."""

    def evaluate(self, policy_factory: Callable, params: Any, seed: int, env_steps: int
                 ) -> EvalReport: ...


# ---- recording Brax's evaluation points ------------------------------------------------------


class Recorder:
    """Turns Brax's callbacks into REPPO-format records: the capture hook stores the params of
    the coming evaluation point, `progress` (Brax's progress_fn) evaluates them and logs, with
    the trainer's own metrics under `metric_prefix`. FastTD3's loop calls the same two."""

    def __init__(
        self,
        *,
        evaluator: Evaluator,
        logger: MetricsLogger,
        seed: int,
        total_steps: int,
        echo: Callable[[str], None] | None,
        start: float,
        metric_prefix: str = "brax/",
    ) -> None:
        self.evaluator = evaluator
        self.logger = logger
        self.seed = seed
        self.total_steps = total_steps
        self.echo = echo
        self.start = start
        self.metric_prefix = metric_prefix
        self.factory: Callable | None = None
        self.params: Any = None
        self.records: list[dict[str, Any]] = []
        self._last_steps = 0
        self._last_time = start
        self._eval_seconds = 0.0

    def capture(self, policy_factory: Callable, params: Any) -> None:
        self.factory, self.params = policy_factory, params

    def progress(self, step: int, metrics: Mapping[str, Any]) -> None:
        # The end of an evaluation period: where a stop request stops the run.
        raise_if_stop_requested()
        step = int(step)
        if step <= 0:  # Brax's initial evaluation, before any training: REPPO has none
            return
        if self.factory is None:
            raise RuntimeError("Brax reported progress without handing over its params")
        now = time.perf_counter()
        train_seconds = now - self._last_time - self._eval_seconds
        t0 = time.perf_counter()
        report = self.evaluator.evaluate(self.factory, self.params, self.seed, step)
        self._eval_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "env_steps": step,
            "wall_time": time.perf_counter() - self.start,
            "sps": (step - self._last_steps) / max(train_seconds, 1e-9),
            **report.record(),
            **{f"{self.metric_prefix}{k}": v for k, v in metrics.items()},
        }
        if step >= self.total_steps:
            record["final"] = True
        self._last_steps, self._last_time = step, now
        clean = self.logger.log(record)
        self.records.append(clean)
        if self.echo is not None:
            self.echo(format_progress(clean, self.total_steps, clean[EVAL_RETURN]))


# ---- what every baseline run shares ----------------------------------------------------------


@dataclasses.dataclass
class BaselineResult:
    """What `train_baseline` returns: the final evaluation record and the final policy."""

    run_dir: Path
    final_record: dict[str, Any]
    records: list[dict[str, Any]]
    # params -> deterministic policy(obs, key) -> (action, extras), Brax's signature
    policy_factory: Callable
    params: Any  # final params (Brax: normalizer, policy[, value]; FastTD3: actor, obs_stats)


def baseline_versions(algo: str) -> dict[str, Any]:
    import jax

    return collect_versions({
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
        "baseline": algo,
    })


def refuse_existing(run_dir: Path) -> None:
    """A baseline never writes into a directory that holds anything (it cannot resume)."""
    check_output_directory(
        run_dir, "", advice="baseline runs cannot be resumed: pick a new --run-dir (or move "
        "this one aside to run it again from scratch)",
    )
