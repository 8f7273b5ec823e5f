"""`Policy`: a trained REPPO policy as a plain callable, NumPy in and NumPy out.

A policy is the actor's weights and the observation statistics of one seed of a run (the
`actor/...` and `obs_stats/...` arrays of a checkpoint, which both backends name the same way).
It runs in one backend (`policy.backend`), through that backend's saved-policy loader
(`reppo.jax.policy`, `reppo.torch.policy`): the network code is theirs. The native forms,
`jax_fn()` and `torch_module()`, are built from the same arrays by either loader, so both are
available whichever backend trained the run (a ManiSkill3 policy runs in torch only).

Nothing here imports JAX or torch until a policy is built.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config, ConfigError
from reppo.runs.rundir import check_output_directory

__all__ = ["Policy"]

BACKENDS = ("jax", "torch")
_POLICY_ARRAYS = ("actor/", "obs_stats/")


class ArgumentError(ConfigError, TypeError):
    """A public function of the library called with an argument of the wrong kind: a
    ConfigError (a mistake the caller fixes) that is also the TypeError Python itself would
    raise, so that code catching either keeps working."""


def as_path(value: Any, what: str) -> Path:
    """`value` as a Path, or an ArgumentError naming `what` and what it accepts."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value):
        return Path(value)
    raise ArgumentError(f"{what} must be a path (a non-empty str or pathlib.Path), got {value!r}")


def check_bool(value: Any, what: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentError(f"{what} must be True or False, got {value!r}")


def check_int(value: Any, what: str, accepted: str = "an int") -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise ArgumentError(f"{what} must be {accepted}, got {value!r}")


def unknown_arguments(
    function: str, unknown: dict[str, Any], accepted: tuple[str, ...], config_fields: bool = False
) -> ArgumentError:
    """The error for keywords `function` does not take: the first of them, the closest
    argument it does take, and all of them; with `config_fields`, a config field given to it
    is pointed to the config."""
    import dataclasses
    import difflib

    name = next(iter(unknown))
    head = f"{function}() has no argument {name!r}"
    if config_fields and name in {f.name for f in dataclasses.fields(Config)}:
        return ArgumentError(
            f"{head}: it is a config field, set in the config: reppo.preset(..., {name}=...) "
            f"or config.replace({name}=...)"
        )
    close = difflib.get_close_matches(name, accepted, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return ArgumentError(f"{head}{guess}; its arguments: {', '.join(accepted)}")


def check_torch_installed() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the torch backend needs PyTorch: pip install -e \".[torch]\" (see README for "
            "the CPU and GPU installs)"
        ) from None


def check_backend(backend: Any, what: str = "backend") -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"{what} must be one of 'jax', 'torch', got {backend!r}")
    if backend == "torch":
        check_torch_installed()
    return backend


class Policy:
    """A trained policy: `policy(obs) -> action`.

    `obs` is one observation, shape `(obs_size,)`, or a batch, shape `(N, obs_size)` (NumPy or
    anything `np.asarray` takes); the result has shape `(action_size,)` or
    `(N, action_size)`, float32, in [-1, 1]. The run's observation normalization is applied
    inside. `deterministic=True` gives the evaluation action tanh(mean) (what `reppo eval`
    scores); `deterministic=False` samples from the tanh-Gaussian, from `seed` when given (the
    same seed gives the same actions) or else from the policy's own random stream.

    Built by `reppo.load_policy` and `reppo.train` (`result.policy`); not meant to be
    constructed directly. `save(path)` keeps it for `reppo.load_policy`, `export_onnx(path)`
    writes it as `reppo export` does.
    """

    def __init__(
        self,
        config: Config,
        arrays: dict[str, Any],
        *,
        backend: str,
        seed_index: int = 0,
        env_steps: int = 0,
        checkpoint: Path | None = None,
        sizes: tuple[int, int] | None = None,
    ) -> None:
        check_backend(backend)
        if not 0 <= seed_index < config.num_seeds:
            raise ConfigError(
                f"seed_index must lie in [0, {config.num_seeds}) for a run of "
                f"{config.num_seeds} seed(s), got {seed_index}"
            )
        self.config = config
        self.backend = backend
        self.seed_index = seed_index
        self.env_steps = env_steps
        self.checkpoint = checkpoint  # None for a policy whose run was not kept
        self._sizes = sizes  # (obs_size, action_size) from the checkpoint; None: ask the env
        self._arrays = {
            name: np.asarray(value)
            for name, value in arrays.items()
            if name.startswith(_POLICY_ARRAYS)
        }
        self._jax_parts: tuple[Any, Any, Any] | None = None
        self._jitted: dict[bool, Any] = {}
        self._module: Any = None
        self._rng: Any = None  # the policy's own sampling stream, created on first use
        if backend == "jax":
            nets, _, _ = self._jax()
            self.obs_size, self.action_size = int(nets.obs_size), int(nets.action_size)
        else:
            self._module = self.torch_module()
            actor = self._module.actor
            self.obs_size, self.action_size = int(actor.obs_size), int(actor.action_size)

    def __repr__(self) -> str:
        return (
            f"Policy(env={self.config.env!r}, backend={self.backend!r}, obs_size="
            f"{self.obs_size}, action_size={self.action_size}, env_steps={self.env_steps}, "
            f"seed_index={self.seed_index})"
        )

    # ---- NumPy in, NumPy out -------------------------------------------------------------------
    def __call__(
        self, obs: Any, deterministic: bool = True, *, seed: int | None = None, **unknown: Any
    ) -> np.ndarray:
        if unknown:
            raise unknown_arguments("Policy.__call__", unknown, ("obs", "deterministic", "seed"))
        deterministic = check_bool(deterministic, "policy(obs, deterministic=...)")
        if seed is not None:
            seed = check_int(seed, "policy(obs, seed=...)", "an int or None")
        batch, single = self._as_batch(obs)
        if self.backend == "jax":
            actions = self._call_jax(batch, deterministic, seed)
        else:
            actions = self._call_torch(batch, deterministic, seed)
        actions = np.asarray(actions, dtype=np.float32)
        return actions[0] if single else actions

    def _as_batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        array = np.asarray(obs, dtype=np.float32)
        if array.ndim == 1 and array.shape[0] == self.obs_size:
            return array[None], True
        if array.ndim == 2 and array.shape[1] == self.obs_size:
            return array, False
        raise ValueError(
            f"obs must have shape ({self.obs_size},) or (N, {self.obs_size}) for "
            f"{self.config.env}, got {array.shape}"
        )

    def _call_jax(self, batch: np.ndarray, deterministic: bool, seed: int | None) -> Any:
        import jax

        if deterministic not in self._jitted:
            self._jitted[deterministic] = jax.jit(self.jax_fn(deterministic=deterministic))
        fn = self._jitted[deterministic]
        if deterministic:
            return fn(batch)
        if seed is not None:
            key = jax.random.PRNGKey(seed)
        else:
            if self._rng is None:
                self._rng = jax.random.PRNGKey(secrets.randbits(31))
            self._rng, key = jax.random.split(self._rng)
        return fn(batch, key)

    def _call_torch(self, batch: np.ndarray, deterministic: bool, seed: int | None) -> Any:
        import torch

        from reppo.torch.policy import sample_action

        with torch.no_grad():
            obs = torch.from_numpy(batch)
            if deterministic:
                return self._module(obs).numpy()
            if seed is not None:
                generator = torch.Generator().manual_seed(seed)
            else:
                if self._rng is None:
                    self._rng = torch.Generator().manual_seed(secrets.randbits(63))
                generator = self._rng
            return sample_action(self._module, obs, generator).numpy()

    # ---- saving ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this policy to the new directory `path` and return it: a run directory that
        holds the policy alone (config.json and one checkpoint of the actor and the observation
        statistics), which `reppo.load_policy(path)`, `reppo eval` and `reppo export` read like
        any run, and which cannot be resumed (it has no training state).

        The policy is saved as a one-seed policy: the seed it is (`seed_index`) of a
        several-seed run becomes seed 0, with that seed's `config.seed`. `path` must not exist
        or be an empty directory; anything else is refused and left as it is. The directory is
        written beside `path` under a temporary name and renamed into place when complete."""
        from reppo.runs import atomic_write_json, collect_versions, save_checkpoint
        from reppo.runs.checkpoint import POLICY_ONLY
        from reppo.runs.rundir import CONFIG_FILE, VERSIONS_FILE

        path = as_path(path, "Policy.save: path")
        self._check_new_directory(path)
        index = self.seed_index
        config = self.config.replace(num_seeds=1, seed=self.config.seed + index)
        arrays = {name: value[index:index + 1] for name, value in self._arrays.items()}
        metadata = {
            "backend": config.backend,  # the backend that trained it, as in a run's checkpoints
            "env_steps": self.env_steps,
            "num_seeds": 1,
            "obs_size": self.obs_size,
            "action_size": self.action_size,
            "config": config.to_dict(),
            POLICY_ONLY: True,
        }
        # A name no one else uses, made with os.mkdir so that the directory gets the mode the
        # umask gives (tempfile.mkdtemp's would be 0700 once renamed into place).
        partial = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.mkdir()
            atomic_write_json(partial / CONFIG_FILE, config.to_dict())
            atomic_write_json(partial / VERSIONS_FILE, collect_versions())
            save_checkpoint(partial, self.env_steps, arrays, metadata, keep=1)
            # rename() replaces only a missing path or an empty directory, so a directory
            # filled in the meantime is never replaced.
            os.rename(partial, path)
        except OSError as err:
            raise ConfigError(
                f"Policy.save: cannot write {path} ({err.strerror or err}); nothing was written "
                "there: check that it is still new and that its directory is writable"
            ) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return path

    @staticmethod
    def _check_new_directory(path: Path) -> None:
        check_output_directory(
            path, "Policy.save:", error=ConfigError,
            advice="a policy is saved into a new or empty directory: pick another path, or "
            "delete it first",
        )

    def export_onnx(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write this policy as an ONNX graph to `path`, a new file: the file `reppo export
        --onnx` writes for the same policy (its normalization included, the same metadata),
        checked the same way against the torch policy with onnxruntime before it is written.
        Returns what was checked (`path`, `obs_size`, `action_size`, `max_abs_error`, the
        file's `metadata`, ...). Needs PyTorch, onnx and onnxruntime (the export extra)."""
        import tempfile

        path = as_path(path, "Policy.export_onnx: path")
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"Policy.export_onnx: {path} already exists; pick another path or delete it "
                "first"
            )
        check_torch_installed()
        from reppo.runs.outputs import check_output_path
        from reppo.torch.export import export_onnx

        # Before the slow part: a missing, read-only or full directory.
        check_output_path(path, "Policy.export_onnx:")
        # The exporter reads a run directory: these arrays, saved as one (the policy's own
        # run may have moved on, or never been kept).
        with tempfile.TemporaryDirectory(prefix="reppo-export-") as tmp:
            report = export_onnx(self.save(Path(tmp) / "policy"), path)
        report["checkpoint"] = None if self.checkpoint is None else str(self.checkpoint)
        return report

    # ---- native forms --------------------------------------------------------------------------
    def jax_fn(self, deterministic: bool = True):
        """The policy as a pure, jittable JAX function, with the normalization built in:
        `(obs) -> action` (deterministic), or `(obs, key) -> action` with
        `deterministic=False`. `obs` has shape (..., obs_size). Needs JAX, and a Playground
        task (ManiSkill3 policies run in torch only)."""
        from reppo.jax.policy import act_deterministic, act_stochastic

        nets, actor, stats = self._jax()
        config = self.config
        if deterministic:
            return lambda obs: act_deterministic(nets, config, actor, stats, obs)
        return lambda obs, key: act_stochastic(nets, config, actor, stats, obs, key)

    def torch_module(self):
        """A new `torch.nn.Module` (on the CPU, in eval mode): `forward(obs) -> action`, the
        deterministic policy tanh(mean) with the normalization as buffers (the module that
        `reppo export --onnx` exports). Needs PyTorch."""
        check_torch_installed()
        from reppo.torch.policy import policy_from_arrays

        metadata = {} if self._sizes is None else dict(
            zip(("obs_size", "action_size"), self._sizes, strict=True)
        )
        saved = policy_from_arrays(self.config, self._arrays, self._where(), metadata)
        return saved.policies[self.seed_index]

    # ---- building ------------------------------------------------------------------------------
    def _where(self) -> Path:
        return self.checkpoint if self.checkpoint is not None else Path("<in-memory policy>")

    def _jax(self) -> tuple[Any, Any, Any]:
        """(networks, actor params, observation statistics) of this policy's seed."""
        if self._jax_parts is None:
            import jax

            from reppo.envs import WrongBackendError
            from reppo.jax.policy import policy_from_arrays

            try:
                saved = policy_from_arrays(
                    self.config, self._arrays, self._where(), sizes=self._sizes
                )
            except WrongBackendError:
                raise ConfigError(
                    f"{self.config.env} is a ManiSkill3 task: its policy runs in torch only "
                    "(load_policy(run_dir, backend='torch'), policy.torch_module())"
                ) from None
            pick = lambda tree: jax.tree_util.tree_map(lambda x: x[self.seed_index], tree)
            self._jax_parts = (saved.nets, pick(saved.actor), pick(saved.obs_stats))
        return self._jax_parts
