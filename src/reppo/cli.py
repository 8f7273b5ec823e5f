"""The `reppo` command line: train, eval, export, envs, and the experiment commands.

Every config field is a `train` flag (`num_envs` -> `--num-envs`). Errors a user can fix are
printed as one line, `reppo: error: ...`, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import types
import typing
from pathlib import Path
from typing import Any

from reppo.compile_cache import enable_compilation_cache
from reppo.config import (
    RESUMABLE_FIELDS,
    Config,
    ConfigError,
    coerce_field,
    field_help,
    field_type,
    frozen_changes,
)
from reppo.errors import UserError, exit_status

# Kept importable from here for callers written before their modules existed.
__all__ = ["UserError", "enable_compilation_cache", "main"]

# Experiment commands, each in its own module with `configure_parser(parser)` and
# `run(args) -> int`; their modules import nothing heavy at the top, so `reppo --help` stays fast.
_EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "baseline": ("reppo.experiments.baselines", "train a Brax PPO or SAC baseline run"),
    "sweep": ("reppo.experiments.sweep", "train every task of a suite x K seeds (resumable)"),
    "report": ("reppo.analysis.report", "figures and tables from run directories"),
    "memory": ("reppo.experiments.memory", "bytes held by rollout storage vs a replay buffer"),
    "toy": ("reppo.experiments.toy", "the six-hump camel study of MC vs pathwise gradients"),
}


# Flags with a dedicated meaning in `train` rather than a config field of the same name.
_TRAIN_OWN = {"run_dir", "resume", "preset"}
_RESUMABLE = RESUMABLE_FIELDS


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


def _build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: `--gamm 0.9` must be an error, not a silent `--gamma`.
    parser = argparse.ArgumentParser(
        prog="reppo",
        description="REPPO: Relative Entropy Pathwise Policy Optimization.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a policy (default: the CPU or paper preset on its default task)",
        description="Train REPPO. Flags left out take the preset's value "
                    "(`src/reppo/presets.py`; docs/algorithm.md explains each field).",
    )
    train.add_argument("--preset", default=None,
                       help="named config: auto (cpu without a GPU, else paper; the "
                            "default), paper, medium, small, cpu, and the ablations "
                            "BASE-no-hl-gauss|no-norm|no-aux|no-kl of each; with --resume "
                            "it must describe the run being resumed")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="run directory (default: runs/ENV-DATE-TIME)")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue the run in DIR from its latest checkpoint")
    fields = train.add_argument_group("config fields (default: the preset's value)")
    for f in dataclasses.fields(Config):
        fields.add_argument(
            _flag(f.name), dest=f.name, default=None, metavar=_metavar(f.name),
            nargs="?" if field_type(f.name) is bool else None,
            const="true" if field_type(f.name) is bool else None,
            help=field_help(f.name).replace("%", "%%"),
        )

    ev = sub.add_parser("eval", help="evaluate a saved policy with deterministic actions",
                        allow_abbrev=False)
    ev.add_argument("run_dir", type=Path, help="a run directory written by `reppo train`")
    ev.add_argument("--episodes", type=int, default=16, help="episodes per seed")
    ev.add_argument("--seed", type=int, default=None,
                    help="draw the evaluation episodes as a run with this seed does (default: "
                         "the run's own seed, so the episodes of its evaluation at that "
                         "checkpoint)")
    ev.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                    help="a checkpoint file of the run, RUN_DIR/checkpoints/"
                         "ckpt_<step>.safetensors (default: the run's latest)")
    ev.add_argument("--video", type=Path, default=None,
                    help="also record one episode of the first seed to this .mp4/.gif "
                         "(never overwritten; its directory must exist and be writable)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--backend", choices=("jax", "torch"), default=None,
                    help="backend that runs the policy (default: the one that trained it); "
                         "either backend reads either's runs")

    ex = sub.add_parser("export", help="export a saved policy to ONNX", allow_abbrev=False)
    ex.add_argument("run_dir", type=Path, help="a run directory written by `reppo train`")
    ex.add_argument("--onnx", type=Path, required=True, metavar="PATH",
                    help="where to write the .onnx file (never overwritten; its directory "
                         "must exist and be writable)")
    ex.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                    help="a checkpoint file of the run, RUN_DIR/checkpoints/"
                         "ckpt_<step>.safetensors (default: the run's latest)")
    ex.add_argument("--seed-index", type=int, default=0,
                    help="which seed of a --num-seeds run to export (default 0)")

    envs = sub.add_parser(
        "envs", help="list the available environments", allow_abbrev=False,
        description="List the built-in environments. Your own train as well: a JAX or "
        "Gymnasium env registered with reppo.register_env (named 'module:Name' on the command "
        "line), or any Gymnasium id such as HalfCheetah-v5 with --backend torch (docs/envs.md).",
    )
    envs.add_argument("--family", choices=("dm_control", "maniskill"), default=None,
                      help="only this family (dm_control: either backend; maniskill: torch)")

    import importlib

    for name, (module, help_text) in _EXTRA_COMMANDS.items():
        configure = importlib.import_module(module).configure_parser
        configure(sub.add_parser(name, help=help_text, description=help_text,
                                 allow_abbrev=False))
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: coerce_field(f.name, getattr(args, f.name))
        for f in dataclasses.fields(Config)
        if getattr(args, f.name) is not None
    }


def _cmd_train(args: argparse.Namespace) -> int:
    from reppo.presets import get_preset, resolve_preset_name, task_settings
    from reppo.runs import default_run_dir, open_run_dir

    overrides = _overrides(args)
    backend = overrides.get("backend", "jax")
    if args.resume is not None:
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
        config = saved.replace(**overrides)
        run_dir = args.resume
    else:
        if backend == "torch":
            _check_torch_installed()
        preset = resolve_preset_name(args.preset or "auto", backend=backend)
        env = overrides.get("env", get_preset(preset, backend=backend).env)
        config = get_preset(preset, backend=backend, env=env).replace(**overrides)
        run_dir = args.run_dir or default_run_dir(config.env)
        own = {k: v for k, v in task_settings(preset, env).items() if k not in overrides}
        if own:
            settings = ", ".join(f"{k}={v}" for k, v in own.items())
            print(f"preset {preset} with its {env} settings: {settings}", flush=True)

    if config.backend == "torch":
        _check_torch_installed()
    from reppo.api import run_training

    result = run_training(config, run_dir, resume=args.resume is not None,
                          echo=lambda line: print(line, flush=True))
    if result.eval_returns is not None and not result.interrupted:
        per_seed = ", ".join(f"{x:.1f}" for x in result.eval_returns.mean(axis=1))
        print(f"final evaluation: return {result.eval_return_mean:.1f} "
              f"± {result.eval_returns.std():.1f} (per seed: {per_seed})")
    if Path(run_dir).is_dir():
        print(f"run saved in {run_dir}")
    if not result.interrupted:
        return 0
    from reppo.runs.signals import EXIT_STATUS

    return EXIT_STATUS.get(result.stop_signal, 130)


def _check_torch_installed() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the torch backend needs PyTorch: pip install -e \".[torch]\" (see README for "
            "the CPU and GPU installs)"
        ) from None


def _run_backend(run_dir: Path, requested: str | None) -> str:
    from reppo.runs import open_run_dir

    backend = requested or Config.from_dict(open_run_dir(run_dir)).backend
    if backend == "torch":
        _check_torch_installed()
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return backend


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.video is not None:
        if args.video.suffix.lower() not in (".gif", ".mp4"):
            raise ConfigError(f"--video {args.video}: the file must end in .gif or .mp4")
        if args.video.exists():
            raise ConfigError(
                f"--video {args.video} already exists; pick another path or delete it first"
            )
        if args.video.suffix.lower() == ".mp4" and shutil.which("ffmpeg") is None:
            raise ConfigError(
                f"--video {args.video}: writing .mp4 needs ffmpeg, which is not on PATH; "
                "install it (apt-get install ffmpeg) or pass a .gif path"
            )
    backend = _run_backend(args.run_dir, args.backend)
    if args.video is not None:
        from reppo.runs.outputs import check_output_path

        # A missing, read-only or full directory is refused before the evaluation.
        check_output_path(args.video, "--video")
    enable_compilation_cache()
    if backend == "torch":
        from reppo.torch.policy import evaluate_run, record_run_video
    else:
        from reppo.jax.policy import evaluate_run, record_run_video

    report = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed,
                          checkpoint=args.checkpoint)
    if args.video is not None:
        record_run_video(args.run_dir, args.video, seed=args.seed, checkpoint=args.checkpoint)
        report["video"] = str(args.video)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['env']} at {report['env_steps']:,} env steps: return "
            f"{report['mean_return']:.1f} ± {report['std_return']:.1f} over "
            f"{report['episodes']} episodes"
        )
        if "video" in report:
            print(f"video written to {report['video']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.onnx.exists():
        raise ConfigError(f"{args.onnx} already exists; pick another path or delete it first")
    _check_torch_installed()
    from reppo.torch.export import export_onnx

    report = export_onnx(args.run_dir, args.onnx, checkpoint=args.checkpoint,
                         seed_index=args.seed_index)
    normalization = (
        "normalization included" if report["normalize_obs"] else "no observation normalization"
    )
    print(
        f"wrote {args.onnx}: obs ({report['obs_size']},) -> action ({report['action_size']},), "
        f"{normalization}; onnxruntime matches torch within {report['max_abs_error']:.1e}"
    )
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from reppo.catalog import list_envs

    for name in list_envs(args.family):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command in _EXTRA_COMMANDS:
        import importlib

        command = importlib.import_module(_EXTRA_COMMANDS[args.command][0]).run
    else:
        command = {
            "train": _cmd_train, "eval": _cmd_eval, "export": _cmd_export, "envs": _cmd_envs,
        }[args.command]
    try:
        return command(args)
    except BaseException as err:
        status = exit_status(err)
        if status is None or isinstance(err, SystemExit):
            raise
        print("reppo: interrupted" if status == 130 else f"reppo: error: {err}",
              file=sys.stderr)
        return status


if __name__ == "__main__":
    # Run through the imported module, so that `python -m reppo.cli` catches the same error
    # classes (e.g. UserError) as the modules it calls raise, not copies made for __main__.
    from reppo.cli import main as _main

    sys.exit(_main())
