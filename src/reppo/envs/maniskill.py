"""ManiSkill3 tasks as a `TorchVecEnv` (torch backend; see `reppo.envs.contract`).

Observations are ManiSkill's flat state vectors (`obs_mode="state"`); rewards come from its
`normalized_dense` reward mode (each task's dense reward divided by its maximum, so every step's
reward lies in [0, 1], a success step typically earning 1); actions drive the task's default
controller (`pd_joint_delta_pos` for every task here, whose action space is already [-1, 1];
other bounds would be mapped affinely from [-1, 1]).

Simulators: with CUDA (device "auto" or "cuda"), one GPU-simulated instance
(`sim_backend="physx_cuda"`) holds all `num_envs` envs and tensors stay on the GPU. Otherwise
the CPU simulator, which holds one env per instance, runs `num_envs` instances stepped in turn in
this process, with tensors on the CPU.

Episode boundaries follow the contract, not ManiSkill's own vector wrapper (whose
`terminated` and `truncated` can both be set at the time limit, and whose `info["success"]`
after an auto-reset describes the new episode): in training mode an env ends when ManiSkill
reports a termination (success, or failure for tasks that define one) or when
`spec.episode_length` steps have passed without one; ended envs alone are reset, and
`TorchStep.final_obs` keeps the observation they reached. In evaluation mode terminations are
ignored and no env is reset before the time limit, which ends all of them at the same step.

Every reset is seeded from a generator that `reset(seed)` re-seeds, so a run is reproducible
given the actions. `mani_skill`, `gymnasium` and `torch` are imported inside the functions:
importing this module is cheap and works without them.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING, Any

import numpy as np

from reppo.envs.catalog import ASSET_TASKS, MANISKILL_TASKS  # noqa: F401 (re-exported)
from reppo.envs.contract import EnvSpec, TorchStep

if TYPE_CHECKING:
    import torch

REWARD_MODE = "normalized_dense"
_REWARD_RANGE = (0.0, 1.0)
_INSTALL_HINT = (
    "install torch first (CPU: pip install torch --index-url "
    'https://download.pytorch.org/whl/cpu), then pip install -e ".[maniskill]"'
)
_SEED_BOUND = 2**31 - 1  # ManiSkill seeds numpy RandomStates, which take 32-bit seeds


class ManiSkillError(RuntimeError):
    """ManiSkill cannot run here; the message says what to do."""


def _check_name(name: str) -> None:
    if name not in MANISKILL_TASKS:
        close = difflib.get_close_matches(name, MANISKILL_TASKS, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ManiSkillError(
            f"Unknown ManiSkill task {name!r}.{hint} Valid names: {', '.join(MANISKILL_TASKS)}"
        )


def _import_gym() -> Any:
    """gymnasium, with the ManiSkill tasks registered."""
    try:
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the tasks)
    except (ImportError, OSError) as e:
        raise ManiSkillError(
            f"ManiSkill is not installed or fails to import ({type(e).__name__}: {e}); "
            f"{_INSTALL_HINT}."
        ) from e
    return gym


_VULKAN_PROBLEM: list[str | None] = []  # cached result of `_vulkan_problem`


def _vulkan_problem() -> str | None:
    """None if SAPIEN finds a Vulkan device, else why not (checked once per process)."""
    if not _VULKAN_PROBLEM:
        import sapien

        try:
            sapien.render.RenderSystem()
        except RuntimeError as e:
            _VULKAN_PROBLEM.append(str(e) or type(e).__name__)
        else:
            _VULKAN_PROBLEM.append(None)
    return _VULKAN_PROBLEM[0]


def _vulkan_error(problem: str) -> ManiSkillError:
    return ManiSkillError(
        f"No usable Vulkan driver for ManiSkill's simulator SAPIEN ({problem}); it needs one "
        "even for state observations. Run scripts/install-system-deps.sh as root (on Debian "
        "bookworm: Mesa 25 lavapipe from bookworm-backports), or install the NVIDIA driver."
    )


def check_maniskill() -> None:
    """Raise `ManiSkillError` unless ManiSkill imports and finds a Vulkan device (a few s)."""
    _import_gym()
    problem = _vulkan_problem()
    if problem is not None:
        raise _vulkan_error(problem)


def _check_assets(name: str) -> None:
    """Fail fast where ManiSkill would prompt on stdin to download assets (then exit)."""
    from mani_skill.utils import assets
    from mani_skill.utils.registration import REGISTERED_ENVS

    missing = []
    for group in REGISTERED_ENVS[name].asset_download_ids or []:
        ids = (
            assets.expand_data_group_into_individual_data_source_ids(group)
            if group in assets.DATA_GROUPS
            else [group]
        )
        missing += [i for i in ids if not assets.is_data_source_downloaded(i)]
    if missing:
        from mani_skill import ASSET_DIR

        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(missing[:3]) + more

        raise ManiSkillError(
            f"{name} needs ManiSkill assets that are not downloaded ({shown}, looked for under "
            f"{ASSET_DIR}; MS_ASSET_DIR moves it). Download them once, with network access: "
            f"python -m mani_skill.utils.download_asset {name} -y"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ManiSkillError(f"device {str(device)!r} asked for, but torch finds no CUDA device.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and dev.index is None:  # tensors report an indexed device
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def make_raw_env(name: str, num_envs: int, device: torch.device) -> Any:
    """An unwrapped ManiSkill env (`BaseEnv`) with `num_envs` envs simulated on `device`."""
    gym = _import_gym()
    _check_assets(name)
    sim_backend = "physx_cpu" if device.type == "cpu" else f"physx_cuda:{device.index}"
    try:
        env = gym.make(
            name,
            num_envs=num_envs,
            obs_mode="state",
            reward_mode=REWARD_MODE,
            sim_backend=sim_backend,
            render_backend="none",  # state only (SAPIEN still needs a Vulkan device)
        )
    except RuntimeError as e:
        problem = _vulkan_problem()
        if problem is not None:
            raise _vulkan_error(problem) from e
        raise
    # Our own time limit and auto-reset replace ManiSkill's wrappers.
    return env.unwrapped


_SPECS: dict[str, EnvSpec] = {}  # per task, with the task's own episode length


def _spec_of(name: str, raw: Any) -> EnvSpec:
    if name not in _SPECS:
        from mani_skill.utils.registration import REGISTERED_ENVS

        _SPECS[name] = EnvSpec(
            name=name,
            obs_size=int(raw.single_observation_space.shape[-1]),
            action_size=int(raw.single_action_space.shape[-1]),
            episode_length=int(REGISTERED_ENVS[name].max_episode_steps),
            reward_range=_REWARD_RANGE,
            family="maniskill",
        )
    return _SPECS[name]


def _with_length(spec: EnvSpec, episode_length: int | None) -> EnvSpec:
    if episode_length is None:
        return spec
    if isinstance(episode_length, bool) or not isinstance(episode_length, int):
        raise ValueError(f"episode_length must be an integer >= 1, got {episode_length!r}")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    return dataclasses.replace(spec, episode_length=episode_length)


def maniskill_spec(name: str, episode_length: int | None = None) -> EnvSpec:
    """The static facts of ManiSkill task `name` (cached; the first call builds one env, ~1 s).

    `episode_length` None keeps the task's registered `max_episode_steps` (50 for PickCube-v1).
    Rewards are ManiSkill's `normalized_dense` ones, so `reward_range` is (0, 1).
    """
    _check_name(name)
    if name not in _SPECS:
        _import_gym()
        from sapien import physx

        # Once the GPU simulator is on in this process, build on it (as make_maniskill_env does).
        device = resolve_device("cuda" if physx.is_gpu_enabled() else "cpu")
        raw = make_raw_env(name, 1, device)
        try:
            _spec_of(name, raw)
        finally:
            raw.close()
    return _with_length(_SPECS[name], episode_length)


class ManiSkillVecEnv:
    """`num_envs` ManiSkill envs of one task behind the `TorchVecEnv` contract.

    Build it with `make_maniskill_env`. `inner_envs` are the ManiSkill `BaseEnv`s: one holding
    all envs on the GPU simulator, or one per env on the CPU simulator.
    """

    def __init__(
        self,
        name: str,
        num_envs: int,
        *,
        seed: int = 0,
        evaluation: bool = False,
        device: str | torch.device = "auto",
        episode_length: int | None = None,
    ) -> None:
        import torch

        _check_name(name)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.num_envs = num_envs
        self.evaluation = bool(evaluation)
        self.device = resolve_device(device)
        self._gpu = self.device.type == "cuda"
        self.inner_envs: list[Any] = []
        try:
            if self._gpu:
                self.inner_envs.append(make_raw_env(name, num_envs, self.device))
            else:
                for _ in range(num_envs):
                    self.inner_envs.append(make_raw_env(name, 1, self.device))
        except BaseException:
            self.close()
            raise
        raw = self.inner_envs[0]
        self.spec = _with_length(_spec_of(name, raw), episode_length)

        space = raw.single_action_space
        low = torch.as_tensor(np.asarray(space.low), dtype=torch.float32, device=self.device)
        high = torch.as_tensor(np.asarray(space.high), dtype=torch.float32, device=self.device)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ManiSkillError(f"{name}: unbounded action space {space}; cannot map [-1, 1].")
        self._identity_actions = bool((low == -1).all() and (high == 1).all())
        self._act_mid, self._act_half = (high + low) / 2, (high - low) / 2

        self._steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._rng = np.random.default_rng(seed)
        self._ready = False
        self.reset(seed)

    # ---- the contract ------------------------------------------------------------------------

    def reset(self, seed: int) -> torch.Tensor:
        """Start new episodes in every env; `seed` fixes them and all later auto-resets."""
        import torch

        self._rng = np.random.default_rng(seed)
        obs = self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        self._steps.zero_()
        self._ready = True
        return obs

    def stagger(self, seed: int) -> None:
        """Spread the step counters of the fresh batch over [0, episode_length) (training).

        ManiSkill's observations do not depend on our counter, so each env's first episode is
        a genuine one cut short at a different step; from then on the envs' episodes no longer
        end together.
        """
        import torch

        if self.evaluation:
            raise RuntimeError("evaluation envs are never staggered")
        rng = np.random.default_rng([seed, 1])
        steps = rng.integers(0, self.spec.episode_length, size=self.num_envs)
        self._steps = torch.as_tensor(steps, dtype=torch.int64, device=self.device)

    def step(self, action: torch.Tensor) -> TorchStep:
        import torch

        if not self._ready:
            raise RuntimeError("ManiSkillVecEnv.step called before reset (or after close)")
        shape = (self.num_envs, self.spec.action_size)
        if tuple(action.shape) != shape:
            raise ValueError(f"action must have shape {shape}, got {tuple(action.shape)}")
        action = action.detach().to(self.device, torch.float32).clamp(-1.0, 1.0)
        if not self._identity_actions:
            action = self._act_mid + self._act_half * action

        obs, reward, terminated, success = self._sim_step(action)
        self._steps += 1

        # Physics that blew up ends the episode (as in the JAX contract) and is reset. No
        # branching on it: `ended.any()` below is the one host sync per step.
        bad = ~(torch.isfinite(obs).all(-1) & torch.isfinite(reward))
        obs = torch.where(bad[:, None], torch.nan_to_num(obs, 0.0, 0.0, 0.0), obs)
        reward = torch.where(bad, torch.zeros_like(reward), reward)
        terminated = bad if self.evaluation else terminated | bad
        truncated = (self._steps >= self.spec.episode_length) & ~terminated
        ended = terminated | truncated

        next_obs = obs
        if ended.any():
            reset_obs = self._reset_envs(ended)
            next_obs = torch.where(ended[:, None], reset_obs, obs)
            self._steps = torch.where(ended, torch.zeros_like(self._steps), self._steps)
        return TorchStep(
            obs=next_obs,
            reward=reward,
            terminated=terminated.float(),
            truncated=truncated.float(),
            final_obs=obs,
            success=success,
        )

    def close(self) -> None:
        self._ready = False
        envs, self.inner_envs = self.inner_envs, []
        for env in envs:
            env.close()

    def __enter__(self) -> ManiSkillVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- simulator plumbing --------------------------------------------------------------------

    def _seeds(self, n: int) -> list[int]:
        return [int(s) for s in self._rng.integers(0, _SEED_BOUND, size=n)]

    def _sim_step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """obs (float32), reward (float32), ManiSkill's termination (bool), success (bool)."""
        import torch

        if self._gpu:
            obs, reward, terminated, _, info = self.inner_envs[0].step(action)
            success = info.get("success")
        else:
            outs = [env.step(action[i : i + 1]) for i, env in enumerate(self.inner_envs)]
            obs = torch.cat([o[0] for o in outs])
            reward = torch.cat([o[1].reshape(1) for o in outs])
            terminated = torch.cat([o[2].reshape(1) for o in outs])
            has_success = "success" in outs[0][4]
            success = torch.cat([o[4]["success"].reshape(1) for o in outs]) if has_success else None
        if success is not None:
            success = success.to(torch.bool).reshape(self.num_envs).clone()
        obs = obs.to(torch.float32).reshape(self.num_envs, -1)
        reward = reward.to(torch.float32).reshape(self.num_envs)
        return obs, reward, terminated.to(torch.bool).reshape(self.num_envs), success

    def _reset_envs(self, mask: torch.Tensor) -> torch.Tensor:
        """Reset the envs in `mask`, seeded from `self._rng`; the observations of all envs
        (rows outside `mask` are meaningless)."""
        import torch

        if not self._gpu:
            rows = []
            for i, env in enumerate(self.inner_envs):
                if mask[i]:
                    obs, _ = env.reset(seed=self._seeds(1)[0])
                    rows.append(obs.reshape(1, -1))
                else:
                    rows.append(torch.zeros(1, self.spec.obs_size))
            return torch.cat(rows).to(torch.float32)
        raw = self.inner_envs[0]
        if bool(mask.all()):
            obs, _ = raw.reset(seed=self._seeds(self.num_envs))
        else:
            # Unseeded partial resets draw from torch's global generator: fork and seed it.
            cuda = [self.device.index] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self._seeds(1)[0])
                env_idx = torch.nonzero(mask).reshape(-1)
                obs, _ = raw.reset(options={"env_idx": env_idx})
        return obs.to(torch.float32).reshape(self.num_envs, -1)


def make_maniskill_env(
    name: str,
    num_envs: int,
    *,
    seed: int = 0,
    evaluation: bool = False,
    device: str | torch.device = "auto",
    episode_length: int | None = None,
) -> ManiSkillVecEnv:
    """A batch of `num_envs` ManiSkill envs `name`, reset with `seed` and ready to step.

    `device`: "auto" (the GPU simulator when torch sees CUDA, else the CPU one), "cuda[:k]" or
    "cpu". `evaluation=True` ignores terminations and never resets an env before
    `spec.episode_length` steps. `episode_length` None keeps the task's own time limit.
    Raises `ManiSkillError` (missing package, Vulkan driver or assets; unknown task).
    """
    return ManiSkillVecEnv(
        name,
        num_envs,
        seed=seed,
        evaluation=evaluation,
        device=device,
        episode_length=episode_length,
    )
