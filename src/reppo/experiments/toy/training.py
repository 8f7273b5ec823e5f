"""Training in `reppo toy`: the MLP surrogates, one method's run of gradient ascent, and the
whole study (every method on every seed) with its summary statistics.

Everything about one method is a pure function of a PRNG key, scanned over iterations and
vmapped over seeds (`run_study`). JAX, optax and numpy are imported inside the functions, so
that `reppo --help` stays fast.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from reppo.experiments.toy.problem import (
    DOMAIN_HIGH,
    DOMAIN_LOW,
    METHODS,
    ToySetup,
    distance_to_optimum,
    expected_return,
    pathwise_gradient,
    sample_actions,
    score_function_gradient,
    true_return,
)

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
