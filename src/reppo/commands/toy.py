"""`reppo toy`: its flags, its output directory and the files it writes; the study itself is
`reppo.experiments.toy`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from reppo.experiments.toy.outputs import (
    plot_paths,
    plot_returns,
    summary_markdown,
    toy_csv,
    toy_json,
)
from reppo.experiments.toy.problem import (
    BASELINES,
    ToySetup,
)
from reppo.experiments.toy.training import (
    run_study,
    summarize,
)
from reppo.runs.rundir import check_output_directory

# ---- the command ------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The toy study of the paper's section 2.3 (figure 1): a Gaussian policy maximizes "
        "E[-f] for the six-hump camel function f, with the Monte-Carlo score-function "
        "gradient, the pathwise gradient through f, and pathwise gradients through a weak "
        "(32 samples) and a strong (1024 samples) MLP surrogate. Writes returns.png, "
        "paths.png, toy.json, toy.csv and summary.md into --out."
    )
    defaults = ToySetup()
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output directory (created; must not exist or be empty)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds,
                        help=f"independent runs per method (default {defaults.seeds})")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help=f"gradient steps per run (default {defaults.iterations})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"base random seed (default {defaults.seed})")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help=f"gradient-ascent step size, all methods (default "
                             f"{defaults.learning_rate:g})")
    parser.add_argument("--mc-baseline", choices=BASELINES, default=defaults.mc_baseline,
                        help="control variate of the Monte-Carlo estimator (default none, as "
                             "in the paper's Equation 8)")
    parser.add_argument("--shared-surrogate", action="store_true",
                        help="fit one weak and one strong surrogate for all seeds (default: "
                             "new surrogates, on new samples, for every seed)")


def _check_out_dir(out: Path) -> None:
    check_output_directory(out, "--out")


def write_outputs(out: Path, files: dict[str, bytes]) -> None:
    """Write each file into `out`, never replacing an existing one."""
    from reppo.errors import UserError
    from reppo.runs.rundir import atomic_write_bytes

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {out}: {e.strerror or e}") from None
    for name, data in files.items():
        try:
            atomic_write_bytes(out / name, data, overwrite=False)
        except FileExistsError:
            raise UserError(
                f"{out / name} appeared while the study ran and was left alone; pick a new "
                "--out directory"
            ) from None


def run(args: argparse.Namespace) -> int:
    from reppo.errors import UserError

    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32), got {args.seed}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    setup = ToySetup(seeds=args.seeds, iterations=args.iterations, seed=args.seed,
                     learning_rate=args.lr, mc_baseline=args.mc_baseline,
                     surrogate_per_seed=not args.shared_surrogate).validate()
    out = Path(args.out)
    _check_out_dir(out)

    result = run_study(setup, echo=lambda line: print(line, flush=True))
    summary = summarize(result)
    text = summary_markdown(result, summary)
    files = {
        "returns.png": plot_returns(result),
        "paths.png": plot_paths(result),
        "toy.json": (json.dumps(toy_json(result, summary), indent=2) + "\n").encode(),
        "toy.csv": toy_csv(summary).encode(),
        "summary.md": text.encode(),
    }
    write_outputs(out, files)
    sys.stdout.write(text)
    print(f"wrote {', '.join(files)} to {out}")
    return 0
