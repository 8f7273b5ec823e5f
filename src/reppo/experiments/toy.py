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
import csv
import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---- the problem ------------------------------------------------------------------------------

#: The usual search domain of the six-hump camel function, (x, y) in [-3, 3] x [-2, 2].
DOMAIN_LOW = (-3.0, -2.0)
DOMAIN_HIGH = (3.0, 2.0)
#: Its two global minima (the function is symmetric under (x, y) -> (-x, -y)) and their value.
GLOBAL_MINIMA = ((0.0898420131, -0.7126564030), (-0.0898420131, 0.7126564030))
GLOBAL_MIN_VALUE = -1.0316284535
#: The best achievable return, max g = -min f (J approaches it as the std goes to zero).
OPTIMAL_RETURN = -GLOBAL_MIN_VALUE

METHODS = ("monte-carlo", "pathwise-true", "pathwise-weak", "pathwise-strong")
LABELS = {
    "monte-carlo": "Monte-Carlo (score function)",
    "pathwise-true": "pathwise, true function",
    "pathwise-weak": "pathwise, weak surrogate",
    "pathwise-strong": "pathwise, strong surrogate",
}
# The colours of the paper's figure 1 (matplotlib's default cycle: blue, orange, green, red).
COLORS = {
    "monte-carlo": "tab:blue",
    "pathwise-true": "tab:orange",
    "pathwise-weak": "tab:green",
    "pathwise-strong": "tab:red",
}
BASELINES = ("none", "running-mean")
OUTPUT_FILES = ("returns.png", "paths.png", "toy.json", "toy.csv", "summary.md")


@dataclass(frozen=True)
class ToySetup:
    """Every choice of the study. Appendix C.1 fixes the function, the start near the global
    minimum, the 3-layer 16-unit surrogates, the 32 / 1024 fitting samples and the 5 policy
    samples per iteration; the rest is ours (docs/toy.md says why for each)."""

    seeds: int = 10
    iterations: int = 300
    seed: int = 0
    # Plain gradient ascent (the paper's "gradient descent comparison"). The paper chose "a
    # learning rate which allows the ground-truth pathwise gradient to learn reliably"; 0.03
    # does (pathwise-true converges on every seed) while the 5-sample Monte-Carlo estimator
    # already wanders.
    learning_rate: float = 0.03
    policy_samples: int = 5
    # "Close to the global minimum" (0.0898, -0.7126): 0.44 away, on the same slope, with a
    # std that covers that distance.
    init_mean: tuple[float, float] = (0.4, -0.4)
    init_std: float = 0.25
    # The mean is projected onto the domain and the std onto [min_std, max_std] after every
    # step, so that a diverging estimator stays finite (and comparable) instead of producing
    # NaN; stable methods never touch these bounds.
    min_std: float = 1e-3
    max_std: float = 1.0
    mc_baseline: str = "none"
    baseline_decay: float = 0.9
    # Each seed repeats the whole experiment, surrogate data included, so that the comparison
    # does not hinge on one lucky or unlucky draw of 32 points. False: one weak and one strong
    # surrogate shared by all seeds (the paper's figure 9 shows one data set of each), so the
    # seeds differ only in the policy noise.
    surrogate_per_seed: bool = True
    weak_samples: int = 32
    strong_samples: int = 1024
    surrogate_hidden_dim: int = 16
    surrogate_layers: int = 3  # Linear layers, counted as in Table 1 (2 hidden + output)
    surrogate_fit_steps: int = 3000
    surrogate_learning_rate: float = 1e-2
    # Draws of the 5-sample estimator used to measure its variance at the start point.
    gradient_variance_draws: int = 1000

    def validate(self) -> ToySetup:
        """Raise ValueError naming the first bad field; return self so calls can chain."""
        positive_ints = ("seeds", "iterations", "policy_samples", "weak_samples",
                         "strong_samples", "surrogate_hidden_dim", "surrogate_fit_steps",
                         "gradient_variance_draws")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.surrogate_layers < 2:
            raise ValueError(f"surrogate_layers must be >= 2, got {self.surrogate_layers}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        for name in ("learning_rate", "surrogate_learning_rate", "init_std", "min_std",
                     "max_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not self.min_std <= self.init_std <= self.max_std:
            raise ValueError(
                f"init_std must lie in [min_std, max_std] = [{self.min_std}, {self.max_std}], "
                f"got {self.init_std}"
            )
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.mc_baseline not in BASELINES:
            raise ValueError(
                f"mc_baseline must be one of {', '.join(BASELINES)}, got {self.mc_baseline!r}"
            )
        inside = len(self.init_mean) == 2 and all(
            lo <= m <= hi for lo, m, hi in zip(DOMAIN_LOW, self.init_mean, DOMAIN_HIGH, strict=True)
        )
        if not inside:
            raise ValueError(f"init_mean must be a point of the domain, got {self.init_mean}")
        return self


def camel(points: Any) -> Any:
    """The six-hump camel function f(x, y) of points shaped (..., 2)."""
    x, y = points[..., 0], points[..., 1]
    return (4.0 - 2.1 * x**2 + x**4 / 3.0) * x**2 + x * y + (-4.0 + 4.0 * y**2) * y**2


def true_return(points: Any) -> Any:
    """The return g = -f whose expectation the policy maximizes."""
    return -camel(points)


def expected_camel(mean: Any, std: Any) -> Any:
    """E[f(a)] for a ~ N(mean, diag(std^2)), exactly, from the Gaussian's raw moments
    E[x^2] = m^2 + s^2, E[x^4] = m^4 + 6 m^2 s^2 + 3 s^4, E[x^6] = m^6 + 15 m^4 s^2
    + 45 m^2 s^4 + 15 s^6, and E[xy] = m_x m_y (independent coordinates). Shapes (..., 2)."""
    m, s2 = mean, std**2
    ex2 = m**2 + s2
    ex4 = m**4 + 6.0 * m**2 * s2 + 3.0 * s2**2
    ex6 = m**6 + 15.0 * m**4 * s2 + 45.0 * m**2 * s2**2 + 15.0 * s2**3
    x2, x4, x6, y2, y4 = ex2[..., 0], ex4[..., 0], ex6[..., 0], ex2[..., 1], ex4[..., 1]
    return 4.0 * x2 - 2.1 * x4 + x6 / 3.0 + mean[..., 0] * mean[..., 1] - 4.0 * y2 + 4.0 * y4


def expected_return(policy: dict[str, Any]) -> Any:
    """J = E[g(a)] of a policy {"mean", "log_std"} (closed form; leading axes broadcast)."""
    import jax.numpy as jnp

    return -expected_camel(policy["mean"], jnp.exp(policy["log_std"]))


def distance_to_optimum(mean: Any) -> Any:
    """Euclidean distance of points (..., 2) to the nearer of the two global minima."""
    import jax.numpy as jnp

    minima = jnp.asarray(GLOBAL_MINIMA, dtype=jnp.float32)
    return jnp.min(jnp.linalg.norm(mean[..., None, :] - minima, axis=-1), axis=-1)


# ---- the two gradient estimators --------------------------------------------------------------


def sample_actions(policy: dict[str, Any], eps: Any) -> Any:
    """a = mean + std * eps: the reparameterized samples; eps is standard normal (n, 2)."""
    import jax.numpy as jnp

    return policy["mean"] + jnp.exp(policy["log_std"]) * eps


def pathwise_gradient(objective: Any, policy: dict[str, Any], eps: Any) -> dict[str, Any]:
    """grad_theta mean_i objective(mean + std * eps_i): Equation 9, the derivative flowing
    through the objective (the true g or a surrogate) into the policy parameters."""
    import jax
    import jax.numpy as jnp

    return jax.grad(lambda p: jnp.mean(objective(sample_actions(p, eps))))(policy)


def gaussian_log_prob(policy: dict[str, Any], actions: Any) -> Any:
    """log N(actions | mean, diag(std^2)), summed over the two coordinates."""
    import jax.numpy as jnp

    z = (actions - policy["mean"]) * jnp.exp(-policy["log_std"])
    return jnp.sum(-0.5 * z**2 - policy["log_std"] - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def score_function_gradient(
    objective: Any, policy: dict[str, Any], eps: Any, baseline: Any = 0.0
) -> dict[str, Any]:
    """mean_i (g(a_i) - baseline) grad_theta log pi(a_i): Equation 8. The samples and returns
    are constants (only their log-probability is differentiated), so the objective is never
    differentiated; unbiased for any baseline that does not depend on these samples."""
    import jax
    import jax.numpy as jnp

    actions = jax.lax.stop_gradient(sample_actions(policy, eps))
    weights = jax.lax.stop_gradient(objective(actions) - baseline)
    return jax.grad(lambda p: jnp.mean(weights * gaussian_log_prob(p, actions)))(policy)


# ---- surrogates -------------------------------------------------------------------------------


def _domain_arrays() -> tuple[Any, Any]:
    import jax.numpy as jnp

    return jnp.asarray(DOMAIN_LOW, jnp.float32), jnp.asarray(DOMAIN_HIGH, jnp.float32)


def surrogate_value(params: dict[str, Any], points: Any) -> Any:
    """The surrogate's estimate of g at points (..., 2). Inputs are scaled from the domain to
    [-1, 1] and the output is de-standardized with the fitting targets' mean and std, so one
    learning rate fits both the few-unit network and targets that span -1 to 160."""
    from reppo.jax.networks import apply_mlp

    low, high = _domain_arrays()
    scaled = (points - (low + high) / 2) / ((high - low) / 2)
    out = apply_mlp(params["net"], scaled, "none")[..., 0]
    return out * params["target_std"] + params["target_mean"]


def fit_surrogate(key: Any, num_samples: int, setup: ToySetup) -> tuple[dict[str, Any], Any]:
    """Fit an MLP to g on `num_samples` points drawn uniformly over the domain (the fixed data
    sets of the paper's figure 9), by full-batch Adam on the mean squared error of standardized
    targets. Returns (params, final training loss in standardized units)."""
    import jax
    import jax.numpy as jnp
    import optax

    from reppo.jax.networks import init_mlp

    data_key, init_key = jax.random.split(key)
    low, high = _domain_arrays()
    points = jax.random.uniform(data_key, (num_samples, 2), minval=low, maxval=high)
    targets = true_return(points)
    params = {
        "net": init_mlp(init_key, 2, setup.surrogate_hidden_dim, setup.surrogate_layers - 1, 1,
                        "none"),
        "target_mean": jnp.mean(targets),
        # A single sample (or equal targets) has no spread; fall back to unit scale.
        "target_std": jnp.where(jnp.std(targets) > 0, jnp.std(targets), 1.0),
    }
    trainable = params["net"]

    def loss(net: Any) -> Any:
        pred = surrogate_value({**params, "net": net}, points)
        return jnp.mean(((pred - targets) / params["target_std"]) ** 2)

    optimizer = optax.adam(setup.surrogate_learning_rate)

    def step(carry: Any, _: Any) -> tuple[Any, Any]:
        net, state = carry
        value, grad = jax.value_and_grad(loss)(net)
        updates, state = optimizer.update(grad, state, net)
        return (optax.apply_updates(net, updates), state), value

    (trainable, _), _ = jax.lax.scan(
        step, (trainable, optimizer.init(trainable)), None, length=setup.surrogate_fit_steps
    )
    return {**params, "net": trainable}, loss(trainable)


# ---- one run of one method --------------------------------------------------------------------


def initial_policy(setup: ToySetup) -> dict[str, Any]:
    import jax.numpy as jnp

    return {
        "mean": jnp.asarray(setup.init_mean, jnp.float32),
        "log_std": jnp.full((2,), math.log(setup.init_std), jnp.float32),
    }


def method_objective(method: str, surrogates: dict[str, Any]) -> Any:
    """The function a method's gradients are taken of (Monte-Carlo only evaluates it)."""
    if method in ("monte-carlo", "pathwise-true"):
        return true_return
    params = surrogates["weak" if method == "pathwise-weak" else "strong"]
    return lambda points: surrogate_value(params, points)


def estimate_gradient(
    method: str, objective: Any, policy: dict[str, Any], eps: Any, baseline: Any = 0.0
) -> dict[str, Any]:
    if method == "monte-carlo":
        return score_function_gradient(objective, policy, eps, baseline)
    return pathwise_gradient(objective, policy, eps)


def project(policy: dict[str, Any], setup: ToySetup) -> dict[str, Any]:
    """Keep the mean in the domain and the std in [min_std, max_std] (see ToySetup)."""
    import jax.numpy as jnp

    low, high = _domain_arrays()
    return {
        "mean": jnp.clip(policy["mean"], low, high),
        "log_std": jnp.clip(policy["log_std"], math.log(setup.min_std), math.log(setup.max_std)),
    }


def train_policy(
    method: str, objective: Any, key: Any, setup: ToySetup
) -> dict[str, Any]:
    """Run `setup.iterations` gradient-ascent steps of one method from the start point.

    Returns the policy after every step, with the start prepended: {"mean": (T+1, 2),
    "log_std": (T+1, 2)}. The running-mean baseline (Monte-Carlo with mc_baseline
    "running-mean") is a bias-corrected exponential average of earlier batches' mean return,
    so it never depends on the samples it is subtracted from and the estimator stays unbiased.
    """
    import jax
    import jax.numpy as jnp
    import optax

    optimizer = optax.sgd(setup.learning_rate)
    use_baseline = method == "monte-carlo" and setup.mc_baseline == "running-mean"
    decay = setup.baseline_decay

    def step(carry: Any, step_key: Any) -> tuple[Any, Any]:
        policy, opt_state, avg, weight = carry
        eps = jax.random.normal(step_key, (setup.policy_samples, 2), jnp.float32)
        baseline = jnp.where(weight > 0, avg / jnp.maximum(weight, 1e-12), 0.0)
        grad = estimate_gradient(method, objective, policy, eps,
                                 baseline if use_baseline else 0.0)
        if use_baseline:  # this batch's mean return feeds the baselines of later steps only
            avg = decay * avg + (1 - decay) * jnp.mean(objective(sample_actions(policy, eps)))
            weight = decay * weight + (1 - decay)
        ascent = jax.tree.map(jnp.negative, grad)  # optax minimizes; we maximize J
        updates, opt_state = optimizer.update(ascent, opt_state, policy)
        policy = project(optax.apply_updates(policy, updates), setup)
        return (policy, opt_state, avg, weight), policy

    start = initial_policy(setup)
    carry = (start, optimizer.init(start), jnp.float32(0.0), jnp.float32(0.0))
    _, path = jax.lax.scan(step, carry, jax.random.split(key, setup.iterations))
    return jax.tree.map(lambda s, p: jnp.concatenate([s[None], p]), start, path)


def gradient_variance(
    method: str, objective: Any, key: Any, setup: ToySetup
) -> Any:
    """Total variance (trace of the covariance) of the method's gradient estimate from
    `policy_samples` samples, with respect to (mean, log_std) at the start point, over
    `gradient_variance_draws` independent draws."""
    import jax
    import jax.numpy as jnp

    start = initial_policy(setup)
    eps = jax.random.normal(
        key, (setup.gradient_variance_draws, setup.policy_samples, 2), jnp.float32
    )
    grads = jax.vmap(lambda e: estimate_gradient(method, objective, start, e))(eps)
    flat = jnp.concatenate([grads["mean"], grads["log_std"]], axis=-1)
    return jnp.sum(jnp.var(flat, axis=0))


# ---- the study --------------------------------------------------------------------------------


@dataclass
class StudyResult:
    """Numpy arrays of the whole study; axis 0 of every array is the seed."""

    setup: ToySetup
    means: dict[str, Any]  # method -> (seeds, T+1, 2)
    stds: dict[str, Any]  # method -> (seeds, T+1, 2)
    returns: dict[str, Any]  # method -> (seeds, T+1), the expected return J
    gradient_variance: dict[str, Any]  # method -> (seeds,)
    surrogate_loss: dict[str, Any]  # "weak"/"strong" -> (seeds,), or (1,) when shared
    seconds: float


def _study_keys(setup: ToySetup) -> dict[str, Any]:
    """The keys of every random stream. "policy" and "gradvar" hold one key per seed; the
    policy noise of a seed is shared by all methods (common random numbers). "weak" and
    "strong" hold the surrogates' data-and-init keys: one per seed with surrogate_per_seed,
    else a single key whose surrogate every seed shares."""
    import jax

    surrogate_root, seed_root = jax.random.split(jax.random.key(setup.seed))
    seeds = jax.numpy.arange(setup.seeds, dtype=jax.numpy.uint32)
    per_seed = jax.vmap(lambda s: jax.random.split(jax.random.fold_in(seed_root, s), 4))(seeds)
    keys = {"policy": per_seed[:, 0], "gradvar": per_seed[:, 1]}
    if setup.surrogate_per_seed:
        keys["weak"], keys["strong"] = per_seed[:, 2], per_seed[:, 3]
    else:
        keys["weak"], keys["strong"] = jax.random.split(surrogate_root)
    return keys


def run_study(setup: ToySetup, echo: Any = None) -> StudyResult:
    """Fit the surrogates and train every method on every seed; pure apart from `echo`."""
    import jax
    import numpy as np

    setup.validate()
    say = echo or (lambda _line: None)
    began = time.perf_counter()
    keys = _study_keys(setup)
    per_seed = setup.surrogate_per_seed

    say(f"fitting surrogates ({setup.weak_samples} and {setup.strong_samples} samples, "
        + (f"one per seed for {setup.seeds} seeds" if per_seed else "shared by all seeds")
        + ") ...")
    surrogates, losses = {}, {}
    for name, count in (("weak", setup.weak_samples), ("strong", setup.strong_samples)):
        fit = lambda k, n=count: fit_surrogate(k, n, setup)
        surrogates[name], losses[name] = jax.jit(jax.vmap(fit) if per_seed else fit)(keys[name])

    means, stds, returns, grad_var = {}, {}, {}, {}
    for method in METHODS:
        say(f"training {method} ({setup.iterations} iterations x {setup.seeds} seed(s)) ...")

        def one_seed(surr: Any, policy_key: Any, var_key: Any, method: str = method) -> Any:
            objective = method_objective(method, surr)
            path = train_policy(method, objective, policy_key, setup)
            return path, gradient_variance(method, objective, var_key, setup)

        over_seeds = jax.vmap(one_seed, in_axes=(0 if per_seed else None, 0, 0))
        path, var = jax.jit(over_seeds)(surrogates, keys["policy"], keys["gradvar"])
        means[method] = np.asarray(path["mean"], np.float64)
        stds[method] = np.exp(np.asarray(path["log_std"], np.float64))
        returns[method] = np.asarray(expected_return(path), np.float64)
        grad_var[method] = np.asarray(var, np.float64)
    return StudyResult(
        setup=setup, means=means, stds=stds, returns=returns, gradient_variance=grad_var,
        surrogate_loss={k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in losses.items()},
        seconds=time.perf_counter() - began,
    )


def summarize(result: StudyResult) -> dict[str, dict[str, float]]:
    """Per method: the final expected return (mean, std and variance over seeds), the
    within-run variance of the return over the second half of training (mean over seeds: how
    much the policy keeps jumping around), the return of the final mean action, the final
    distance to the nearer global minimum, and the start-point gradient variance."""
    import numpy as np

    summary = {}
    for method in METHODS:
        ret = result.returns[method]
        final = ret[:, -1]
        second_half = ret[:, ret.shape[1] // 2:]
        final_mean = result.means[method][:, -1]
        distance = np.asarray(distance_to_optimum(final_mean), np.float64)
        mean_action = np.asarray(true_return(final_mean), np.float64)
        summary[method] = {
            "final_return_mean": float(final.mean()),
            "final_return_std": float(final.std()),
            "final_return_var": float(final.var()),
            "final_return_median": float(np.median(final)),
            "within_run_return_var": float(second_half.var(axis=1).mean()),
            "final_mean_action_return": float(mean_action.mean()),
            "final_distance_mean": float(distance.mean()),
            "final_distance_std": float(distance.std()),
            "final_std_mean": float(result.stds[method][:, -1].mean()),
            "gradient_variance_at_start": float(result.gradient_variance[method].mean()),
        }
    return summary


# ---- figures ----------------------------------------------------------------------------------


def _new_figure(**kwargs: Any) -> Any:
    """A figure on an Agg canvas (matplotlib's object API: no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# Returns below this are off the return axis (only a diverging estimator gets there); the
# axis says so, and toy.json has the numbers.
_RETURN_AXIS_FLOOR = -2.0


def plot_returns(result: StudyResult) -> bytes:
    """Left: expected return over iterations, mean and +-1 std band over seeds. Right: the
    distance of the policy mean to the nearer global minimum (log scale), same statistics."""
    import numpy as np

    fig = _new_figure(figsize=(11, 4.2))
    ax_ret, ax_dist = fig.subplots(1, 2)
    iters = np.arange(result.setup.iterations + 1)
    lowest, closest = math.inf, math.inf
    for method in METHODS:
        ret = result.returns[method]
        mean, std = ret.mean(axis=0), ret.std(axis=0)
        ax_ret.plot(iters, mean, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        ax_ret.fill_between(iters, mean - std, mean + std, color=COLORS[method], alpha=0.2,
                            linewidth=0)
        lowest = min(lowest, float(np.min(mean - std)))
        dist = np.asarray(distance_to_optimum(result.means[method]), np.float64)
        d_mean, d_std = dist.mean(axis=0), dist.std(axis=0)
        closest = min(closest, float(np.min(d_mean)))
        ax_dist.plot(iters, d_mean, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        ax_dist.fill_between(iters, np.maximum(d_mean - d_std, 1e-4), d_mean + d_std,
                             color=COLORS[method], alpha=0.2, linewidth=0)
    ax_ret.axhline(OPTIMAL_RETURN, color="black", linestyle="--", linewidth=1,
                   label=f"optimum {OPTIMAL_RETURN:.4f}")
    bottom = max(lowest, _RETURN_AXIS_FLOOR)
    ax_ret.set_ylim(bottom - 0.05, OPTIMAL_RETURN + 0.15)
    if lowest < _RETURN_AXIS_FLOOR:
        ax_ret.text(0.99, 0.02, f"axis cut at {_RETURN_AXIS_FLOOR:g} (lowest {lowest:.3g})",
                    transform=ax_ret.transAxes, ha="right", va="bottom", fontsize=8,
                    color="gray")
    ax_ret.set_xlabel("iteration")
    ax_ret.set_ylabel("expected return  E[-f(a)]")
    ax_ret.set_title("return (mean ± std over seeds)")
    ax_ret.legend(fontsize=8, loc="lower right" if lowest >= _RETURN_AXIS_FLOOR else "right")
    ax_ret.grid(True, alpha=0.3)
    ax_dist.set_yscale("log")
    # A band reaching zero would stretch the log axis down to its clip value; the mean curves
    # decide the range instead.
    ax_dist.set_ylim(bottom=max(0.5 * closest, 1e-4))
    ax_dist.set_xlabel("iteration")
    ax_dist.set_ylabel("distance of the mean to the optimum")
    ax_dist.set_title("distance to the optimum (mean ± std over seeds)")
    ax_dist.grid(True, alpha=0.3, which="both")
    s = result.setup
    fig.suptitle(f"Six-hump camel: {s.policy_samples} samples per iteration, step size "
                 f"{s.learning_rate:g}, {s.seeds} seeds")
    return _png(fig)


def _median_path(seed_paths: Any) -> Any:
    """The coordinate-wise median over seeds of the paths (seeds, T+1, 2). Unlike the mean it
    is not dragged around by a single diverging seed bouncing between the domain's corners."""
    import numpy as np

    return np.median(seed_paths, axis=0)


def _path_window(result: StudyResult) -> tuple[float, float, float, float]:
    """The part of the domain around the median paths and the global minimum nearest the
    start, with a margin, so that the paths are not specks on the full domain."""
    import numpy as np

    points = [np.asarray(GLOBAL_MINIMA[0])[None]] + [
        _median_path(result.means[m]) for m in METHODS
    ]
    stacked = np.concatenate(points)
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    margin = np.maximum(0.25 * (hi - lo), 0.3)
    lo = np.maximum(lo - margin, DOMAIN_LOW)
    hi = np.minimum(hi + margin, DOMAIN_HIGH)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def plot_paths(result: StudyResult) -> bytes:
    """One panel per method, over the contours of f: each seed's path of the policy mean
    (faint) with its end point (dot), the median path over seeds (bold), the start and the
    global minima."""
    import numpy as np

    x0, x1, y0, y1 = _path_window(result)
    gx, gy = np.meshgrid(np.linspace(x0, x1, 161), np.linspace(y0, y1, 161))
    values = np.asarray(camel(np.stack([gx, gy], axis=-1)), np.float64)
    levels = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 22)))
    fig = _new_figure(figsize=(10, 8.4))
    axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
    minima = np.asarray(GLOBAL_MINIMA)
    for ax, method in zip(axes, METHODS, strict=True):
        filled = ax.contourf(gx, gy, values, levels=levels, cmap="Greys_r")
        seed_paths = result.means[method]
        for path in seed_paths:
            ax.plot(path[:, 0], path[:, 1], color=COLORS[method], linewidth=0.6, alpha=0.35)
        ax.plot(seed_paths[:, -1, 0], seed_paths[:, -1, 1], "o", color=COLORS[method],
                markeredgecolor="black", markeredgewidth=0.5, markersize=4,
                label="end of each seed")
        median = _median_path(seed_paths)
        ax.plot(median[:, 0], median[:, 1], color=COLORS[method], linewidth=2.2,
                label="median over seeds")
        ax.plot(*result.setup.init_mean, "s", color="white", markeredgecolor="black",
                markersize=6, label="start")
        ax.plot(minima[:, 0], minima[:, 1], "*", color="gold", markeredgecolor="black",
                markersize=12, label="global minima")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(LABELS[method], color=COLORS[method])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    axes[0].legend(fontsize=8, loc="upper right")
    fig.colorbar(filled, ax=list(axes), shrink=0.8, label="f(x, y) (contour levels: quantiles)")
    fig.suptitle("Paths of the policy mean on the six-hump camel function "
                 f"({result.setup.seeds} seeds)")
    return _png(fig)


# ---- tables -----------------------------------------------------------------------------------

_CSV_COLUMNS = (
    "method", "label", "final_return_mean", "final_return_std", "final_return_var",
    "final_return_median", "within_run_return_var", "final_mean_action_return",
    "final_distance_mean", "final_distance_std", "final_std_mean", "gradient_variance_at_start",
)


def toy_json(result: StudyResult, summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    import numpy as np

    from reppo.runs.versions import collect_versions

    curves = {
        method: {
            "return_mean": [round(float(v), 6) for v in result.returns[method].mean(axis=0)],
            "return_std": [round(float(v), 6) for v in result.returns[method].std(axis=0)],
            "final_return_per_seed": [float(v) for v in result.returns[method][:, -1]],
        }
        for method in METHODS
    }
    return {
        "setup": dataclasses.asdict(result.setup),
        "optimal_return": OPTIMAL_RETURN,
        "global_minima": [list(p) for p in GLOBAL_MINIMA],
        "initial_return": float(np.asarray(expected_return(initial_policy(result.setup)))),
        "methods": summary,
        "labels": LABELS,
        "surrogate_fit_loss": {k: float(v.mean()) for k, v in result.surrogate_loss.items()},
        "curves": curves,
        "seconds": round(result.seconds, 2),
        "versions": collect_versions(),
    }


def toy_csv(summary: dict[str, dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for method in METHODS:
        writer.writerow({"method": method, "label": LABELS[method], **{
            k: f"{v:.6g}" for k, v in summary[method].items()
        }})
    return out.getvalue()


def summary_markdown(result: StudyResult, summary: dict[str, dict[str, float]]) -> str:
    s = result.setup
    initial = float(expected_return(initial_policy(s)))
    lines = [
        "# Toy study: Monte-Carlo vs pathwise gradients on the six-hump camel function",
        "",
        f"Maximize E[-f(a)], a ~ N(mean, diag(std^2)), from mean {tuple(s.init_mean)} and "
        f"std {s.init_std:g} (expected return {initial:.4f}; optimum {OPTIMAL_RETURN:.4f}); "
        f"{s.iterations} iterations of gradient ascent with step size {s.learning_rate:g}, "
        f"{s.policy_samples} policy samples per iteration, {s.seeds} seeds (base seed "
        f"{s.seed}); Monte-Carlo baseline: {s.mc_baseline}; surrogates fit on "
        f"{s.weak_samples} / {s.strong_samples} uniform samples"
        + (", refit for every seed." if s.surrogate_per_seed else ", shared by all seeds."),
        "",
        "| method | final return (mean ± std over seeds) | median | variance over seeds | "
        "within-run variance (2nd half) | distance to optimum | gradient variance at start |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = summary[method]
        lines.append(
            f"| {LABELS[method]} | {m['final_return_mean']:.4f} ± {m['final_return_std']:.4f} "
            f"| {m['final_return_median']:.4f} | {m['final_return_var']:.3g} "
            f"| {m['within_run_return_var']:.3g} "
            f"| {m['final_distance_mean']:.4f} ± {m['final_distance_std']:.4f} "
            f"| {m['gradient_variance_at_start']:.3g} |"
        )
    lines += [
        "",
        "Return: the exact expected return of the policy (closed form). Variance over seeds: "
        "of the final return. Within-run variance: of the return over the second half of the "
        "iterations, averaged over seeds. Gradient variance: total variance of the "
        f"{s.policy_samples}-sample gradient estimate at the start point.",
        "",
        f"Computed in {result.seconds:.1f} s.",
        "",
    ]
    return "\n".join(lines)


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
    from reppo.cli import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pick a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out} is not empty; nothing was changed; pick a new or empty directory"
        )


def write_outputs(out: Path, files: dict[str, bytes]) -> None:
    """Write each file into `out`, never replacing an existing one."""
    from reppo.cli import UserError
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
    from reppo.cli import UserError

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
