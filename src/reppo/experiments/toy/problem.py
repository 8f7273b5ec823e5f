"""The problem of `reppo toy`: the six-hump camel function, the Gaussian policy's expected
return on it, the study's settings (`ToySetup`) and the two gradient estimators compared.

Monte-Carlo (`score_function_gradient`, Equation 8) and pathwise (`pathwise_gradient`,
Equation 9) estimates of the gradient of E[objective(a)], a ~ N(mean, diag(std^2)), for any
objective: the true return g = -f or a surrogate of it. JAX is imported inside the functions,
so that `reppo --help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
