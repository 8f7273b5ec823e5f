"""The toy study (`reppo toy`): Monte-Carlo vs pathwise policy gradients on the six-hump camel
function.

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

The parts: `problem` (the function, the policy, the estimators) <- `training` (surrogates,
gradient ascent, the study) <- `outputs` (figures, tables).
"""
