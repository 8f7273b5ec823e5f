"""Shared fixtures: a tiny config for end-to-end runs, JAX's persistent compile cache, and the
test tiers (markers, their timeouts, and what a unit test may not do)."""

import os
import sys
from pathlib import Path

# Under pytest-xdist (`-n 2`, as CI runs) every worker shares the machine's cores with the
# others: one compute thread per worker keeps XLA's and torch's thread pools from
# oversubscribing them (torch's OpenMP pool slows down many times when a core it waits on is
# busy). Must be set before JAX starts its CPU backend.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

# torch.compile's inductor keeps its cache under tempfile.gettempdir(); tests that replace the
# temp dir to check that a run leaves nothing there must not see it appear.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "reppo" / "torchinductor-tests")
)

import jax  # noqa: E402
import pytest  # noqa: E402

from reppo.config import Config  # noqa: E402

if _WORKER:
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)

# Tests compile the same chunks many times across processes; the persistent cache makes the
# repeats cheap. REPPO_JAX_CACHE is also what the CLI uses.
_CACHE = os.environ.setdefault(
    "REPPO_JAX_CACHE", str(Path.home() / ".cache" / "reppo" / "jax-tests")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


TINY = Config(
    env="CartpoleBalance",
    total_steps=512,
    num_envs=8,
    num_steps=16,
    num_epochs=2,
    num_minibatches=2,
    actor_hidden_dim=16,
    critic_hidden_dim=16,
    num_bins=21,
    kl_num_samples=4,
    log_interval_steps=256,
    eval_interval_steps=0,
    eval_episodes=2,
    checkpoint_interval_steps=256,
)


@pytest.fixture
def tiny_config() -> Config:
    return TINY


@pytest.fixture
def reacher_setting(monkeypatch) -> dict:
    """A per-task setting of the cpu preset for ReacherEasy, to test the mechanism (the shipped
    presets have none)."""
    from reppo import presets

    setting = {"kl_target": 0.2, "action_noise_correlation": 0.0}
    monkeypatch.setitem(presets.TASK_SETTINGS, "cpu", {"ReacherEasy": setting})
    return setting


def tiny_flags(config: Config = TINY) -> list[str]:
    """The tiny config as `reppo train` flags."""
    flags = []
    for name, value in config.to_dict().items():
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


# ---- tiers ---------------------------------------------------------------------------------------
# unit: no simulator and no training (fakes from tests/fakes.py instead); e2e: real runs, one per
# backend and per command, and the backends' own checks on real envs; learning: return
# thresholds on cheap tasks; multiprocess: runs over several processes or devices. A test without
# a tier is a unit test, and a unit test that builds a simulator env or a backend's trainer
# fails, naming the tier it belongs to. Each tier has its default timeout (an explicit
# `@pytest.mark.timeout` wins).
TIERS = ("unit", "e2e", "learning", "multiprocess")
TIMEOUTS = {"unit": 120, "e2e": 600, "learning": 1800, "multiprocess": 1800}
# Under xdist the longest tiers start first: the scheduler deals the first tests out one per
# worker in turn, so the two learning tests run side by side instead of one after the other.
_ORDER = {"learning": 0, "multiprocess": 1, "e2e": 2, "unit": 3}


# The README's test command (and CI) leaves out the tests marked `extended`: full default
# runs and second real runs of what a cheaper test in CI already checks (its fakes, a shorter
# run, the other backend). `pytest --extended` runs them too: the whole suite, before a
# release or after changing what they guard.
def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true",
                     help="also run the tests marked extended (the whole suite)")


def tiers_of(item) -> list[str]:
    return [tier for tier in TIERS if item.get_closest_marker(tier) is not None]


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = tiers_of(item)
        if item.get_closest_marker("slow") is not None:
            raise pytest.UsageError(
                f"{item.nodeid}: 'slow' is not a tier; mark it e2e, learning or multiprocess"
            )
        if not tiers:
            item.add_marker(pytest.mark.unit)
            tiers = ["unit"]
        elif "unit" in tiers and len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: a unit test is in no other tier {tiers}")
        if item.get_closest_marker("extended") is not None and "unit" in tiers:
            raise pytest.UsageError(f"{item.nodeid}: a unit test is never extended; CI runs "
                                    "every unit test")
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(max(TIMEOUTS[t] for t in tiers)))
    if not config.getoption("--extended"):
        extended = [item for item in items if item.get_closest_marker("extended") is not None]
        if extended:
            config.hook.pytest_deselected(items=extended)
            items[:] = [item for item in items if item.get_closest_marker("extended") is None]
    if _WORKER:
        items.sort(key=lambda item: min(_ORDER[t] for t in tiers_of(item)))


def _not_in_a_unit_test(what: str, allowed_caller: str | None = None, original=None):
    """A stand-in for `original` that fails the test, naming `what` it did and where it
    belongs; called from a function named `allowed_caller` it runs `original`."""

    def refuse(*args, **kwargs):
        if allowed_caller is not None and sys._getframe(1).f_code.co_name == allowed_caller:
            return original(*args, **kwargs)
        raise AssertionError(
            f"a unit test {what}: use the fakes of tests/fakes.py, or mark the test "
            "@pytest.mark.e2e (a real run) or @pytest.mark.learning"
        )

    return refuse


_GUARDED = []  # (owner, attribute, stand-in) for what a unit test may not reach, found once


def _guarded() -> list[tuple[object, str, object]]:
    if not _GUARDED:
        from reppo.envs import registry
        from reppo.jax.trainer import JaxTrainer

        # Reading a Playground task's static facts (`env_spec`: sizes, episode length) loads
        # its model but steps nothing; building a batch of it does.
        _GUARDED.append((registry, "load_playground_env", _not_in_a_unit_test(
            "builds a MuJoCo Playground env", "env_spec", registry.load_playground_env)))
        _GUARDED.append((JaxTrainer, "__init__",
                         _not_in_a_unit_test("builds the JAX trainer")))
        try:
            from reppo.envs import maniskill
            from reppo.torch.trainer import TorchTrainer
        except ImportError:
            pass
        else:
            _GUARDED.append((maniskill, "make_raw_env",
                             _not_in_a_unit_test("builds a ManiSkill3 env")))
            _GUARDED.append((TorchTrainer, "__init__",
                             _not_in_a_unit_test("builds the torch trainer")))
    return _GUARDED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Unit tests run with the simulators and the backends' trainers out of reach (from the
    setup of their fixtures, module-scoped ones included, to their teardown)."""
    if item.get_closest_marker("unit") is None:
        yield
        return
    patch = pytest.MonkeyPatch()
    for owner, name, stand_in in _guarded():
        patch.setattr(owner, name, stand_in)
    try:
        yield
    finally:
        patch.undo()
