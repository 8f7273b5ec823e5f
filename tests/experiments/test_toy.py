"""The toy study (`reppo toy`): the function, both gradient estimators, and the CLI end to end."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.cli import main
from reppo.experiments.toy.problem import (
    GLOBAL_MIN_VALUE,
    LABELS,
    METHODS,
    OPTIMAL_RETURN,
    OUTPUT_FILES,
    ToySetup,
    camel,
    distance_to_optimum,
    expected_camel,
    expected_return,
    pathwise_gradient,
    sample_actions,
    score_function_gradient,
    true_return,
)
from reppo.experiments.toy.training import (
    fit_surrogate,
    initial_policy,
    run_study,
    surrogate_value,
    train_policy,
)

# A point away from the optimum and the std used for the estimator checks.
POLICY = {"mean": jnp.array([0.4, -0.4]), "log_std": jnp.log(jnp.array([0.25, 0.3]))}


def analytic_gradient(policy):
    """The exact gradient of J = E[-f] for a Gaussian, from the closed form."""
    return jax.grad(expected_return)(policy)


def per_sample_gradients(estimator, objective, policy, num, seed):
    """`num` independent one-sample estimates, flattened to (num, 4) = (d mean, d log_std)."""
    eps = jax.random.normal(jax.random.key(seed), (num, 1, 2))
    grads = jax.vmap(lambda e: estimator(objective, policy, e))(eps)
    return np.asarray(jnp.concatenate([grads["mean"], grads["log_std"]], axis=-1), np.float64)


def flat(grad):
    return np.concatenate([np.asarray(grad["mean"]), np.asarray(grad["log_std"])])


# ---- the function ------------------------------------------------------------------------------


def test_camel_known_values_and_global_minima():
    # By hand: f(0, 0) = 0; f(1, 1) = (4 - 2.1 + 1/3) + 1 + 0 = 3.2333...
    assert float(camel(jnp.array([0.0, 0.0]))) == 0.0
    assert float(camel(jnp.array([1.0, 1.0]))) == pytest.approx(3.0 + 1 / 3 - 0.1, abs=1e-5)
    for minimum in [(0.0898, -0.7126), (-0.0898, 0.7126)]:
        point = jnp.array(minimum)
        assert float(camel(point)) == pytest.approx(-1.0316, abs=1e-4)
        assert np.abs(np.asarray(jax.grad(camel)(point))).max() < 2e-3
    # Nothing on a fine grid over the domain is lower.
    gx, gy = np.meshgrid(np.linspace(-3, 3, 1201), np.linspace(-2, 2, 801))
    values = np.asarray(camel(np.stack([gx, gy], axis=-1)), np.float64)
    assert values.min() == pytest.approx(GLOBAL_MIN_VALUE, abs=1e-3)
    assert values.min() >= GLOBAL_MIN_VALUE - 1e-6
    assert float(distance_to_optimum(jnp.array([0.0898, -0.7126]))) < 1e-4


def test_expected_value_closed_form_by_hand_and_by_sampling():
    # At mean (0, 0), std s in both coordinates: E f = 4s^2 - 2.1*3s^4 + 15s^6/3 - 4s^2
    # + 4*3s^4 = 5.7 s^4 + 5 s^6; for s = 0.5 that is 0.35625 + 0.078125 = 0.434375.
    value = expected_camel(np.zeros(2), np.full(2, 0.5))
    assert value == pytest.approx(0.434375, abs=1e-12)
    # d/dm_x E f at m_x = 0 is m_y (every other term is even in m_x): 0.5 for any std.
    policy = {"mean": jnp.array([0.0, 0.5]), "log_std": jnp.log(jnp.array([0.3, 0.2]))}
    assert float(analytic_gradient(policy)["mean"][0]) == pytest.approx(-0.5, abs=1e-6)
    # And against a large sample average of f.
    mean, std = np.array([0.4, -0.4]), np.array([0.25, 0.3])
    samples = mean + std * np.random.default_rng(0).standard_normal((400_000, 2))
    values = np.asarray(camel(samples), np.float64)
    se = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - expected_camel(mean, std)) < 4 * se


def test_closed_form_gradient_matches_finite_differences():
    mean, std = np.array([0.4, -0.4]), np.array([0.25, 0.3])
    params = np.concatenate([mean, np.log(std)])

    def j(p):  # float64 throughout: the closed form is plain arithmetic
        return -expected_camel(p[:2], np.exp(p[2:]))

    h = 1e-6
    fd = np.array([(j(params + h * e) - j(params - h * e)) / (2 * h) for e in np.eye(4)])
    np.testing.assert_allclose(flat(analytic_gradient(POLICY)), fd, rtol=1e-4, atol=1e-4)


def gauss_hermite_2d(n=8):
    """Nodes (n*n, 2) and weights (n*n,) that integrate against N(0, I) exactly for every
    polynomial of degree < 2n in each coordinate: f is degree 6, the score-function integrand
    g(a) * d log pi is degree 8, so n = 8 makes the expectations below exact."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / np.sqrt(2 * np.pi)
    gx, gy = np.meshgrid(nodes, nodes)
    wx, wy = np.meshgrid(weights, weights)
    return np.stack([gx.ravel(), gy.ravel()], axis=-1), (wx * wy).ravel()


def test_closed_form_and_both_estimators_agree_exactly_by_quadrature():
    nodes, weights = gauss_hermite_2d()
    mean, std = np.asarray(POLICY["mean"], np.float64), np.exp(np.asarray(POLICY["log_std"]))
    values = np.asarray(camel(mean + std * nodes), np.float64)
    assert weights @ values == pytest.approx(expected_camel(mean, std), abs=1e-5)
    # The expectation of each one-sample estimator, computed exactly: both are unbiased.
    eps = jnp.asarray(nodes, jnp.float32)[:, None, :]
    analytic = flat(analytic_gradient(POLICY))
    for estimator in (pathwise_gradient, score_function_gradient):
        grads = jax.vmap(lambda e, est=estimator: est(true_return, POLICY, e))(eps)
        per_node = np.concatenate([grads["mean"], grads["log_std"]], axis=-1)
        expected = weights @ np.asarray(per_node, np.float64)
        np.testing.assert_allclose(expected, analytic, atol=2e-4, rtol=1e-4)


# ---- the estimators ----------------------------------------------------------------------------


def test_pathwise_gradient_of_true_function_is_the_gradient_of_the_expectation():
    grads = per_sample_gradients(pathwise_gradient, true_return, POLICY, 200_000, 1)
    se = grads.std(axis=0) / np.sqrt(len(grads))
    error = np.abs(grads.mean(axis=0) - flat(analytic_gradient(POLICY)))
    assert np.all(error < 4 * se + 1e-4), (error, se)


@pytest.mark.parametrize("baseline", [0.0, 1.0])
def test_score_function_estimator_is_unbiased(baseline):
    def estimator(objective, policy, eps):
        return score_function_gradient(objective, policy, eps, baseline)

    grads = per_sample_gradients(estimator, true_return, POLICY, 200_000, 2)
    pathwise = per_sample_gradients(pathwise_gradient, true_return, POLICY, 200_000, 2)
    se = grads.std(axis=0) / np.sqrt(len(grads))
    assert np.all(np.abs(grads.mean(axis=0) - pathwise.mean(axis=0)) < 4 * se + 1e-4)
    assert np.all(np.abs(grads.mean(axis=0) - flat(analytic_gradient(POLICY))) < 4 * se + 1e-4)
    # Same mean, but the score function is the noisier of the two, which is the study's point.
    assert grads.var(axis=0).sum() > 2 * pathwise.var(axis=0).sum()


def test_running_mean_baseline_uses_earlier_batches_only():
    # With decay 0 the baseline of step t is the mean return of batch t-1 (0 at the first
    # step); replay two steps by hand with the same noise and compare.
    setup = ToySetup(iterations=2, mc_baseline="running-mean", baseline_decay=0.0)
    key = jax.random.key(5)
    path = train_policy("monte-carlo", true_return, key, setup)
    policy, baseline = initial_policy(setup), 0.0
    for t, step_key in enumerate(jax.random.split(key, setup.iterations)):
        eps = jax.random.normal(step_key, (setup.policy_samples, 2), jnp.float32)
        grad = score_function_gradient(true_return, policy, eps, baseline)
        baseline = jnp.mean(true_return(sample_actions(policy, eps)))
        policy = jax.tree.map(lambda p, g: p + setup.learning_rate * g, policy, grad)
        np.testing.assert_allclose(path["mean"][t + 1], policy["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(path["log_std"][t + 1], policy["log_std"], rtol=1e-5,
                                   atol=1e-6)
    # Without the baseline the second step differs: the baseline was really applied.
    plain = train_policy("monte-carlo", true_return, key,
                             ToySetup(iterations=2))
    np.testing.assert_array_equal(plain["mean"][1], path["mean"][1])
    assert not np.allclose(plain["mean"][2], path["mean"][2])


@pytest.mark.learning
def test_strong_surrogate_is_more_accurate_than_weak_one():
    setup = ToySetup()
    key = jax.random.key(3)
    weak, _ = fit_surrogate(jax.random.fold_in(key, 0), setup.weak_samples, setup)
    strong, loss = fit_surrogate(jax.random.fold_in(key, 1), setup.strong_samples, setup)
    assert float(loss) < 1e-2  # it fits its own data
    # Held-out points around the start and the optimum, where the policies move.
    points = jax.random.uniform(jax.random.key(4), (2000, 2), minval=-1.0, maxval=1.0)
    truth = true_return(points)
    weak_err = float(jnp.sqrt(jnp.mean((surrogate_value(weak, points) - truth) ** 2)))
    strong_err = float(jnp.sqrt(jnp.mean((surrogate_value(strong, points) - truth) ** 2)))
    assert strong_err < 0.5 * weak_err, (strong_err, weak_err)


# ---- the command -------------------------------------------------------------------------------

SEEDS, ITERATIONS = 4, 200


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "study"
    assert main(["toy", "--out", str(out), "--seeds", str(SEEDS),
                 "--iterations", str(ITERATIONS), "--seed", "0"]) == 0
    return out


@pytest.mark.e2e
def test_cli_writes_every_file(study):
    assert sorted(p.name for p in study.iterdir()) == sorted(OUTPUT_FILES)
    for png in ("returns.png", "paths.png"):
        assert (study / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((study / "toy.json").read_text())
    assert report["setup"]["seeds"] == SEEDS and report["setup"]["iterations"] == ITERATIONS
    assert set(report["methods"]) == set(METHODS)
    for method in METHODS:
        m = report["methods"][method]
        assert m["final_return_var"] == pytest.approx(m["final_return_std"] ** 2, rel=1e-6)
        assert m["final_return_mean"] <= OPTIMAL_RETURN
        assert len(report["curves"][method]["return_mean"]) == ITERATIONS + 1
        assert len(report["curves"][method]["final_return_per_seed"]) == SEEDS
    # Every method starts from the same policy, whose return is known in closed form.
    start = report["initial_return"]
    assert start == pytest.approx(-expected_camel(np.array([0.4, -0.4]), np.full(2, 0.25)),
                                  abs=1e-5)
    assert all(report["curves"][m]["return_mean"][0] == pytest.approx(start, abs=1e-5)
               for m in METHODS)
    with open(study / "toy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(METHODS)
    csv_mean = float(rows[0]["final_return_mean"])
    assert csv_mean == pytest.approx(report["methods"]["monte-carlo"]["final_return_mean"],
                                     rel=1e-5)
    summary = (study / "summary.md").read_text()
    assert all(LABELS[m] in summary for m in METHODS)


@pytest.mark.learning
def test_pathwise_with_true_function_ends_closer_to_optimum_than_monte_carlo(study):
    # Same seeds, same policy noise, same samples per iteration and step size. Over base seeds
    # 0..19 at this size the ratio of the mean final distances was never below 5.6 (median 9.4).
    methods = json.loads((study / "toy.json").read_text())["methods"]
    mc, true = methods["monte-carlo"], methods["pathwise-true"]
    assert mc["final_distance_mean"] > 2.5 * true["final_distance_mean"]
    assert true["final_return_mean"] > mc["final_return_mean"]
    assert true["final_return_var"] < mc["final_return_var"]


@pytest.mark.e2e
def test_surrogate_sharing_leaves_the_other_methods_alone():
    # Each seed's policy noise is its own stream: whether the surrogates are shared or refit
    # per seed changes the surrogate runs only, and shared means one fit for all seeds.
    small = dict(seeds=2, iterations=5, surrogate_fit_steps=20, gradient_variance_draws=10)
    shared = run_study(ToySetup(surrogate_per_seed=False, **small))
    per_seed = run_study(ToySetup(surrogate_per_seed=True, **small))
    assert shared.surrogate_loss["weak"].shape == (1,)
    assert per_seed.surrogate_loss["weak"].shape == (2,)
    for method in ("monte-carlo", "pathwise-true"):
        np.testing.assert_array_equal(shared.means[method], per_seed.means[method])
    assert not np.array_equal(shared.means["pathwise-weak"], per_seed.means["pathwise-weak"])


def test_cli_refuses_non_empty_out_dir(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["toy", "--out", str(out), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reppo: error: --out") and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert main(["toy", "--out", str(out / "notes.txt"), "--iterations", "1"]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--iterations", "-3"], "--iterations must be >= 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--seed", "-1"], "--seed must be in"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, flags, message):
    assert main(["toy", "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reppo: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
