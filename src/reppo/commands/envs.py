"""`reppo envs`: the built-in task names (no framework is imported)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "List the built-in environments. Your own train as well: a JAX or Gymnasium env registered "
    "with reppo.register_env (named 'module:Name' on the command line), or any Gymnasium id "
    "such as HalfCheetah-v5 with --backend torch (docs/envs.md)."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--family", choices=("dm_control", "maniskill"), default=None,
                        help="only this family (dm_control: either backend; maniskill: torch)")


def run(args: argparse.Namespace) -> int:
    from reppo.catalog import list_envs

    for name in list_envs(args.family):
        print(name)
    return 0
