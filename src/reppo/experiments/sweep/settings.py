"""The validated settings of a `reppo sweep` invocation, and the helpers every part of the sweep
shares.

`resolve` checks the arguments of `reppo sweep` (suite, seeds, tasks, variants, preset and
`--set` overrides) and fills in the suite's defaults, giving a `Settings`: what to run and
where. Nothing here starts a process or touches the sweep directory. This module imports
nothing heavy at the top, so that `reppo --help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.errors import UserError
from reppo.experiments.suites import (
    REPPO,
    Suite,
    Variant,
    baseline_label,
    baseline_presets,
    get_suite,
)

# Config fields that the sweep sets for every run, and the flag that sets them instead.
_MANAGED = {
    "env": "--tasks", "seed": "--seeds", "num_seeds": "--seeds", "total_steps": "--steps",
    "backend": "--suite",
}
# The only config fields a baseline run accepts (as its own flags of the same name).
_BASELINE_FIELDS = ("eval_interval_steps", "eval_episodes")


Echo = Callable[[str], None]


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
    first_seed: int = 0  # the runs train seeds first_seed .. first_seed + seeds - 1

    @property
    def seed_range(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def batched_seeds(self) -> bool:
        """REPPO on JAX trains all K seeds in one process (and one run dir); the torch backend
        and the baselines train one seed per process."""
        return self.algo == REPPO and self.suite.backend == "jax"

    @property
    def seeds_per_process(self) -> int:
        return self.seeds if self.batched_seeds else 1

    @property
    def method_key(self) -> str:
        """The name under which sweep.json records this invocation's settings: the algo, or a
        baseline's method label where its preset is not the suite's (`algo-preset`)."""
        return self.methods[0].label if self.algo != REPPO else self.algo

    def algo_record(self) -> dict[str, Any]:
        """What must match when this algo (method_key) is run again in the same OUT: with a
        preset file, also the config it held, so that a changed file is noticed."""
        record: dict[str, Any] = {"preset": self.preset, "overrides": self.overrides}
        if self.algo == REPPO and self.preset is not None:
            from reppo.preset_files import is_preset_file

            if is_preset_file(self.preset):
                from reppo.presets import get_preset

                record["preset_config"] = get_preset(self.preset).to_dict()
        return record

    def command(self) -> str:
        """The canonical `reppo sweep` command of these settings."""
        parts = ["reppo", "sweep", "--suite", self.suite.name, "--seeds", str(self.seeds),
                 "--algo", self.algo, "--steps", str(self.steps), "--out", str(self.out)]
        if self.first_seed != self.suite.first_seed:
            parts += ["--first-seed", str(self.first_seed)]
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
        raise UserError(f"--{kind}s is empty; give comma-separated names, e.g. {valid[0]}")
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"unknown {kind} {name!r} in --{kind}s{hint}; the {suite} suite has: "
                f"{', '.join(valid)}"
            )
    return tuple(v for v in valid if v in names)


def _custom_tasks(text: str | None, suite: Suite) -> tuple[str, ...]:
    """The user's envs of a custom suite, checked now (importing their modules) so that a typo
    fails once here rather than in every child process."""
    from reppo.envs.user import gymnasium_id, lookup

    example = "my_envs:Maze" if suite.backend == "jax" else "my_envs:Maze,HalfCheetah-v5"
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise UserError(f"the {suite.name} suite trains the envs you name: add --tasks "
                          f"{example} (docs/envs.md)")
    for name in names:
        if suite.backend == "torch" and gymnasium_id(name):
            continue
        if ":" not in name:
            raise UserError(
                f"--tasks {name}: each run of a sweep is a new process, which finds your env by "
                f"its module-qualified name 'module:{name}' (the module registers it when "
                "imported; docs/envs.md)"
                + (", or give a Gymnasium id" if suite.backend == "torch" else "")
            )
        entry = lookup(name)  # imports the module; errors name the problem
        # The torch backend trains registered JAX envs too (through the DLPack bridge).
        if entry is not None and entry.backend == "torch" and suite.backend == "jax":
            raise UserError(f"--tasks {name} is a Gymnasium env, registered for the torch "
                              "backend: use --suite custom-torch")
    return tuple(dict.fromkeys(names))


def first_seed_of(suite: Suite, given: int | None) -> int:
    """The first seed of a sweep: `--first-seed`, or the suite's. An evaluation suite refuses
    seeds below its first: those are the seeds that settings were tuned and screened on."""
    if given is None:
        return suite.first_seed
    if given < 0:
        raise UserError(f"--first-seed must be >= 0, got {given}")
    if suite.is_evaluation and given < suite.first_seed:
        raise UserError(
            f"--first-seed {given}: {suite.name} is an evaluation suite, whose seeds start at "
            f"{suite.first_seed} (lower seeds are the ones settings are tuned and screened on, "
            f"so results on them are not fresh); leave --first-seed out, or give "
            f"{suite.first_seed} or more"
        )
    return given


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
            raise UserError(f"--set {pair!r} is not FIELD=VALUE, e.g. --set eval_episodes=32")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"--set {name}: no such config field{hint}; `reppo train --help` lists them"
            )
        if name in _MANAGED:
            raise UserError(
                f"--set {name}: the sweep sets {name} for each run; use {_MANAGED[name]} instead"
            )
        if algo != REPPO and name not in _BASELINE_FIELDS:
            raise UserError(
                f"--set {name} applies to REPPO runs only; the baselines take "
                f"{' and '.join(_BASELINE_FIELDS)}"
            )
        if name in overrides:
            raise UserError(f"--set {name} is given twice; keep one")
        overrides[name] = coerce_field(name, value.strip())
    return overrides


def resolve(args: argparse.Namespace) -> Settings:
    """Check the arguments of `reppo sweep` and fill in the suite's defaults."""
    from reppo.presets import get_preset

    suite = get_suite(args.suite)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    first_seed = first_seed_of(suite, getattr(args, "first_seed", None))
    algo = args.algo
    _check_algo(suite, algo)
    if not suite.tasks:
        tasks = _custom_tasks(args.tasks, suite)
    elif args.tasks is None:
        tasks = suite.tasks
    else:
        tasks = _pick("task", args.tasks, suite.tasks, suite.name)
    preset, methods = _preset_and_methods(suite, algo, args.preset, args.variants)
    settings = Settings(
        suite=suite, algo=algo, seeds=args.seeds, steps=args.steps or suite.steps,
        preset=preset, overrides=parse_overrides(args.overrides, algo), tasks=tasks,
        methods=methods, out=args.out, first_seed=first_seed,
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


def _check_algo(suite: Suite, algo: str) -> None:
    if algo == REPPO or algo in suite.baselines:
        return
    if suite.baselines:
        raise UserError(
            f"--algo {algo} does not train the {suite.name} suite's tasks; its baselines "
            f"are {', '.join(suite.baselines)} (or use --algo reppo)"
        )
    raise UserError(
        f"--algo {algo}: the {suite.name} suite has no baselines (they train the "
        "Playground DM Control and ManiSkill3 suites, and ablation suites compare REPPO "
        "variants); use --algo reppo"
    )


def _preset_and_methods(
    suite: Suite, algo: str, preset: str | None, variants: str | None
) -> tuple[str | None, tuple[Variant, ...]]:
    """The sweep's preset (None: an ablation suite's variants bring their own) and the
    methods it trains: a baseline under its preset, REPPO under the preset, or the
    suite's variants (those `variants` picks)."""
    from reppo.presets import PRESETS, get_preset

    methods = suite.methods(algo)
    if variants is not None:
        if algo != REPPO or not suite.variants:
            raise UserError(
                f"--variants picks among the methods of an ablation suite; {suite.name} with "
                f"--algo {algo} has one method, so leave --variants out"
            )
        labels = _pick("variant", variants, tuple(m.label for m in methods), suite.name)
        methods = tuple(m for m in methods if m.label in labels)
    if algo != REPPO:
        preset = preset or suite.baseline_preset
        if preset not in baseline_presets(algo):
            raise UserError(
                f"--preset {preset}: {algo} has the presets {', '.join(baseline_presets(algo))}"
            )
        return preset, (Variant(baseline_label(algo, preset, suite.baseline_preset), preset,
                                None),)
    if suite.variants:
        if preset is not None:
            raise UserError(
                f"the {suite.name} suite trains each variant with its own preset "
                f"({', '.join(m.preset for m in suite.variants)}); leave out --preset, and "
                "pick variants with --variants"
            )
        return preset, methods
    preset = preset or suite.preset
    if preset == "auto":
        from reppo.presets import default_preset_name

        preset = default_preset_name(suite.backend)
    from reppo.preset_files import is_preset_file

    if is_preset_file(preset):
        # Absolute, so that every child (and a rerun from another directory) reads the same
        # file.
        preset = str(Path(preset).resolve())
    if preset not in PRESETS:
        get_preset(preset)  # raises ConfigError naming the valid presets or the file's fault
    return preset, (Variant(REPPO, preset, None),)
