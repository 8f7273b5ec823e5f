"""One GPU campaign: the figures of issue "torch speed" from a single command, time-boxed.

    # on a machine with network, once (the GPU machine may have none):
    python benchmarks/gpu_campaign.py --prepare campaign-wheels
    # on the GPU machine (about 9 minutes on one H100):
    python benchmarks/gpu_campaign.py --out campaign --wheels campaign-wheels
    # anywhere, in about a minute on a CPU (tiny sizes; checks that every part runs):
    python benchmarks/gpu_campaign.py --dry-run --out /tmp/campaign

Parts, each in its own subprocess and time box, so that one that fails or overruns loses
nothing of the others:

- `precompile`: the JAX programs of the later parts compiled side by side (one process each,
  on all CPU cores) into a persistent compilation cache that the later parts load from, so
  that their time boxes go to training; each program's compile time is recorded.
- `jax-<Task>`: the paper preset on CheetahRun, WalkerRun and HopperHop, three seeds batched
  with vmap, evaluated every `--eval-every` iterations (return against env steps and wall
  time), steady env steps/s, compile time, peak GPU memory, the evaluation's time against the
  training's; on CheetahRun also the two separate evaluations it replaced. Published REPPO
  returns where the docs give them (`PUBLISHED`).
- `seeds-<n>`: CheetahRun at the paper preset with 1, 4 and 8 seeds batched: env steps/s.
- `torch-<mode>`: the torch backend on CheetahRun at the paper preset, eager, with
  `torch_compile` and with `torch_compile` + `cuda_graphs`: env steps/s (JAX: `seeds-1`).
- `maniskill-<Task>`: `reppo train --env <Task> --preset maniskill` on ManiSkill's GPU
  simulator, PushCube-v1 and PickCube-v1, about 50 s of training each, stopped with Ctrl-C:
  success against wall time (from its metrics.jsonl).

Every figure goes to OUT/campaign.json and OUT/campaign.md, rewritten after every part and
while parts run (each worker rewrites its own OUT/parts/<part>.json as it goes), so a campaign
cut short still leaves what it measured.

`--prepare DIR` downloads wheels of reppo's own dependencies, without the JAX, torch and CUDA
wheels (a GPU machine brings its own, and they are far larger than the rest) into DIR and
prints its size. On the GPU machine `--wheels DIR` installs, with pip offline (`--no-index
--find-links DIR --no-deps`), the downloaded distributions that are not installed there;
reppo itself runs from this checkout (`src` on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JSON_NAME, MD_NAME = "campaign.json", "campaign.md"
# Seconds a worker past its time box gets to stop (it stops itself before; this is for a
# step that runs longer than the ones before it).
GRACE = 20.0
# ManiSkill3 tasks on the GPU simulator: the cheapest, and one that needs grasping.
MANISKILL_TASKS = ("PushCube-v1", "PickCube-v1")
TASKS = ("CheetahRun", "WalkerRun", "HopperHop")
TORCH_MODES = {
    "eager": {"torch_compile": False, "cuda_graphs": False},
    "compile": {"torch_compile": True, "cuda_graphs": False},
    "cuda-graphs": {"torch_compile": True, "cuda_graphs": True},
}
# Published REPPO returns that the docs give, with their source. Neither the paper nor the docs
# give numbers for these tasks below the paper's 50M-step budget, so at the step counts a
# campaign reaches there is nothing published to compare with; the project's own H100 run of
# the same preset (one seed) is listed beside it.
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "CheetahRun": [
        {"env_steps": 50_000_000, "return": 933.0,
         "source": "REPPO paper, final return at its 50M-step budget (benchmarks/results.md)"},
        {"env_steps": 1_048_576, "return": 127.1, "own": True,
         "source": "this project's H100 run, seed 0, 2026-12-05 (benchmarks/results.md)"},
        {"env_steps": 2_097_152, "return": 494.5, "own": True,
         "source": "this project's H100 run, seed 0, 2026-12-05 (benchmarks/results.md)"},
        {"env_steps": 3_145_728, "return": 640.6, "own": True,
         "source": "this project's H100 run, seed 0, 2026-12-05 (benchmarks/results.md)"},
        {"env_steps": 4_194_304, "return": 716.0, "own": True,
         "source": "this project's H100 run, seed 0, 2026-12-05 (benchmarks/results.md)"},
        {"env_steps": 5_111_808, "return": 781.3, "own": True,
         "source": "this project's H100 run, seed 0, 2026-12-05 (benchmarks/results.md)"},
    ],
    "WalkerRun": [],
    "HopperHop": [],
}
# Distributions that `--prepare` leaves out: the GPU machine's own JAX, torch and CUDA builds.
LARGE = {"jax", "jaxlib", "torch", "triton"}
LARGE_PREFIXES = ("jax-cuda", "nvidia-")
# Modules the parts import, and what provides each.
NEEDED_MODULES = ("numpy", "jax", "optax", "mujoco", "mujoco_playground", "brax", "torch",
                  "safetensors", "gymnasium", "mani_skill", "sapien")


# ---- the plan -----------------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    worker: str  # which `worker_*` runs it
    spec: dict[str, Any]
    seconds: float  # its time box
    skip: str | None = None  # why it does not run, if it does not

    @property
    def precompiled(self) -> bool:
        return self.worker == "train"


def paper_fields(dry: bool) -> dict[str, Any]:
    """Config fields on top of the paper preset: none on a GPU; tiny sizes in a dry run."""
    if not dry:
        return {}
    return {"num_envs": 8, "num_steps": 16, "num_epochs": 2, "num_minibatches": 2,
            "actor_hidden_dim": 16, "critic_hidden_dim": 16, "num_bins": 21,
            "kl_num_samples": 4}


def plan(dry: bool, seconds: dict[str, float] | None = None) -> list[Part]:
    """Every part in the order it runs, with its time box (`seconds` overrides by name)."""
    base = paper_fields(dry)
    # A dry run trains the cheapest task under every task's name: it checks the plumbing.
    task_env = (lambda task: "CartpoleBalance") if dry else (lambda task: task)
    eval_episodes = 2 if dry else 128
    eval_every = 2 if dry else 8  # 8 iterations: 1,048,576 env steps at the paper preset
    # A dry run's boxes only bound a broken part: its workers stop after `max_chunks` chunks.
    limit = {"max_chunks": 2} if dry else {}
    parts: list[Part] = [Part("precompile", "precompile", {}, 300 if dry else 80)]
    # A dry run compiles one JAX program for every JAX part (one seed, the same env, fields
    # and chunk): compiling is most of its time on a CPU.
    for task in TASKS:
        parts.append(Part(f"jax-{task}", "train", {
            "task": task, "env": task_env(task), "num_seeds": 1 if dry else 3, "fields": {
                **base, "eval_episodes": eval_episodes}, "chunk": eval_every,
            # The separate evaluations compile two programs more: on a GPU only.
            "evaluate": True, "old_evaluation": task == "CheetahRun" and not dry, **limit,
        }, 120 if dry else 50))
    for seeds in (1,) if dry else (1, 4, 8):
        parts.append(Part(f"seeds-{seeds}", "train", {
            "task": "CheetahRun", "env": task_env("CheetahRun"), "num_seeds": seeds,
            "fields": {**base, "eval_episodes": eval_episodes}, "chunk": 2,
            "evaluate": False, **limit,
        }, 120 if dry else 17))
    for mode, fields in TORCH_MODES.items():
        skip = None
        if dry and mode != "eager":
            skip = ("dry run: torch.compile takes minutes on a CPU and CUDA graphs need a GPU; "
                    "the same worker as eager with two config fields changed")
        parts.append(Part(f"torch-{mode}", "torch", {
            "env": task_env("CheetahRun"), **limit, "fields": {
                **base, **fields, "eval_episodes": eval_episodes},
        }, 240 if dry else (25 if mode == "eager" else 45), skip))
    # A dry run checks the plumbing on the cheaper task only.
    for task in MANISKILL_TASKS[:1] if dry else MANISKILL_TASKS:
        parts.append(_maniskill_part(task, dry))
    for part in parts:
        if seconds and part.name in seconds:
            part.seconds = seconds[part.name]
    return parts


def _maniskill_part(task: str, dry: bool) -> Part:
    return Part(f"maniskill-{task}", "maniskill", {
        "env": task, "preset": "maniskill-cpu" if dry else "maniskill",
        "train_seconds": 20 if dry else 50,
        "fields": ({"num_envs": 4, "num_steps": 16, "num_minibatches": 2, "num_epochs": 1,
                    "actor_hidden_dim": 16, "critic_hidden_dim": 16, "eval_episodes": 2,
                    "log_interval_steps": 64, "eval_interval_steps": 64}
                   if dry else {"log_interval_steps": 131_072,
                                "eval_interval_steps": 262_144}),
    }, 90 if dry else 70)


def time_box(wanted: float, left: float, floor: float = 5.0) -> float | None:
    """A part's time box: what it wants, within what is left of the campaign; None when less
    than `floor` seconds are left (the part is skipped: too short to measure anything)."""
    box = min(wanted, left)
    return box if box >= floor else None


# ---- result files -------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """`path` holds either its old or its new text, never a partial one, whatever kills us."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steady(values: Sequence[float]) -> float | None:
    """The median of a series after its first value (which pays for warm-up), or the one
    value of a series of one."""
    rest = sorted(values[1:] if len(values) > 1 else values)
    if not rest:
        return None
    mid = len(rest) // 2
    return rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # Small figures (seconds per chunk, shares) keep three significant digits.
        return f"{value:,.{digits}f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def _status(part: dict[str, Any]) -> str:
    status = part.get("status", "not run")
    note = part.get("note")
    return f"{status} ({note})" if note else status


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) if not isinstance(v, str) else v for v in row) + " |"
              for row in rows]
    return lines + [""]


def render_markdown(campaign: dict[str, Any]) -> str:
    """Every figure of `campaign` (the JSON's content) as markdown tables; parts that did not
    run or ended early say so in their status."""
    meta, parts = campaign.get("meta", {}), campaign.get("parts", {})
    lines = [f"# GPU campaign ({meta.get('date', '?')})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "date"]
    lines += [f"- state: {campaign.get('state', '?')}", ""]

    lines += ["## Parts", ""]
    lines += _table(["part", "status", "time box s", "ran s"], [
        [name, _status(p), p.get("seconds"), p.get("ran_s")] for name, p in parts.items()
    ])

    pre = parts.get("precompile", {}).get("result") or {}
    if pre.get("programs"):
        lines += ["## Compile times (programs compiled side by side)", ""]
        lines += _table(["part", "status", "compile s"], [
            [name, p.get("status", "?"), p.get("compile_s")]
            for name, p in pre["programs"].items()
        ])

    tasks = [(n, p) for n, p in parts.items() if n.startswith("jax-")]
    if tasks:
        lines += ["## JAX, paper preset, seeds batched", ""]
        rows = []
        for name, p in tasks:
            r = p.get("result") or {}
            last = (r.get("points") or [{}])[-1]
            rows.append([name, _status(p), r.get("num_seeds"), last.get("env_steps"),
                         last.get("wall_s"), r.get("compile_s"), r.get("steady_sps"),
                         r.get("peak_gpu_mib"), last.get("return_mean"),
                         " / ".join(_f(x) for x in last.get("return_per_seed", [])) or "-"])
        lines += _table(["part", "status", "seeds", "env steps per seed", "wall s",
                         "compile s", "steady env steps/s (all seeds)", "peak GPU MiB",
                         "return (mean)", "return per seed"], rows)
        lines += ["Return against env steps and wall time:", ""]
        rows = []
        for name, p in tasks:
            for point in (p.get("result") or {}).get("points", []):
                if "return_mean" in point:
                    rows.append([name, point["env_steps"], point["wall_s"],
                                 point["return_mean"], point.get("stochastic_return_mean")])
        lines += _table(["part", "env steps per seed", "wall s", "return (deterministic)",
                         "return (sampled)"], rows)
        rows = []
        for name, p in tasks:
            task = (p.get("result") or {}).get("task", name.removeprefix("jax-"))
            reached = {pt["env_steps"]: pt.get("return_mean")
                       for pt in (p.get("result") or {}).get("points", [])}
            refs = PUBLISHED.get(task, [])
            if not refs:
                rows.append([task, "-", "-", "-", "none in the docs"])
            for ref in refs:
                ours = reached.get(ref["env_steps"])
                rows.append([task, ref["env_steps"], ref["return"],
                             ours if ours is not None else "not reached", ref["source"]])
        lines += ["Against published figures (a campaign's return at the same step count):",
                  ""]
        lines += _table(["task", "env steps", "reference return", "campaign return",
                         "source"], rows)
        rows = []
        for name, p in tasks:
            r = p.get("result") or {}
            if r.get("eval_s") is not None:
                rows.append([name, r.get("eval_episodes"), r.get("chunk_train_s"),
                             r.get("eval_s"), r.get("eval_share"), r.get("old_eval_s"),
                             r.get("old_eval_share")])
        if rows:
            lines += ["Evaluation against training (one evaluation per `chunk` iterations; "
                      "share = eval / (eval + train)):", ""]
            lines += _table(["part", "episodes per seed and policy", "train s per chunk",
                             "eval s (batched)", "share", "eval s (separate, before)",
                             "share before"], rows)

    jax_one = ((parts.get("seeds-1") or {}).get("result") or {}).get("steady_sps")
    torch_parts = [(n, p) for n, p in parts.items() if n.startswith("torch-")]
    if torch_parts:
        lines += ["## Torch backend against JAX, paper preset, one seed", ""]
        rows = [["jax (seeds-1)", _status(parts.get("seeds-1", {})), jax_one, "-", "-", "1.00"]]
        for name, p in torch_parts:
            r = p.get("result") or {}
            sps = r.get("steady_sps")
            rows.append([name, _status(p), sps, r.get("compile_s"), r.get("peak_gpu_mib"),
                         f"{sps / jax_one:.2f}" if sps and jax_one else "-"])
        lines += _table(["backend / mode", "status", "steady env steps/s", "compile s",
                         "peak GPU MiB", "ratio to JAX"], rows)

    seed_parts = [(n, p) for n, p in parts.items() if n.startswith("seeds-")]
    if seed_parts:
        lines += ["## Seeds batched with vmap, CheetahRun, paper preset", ""]
        rows = []
        for name, p in seed_parts:
            r = p.get("result") or {}
            sps = r.get("steady_sps")
            rows.append([r.get("num_seeds", name.removeprefix("seeds-")), _status(p), sps,
                         f"{sps / jax_one:.2f}" if sps and jax_one else "-",
                         r.get("steady_iteration_s"), r.get("peak_gpu_mib")])
        lines += _table(["seeds", "status", "env steps/s (all seeds)", "ratio to one seed",
                         "s per iteration", "peak GPU MiB"], rows)

    for name, mani in parts.items():
        if not name.startswith("maniskill-"):
            continue
        r = mani.get("result") or {}
        lines += [f"## ManiSkill {name.removeprefix('maniskill-')} "
                  f"({r.get('preset', 'maniskill')} preset)", "",
                  f"Status: {_status(mani)}" + (f"; {r['note']}" if r.get("note") else ""),
                  ""]
        rows = [[pt.get("env_steps"), pt.get("wall_s"), pt.get("success_once"),
                 pt.get("success_at_end"), pt.get("return_mean")]
                for pt in r.get("points", [])]
        lines += _table(["env steps", "wall s", "success once", "success at end",
                         "return"], rows)
        if r.get("steady_sps") is not None:
            lines += [f"Steady env steps/s: {_f(r['steady_sps'])}", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_results(out: Path, campaign: dict[str, Any]) -> None:
    """OUT/campaign.json and OUT/campaign.md, each replaced whole."""
    write_atomic(out / JSON_NAME, json.dumps(campaign, indent=2, default=str) + "\n")
    write_atomic(out / MD_NAME, render_markdown(campaign))


# ---- running parts ------------------------------------------------------------------------------


def run_part(command: Sequence[str], result_path: Path, seconds: float, *,
             grace: float = 20.0, env: dict[str, str] | None = None,
             log: Path | None = None) -> dict[str, Any]:
    """Run a worker for at most `seconds` (+ `grace` to finish its last step), and take what
    it wrote to `result_path`, whole or partial.

    The worker keeps its own time box; past `seconds` it gets SIGINT (as Ctrl-C, which
    training takes as "stop at the next safe point"), past `grace` more SIGKILL. Its process
    group goes with it, so that no child outlives the part."""
    start = time.perf_counter()
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "w")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(list(command), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        status = "ok"
        try:
            rc = proc.wait(timeout=seconds)
        except BaseException as err:
            if not isinstance(err, subprocess.TimeoutExpired):
                _signal_group(proc, signal.SIGKILL)  # the campaign stops: so does its part
                raise
            status = "timeout"
            _signal_group(proc, signal.SIGINT)
            try:
                rc = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                rc = proc.wait()
        else:
            if rc != 0:
                status = f"failed (exit status {rc})"
    part: dict[str, Any] = {"status": status, "returncode": rc,
                            "ran_s": round(time.perf_counter() - start, 1),
                            "result": read_json(result_path)}
    if status != "ok" and log is not None:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        part["log_tail"] = tail[-15:]
    return part


def _die_with_parent() -> None:
    """In a child before it runs: the kernel kills it when the process that started it dies
    (Linux), so that no worker outlives a campaign killed outright."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def worker_command(part: Part, result: Path, seconds: float, dry: bool,
                   compile_only: bool = False) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", part.worker,
               "--spec", json.dumps(part.spec), "--result", str(result),
               "--seconds", f"{seconds:.1f}"]
    return command + (["--dry-run"] if dry else []) + (["--compile-only"] if compile_only
                                                       else [])


def worker_env(cache: Path, *, share_gpu: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["REPPO_JAX_CACHE"] = str(cache)
    if share_gpu:
        # Programs compiled side by side: none may take the GPU's memory up front.
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def run_precompile(parts: list[Part], out: Path, seconds: float, dry: bool,
                   cache: Path) -> dict[str, Any]:
    """Compile the training parts' distinct programs into the persistent cache, all at
    once."""
    start = time.perf_counter()
    procs, seen = {}, set()
    programs: dict[str, Any] = {}
    with contextlib.ExitStack() as files:
        for part in parts:
            # Parts with the same spec run the same programs: compile them once.
            key = json.dumps([part.spec[k] for k in ("env", "num_seeds", "fields", "chunk")],
                             sort_keys=True)
            if not part.precompiled or part.skip is not None or key in seen:
                continue
            seen.add(key)
            result = out / "parts" / f"precompile-{part.name}.json"
            log = files.enter_context(open(out / "logs" / f"precompile-{part.name}.log", "w"))
            command = worker_command(part, result, seconds, dry, compile_only=True)
            procs[part.name] = (subprocess.Popen(
                command, env=worker_env(cache, share_gpu=True), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent), result)
        try:
            for name, (proc, result) in procs.items():
                left = seconds - (time.perf_counter() - start)
                try:
                    rc = proc.wait(timeout=max(left, 0.1))
                    status = "ok" if rc == 0 else f"failed (exit status {rc})"
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
                    status = "timeout (the part compiles what is missing itself)"
                programs[name] = {"status": status, **(read_json(result) or {})}
        finally:
            for proc, _ in procs.values():
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
    failed = [n for n, p in programs.items() if p["status"] != "ok"]
    return {"status": "ok" if not failed else f"incomplete: {', '.join(failed)}",
            "ran_s": round(time.perf_counter() - start, 1),
            "result": {"programs": programs}}


# ---- offline installation -----------------------------------------------------------------------


def _dist_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_distribution(filename: str) -> str:
    """The distribution a wheel or sdist file holds (`name-version...`), normalized."""
    stem = filename
    for ext in (".whl", ".tar.gz", ".zip"):
        stem = stem.removesuffix(ext)
    return _dist_key(stem.split("-")[0])


def is_large(distribution: str) -> bool:
    key = _dist_key(distribution)
    return key in LARGE or key.startswith(LARGE_PREFIXES)


def missing_files(files: Sequence[str], installed: Callable[[str], bool]) -> list[str]:
    """The downloaded files whose distributions `installed` says are not installed."""
    return [f for f in files if not installed(wheel_distribution(f))]


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_modules(modules: Sequence[str] = NEEDED_MODULES) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_offline(wheels: Path) -> dict[str, Any]:
    """Install, offline and without resolving, the distributions of `wheels` not installed."""
    files = sorted(p.name for p in wheels.iterdir() if p.suffix in (".whl", ".gz", ".zip"))
    todo = missing_files(files, _installed)
    report: dict[str, Any] = {"missing_modules_before": missing_modules(), "installed": todo}
    if todo:
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                   "--find-links", str(wheels), *[str(wheels / f) for f in todo]]
        proc = subprocess.run(command, capture_output=True, text=True)
        report["pip_returncode"] = proc.returncode
        if proc.returncode:
            report["pip_error"] = proc.stderr.strip().splitlines()[-5:]
    report["missing_modules_after"] = missing_modules()
    return report


def requirements() -> list[str]:
    """reppo's dependencies with every extra the campaign uses, from pyproject.toml."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("jax", "torch", "maniskill"):
        reqs += [r for r in project["optional-dependencies"][extra]
                 if not r.startswith("reppo")]
    return reqs


def _name(requirement: str) -> str:
    return _dist_key(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def closure(reqs: Sequence[str]) -> dict[str, str]:
    """The installed distributions that `reqs` need, directly or not, with their versions:
    what this machine runs reppo with (the extras' optional dependencies left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = [_name(r) for r in reqs]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: the download resolves it
        found[name] = dist.version
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_dist_key(req.name))
    return found


def read_have(path: Path | None) -> set[str]:
    """The distributions a `name==version` list (OUT/installed.txt of a campaign, or `pip
    list --format=freeze` on the GPU machine) names."""
    return set() if path is None else read_have_text(path.read_text())


def read_have_text(text: str) -> set[str]:
    return {_name(line) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")}


def installed_list() -> str:
    """Every installed distribution as `name==version`, one a line (OUT/installed.txt)."""
    from importlib import metadata

    pins = {_dist_key(d.metadata["Name"]): d.version for d in metadata.distributions()
            if d.metadata["Name"]}
    return "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def prepare(dest: Path, have: Path | None = None) -> int:
    """Download the wheels that `--wheels` installs (the versions installed here, for CPython
    3.11 on x86-64 Linux), without the large builds and without what `have` lists as
    installed on the GPU machine, and report their size."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = closure(requirements())
    there = read_have(have)
    wanted = sorted(f"{name}=={version}" for name, version in pins.items()
                    if not is_large(name) and name != "reppo" and name not in there)
    command = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--no-deps",
               "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
               "--platform", "linux_x86_64", "--platform", "any", *wanted]
    print(f"downloading {len(wanted)} distributions into {dest}", flush=True)
    rc = subprocess.call(command)
    sizes = sorted(((p.stat().st_size, p.name) for p in dest.iterdir()), reverse=True)
    total = sum(s for s, _ in sizes)
    left_out = sorted(n for n in pins if is_large(n))
    print(f"left out (the GPU machine's own builds): {', '.join(left_out) or 'none'}")
    if there:
        print(f"left out as installed there ({have}): "
              f"{len([n for n in pins if n in there])} distributions")
    print(f"{len(sizes)} files, {total / 2**20:.1f} MiB in {dest}; the largest:")
    for size, name in sizes[:8]:
        print(f"  {size / 2**20:7.1f} MiB  {name}")
    if total > 64 * 2**20:
        print("more than the 64 MiB a carried tree may hold: prepare against what the GPU "
              "machine has (--have OUT/installed.txt of a campaign there, or its pip freeze)")
    return rc


# ---- workers (each runs in its own process) -----------------------------------------------------


class Recorder:
    """A worker's result file, rewritten whole at every update."""

    def __init__(self, path: Path, **fields: Any) -> None:
        self.path, self.data = path, dict(fields)
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2, default=float) + "\n")


def _use_cache() -> None:
    import jax

    cache = os.environ.get("REPPO_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _jax_peak_mib() -> float | None:
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return peak / 2**20 if peak else None


def worker_train(spec: dict[str, Any], rec: Recorder, seconds: float, compile_only: bool) -> None:
    """The JAX backend at the paper preset (with the spec's fields), trained in chunks of
    `chunk` iterations until the time box would be overrun, evaluated after each chunk."""
    start = time.perf_counter()
    _use_cache()
    import jax

    from reppo.config import coerce_field
    from reppo.jax.trainer import JaxTrainer
    from reppo.presets import get_preset

    fields = {k: coerce_field(k, v) for k, v in spec.get("fields", {}).items()}
    config = get_preset("paper", "jax", env=spec["env"]).replace(
        env=spec["env"], num_seeds=spec["num_seeds"], seed_batching="vmap", **fields)
    chunk = int(spec["chunk"])
    rec.update(task=spec.get("task", spec["env"]), env=config.env, num_seeds=config.num_seeds,
               num_envs=config.num_envs, eval_episodes=config.eval_episodes, chunk=chunk,
               device=str(jax.devices()[0].device_kind), points=[])
    trainer = JaxTrainer(config)
    state = trainer.init_state()
    trainer.prepare(state, chunk)  # the training chunk and the evaluation
    rec.update(compile_s=trainer.compile_seconds, setup_s=time.perf_counter() - start)
    if compile_only:
        return
    per_chunk = chunk * config.steps_per_iteration  # env steps per seed
    points, chunk_sps, chunk_s, eval_s = [], [], [], []
    wall0 = start
    while True:
        elapsed = time.perf_counter() - start
        expected = (chunk_s[-1] if chunk_s else 0.0) + (eval_s[-1] if eval_s else 0.0)
        if points and (elapsed + expected > seconds
                       or len(points) >= spec.get("max_chunks", len(points) + 1)):
            break
        t0 = time.perf_counter()
        state, _ = trainer.run_chunk(state, chunk)
        jax.block_until_ready(state)
        took = time.perf_counter() - t0
        chunk_s.append(took)
        chunk_sps.append(per_chunk * config.num_seeds / took)
        point = {"env_steps": trainer.iteration_of(state) * config.steps_per_iteration,
                 "chunk_s": took, "sps": chunk_sps[-1]}
        if spec.get("evaluate"):
            t0 = time.perf_counter()
            report = trainer.evaluate(state)
            eval_s.append(time.perf_counter() - t0)
            point.update(eval_s=eval_s[-1], return_mean=float(report.returns.mean()),
                         return_per_seed=[float(x) for x in report.returns.mean(axis=1)],
                         stochastic_return_mean=float(report.stochastic_returns.mean()))
        point["wall_s"] = time.perf_counter() - wall0
        points.append(point)
        train_s, ev = steady(chunk_s), steady(eval_s)
        rec.update(points=points, steady_sps=steady(chunk_sps), chunk_train_s=train_s,
                   steady_iteration_s=train_s / chunk if train_s else None, eval_s=ev,
                   eval_share=ev / (ev + train_s) if ev and train_s else None,
                   peak_gpu_mib=_jax_peak_mib())
    if spec.get("old_evaluation") and eval_s:
        # The two separate evaluations that `evaluate` replaced: the first call compiles.
        left = seconds - (time.perf_counter() - start)
        if left > 3 * eval_s[-1]:
            t0 = time.perf_counter()
            trainer.evaluate_separately(state)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            trainer.evaluate_separately(state)
            old = time.perf_counter() - t0
            train_s = steady(chunk_s)
            rec.update(old_eval_first_s=first, old_eval_s=old,
                       old_eval_share=old / (old + train_s))


def worker_torch(spec: dict[str, Any], rec: Recorder, seconds: float, compile_only: bool) -> None:
    """The torch backend at the paper preset, one iteration per call until the time box."""
    start = time.perf_counter()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX steps the env
    _use_cache()
    import torch

    from reppo.config import coerce_field
    from reppo.loop.runner import make_trainer
    from reppo.presets import get_preset

    fields = {k: coerce_field(k, v) for k, v in spec.get("fields", {}).items()}
    config = get_preset("paper", "torch", env=spec["env"]).replace(
        env=spec["env"], backend="torch", **fields)
    on_gpu = torch.cuda.is_available()
    rec.update(env=config.env, torch_compile=config.torch_compile,
               cuda_graphs=config.cuda_graphs, num_envs=config.num_envs,
               device=torch.cuda.get_device_name() if on_gpu else "cpu", points=[])
    trainer = make_trainer(config)
    state = trainer.init_state()
    rec.update(setup_s=time.perf_counter() - start)
    sps, took = [], []
    most = spec.get("max_chunks")
    # The first iteration compiles (torch.compile, the env's JAX step): a steady figure needs
    # a second one, which a dry run always takes.
    while (most is not None and len(took) < 2) or not took or (
            time.perf_counter() - start + took[-1] <= seconds
            and len(took) < (most or float("inf"))):
        t0 = time.perf_counter()
        state, _ = trainer.run_chunk(state, 1)
        if on_gpu:
            torch.cuda.synchronize()
        took.append(time.perf_counter() - t0)
        sps.append(config.steps_per_iteration / took[-1])
        rec.update(iterations=len(took), iteration_s=took,
                   steady_sps=steady(sps) if len(sps) > 1 else None,
                   compile_s=trainer.compile_seconds,
                   peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None)


def worker_maniskill(spec: dict[str, Any], rec: Recorder, seconds: float,
                     compile_only: bool) -> None:
    """`reppo train` on a ManiSkill task for `train_seconds`, then Ctrl-C; success against
    wall time from the run's metrics.jsonl."""
    rec.update(env=spec["env"], preset=spec["preset"], points=[])
    problem = None
    try:
        import mani_skill  # noqa: F401
        import sapien

        # ManiSkill's simulator needs a Vulkan device even for state observations.
        sapien.render.RenderSystem()
    except Exception as err:  # not installed, SAPIEN fails to load, or no Vulkan device
        problem = f"{type(err).__name__}: {err}"
    if problem:
        rec.update(skipped=f"no usable Vulkan/ManiSkill ({problem})")
        return
    run_dir = rec.path.with_name(f"{rec.path.stem}-run")
    command = [sys.executable, "-m", "reppo.cli", "train", "--env", spec["env"],
               "--preset", spec["preset"], "--run-dir", str(run_dir),
               "--checkpoint-interval-steps", str(10**12)]  # one, at the stop
    for name, value in spec.get("fields", {}).items():
        command += ["--" + name.replace("_", "-"), str(value)]
    rec.update(command=" ".join(command))
    proc = subprocess.Popen(command, preexec_fn=_die_with_parent)
    stop_at = time.perf_counter() + float(spec["train_seconds"])
    try:
        while proc.poll() is None and time.perf_counter() < stop_at:
            time.sleep(1.0)
            _read_maniskill(run_dir, rec)
        if proc.poll() is None:
            # Stop at the next safe point, as Ctrl-C; once more if the first came before the
            # run listened (during its setup), then kill it.
            left = max(10.0, seconds - float(spec["train_seconds"]) - 5)
            for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGINT, left - 15.0)):
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=max(wait, 1.0))
                    break
                except subprocess.TimeoutExpired:
                    _read_maniskill(run_dir, rec)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _read_maniskill(run_dir, rec)
    rec.update(returncode=proc.returncode)
    if not rec.data["points"]:
        rec.update(note="no evaluation within the time box")


def _read_maniskill(run_dir: Path, rec: Recorder) -> None:
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    points, sps = [], []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if "sps" in record:
            sps.append(float(record["sps"]))
        if "eval/return_mean" in record:
            points.append({"env_steps": record.get("env_steps"),
                           "wall_s": record.get("wall_time"),
                           "success_once": record.get("eval/success_once"),
                           "success_at_end": record.get("eval/success_at_end"),
                           "return_mean": record.get("eval/return_mean")})
    rec.update(points=points, steady_sps=steady(sps))


WORKERS = {"train": worker_train, "torch": worker_torch, "maniskill": worker_maniskill}


# ---- the campaign -------------------------------------------------------------------------------



def _meta(dry: bool) -> dict[str, Any]:
    from importlib import metadata

    from reppo.runs.versions import cpu_model

    versions = {}
    for dist in ("jax", "jaxlib", "torch", "mujoco", "playground", "mani-skill"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True) if _which("nvidia-smi") else None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "gpu": (gpu.stdout.strip() if gpu and gpu.returncode == 0 else "none found"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": commit or "?",
        "mode": "dry run (tiny sizes, CPU)" if dry else "full",
    }


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def campaign(out: Path, *, dry: bool, budget: float, wheels: Path | None,
             only: set[str] | None, seconds: dict[str, float] | None) -> dict[str, Any]:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    result: dict[str, Any] = {"meta": {}, "state": "running", "parts": {}}
    # What this machine has, for a `--prepare DIR --have OUT/installed.txt` of the next one.
    write_atomic(out / "installed.txt", installed_list())
    if wheels is not None:
        result["install"] = install_offline(wheels)
    result["meta"] = _meta(dry)
    # A dry run under pytest reuses the tests' compilation cache; a campaign has its own.
    cache = Path(os.environ["REPPO_JAX_CACHE"]) if dry and os.environ.get(
        "REPPO_JAX_CACHE") else out / "jax-cache"
    parts = [p for p in plan(dry, seconds) if only is None or p.name in only
             or p.name == "precompile" and only & {q.name for q in plan(dry) if q.precompiled}]
    for part in parts:
        result["parts"][part.name] = {"status": "pending", "seconds": part.seconds}
    write_results(out, result)
    for part in parts:
        entry = result["parts"][part.name]
        left = budget - (time.perf_counter() - start)
        box = time_box(part.seconds, left)
        if part.skip is not None or box is None:
            entry.update(status="skipped", note=part.skip or "no time left in the campaign")
            write_results(out, result)
            continue
        entry.update(status="running", seconds=round(box, 1))
        write_results(out, result)
        if part.worker == "precompile":
            entry.update(run_precompile([p for p in parts if p.precompiled], out, box, dry,
                                        cache))
        else:
            path = out / "parts" / f"{part.name}.json"
            # The worker stops itself within its box; the grace covers its last step.
            entry.update(run_part(worker_command(part, path, box, dry), path, box + GRACE / 2,
                                  grace=GRACE / 2, env=worker_env(cache),
                                  log=out / "logs" / f"{part.name}.log"))
            skipped = (entry.get("result") or {}).get("skipped")
            if skipped:
                entry.update(status="skipped", note=skipped)
        entry["seconds"] = round(box, 1)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        write_results(out, result)
    result["state"] = "finished"
    result["wall_s"] = round(time.perf_counter() - start, 1)
    write_results(out, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("campaign"))
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes, a few seconds per part, on whatever device is here")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole campaign (default 515: with a last "
                        "part's grace, within 9 minutes; dry run 900)")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="install what is missing from this --prepare directory, offline")
    parser.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                        help="download the wheels for --wheels into DIR and exit")
    parser.add_argument("--have", type=Path, default=None, metavar="FILE",
                        help="with --prepare: leave out the distributions FILE lists as "
                        "installed on the GPU machine (name==version lines)")
    parser.add_argument("--only", default=None, help="comma-separated part names")
    parser.add_argument("--seconds", action="append", default=[], metavar="PART=S",
                        help="a part's time box (repeatable)")
    # A part's own process.
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.prepare is not None:
        return prepare(args.prepare, args.have)
    if args.worker is not None:
        if args.dry_run:
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        seconds = float(args.seconds[0]) if args.seconds else 60.0
        rec = Recorder(args.result, started=time.time())
        WORKERS[args.worker](json.loads(args.spec), rec, seconds, args.compile_only)
        rec.update(finished=True)
        return 0
    boxes = {}
    for item in args.seconds:
        name, _, value = item.partition("=")
        boxes[name] = float(value)
    budget = args.budget if args.budget is not None else (900.0 if args.dry_run else 515.0)
    only = set(args.only.split(",")) if args.only else None
    result = campaign(args.out, dry=args.dry_run, budget=budget, wheels=args.wheels,
                      only=only, seconds=boxes)
    print((args.out / MD_NAME).read_text())
    bad = [n for n, p in result["parts"].items() if p["status"] not in ("ok", "skipped")]
    print(f"figures in {args.out / JSON_NAME} and {args.out / MD_NAME}"
          + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
