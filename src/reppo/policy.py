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

import secrets
from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config, ConfigError

__all__ = ["Policy"]

BACKENDS = ("jax", "torch")
_POLICY_ARRAYS = ("actor/", "obs_stats/")


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
    constructed directly.
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
        self, obs: Any, deterministic: bool = True, *, seed: int | None = None
    ) -> np.ndarray:
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
