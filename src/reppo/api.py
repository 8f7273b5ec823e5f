"""reppo as a library: `preset`, `train`, `load_policy` (docs/api.md).

The same runs as the `reppo` command line, driven from Python: `train` is the CLI's training
loop (`reppo.loop.runner.train`) with callbacks on every metrics record and an in-memory mode
that leaves no files behind, and every run it returns carries its trained `Policy`.

Nothing here imports JAX or torch at import time; they are imported when a run starts or a
policy is built.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.config import Config, ConfigError
from reppo.loop.callbacks import Callback, StopTraining
from reppo.loop.seam import TrainResult as _LoopResult
from reppo.policy import (
    ArgumentError,
    Policy,
    as_path,
    check_backend,
    check_bool,
    check_int,
    unknown_arguments,
)

__all__ = ["StopTraining", "TrainResult", "load_policy", "preset", "run_training", "train"]


@dataclass
class TrainResult(_LoopResult):
    """What `reppo.train` returns: the loop's result (`reppo.loop.seam.TrainResult`) and the
    trained policy.

    - `eval_return_mean` (property), `eval_returns` (num_seeds, episodes): the last
      evaluation, which a finished run makes at its end (None / nan if none was made).
    - `history`: every metrics record of this call, as logged to metrics.jsonl.
    - `env_steps`, `iterations`, `wall_time`, `sps`, `compile_seconds`.
    - `interrupted`: stopped early (a callback, Ctrl-C or SIGTERM) with a checkpoint;
      `stop_signal` names the signal (None for a callback).
    - `run_dir`: the run directory, None for a run trained without one.
    - `policy`: the policy of the run's last checkpoint (seed 0), None when the run stopped
      before it wrote one.
    """

    policy: Policy | None = None


def preset(
    name: str = "auto", *, env: str | None = None, backend: str = "jax", **overrides: Any
) -> Config:
    """A validated `Config`: the named preset (`reppo train --preset`), with its per-task
    settings for `env`, for `backend`, with `overrides` (config fields) applied on top.

    `name` "auto" is `cpu` when the backend sees no GPU, else `paper` (for a ManiSkill3 task
    `maniskill-cpu` or `maniskill`); a path ending in .json is a preset file
    (`reppo.preset_files`, e.g. the best.json of `reppo tune`). `env` None keeps the
    preset's task. An unknown preset, an unknown field or a bad value raises ConfigError with
    the command line's message.
    """
    from reppo.presets import get_preset, resolve_preset_name

    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ArgumentError(
            f"preset: name must be a preset name (a str such as 'cpu', 'paper' or 'auto') or "
            f"the path of a preset file (.json), got {name!r}"
        )
    if env is not None:
        env = _env_name(env, "preset")
    check_backend(backend)
    join_jax_processes(backend)
    resolved = resolve_preset_name(name, backend=backend, env=env)
    if env is None:
        env = get_preset(resolved, backend=backend).env
    config = get_preset(resolved, backend=backend, env=env)
    return config.replace(backend=backend, **overrides).validated()


def join_jax_processes(backend: str) -> None:
    """A multi-process JAX run's processes meet before anything asks JAX for its devices
    (choosing the preset does); nothing happens unless the environment describes such a run
    (`reppo.jax.multihost.join_processes`)."""
    if backend != "torch":
        from reppo.jax.multihost import join_processes

        join_processes()


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, as the CLI uses it (`REPPO_JAX_CACHE`), unless the
    program has chosen its own cache directory."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    from reppo.compile_cache import enable_compilation_cache

    enable_compilation_cache()


def _resume_config(config: Config | None, run_dir: Path) -> Config:
    """The config a resumed run continues with (`RunDir.resumed_config`: its own, or `config`
    where that changes only what a resumed run may change)."""
    from reppo.runs import RunDir

    return RunDir(run_dir).resumed_config(config)


def _policy_of_run(run_dir: Path, backend: str, keep_path: bool) -> Policy | None:
    from reppo.runs import latest_checkpoint, load_run_checkpoint, policy_sizes

    if latest_checkpoint(run_dir) is None:
        return None
    saved_config, path, arrays, metadata = load_run_checkpoint(run_dir)
    return Policy(
        Config.from_dict(saved_config), arrays, backend=backend,
        env_steps=int(metadata.get("env_steps", 0)), checkpoint=path if keep_path else None,
        sizes=policy_sizes(metadata),
    )


def _check_env(config: Config) -> None:
    """Unknown or broken envs fail here, before a run directory is made or anything compiles."""
    if config.backend == "torch":
        from reppo.envs.torch_registry import torch_env_spec

        torch_env_spec(config.env, impl=config.impl)
    else:
        from reppo.envs import env_spec

        env_spec(config.env, impl=config.impl)


def _quiet(line: str) -> None:
    del line


def run_training(
    config: Config,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    echo: Callable[[str], None] = lambda line: None,
    shown_as: str | None = None,
) -> _LoopResult:
    """The training run behind both `reppo.train` and `reppo train`: checks `config` (and, with
    `resume`, that it changes only what a resumed run may) and runs the loop
    (`reppo.loop.runner.train`) in `run_dir`, which checks the run directory and then calls back
    here to check the env, prepare the backend and the compilation cache and print the run's
    header line through `echo` (`shown_as` names `run_dir` in it). Ctrl-C and SIGTERM stop the
    run from the start of this call. Returns the loop's result, without a policy."""
    from reppo.runs.signals import start_up_signals

    # Ctrl-C and SIGTERM stop the run from here on: the env check can take a while, and a
    # KeyboardInterrupt raised inside JAX there may be dropped.
    with start_up_signals(echo) as stop:
        return _run_training(config, run_dir, resume=resume, callbacks=callbacks, echo=echo,
                             shown_as=shown_as, stop=stop)


def _run_training(
    config: Config,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool,
    callbacks: Sequence[Callback],
    echo: Callable[[str], None],
    shown_as: str | None,
    stop: Any,
) -> _LoopResult:
    from reppo.loop import runner as training

    if resume:
        config = _resume_config(config, Path(run_dir))
    config = config.validated()
    check_backend(config.backend, "config.backend")
    if config.backend == "torch":
        # JAX (which runs Playground for torch runs) would otherwise take most of the GPU.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # First: a multi-process JAX run's processes must meet before JAX starts its backends,
    # which checking the env does.
    from reppo.loop.processes import launched_processes

    if launched_processes(config).index > 0:
        echo = _quiet  # process 0 of a several-process launch reports the run
        stop.on_first = _quiet

    def setup() -> None:
        # After the loop's quick checks (a fresh run's directory free and writable, a resumed
        # run's checkpoint), which should not wait for the env's.
        if stop.requested:
            return  # the loop stops the run before building anything
        _check_env(config)
        _enable_compilation_cache()
        steps = config.num_iterations * config.steps_per_iteration
        rounded = (
            f" ({config.total_steps:,} rounded up to {config.num_iterations} whole iterations)"
            if steps != config.total_steps else ""
        )
        echo(f"REPPO ({config.backend}) on {config.env}: {steps:,} env steps{rounded} x "
             f"{config.num_seeds} seed(s), {config.num_envs} envs x {config.num_steps} steps "
             f"per iteration -> {shown_as or run_dir}")

    return training.train(config, Path(run_dir), resume=resume, echo=echo,
                          callbacks=tuple(callbacks), setup=setup)


def _env_name(env: Any, function: str = "train") -> str:
    """The task `train(env=...)` names: a name, or the registration `reppo.register_env`
    returned (what a 'module:Name' resolves to)."""
    from reppo.envs.user import RegisteredEnv, lookup

    if isinstance(env, str) and env:
        return env
    if isinstance(env, RegisteredEnv):
        if lookup(env.name) is not env:
            raise ConfigError(
                f"env: {env.name!r} is no longer registered as the entry given (it was "
                "replaced or unregistered); register it again, or pass the name itself"
            )
        return env.name
    looks_like_an_env = callable(env) or (hasattr(env, "reset") and hasattr(env, "step"))
    if not looks_like_an_env:
        raise ArgumentError(
            f"{function}: env must be a task name (a str such as 'CartpoleBalance' or "
            f"'my_envs:Maze'), a registration from reppo.register_env, or None; got {env!r}"
        )
    # An env object cannot make a run: the run builds its env from a factory several times
    # (the training batch, the evaluation batch) and records the env's name so that it can be
    # rebuilt later, in this process or another (load_policy, eval, resume, report).
    kind = f"the class {env.__name__}" if isinstance(env, type) else (
        f"a {type(env).__name__} object"
    )
    raise ArgumentError(
        f"{function}(env=...) takes a task name, not {kind}: a run builds its env from a name "
        "(several batches of it) and records that name, so that load_policy, `reppo eval` and "
        "resuming can rebuild it; register yours and pass its name: reppo.register_env("
        "'MyEnv', make_env, episode_length=T, reward_range=(low, high)), make_env() returning "
        "one new env (backend='torch' for a gymnasium.Env), then train(config, env='MyEnv') "
        "(docs/envs.md)"
    )


_TRAIN_ARGUMENTS = ("config", "run_dir", "env", "resume", "callbacks", "echo")


def _check_train_arguments(
    config: Any, run_dir: Any, resume: Any, callbacks: Any, echo: Any
) -> tuple[Callback, ...]:
    """`train`'s arguments checked before anything runs (a callback that is not callable
    would otherwise fail at the first record, after the compilation); its callbacks."""
    resume = check_bool(resume, "train: resume")
    if not isinstance(config, Config) and not (resume and config is None):
        allowed = "a reppo.Config (reppo.preset(...))" + (", or None" if resume else "")
        raise ArgumentError(f"train: config must be {allowed}, got {type(config).__name__}")
    if run_dir is not None:
        as_path(run_dir, "train: run_dir (or None for a run kept in memory)")
    if echo is not None and not callable(echo):
        raise ArgumentError(
            f"train: echo must be None (print nothing) or a callable taking each line, such as "
            f"print; got {echo!r}"
        )
    if callable(callbacks):
        return (callbacks,)
    if not isinstance(callbacks, (list, tuple)) or not all(callable(c) for c in callbacks):
        raise ArgumentError(
            "train: callbacks must be a callable or a list of callables, each called with every "
            f"metrics record; got {callbacks!r}"
        )
    return tuple(callbacks)


def train(
    config: Config | None,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    env: str | Any | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] | Callback = (),
    echo: Callable[[str], None] | None = None,
    **unknown: Any,
) -> TrainResult:
    """Train a run (or, with `resume=True`, continue the run in `run_dir`) and return its
    result, with the trained policy as `result.policy`.

    `run_dir` None trains in a temporary directory that is removed before `train` returns:
    its checkpoints exist only during the call and nothing is left on disk (nor can the run be
    resumed). A `run_dir` is a run directory exactly as `reppo train --run-dir` writes it.
    With `resume=True`, `config` None continues with the run's own config; a config may
    change only what `reppo train --resume` may (the budget, logging, cadences).

    `env` None trains on `config.env`; a task name, or the registration that
    `reppo.register_env` returned, trains on that env instead (`config.replace(env=...)`, so
    without a preset's per-task settings: `reppo.preset(env=...)` has those). An env object is
    refused: register it and pass its name.

    Each callback is called with every metrics record (the dict logged to metrics.jsonl: see
    docs/algorithm.md). Returning True or raising `reppo.StopTraining` stops the run at that
    record: a checkpoint is saved and `result.interrupted` is True. `echo` None prints
    nothing; a callable receives each progress line. Ctrl-C stops the run as with the CLI.
    """
    if unknown:
        raise unknown_arguments("train", unknown, _TRAIN_ARGUMENTS, config_fields=True)
    callbacks = _check_train_arguments(config, run_dir, resume, callbacks, echo)
    if resume:
        if run_dir is None:
            raise ConfigError("resume=True needs the run_dir of the run to continue")
        if config is None:
            config = _resume_config(None, Path(run_dir))
    if env is not None:
        config = config.replace(env=_env_name(env))
    say = echo if echo is not None else (lambda line: None)

    def run(path: Path, keep: bool) -> TrainResult:
        result = run_training(
            config, path, resume=resume, callbacks=callbacks, echo=say,
            shown_as=None if keep else "a temporary directory",
        )
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(_LoopResult)}
        policy = _policy_of_run(path, config.backend, keep) if path.is_dir() else None
        if not keep:
            fields["run_dir"] = None
        return TrainResult(**fields, policy=policy)

    if run_dir is not None:
        return run(Path(run_dir), keep=True)
    with tempfile.TemporaryDirectory(prefix="reppo-") as tmp:
        return run(Path(tmp) / "run", keep=False)


def load_policy(
    run_dir: str | os.PathLike[str],
    *,
    backend: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    seed_index: int = 0,
    **unknown: Any,
) -> Policy:
    """The policy saved in a run directory: its latest checkpoint, or `checkpoint` (a file of
    the run, RUN_DIR/checkpoints/ckpt_<step>.safetensors), as `reppo eval` loads it.

    `backend` None runs it in the backend that trained it; "jax" or "torch" runs it in that
    one (both read either's checkpoints; a ManiSkill3 run loads in torch only). `seed_index`
    picks the seed of a `num_seeds` run. Errors are those of `reppo eval`: a missing run or
    checkpoint, or a config.json that does not match the checkpoint, is a CheckpointError or
    RunDirError naming the fix.
    """
    from reppo.runs import load_run_checkpoint, policy_sizes

    if unknown:
        raise unknown_arguments(
            "load_policy", unknown, ("run_dir", "backend", "checkpoint", "seed_index")
        )
    run_dir = as_path(run_dir, "load_policy: run_dir")
    if checkpoint is not None:
        checkpoint = as_path(checkpoint, "load_policy: checkpoint (or None for the latest)")
    seed_index = check_int(seed_index, "load_policy: seed_index")
    saved_config, path, arrays, metadata = load_run_checkpoint(run_dir, checkpoint)
    config = Config.from_dict(saved_config)
    backend = check_backend(backend if backend is not None else config.backend)
    return Policy(
        config, arrays, backend=backend, seed_index=seed_index,
        env_steps=int(metadata.get("env_steps", 0)), checkpoint=path,
        sizes=policy_sizes(metadata),
    )
