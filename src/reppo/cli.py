"""The `reppo` command line: train, eval, export, envs, and the experiment commands.

Each subcommand is a module with `configure_parser(parser)` and `run(args) -> int`
(`reppo.commands`, `reppo.experiments`, `reppo.analysis`); this module only builds the parser
from them, dispatches, and prints a user's error as one line, `reppo: error: ...`, with its
exit status (`reppo.errors`). Nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reppo.compile_cache import enable_compilation_cache
from reppo.errors import UserError, exit_status

# Kept importable from here for callers written before their modules existed.
__all__ = ["COMMANDS", "UserError", "enable_compilation_cache", "main"]

# name -> (module, one-line help). Every module imports nothing heavy at the top, so that
# `reppo --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("reppo.commands.train",
              "train a policy (default: the CPU or paper preset on its default task)"),
    "eval": ("reppo.commands.evaluate", "evaluate a saved policy with deterministic actions"),
    "export": ("reppo.commands.export", "export a saved policy to ONNX"),
    "envs": ("reppo.commands.envs", "list the available environments"),
    "baseline": ("reppo.commands.baseline",
                 "train a baseline run (Brax PPO or SAC, FastTD3, ManiSkill PPO)"),
    "sweep": ("reppo.commands.sweep", "train every task of a suite x K seeds (resumable)"),
    "tune": ("reppo.commands.tune",
             "search config values on a suite with Optuna; writes the best as a preset file"),
    "report": ("reppo.commands.report", "figures and tables from run directories"),
    "memory": ("reppo.commands.memory", "bytes held by rollout storage vs a replay buffer"),
    "toy": ("reppo.commands.toy", "the six-hump camel study of MC vs pathwise gradients"),
}
# Commands whose `reppo CMD --help` shows no description line (their flags say it all); the
# others show their one-line help there, unless their `configure_parser` sets a longer one.
_NO_DESCRIPTION = {"eval", "export"}


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: `--gamm 0.9` must be an error, not a silent `--gamma`.
    parser = argparse.ArgumentParser(
        prog="reppo",
        description="REPPO: Relative Entropy Pathwise Policy Optimization.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        description = None if name in _NO_DESCRIPTION else help_text
        command = sub.add_parser(name, help=help_text, description=description,
                                 allow_abbrev=False)
        importlib.import_module(module).configure_parser(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = importlib.import_module(COMMANDS[args.command][0]).run
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
