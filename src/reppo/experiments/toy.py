"""`reppo toy`: Monte-Carlo vs pathwise policy gradients on the six-hump camel function.

The study of the paper's section 2.3 (figure 1; setup in appendix C.1). A Gaussian "policy"
N(mean, diag(std^2)) over the plane is trained to maximize the expected return

    J(mean, std) = E_{a ~ N(mean, std^2)} [g(a)],   g(a) = -f(a),

where f is the six-hump camel function, a standard minimization benchmark: maximizing -f is
minimizing f. Four gradient estimators are compared, each from the same 5 policy samples per
iteration and the same plain gradient-ascent step size:

* ``monte-carlo``: the score-function (REINFORCE) estimator of Equation 8,
  mean_i g(a_i) * grad log pi(a_i), with no baseline as in Equation 8 (``--mc-baseline
  running-mean`` gives the running-average control variate the paper also tried);
* ``pathwise-true``: the pathwise (reparameterization) estimator of Equation 9 through f itself,
  mean_i grad g(mean + std * eps_i);
* ``pathwise-weak`` / ``pathwise-strong``: the same through a surrogate of g, a 3-layer 16-unit
  MLP fit on 32 (weak) or 1024 (strong) points drawn uniformly over the domain.

Everything about one method is a pure function of a PRNG key, scanned over iterations and
vmapped over seeds; all four methods share the policy noise of each seed (common random
numbers), so their differences come from the estimators and not from luck. Because f is a
polynomial, J has a closed form (Gaussian moments), which the study reports instead of a noisy
sample average and which the tests use to check both estimators.

This module imports nothing heavy at the top, so that `reppo --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from reppo.experiments.toy_outputs import (
    plot_paths,
    plot_returns,
    summary_markdown,
    toy_csv,
    toy_json,
)
from reppo.experiments.toy_problem import (
    BASELINES,
    COLORS,
    DOMAIN_HIGH,
    DOMAIN_LOW,
    GLOBAL_MIN_VALUE,
    GLOBAL_MINIMA,
    LABELS,
    METHODS,
    OPTIMAL_RETURN,
    OUTPUT_FILES,
    ToySetup,
    camel,
    distance_to_optimum,
    expected_camel,
    expected_return,
    gaussian_log_prob,
    pathwise_gradient,
    sample_actions,
    score_function_gradient,
    true_return,
)
from reppo.experiments.toy_training import (
    StudyResult,
    estimate_gradient,
    fit_surrogate,
    gradient_variance,
    initial_policy,
    method_objective,
    project,
    run_study,
    summarize,
    surrogate_value,
    train_policy,
)

# The parts live in toy_problem (the function, the policy, the estimators) <- toy_training
# (surrogates, gradient ascent, the study) <- toy_outputs (figures, tables); this module is the
# command and keeps exporting their names.
__all__ = [
    "BASELINES", "COLORS", "DOMAIN_HIGH", "DOMAIN_LOW", "GLOBAL_MINIMA", "GLOBAL_MIN_VALUE",
    "LABELS", "METHODS", "OPTIMAL_RETURN", "OUTPUT_FILES", "StudyResult", "ToySetup", "camel",
    "configure_parser", "distance_to_optimum", "estimate_gradient", "expected_camel",
    "expected_return", "fit_surrogate", "gaussian_log_prob", "gradient_variance",
    "initial_policy", "method_objective", "pathwise_gradient", "plot_paths", "plot_returns",
    "project", "run", "run_study", "sample_actions", "score_function_gradient", "summarize",
    "summary_markdown", "surrogate_value", "toy_csv", "toy_json", "train_policy", "true_return",
    "write_outputs",
]


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
    from reppo.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pick a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out} is not empty; nothing was changed; pick a new or empty directory"
        )


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
