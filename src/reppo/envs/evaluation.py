"""Evaluation of a policy (deterministic or sampled actions), and videos of one episode."""

from __future__ import annotations

import errno
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from reppo.envs.autoreset import AutoResetVecEnv, flat_obs
from reppo.envs.eval_seed import eval_seed
from reppo.errors import UserError

Policy = Callable[[jax.Array], jax.Array]
StochasticPolicy = Callable[[jax.Array, jax.Array], jax.Array]  # (obs, step key) -> action


class EvalResult(NamedTuple):
    returns: jax.Array  # (num_envs,) float32 undiscounted return of each env's first episode
    lengths: jax.Array  # (num_envs,) int32 steps of that episode


def _episodes(
    env: AutoResetVecEnv,
    act: Callable[[jax.Array, jax.Array | None], jax.Array],
    key: jax.Array,
    step_keys: jax.Array | None,
) -> EvalResult:
    """The first episode of every env, reset with `key`; `act(obs, step_keys[t])` at step t
    (`act(obs, None)` when `step_keys` is None)."""

    def body(carry: tuple, step_key: jax.Array | None) -> tuple[tuple, None]:
        state, returns, lengths, running = carry
        # Only each env's first episode counts: ended envs need no new one.
        state, out = env.step(state, act(state.obs, step_key), autoreset=False)
        returns = returns + running * out.reward
        lengths = lengths + running.astype(jnp.int32)
        ended = jnp.maximum(out.terminated, out.truncated)
        return (state, returns, lengths, running * (1.0 - ended)), None

    n = env.num_envs
    init = (env.reset(key), jnp.zeros(n, jnp.float32), jnp.zeros(n, jnp.int32), jnp.ones(n))
    (_, returns, lengths, _), _ = jax.lax.scan(
        body, init, step_keys, length=env.spec.episode_length
    )
    return EvalResult(returns=returns, lengths=lengths)


def eval_key(seed: int, env_steps: int) -> jax.Array:
    """The key that resets the evaluation envs at `env_steps` of a run with `seed`
    (`reppo.envs.eval_seed.eval_seed`: the same initial states for every evaluator)."""
    return jax.random.PRNGKey(eval_seed(seed, env_steps))


def evaluate(env: AutoResetVecEnv, act: Policy, key: jax.Array) -> EvalResult:
    """Run one episode in each of `env.num_envs` envs with the deterministic policy `act`.

    `act` maps a (num_envs, obs_size) batch of observations to (num_envs, action_size)
    actions. Every episode ends within `spec.episode_length` steps (the time limit), so a scan
    of exactly that many steps finishes all of them; rewards after an env's first end belong to
    a new episode and are masked out. Pure and jittable (close over `env` and `act`); vmap it
    over keys for several seeds.
    """
    return _episodes(env, lambda obs, _: act(obs), key, None)


# Action-sampling keys of `evaluate_stochastic` come from their own stream of the eval key.
_ACTION_STREAM = 0xAC7


def evaluate_stochastic(
    env: AutoResetVecEnv, act: StochasticPolicy, key: jax.Array
) -> EvalResult:
    """`evaluate` with a stochastic policy `act(obs, step_key)`, given a fresh key each step.

    The envs are reset with `key` exactly as `evaluate` resets them, so with the same `key`
    both run from the same initial states; the step keys are derived from `key` with
    `jax.random.fold_in` on a separate stream and never reach the env.
    """
    return _episodes(env, act, key, action_keys(key, env.spec.episode_length))


def action_keys(key: jax.Array, num_steps: int) -> jax.Array:
    """The action-sampling keys of `num_steps` steps of an evaluation reset with `key`: one
    per step, from their own stream of `key`, so that they never reach the env."""
    return jax.random.split(jax.random.fold_in(key, _ACTION_STREAM), num_steps)


# ---- videos ------------------------------------------------------------------------------------

# What MuJoCo needs to draw a frame (mirrors mujoco_playground's `render_array`).
_RENDER_FIELDS = ("qpos", "qvel", "mocap_pos", "mocap_quat", "xfrc_applied")
_FALLBACK_GL = ("egl", "osmesa")  # headless backends tried in a fresh process


def _cannot_draw(inner: Any) -> str | None:
    """Why MuJoCo cannot draw frames of the unbatched env `inner`, in a phrase (None: it can).
    A frame needs the env's model and control step, and its state's physics data."""
    missing = [name for name in ("mj_model", "dt") if not hasattr(inner, name)]
    # Shapes only: eval_shape traces reset without compiling or running it.
    data = getattr(jax.eval_shape(inner.reset, jax.random.key(0)), "data", None)
    if data is None:
        missing.append("state.data")
    else:
        missing += [f"state.data.{field}" for field in _RENDER_FIELDS if not hasattr(data, field)]
    if not missing:
        return None
    return (f"it has no {', '.join(missing)} (frames are drawn by MuJoCo from an env's mj_model "
            "and dt and from its state's physics data, as MuJoCo Playground's envs have them)")


def video_problem(name: str) -> str | None:
    """Why `record_video` cannot draw env `name`, in a phrase (None: it can), found without
    running an episode; `name` is a Playground task or a registered JAX env."""
    from reppo.envs.catalog import family_of
    from reppo.envs.registry import make_env

    if family_of(name) == "dm_control":
        return None
    return _cannot_draw(make_env(name, 1).inner)


def _rollout(env: AutoResetVecEnv, act: Policy, key: jax.Array) -> tuple[dict, float, int]:
    """One episode of the first env: its physics states (reset state plus one per step, up
    to the end), return and length."""
    inner = env.inner

    def body(state: Any, _: None) -> tuple[Any, tuple[dict, jax.Array, jax.Array]]:
        action = act(flat_obs(state.obs)[None])[0]
        state = inner.step(state, action)
        frame = {f: getattr(state.data, f) for f in _RENDER_FIELDS}
        ended = (state.done > 0) | ~jnp.all(jnp.isfinite(flat_obs(state.obs)))
        return state, (frame, state.reward, ended)

    @jax.jit
    def run(key: jax.Array) -> tuple[dict, jax.Array, jax.Array]:
        state = inner.reset(key)
        first = {f: getattr(state.data, f) for f in _RENDER_FIELDS}
        _, (frames, rewards, ended) = jax.lax.scan(body, state, None, env.spec.episode_length)
        frames = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, frames)
        return frames, rewards, ended

    frames, rewards, ended = jax.device_get(run(key))
    ends = np.flatnonzero(ended)
    num_steps = int(ends[0]) + 1 if ends.size else len(ended)
    traj = {k: np.asarray(v[: num_steps + 1]) for k, v in frames.items()}
    return traj, float(np.sum(rewards[:num_steps])), num_steps


def _render_frames(
    model: Any, traj: dict, width: int, height: int, camera: int | str | None
) -> np.ndarray:
    """Draw every state of `traj` with MuJoCo's renderer; (T, height, width, 3) uint8."""
    import mujoco

    if camera is None:  # DM Control models name a sensible camera first; else the free one.
        camera = 0 if model.ncam > 0 else -1
    data = mujoco.MjData(model)
    with mujoco.Renderer(model, height=height, width=width) as renderer:
        frames = []
        for t in range(len(traj["qpos"])):
            for f in _RENDER_FIELDS:
                getattr(data, f)[...] = traj[f][t].reshape(getattr(data, f).shape)
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render())
    return np.stack(frames)


def _render_npz(model_path: str, traj_path: str, out_path: str, size: str, camera: str) -> None:
    """Subprocess entry point of `_render_in_subprocess`."""
    import mujoco

    width, height = (int(s) for s in size.split("x"))
    cam: int | str | None = None if camera == "" else int(camera) if camera.isdigit() else camera
    traj = dict(np.load(traj_path))
    frames = _render_frames(mujoco.MjModel.from_binary_path(model_path), traj, width, height, cam)
    np.save(out_path, frames)


def _render_in_subprocess(
    backend: str, model: Any, traj: dict, width: int, height: int, camera: int | str | None
) -> np.ndarray:
    """Render in a fresh Python whose MUJOCO_GL is `backend`.

    MuJoCo fixes its OpenGL backend when it is first imported, so trying another backend
    needs another process.
    """
    import mujoco

    with tempfile.TemporaryDirectory() as tmp:
        model_path, traj_path, out_path = (f"{tmp}/model.mjb", f"{tmp}/traj.npz", f"{tmp}/f.npy")
        mujoco.mj_saveModel(model, model_path)
        np.savez(traj_path, **traj)
        code = "import sys; from reppo.envs.evaluation import _render_npz as r; r(*sys.argv[1:])"
        cam = "" if camera is None else str(camera)
        args = [model_path, traj_path, out_path, f"{width}x{height}", cam]
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {proc.returncode}")
        return np.load(out_path)


def _headless_glfw() -> bool:
    """True where MuJoCo's default backend (glfw) cannot work: Linux without a display."""
    return (
        sys.platform.startswith("linux")
        and os.environ.get("MUJOCO_GL", "").lower() in ("", "glfw")
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    )


def _last_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else repr(e)


def render_frames(
    model: Any, traj: dict, width: int, height: int, camera: int | str | None
) -> np.ndarray:
    """Render in this process, else with each headless backend in turn, else explain."""
    current = os.environ.get("MUJOCO_GL", "").lower() or "glfw"
    errors = []
    if _headless_glfw():
        errors.append("glfw: no DISPLAY")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _render_frames(model, traj, width, height, camera)
        except Exception as e:  # any GL failure means: try another backend
            errors.append(f"{current}: {_last_line(e)}")
    for backend in _FALLBACK_GL:
        if backend == current:
            continue
        try:
            return _render_in_subprocess(backend, model, traj, width, height, camera)
        except RuntimeError as e:
            errors.append(f"{backend}: {e}")
    raise RuntimeError(
        "No OpenGL backend could render MuJoCo (" + "; ".join(errors) + "). Fix: install EGL "
        "(apt-get install libegl1) and set MUJOCO_GL=egl, or install OSMesa (apt-get install "
        "libosmesa6) and set MUJOCO_GL=osmesa, or run where a display is available (glfw)."
    )


def _write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write .gif with Pillow (no ffmpeg needed); anything else (mp4) with mediapy + ffmpeg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        # GIF frame delays are in 10 ms units and viewers slow down delays under 20 ms, so
        # keep at most ~30 frames per second of simulated time.
        stride = max(1, math.ceil(fps / 30))
        delay_ms = max(20, round(1000 * stride / fps / 10) * 10)
        images = [Image.fromarray(f) for f in frames[::stride]]
        images[0].save(path, save_all=True, append_images=images[1:], duration=delay_ms, loop=0)
        return
    import mediapy

    try:
        mediapy.write_video(path, frames, fps=fps)
    except (RuntimeError, BrokenPipeError) as err:
        raise _ffmpeg_error(path, err) from None


# What ffmpeg prints (strerror) when the file system refuses the output, and the errno.
_FFMPEG_OS_ERRORS = (
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("File too large", errno.EFBIG),
    ("Read-only file system", errno.EROFS),
    ("Permission denied", errno.EACCES),
    ("Input/output error", errno.EIO),
)


def _ffmpeg_error(path: Path, err: BaseException) -> Exception:
    """mediapy reports a failed ffmpeg as RuntimeError("Error writing ...: <ffmpeg's stderr>")
    or, when ffmpeg died while frames were still being piped, BrokenPipeError: an OSError with
    the file system's errno where ffmpeg's message names one (disk full, read-only, ...), so
    callers treat it as any failed write; otherwise one line with ffmpeg's last words."""
    text = str(err)
    for message, code in _FFMPEG_OS_ERRORS:
        if message in text:
            return OSError(code, os.strerror(code), str(path))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    return UserError(f"ffmpeg could not write {path.name} ({last}); pass a .gif path, which "
                     "needs no ffmpeg, or check the ffmpeg installation")


def _check_can_write(path: Path) -> None:
    """Fail before the rollout, not after it, if the video cannot be written."""
    if path.suffix.lower() != ".gif" and shutil.which("ffmpeg") is None:
        raise RuntimeError(
            f"Writing {path.name} needs ffmpeg, which is not on PATH: install it "
            "(apt-get install ffmpeg) or pass a .gif path, which needs no ffmpeg."
        )


def record_video(
    name: str,
    act: Policy,
    key: jax.Array,
    path: str | os.PathLike[str],
    *,
    impl: str = "auto",
    episode_length: int | None = None,
    width: int = 320,
    height: int = 240,
    camera: int | str | None = None,
) -> dict[str, float]:
    """Run one episode of env `name` with `act` and write it to `path` (.mp4 or .gif).

    `act` takes a batch of observations, as for `evaluate`. Frames are drawn with MuJoCo's
    renderer at the env's control rate. If MuJoCo cannot create an OpenGL context in this
    process, headless EGL and OSMesa are tried in a subprocess before raising RuntimeError
    with how to fix it. A registered env that MuJoCo cannot draw (`video_problem`) is a
    UserError before the episode. Returns the episode's `return` and `length`.
    """
    from reppo.envs.catalog import family_of
    from reppo.envs.registry import make_env

    path = Path(path)
    _check_can_write(path)
    env = make_env(name, 1, impl=impl, episode_length=episode_length)
    problem = None if family_of(name) == "dm_control" else _cannot_draw(env.inner)
    if problem is not None:
        raise UserError(f"reppo cannot render {name}: {problem}; evaluate it without a video")
    traj, episode_return, num_steps = _rollout(env, act, key)
    frames = render_frames(env.inner.mj_model, traj, width, height, camera)
    _write_video(path, frames, fps=1.0 / float(env.inner.dt))
    return {"return": episode_return, "length": float(num_steps)}
