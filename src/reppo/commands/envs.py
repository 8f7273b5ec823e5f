"""`reppo envs`: the built-in task names (no framework is imported)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "List the built-in environments, one name per line on stdout, and on stderr which extra "
    "each family needs installed. Your own train as well: a JAX or Gymnasium env registered "
    "with reppo.register_env (named 'module:Name' on the command line), or any Gymnasium id "
    "such as HalfCheetah-v5 with --backend torch (docs/envs.md)."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--family", choices=("dm_control", "maniskill"), default=None,
                        help="only this family (dm_control: either backend; maniskill: torch)")


def run(args: argparse.Namespace) -> int:
    import sys

    from reppo.envs.catalog import FAMILIES, list_envs

    for name in list_envs(args.family):
        print(name)
    # On stderr, so that stdout stays a list of names for scripts.
    for family in FAMILIES.values() if args.family is None else (FAMILIES[args.family],):
        backends = " or ".join(f"--backend {b}" for b in family.backends)
        print(f"{len(family.tasks)} {family.title} tasks ({backends}) need the "
              f"{family.extra} extra: pip install -e \".[{family.extra}]\" ({family.extra_note})",
              file=sys.stderr)
    return 0
