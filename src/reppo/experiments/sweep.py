"""`reppo sweep`: train every task (x variant) of a suite x K seeds, resumably.

Each run is a child process (`python -m reppo.cli train ...`, or the Brax baseline module), so
runs are isolated from each other: one that crashes, leaks memory or holds a GPU does not take
the others with it. The children's output is echoed with a `[method task seed]` prefix and
appended to a log file beside the run directory.

Layout of `--out OUT`::

    OUT/sweep.json                     the sweep's settings and every invocation of it
    OUT/<method>/<task>/               REPPO (JAX): one run dir holding all K seeds
    OUT/<method>/<task>.log            ... and its output, appended by every attempt
    OUT/<method>/<task>/seed<i>/       REPPO (torch) and Brax baselines: one run dir per seed
    OUT/<method>/<task>/seed<i>.log

Every run dir also gets an `experiment.json` ({"suite", "method", "task", "algo", "variant",
...}) that `reppo report` groups runs by. Running the same command again resumes the sweep:
finished runs are skipped, interrupted REPPO runs continue from their latest checkpoint
(`reppo train --resume`), and runs that cannot continue (Brax baselines, or a REPPO run that
stopped before its first checkpoint) are moved aside to `<dir>.partial-<time>` and started
again. Different settings in the same OUT are refused; nothing is ever deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import difflib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from reppo.experiments.suites import (
    ALGOS,
    BASELINE_PRESETS,
    REPPO,
    SUITES,
    Suite,
    Variant,
    default_eval_interval,
    get_suite,
)

SWEEP_FILE = "sweep.json"
EXPERIMENT_FILE = "experiment.json"
LOCK_FILE = "sweep.lock"
# Config fields that the sweep sets for every run, and the flag that sets them instead.
_MANAGED = {
    "env": "--tasks", "seed": "--seeds", "num_seeds": "--seeds", "total_steps": "--steps",
    "backend": "--suite",
}
# The only config fields a Brax baseline run accepts (as its own flags of the same name).
_BASELINE_FIELDS = ("eval_interval_steps", "eval_episodes")
# Exit status of a process stopped by Ctrl-C (what `reppo train` returns after checkpointing).
INTERRUPTED = 130
_UNSET = object()

Echo = Callable[[str], None]


def _user_error(message: str) -> Exception:
    from reppo.cli import UserError

    return UserError(message)


# ---- the command line ------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    suites = ", ".join(f"{s.name} ({len(s.tasks)} tasks)" for s in SUITES.values())
    parser.description = (
        "Train every task (x variant) of a suite x K seeds, one child process per run, into "
        "OUT/<method>/<task>. Rerunning the same command resumes the sweep; docs/experiments.md "
        "describes the suites, the layout and the resumption rules."
    )
    parser.add_argument("--suite", required=True, help=f"the suite: {suites}")
    parser.add_argument("--seeds", type=int, required=True, metavar="K",
                        help="seeds per task: 0..K-1")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="sweep directory (new, empty, or a sweep to resume)")
    parser.add_argument("--algo", choices=ALGOS, default=REPPO,
                        help="algorithm (default reppo; the Brax baselines run Playground "
                             "tasks only); several algos may share one --out")
    parser.add_argument("--steps", type=_count, default=None, metavar="N",
                        help="env steps per run and seed (default: the suite's budget)")
    parser.add_argument("--tasks", default=None, metavar="A,B",
                        help="only these tasks of the suite (comma-separated)")
    parser.add_argument("--variants", default=None, metavar="A,B",
                        help="ablation suites: only these methods (e.g. paper,paper-no-kl)")
    parser.add_argument("--preset", default=None,
                        help="REPPO preset (default: the suite's), or the baseline preset "
                             f"({', '.join(BASELINE_PRESETS)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="a config field for every run (repeatable), e.g. --set "
                             "eval_interval_steps=1e6")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would run, and the commands, without running them")


def _count(text: str) -> int:
    """A positive integer, also written like 1e6 or 50_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


# ---- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """A sweep invocation, validated: what to run and where."""

    suite: Suite
    algo: str
    seeds: int
    steps: int
    preset: str | None  # None: each variant's own preset (ablation suites)
    overrides: dict[str, Any]
    tasks: tuple[str, ...]
    methods: tuple[Variant, ...]
    out: Path

    @property
    def batched_seeds(self) -> bool:
        """REPPO on JAX trains all K seeds in one process (and one run dir); the torch backend
        and the Brax baselines train one seed per process."""
        return self.algo == REPPO and self.suite.backend == "jax"

    @property
    def seeds_per_process(self) -> int:
        return self.seeds if self.batched_seeds else 1

    def algo_record(self) -> dict[str, Any]:
        """What must match when this algo is run again in the same OUT."""
        return {"preset": self.preset, "overrides": self.overrides}

    def command(self) -> str:
        """The canonical `reppo sweep` command of these settings."""
        parts = ["reppo", "sweep", "--suite", self.suite.name, "--seeds", str(self.seeds),
                 "--algo", self.algo, "--steps", str(self.steps), "--out", str(self.out)]
        if self.tasks != self.suite.tasks:
            parts += ["--tasks", ",".join(self.tasks)]
        if self.suite.variants and self.algo == REPPO and self.methods != self.suite.variants:
            parts += ["--variants", ",".join(m.label for m in self.methods)]
        if self.preset is not None:
            parts += ["--preset", self.preset]
        for name, value in self.overrides.items():
            parts += ["--set", f"{name}={value}"]
        return shlex.join(parts)


def _pick(kind: str, text: str, valid: tuple[str, ...], suite: str) -> tuple[str, ...]:
    """The comma-separated names of `text`, each checked against `valid`, in `valid`'s order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise _user_error(f"--{kind}s is empty; give comma-separated names, e.g. {valid[0]}")
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _user_error(
                f"unknown {kind} {name!r} in --{kind}s{hint}; the {suite} suite has: "
                f"{', '.join(valid)}"
            )
    return tuple(v for v in valid if v in names)


def parse_overrides(pairs: list[str], algo: str) -> dict[str, Any]:
    """`--set field=value` pairs as typed config values, in the order given."""
    import dataclasses

    from reppo.config import Config, coerce_field

    fields = [f.name for f in dataclasses.fields(Config)]
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise _user_error(f"--set {pair!r} is not FIELD=VALUE, e.g. --set eval_episodes=32")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _user_error(
                f"--set {name}: no such config field{hint}; `reppo train --help` lists them"
            )
        if name in _MANAGED:
            raise _user_error(
                f"--set {name}: the sweep sets {name} for each run; use {_MANAGED[name]} instead"
            )
        if algo != REPPO and name not in _BASELINE_FIELDS:
            raise _user_error(
                f"--set {name} applies to REPPO runs only; the Brax baselines take "
                f"{' and '.join(_BASELINE_FIELDS)}"
            )
        if name in overrides:
            raise _user_error(f"--set {name} is given twice; keep one")
        overrides[name] = coerce_field(name, value.strip())
    return overrides


def resolve(args: argparse.Namespace) -> Settings:
    """Check the arguments of `reppo sweep` and fill in the suite's defaults."""
    from reppo.presets import PRESETS, get_preset

    suite = get_suite(args.suite)
    if args.seeds < 1:
        raise _user_error(f"--seeds must be >= 1, got {args.seeds}")
    algo = args.algo
    if algo != REPPO and suite.baseline_preset is None:
        raise _user_error(
            f"--algo {algo}: the {suite.name} suite has no Brax baseline (they train "
            "Playground tasks, and ablation suites compare REPPO variants); use --algo reppo"
        )
    tasks = suite.tasks if args.tasks is None else _pick("task", args.tasks, suite.tasks,
                                                         suite.name)
    methods = suite.methods(algo)
    if args.variants is not None:
        if algo != REPPO or not suite.variants:
            raise _user_error(
                f"--variants picks among the methods of an ablation suite; {suite.name} with "
                f"--algo {algo} has one method, so leave --variants out"
            )
        labels = _pick("variant", args.variants, tuple(m.label for m in methods), suite.name)
        methods = tuple(m for m in methods if m.label in labels)

    preset: str | None = args.preset
    if algo != REPPO:
        preset = preset or suite.baseline_preset
        if preset not in BASELINE_PRESETS:
            raise _user_error(
                f"--preset {preset}: the Brax baselines have the presets "
                f"{', '.join(BASELINE_PRESETS)}"
            )
        methods = (Variant(algo, preset, None),)
    elif suite.variants:
        if preset is not None:
            raise _user_error(
                f"the {suite.name} suite trains each variant with its own preset "
                f"({', '.join(m.preset for m in suite.variants)}); leave out --preset, and "
                "pick variants with --variants"
            )
    else:
        preset = preset or suite.preset
        if preset == "auto":
            from reppo.presets import default_preset_name

            preset = default_preset_name(suite.backend)
        if preset not in PRESETS:
            get_preset(preset)  # raises ConfigError naming the valid presets
        methods = (Variant(REPPO, preset, None),)

    settings = Settings(
        suite=suite, algo=algo, seeds=args.seeds, steps=args.steps or suite.steps,
        preset=preset, overrides=parse_overrides(args.overrides, algo), tasks=tasks,
        methods=methods, out=args.out,
    )
    if algo == REPPO:
        # One complete config per method, so that a bad combination (say --set num_minibatches
        # that does not divide the batch) fails now rather than in every child process.
        for method in methods:
            get_preset(method.preset).replace(
                env=tasks[0], backend=suite.backend, seed=0,
                num_seeds=settings.seeds_per_process, total_steps=settings.steps,
                **settings.overrides,
            )
    return settings


# ---- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One child process of the sweep: a method on a task for one seed or all of them."""

    method: Variant
    algo: str
    task: str
    seeds: tuple[int, ...]
    run_dir: Path

    @property
    def name(self) -> str:
        parts = [self.method.label, self.task]
        if self.run_dir.name != self.task:
            parts.append(self.run_dir.name)
        return "/".join(parts)

    @property
    def seed_text(self) -> str:
        if len(self.seeds) == 1:
            return f"seed {self.seeds[0]}"
        return f"seeds {self.seeds[0]}-{self.seeds[-1]}"

    @property
    def prefix(self) -> str:
        return f"[{self.method.label} {self.task} {self.seed_text}]"

    @property
    def log_path(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"

    def experiment(self, suite: Suite) -> dict[str, Any]:
        return {
            "suite": suite.name,
            "method": self.method.label,
            "task": self.task,
            "algo": self.algo,
            "variant": self.method.variant,
            "preset": self.method.preset,
            "seeds": list(self.seeds),
        }


def plan(settings: Settings) -> list[PlannedRun]:
    """Every run of the sweep, in order: methods, then tasks, then seeds."""
    runs = []
    for method in settings.methods:
        for task in settings.tasks:
            base = settings.out / method.label / task
            if settings.batched_seeds:
                runs.append(PlannedRun(method, settings.algo, task,
                                       tuple(range(settings.seeds)), base))
            else:
                runs.extend(
                    PlannedRun(method, settings.algo, task, (seed,), base / f"seed{seed}")
                    for seed in range(settings.seeds)
                )
    return runs


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def start_command(run: PlannedRun, settings: Settings) -> list[str]:
    """The child command that starts `run` from scratch."""
    if run.algo != REPPO:
        command = [
            sys.executable, "-m", "reppo.experiments.baselines", "--algo", run.algo,
            "--env", run.task, "--seed", str(run.seeds[0]), "--steps", str(settings.steps),
            "--run-dir", str(run.run_dir), "--preset", run.method.preset,
        ]
    else:
        command = [
            sys.executable, "-m", "reppo.cli", "train", "--preset", run.method.preset,
            "--backend", settings.suite.backend, "--env", run.task,
            "--seed", str(run.seeds[0]), "--num-seeds", str(len(run.seeds)),
            "--total-steps", str(settings.steps), "--run-dir", str(run.run_dir),
        ]
        if "eval_interval_steps" not in settings.overrides:
            # The baselines' cadence, so that every algorithm's curve has the same resolution.
            interval = default_eval_interval(settings.steps)
            command += ["--eval-interval-steps", str(interval)]
    for name, value in settings.overrides.items():
        command += ["--" + name.replace("_", "-"), _flag_value(value)]
    return command


def resume_command(run: PlannedRun) -> list[str]:
    return [sys.executable, "-m", "reppo.cli", "train", "--resume", str(run.run_dir)]


# ---- the state of a run directory ------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def final_eval(run_dir: Path) -> tuple[float | None, int | None, float | None]:
    """(return, env steps) of the last evaluation record, and the run's wall time so far."""
    from reppo.runs import read_metrics

    records = read_metrics(run_dir)
    wall = records[-1].get("wall_time") if records else None
    evals = [r for r in records if r.get("eval/return_mean") is not None]
    if not evals:
        return None, None, wall
    return evals[-1]["eval/return_mean"], evals[-1].get("env_steps"), wall


def is_finished(run_dir: Path) -> bool:
    """Whether the run's last evaluation is at or past its config's total_steps."""
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("total_steps"), int):
        return False
    _, steps, _ = final_eval(run_dir)
    return steps is not None and steps >= config["total_steps"]


@dataclass(frozen=True)
class RunState:
    action: str  # "start", "skip", "resume", "restart" or "mismatch"
    reason: str = ""


def _mismatch(run: PlannedRun, settings: Settings, config: dict[str, Any]) -> list[str]:
    """The fields in which an existing run's config differs from the planned run."""
    expected: dict[str, Any] = {
        "env": run.task, "seed": run.seeds[0], "total_steps": settings.steps,
        "algo": None if run.algo == REPPO else run.algo,
    }
    if run.algo == REPPO:
        expected["num_seeds"] = len(run.seeds)
        expected["backend"] = settings.suite.backend
    return [k for k, v in expected.items() if config.get(k, 1 if k == "num_seeds" else None) != v]


def inspect(run: PlannedRun, settings: Settings) -> RunState:
    """What the sweep does with `run`, given what its directory holds."""
    from reppo.runs import latest_checkpoint

    d = run.run_dir
    if not d.exists():
        return RunState("start")
    if not d.is_dir():
        return RunState("mismatch", f"{d} is a file, not a run directory; move it away")
    if not (d / "config.json").is_file():
        if not any(d.iterdir()):
            return RunState("start")
        return RunState("restart", "it holds no config.json")
    config = _read_json(d / "config.json")
    if not isinstance(config, dict):
        return RunState("restart", "its config.json is unreadable")
    differ = _mismatch(run, settings, config)
    if differ:
        return RunState(
            "mismatch",
            f"{d} holds another run (its config differs in {', '.join(differ)}); move it away",
        )
    if is_finished(d):
        return RunState("skip", "finished")
    if run.algo != REPPO:
        return RunState("restart", "a Brax run cannot continue from its files")
    if latest_checkpoint(d) is None:
        return RunState("restart", "it stopped before its first checkpoint")
    return RunState("resume")


def move_aside(run_dir: Path) -> Path:
    """Rename an unfinished run dir to `<dir>.partial-<time>` (never replacing anything)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir.with_name(f"{run_dir.name}.partial-{stamp}"), 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.partial-{stamp}-{n}")
    run_dir.rename(target)
    return target


def write_experiment(run: PlannedRun, suite: Suite) -> None:
    """experiment.json in the run dir, once the child has created it; never overwritten."""
    from reppo.runs import atomic_write_json

    if (run.run_dir / "config.json").is_file() and not (run.run_dir / EXPERIMENT_FILE).exists():
        with contextlib.suppress(FileExistsError):
            atomic_write_json(run.run_dir / EXPERIMENT_FILE, run.experiment(suite),
                              overwrite=False)


# ---- the sweep file and lock -----------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _differences(existing: dict[str, Any], settings: Settings) -> list[str]:
    """What differs between a sweep.json and these settings, one phrase per difference."""
    diffs = []
    for key, new in (("suite", settings.suite.name), ("seeds", settings.seeds),
                     ("steps", settings.steps)):
        if existing.get(key) != new:
            diffs.append(f"{key} {existing.get(key)!r} there, {new!r} now")
    old_algo = existing.get("algos", {}).get(settings.algo)
    if old_algo is None:
        return diffs
    if old_algo.get("preset") != settings.preset:
        diffs.append(f"{settings.algo} preset {old_algo.get('preset')!r} there, "
                     f"{settings.preset!r} now")
    old_set, new_set = old_algo.get("overrides", {}), settings.overrides
    for name in sorted(set(old_set) | set(new_set)):
        if old_set.get(name, _UNSET) != new_set.get(name, _UNSET):
            there = f"{name}={old_set[name]}" if name in old_set else f"no {name}"
            now = f"{name}={new_set[name]}" if name in new_set else f"no {name}"
            diffs.append(f"--set {there} there, {now} now")
    return diffs


def check_out_dir(settings: Settings) -> dict[str, Any] | None:
    """The existing sweep.json of OUT (None for a new sweep); refuses conflicting settings."""
    out = settings.out
    if out.exists() and not out.is_dir():
        raise _user_error(f"--out {out} is a file; pick a directory")
    path = out / SWEEP_FILE
    if not path.exists():
        if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise _user_error(
                f"--out {out} holds files but no {SWEEP_FILE}, so it is not a sweep; nothing "
                "was changed; pick a new or empty directory"
            )
        return None
    existing = _read_json(path)
    if not isinstance(existing, dict):
        raise _user_error(f"{path} is unreadable or not a JSON object; repair it or pick "
                          "another --out")
    # Compare in JSON form: overrides were stored as JSON.
    diffs = _differences(json.loads(json.dumps(existing)), settings)
    if diffs:
        raise _user_error(
            f"{out} holds a sweep with other settings ({'; '.join(diffs)}); nothing was "
            "changed; rerun with its settings to resume it, or pick another --out"
        )
    return existing


def record_invocation(settings: Settings, existing: dict[str, Any] | None) -> None:
    """Create OUT/sweep.json, or add this invocation (and algo) to it."""
    from reppo.runs import atomic_write_json

    invocation = {
        "command": settings.command(), "date": _now(), "algo": settings.algo,
        "tasks": list(settings.tasks), "methods": [m.label for m in settings.methods],
    }
    if existing is None:
        settings.out.mkdir(parents=True, exist_ok=True)
        record = {
            "suite": settings.suite.name, "backend": settings.suite.backend,
            "seeds": settings.seeds, "steps": settings.steps,
            "algos": {settings.algo: settings.algo_record()},
            "command": invocation["command"], "date": invocation["date"],
            "invocations": [invocation],
        }
        try:
            atomic_write_json(settings.out / SWEEP_FILE, record, overwrite=False)
        except FileExistsError:
            raise _user_error(f"{settings.out} was claimed by another sweep just now; "
                              "pick another --out") from None
        return
    record = dict(existing)
    record.setdefault("algos", {})[settings.algo] = settings.algo_record()
    record["invocations"] = [*record.get("invocations", []), invocation]
    atomic_write_json(settings.out / SWEEP_FILE, record)


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold OUT/sweep.lock, so two sweeps never run the same runs at once (POSIX)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the run dirs still refuse reuse
        yield
        return
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise _user_error(
                f"another reppo sweep (pid {holder}) is running in {out}; wait for it to end "
                "or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- launching a child -----------------------------------------------------------------------


def _pump(proc: subprocess.Popen[str], prefix: str, log: TextIO, echo: Echo,
          on_line: Callable[[], None] | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        log.write(line + "\n")
        log.flush()
        echo(f"{prefix} {line}")
        if on_line is not None:
            on_line()


def launch(command: list[str], *, prefix: str, log_path: Path, echo: Echo,
           on_line: Callable[[], None] | None = None) -> int:
    """Run `command`, echoing and logging its output; returns its exit status.

    The child gets its own session, so a Ctrl-C at the terminal reaches this process alone:
    it then sends the child one SIGINT (on which `reppo train` saves a checkpoint and exits)
    and waits for it, a second Ctrl-C kills it, and the KeyboardInterrupt propagates.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {_now()} $ {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=env, start_new_session=os.name == "posix",
        )
        try:
            _pump(proc, prefix, log, echo, on_line)
            return proc.wait()
        except KeyboardInterrupt:
            echo(f"{prefix} stopping: the run saves a checkpoint when its current chunk ends "
                 "(Ctrl-C again to kill it)")
            try:
                proc.send_signal(signal.SIGINT)
                _pump(proc, prefix, log, echo, None)
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
                echo(f"{prefix} killed")
            log.write(f"# {_now()} sweep interrupted; exit status {proc.returncode}\n")
            raise


# ---- running the sweep -----------------------------------------------------------------------


@dataclass
class Outcome:
    run: PlannedRun
    status: str
    ok: bool
    final_return: float | None = None
    wall_time: float | None = None


def _outcome(run: PlannedRun, status: str, ok: bool) -> Outcome:
    ret, _, wall = final_eval(run.run_dir) if run.run_dir.is_dir() else (None, None, None)
    return Outcome(run, status, ok, ret, wall)


def _run_one(run: PlannedRun, settings: Settings, head: str, echo: Echo) -> Outcome:
    """Skip, start, resume or restart one run, as its directory says."""
    state = inspect(run, settings)
    if state.action == "skip":
        echo(f"{head}: finished before, skipped")
        write_experiment(run, settings.suite)
        return _outcome(run, "skipped (finished)", True)
    if state.action == "mismatch":
        echo(f"{head}: not run: {state.reason}")
        return Outcome(run, "failed (other run in dir)", False)
    if state.action == "restart":
        moved = move_aside(run.run_dir)
        echo(f"{head}: unfinished and {state.reason}: moved to {moved.name}, starting again")
    elif state.action == "resume":
        echo(f"{head}: resuming from its latest checkpoint")
    else:
        echo(f"{head}: starting")
    resume = state.action == "resume"
    command = resume_command(run) if resume else start_command(run, settings)
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        code = launch(command, prefix=run.prefix, log_path=run.log_path, echo=echo,
                      on_line=lambda: write_experiment(run, settings.suite))
    except OSError as err:
        echo(f"{head}: could not start {command[0]}: {err}")
        return Outcome(run, "failed (could not start)", False)
    finally:
        write_experiment(run, settings.suite)
    if code == 0 and is_finished(run.run_dir):
        return _outcome(run, "resumed" if resume else "done", True)
    if code == 0:
        status = "failed (ended unfinished)"
    elif code == INTERRUPTED:
        status = "interrupted"
    else:
        status = f"failed (exit {code})"
    echo(f"{head}: {status}; its output is in {run.log_path}")
    return _outcome(run, status, False)


def execute(settings: Settings, runs: list[PlannedRun], echo: Echo) -> tuple[list[Outcome], bool]:
    """Every run in turn, carrying on past failures; (outcomes, stopped by Ctrl-C)."""
    outcomes: list[Outcome] = []
    for i, run in enumerate(runs):
        try:
            outcomes.append(_run_one(run, settings, f"[{i + 1}/{len(runs)}] {run.name}", echo))
        except KeyboardInterrupt:
            outcomes.append(_outcome(run, "interrupted", False))
            outcomes += [Outcome(r, "not started", False) for r in runs[i + 1:]]
            return outcomes, True
    return outcomes, False


def format_table(outcomes: list[Outcome]) -> str:
    from reppo.runs import format_duration

    rows = [("run", "status", "final return", "wall time")]
    for o in outcomes:
        ret = "-" if o.final_return is None else f"{o.final_return:.1f}"
        wall = "-" if o.wall_time is None else format_duration(o.wall_time)
        rows.append((o.run.name, o.status, ret, wall))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _describe(settings: Settings, runs: list[PlannedRun]) -> str:
    methods = ", ".join(m.label for m in settings.methods)
    per = "seeds batched in one process" if settings.batched_seeds else "one seed each"
    return (
        f"sweep {settings.suite.name} ({settings.algo}): {len(settings.tasks)} task(s) x "
        f"{len(settings.methods)} method(s) [{methods}] x {settings.seeds} seed(s), "
        f"{settings.steps:,} env steps each -> {len(runs)} run(s), {per}, in {settings.out}"
    )


def dry_run(settings: Settings, runs: list[PlannedRun], echo: Echo) -> int:
    """Print what each run would do, and its command; changes nothing."""
    for run in runs:
        state = inspect(run, settings)
        if state.action == "skip":
            echo(f"{run.name}: skip (finished)")
        elif state.action == "mismatch":
            echo(f"{run.name}: not run: {state.reason}")
        elif state.action == "resume":
            echo(f"{run.name}: resume: {shlex.join(resume_command(run))}")
        else:
            if state.action == "restart":
                echo(f"{run.name}: unfinished and {state.reason}: would be moved to "
                     f"{run.run_dir.name}.partial-<time>")
            echo(f"{run.name}: {state.action}: {shlex.join(start_command(run, settings))}")
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the sweep stops it like Ctrl-C, so no child is left running unattended."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    def echo(line: str) -> None:
        print(line, flush=True)

    settings = resolve(args)
    existing = check_out_dir(settings)
    runs = plan(settings)
    echo(_describe(settings, runs))
    if args.dry_run:
        return dry_run(settings, runs, echo)
    settings.out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(settings.out), _sigterm_as_interrupt():
        existing = check_out_dir(settings)  # again, now that no other sweep can change it
        record_invocation(settings, existing)
        outcomes, interrupted = execute(settings, runs, echo)
    echo("")
    echo(format_table(outcomes))
    failed = [o for o in outcomes if not o.ok]
    counts = f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished"
    if interrupted:
        echo(f"{counts}; interrupted: run the same command again to resume")
        return INTERRUPTED
    if failed:
        echo(f"{counts}; {len(failed)} did not (their logs are beside their run dirs); run "
             "the same command again to retry them")
        return 1
    echo(f"{counts}")
    return 0
