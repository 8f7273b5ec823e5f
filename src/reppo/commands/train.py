"""`reppo train`: every config field is a flag (`num_envs` -> `--num-envs`) over a preset."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reppo.config import Config, ConfigError, coerce_field, field_help, field_type, frozen_changes

HELP = "train a policy (default: the CPU or paper preset on its default task)"
DESCRIPTION = ("Train REPPO. Flags left out take the preset's value "
               "(`src/reppo/presets.py`; docs/algorithm.md explains each field).")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _metavar(name: str) -> str:
    """INT, FLOAT, BOOL, STR, {a,b,c}; with |NONE when the field is optional."""
    tp = field_type(name)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if optional:
        tp = args[0]
    if typing.get_origin(tp) is typing.Literal:
        text = "{" + ",".join(typing.get_args(tp)) + "}"
    else:
        text = tp.__name__.upper()
    return text + ("|NONE" if optional else "")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--preset", default=None,
                        help="named config: auto (cpu without a GPU, else paper; the "
                             "default), paper, medium, small, cpu, and the ablations "
                             "BASE-no-hl-gauss|no-norm|no-aux|no-kl of each; or a preset "
                             "file FILE.json of config fields (the best.json of `reppo "
                             "tune`, a run's config.json; docs/experiments.md); with --resume "
                             "it must describe the run being resumed")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run directory (default: runs/ENV-DATE-TIME)")
    parser.add_argument("--resume", type=Path, default=None, metavar="DIR",
                        help="continue the run in DIR from its latest checkpoint")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config the run would train with (the preset, its "
                             "settings for the task and the flags) as JSON, a preset file, "
                             "and exit without training or writing anything")
    fields = parser.add_argument_group("config fields (default: the preset's value)")
    for f in dataclasses.fields(Config):
        fields.add_argument(
            _flag(f.name), dest=f.name, default=None, metavar=_metavar(f.name),
            nargs="?" if field_type(f.name) is bool else None,
            const="true" if field_type(f.name) is bool else None,
            help=field_help(f.name).replace("%", "%%"),
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: coerce_field(f.name, getattr(args, f.name))
        for f in dataclasses.fields(Config)
        if getattr(args, f.name) is not None
    }


def _resumed_config(args: argparse.Namespace, overrides: dict[str, Any]) -> Config:
    from reppo.presets import get_preset
    from reppo.runs import open_run_dir

    if args.run_dir is not None and args.run_dir != args.resume:
        raise ConfigError("give either --resume DIR or --run-dir DIR, not both")
    saved = Config.from_dict(open_run_dir(args.resume))
    if args.preset is not None:
        # A preset given with --resume must be the run's own: it is not applied silently.
        named = get_preset(args.preset, backend=saved.backend, env=saved.env).replace(
            **overrides
        )
        differ = frozen_changes(saved, named)
        if differ:
            raise ConfigError(
                f"--preset {args.preset} differs from the run in {args.resume} in "
                f"{', '.join(differ)}; a resumed run keeps its config: drop --preset"
            )
    # `run_training` refuses changes a resumed run may not take, and rewrites config.json
    # with the changed fields once the checkpoint is restored.
    return saved.replace(**overrides)


def _print_line(line: str) -> None:
    print(line, flush=True)


def _new_config(
    args: argparse.Namespace, overrides: dict[str, Any], say: Callable[[str], None] = _print_line
) -> Config:
    from reppo.presets import get_preset, resolve_preset_name, task_settings

    backend = overrides.get("backend", "jax")
    preset = resolve_preset_name(args.preset or "auto", backend=backend, env=overrides.get("env"))
    env = overrides.get("env", get_preset(preset, backend=backend).env)
    config = get_preset(preset, backend=backend, env=env).replace(**overrides)
    own = {k: v for k, v in task_settings(preset, env).items() if k not in overrides}
    from reppo.preset_files import is_preset_file, preset_description

    if is_preset_file(preset) and _is_leader(config):
        about = preset_description(preset)
        say(f"preset file {preset}" + (f": {about}" if about else ""))
    if own and _is_leader(config):
        settings = ", ".join(f"{k}={v}" for k, v in own.items())
        say(f"preset {preset} with its {env} settings: {settings}")
    return config


def _is_leader(config: Config) -> bool:
    """False in the processes of a several-process launch other than process 0."""
    from reppo.loop.processes import launched_processes

    return launched_processes(config).index == 0


def run(args: argparse.Namespace) -> int:
    from reppo.runs.signals import outliving_its_reader, start_up_signals

    # A run goes on when the reader of its output goes (a sweep killed): it then finishes, or
    # stops on its signal, with its checkpoint. Ctrl-C and SIGTERM stop the run from its start:
    # choosing the preset starts JAX, where a KeyboardInterrupt may be dropped.
    with outliving_its_reader():
        with start_up_signals(lambda line: print(line, flush=True)) as stop:
            trained = _train(args, stop)
        return trained if isinstance(trained, int) else _report(*trained)


def _train(args: argparse.Namespace, stop: Any) -> int | tuple[Config, Path, Any]:
    """The run's config, directory and result; or the exit status where it ends before
    training (--print-config, a stop while choosing the config)."""
    from reppo.api import join_jax_processes
    from reppo.runs import default_run_dir

    # A multi-process JAX run's processes meet before the preset is chosen, which asks JAX
    # whether it has a GPU (a plain start: nothing happens).
    join_jax_processes(args.backend or "jax")
    overrides = _overrides(args)
    if args.print_config:
        # The JSON alone on stdout (a preset file); the notes on choosing it go to stderr.
        config = _resumed_config(args, overrides) if args.resume is not None else _new_config(
            args, overrides, say=lambda line: print(line, file=sys.stderr, flush=True)
        )
        if stop.requested:
            return stop.exit_status
        print(json.dumps(config.validated().to_dict(), indent=2))
        return 0
    if args.resume is not None:
        config, run_dir = _resumed_config(args, overrides), args.resume
    else:
        config = _new_config(args, overrides)
        run_dir = args.run_dir or default_run_dir(config.env)
    if stop.requested:
        print(f"{stop.name} before training started: nothing was written to {run_dir}",
              flush=True)
        return stop.exit_status
    from reppo.api import run_training

    # `run_training` checks the backend (torch installed) before anything is written.

    result = run_training(config, run_dir, resume=args.resume is not None,
                          echo=lambda line: print(line, flush=True))
    return config, run_dir, result


def _report(config: Config, run_dir: Path, result: Any) -> int:
    """Print the end of a run (its final evaluation, where it is saved); its exit status."""
    from reppo.runs.signals import EXIT_STATUS

    if not _is_leader(config):
        # Process 0 of a several-process launch reports the run; the others print nothing.
        return EXIT_STATUS.get(result.stop_signal, 130) if result.interrupted else 0
    if result.eval_returns is not None and not result.interrupted:
        per_seed = ", ".join(f"{x:.1f}" for x in result.eval_returns.mean(axis=1))
        print(f"final evaluation: return {result.eval_return_mean:.1f} "
              f"± {result.eval_returns.std():.1f} (per seed: {per_seed})")
    if Path(run_dir).is_dir():
        print(f"run saved in {run_dir}")
    if not result.interrupted:
        return 0
    return EXIT_STATUS.get(result.stop_signal, 130)
