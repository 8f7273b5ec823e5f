"""The baseline registry: every entry's module follows the protocol, the checks read the
registry, and a baseline added as one entry is trained by `train_baseline` with its inputs
checked once (a fake module on a still task: no simulator)."""

from __future__ import annotations

import inspect
import re
import sys
import types

import pytest

from reppo.envs.catalog import FAMILIES
from reppo.errors import UserError
from reppo.experiments.baselines import hyperparameters as H
from reppo.experiments.baselines.iterations import plan_iterations
from reppo.experiments.baselines.registry import REGISTRY, Baseline, BaselineRun, baselines_of
from reppo.experiments.baselines.run import train_baseline

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_module_offers_the_protocol(name):
    entry = REGISTRY[name]
    assert entry.name == name and entry.family in FAMILIES and entry.presets
    module = entry.load()
    assert list(inspect.signature(module.train).parameters) == ["run"]
    assert list(inspect.signature(module.resolve_hyperparameters).parameters) == [
        "algo", "env", "preset", "total_steps", "overrides"]


def test_the_family_lists_and_presets_come_from_the_registry():
    assert tuple(REGISTRY) == H.BASELINES
    assert H.DMC_BASELINES == ("brax-ppo", "brax-sac", "fasttd3", "fasttd3-small")
    assert H.MANISKILL_BASELINES == ("maniskill-ppo",) == baselines_of("maniskill")
    assert {p for b in REGISTRY.values() for p in b.presets} == set(H.PRESETS)
    assert H.default_preset("maniskill-ppo") == "maniskill"


class _FakeModule(types.ModuleType):
    """A baseline's module that records what it is given instead of training."""

    def __init__(self, name):
        super().__init__(name)
        self.runs: list[BaselineRun] = []

    def resolve_hyperparameters(self, algo, env, preset, total_steps, overrides):
        return {"lr": 0.1 if preset == "fast" else 0.01, **(overrides or {})}

    def train(self, run):
        self.runs.append(run)
        return "trained"


@pytest.fixture
def fake_baseline(monkeypatch):
    module = _FakeModule("fake_baseline_module")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry = Baseline("fake", "Fake", "dm_control", ("slow", "fast"), module.__name__)
    monkeypatch.setitem(REGISTRY, "fake", entry)
    return module


def test_a_baseline_added_as_one_entry_is_trained_with_checked_inputs(fake_baseline, tmp_path):
    out = train_baseline("fake", "CartpoleBalance", 3, 1000, tmp_path / "run", echo=None,
                         eval_interval_steps=250)
    assert out == "trained"
    (run,) = fake_baseline.runs
    assert (run.algo, run.env, run.seed, run.total_steps, run.preset) == (
        "fake", "CartpoleBalance", 3, 1000, "slow")
    assert run.eval_interval_steps == 250 and run.device == "auto"
    assert H.resolve_hyperparameters("fake", "CartpoleBalance", "fast", 1000, {"x": 1}) == {
        "lr": 0.1, "x": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"algo": "fak"}, "did you mean 'fake'"),
     ({"preset": "cpu"}, "fake has the presets slow, fast"),
     ({"env": "PushCube-v1"}, "fake trains the DM Control (MuJoCo Playground) tasks only"),
     ({"env": "Nope"}, "Unknown environment 'Nope'"),
     ({"seed": -1}, "seed must be an integer >= 0")],
)
def test_a_registered_baselines_bad_input_is_refused_before_its_module_runs(
    fake_baseline, tmp_path, kwargs, message
):
    args = {"algo": "fake", "env": "CartpoleBalance", "seed": 0, **kwargs}
    with pytest.raises(UserError, match=re.escape(message)):
        train_baseline(args.pop("algo"), args.pop("env"), args.pop("seed"), 1000,
                       tmp_path / "run", echo=None, **args)
    assert not fake_baseline.runs and not (tmp_path / "run").exists()


def test_brax_plans_its_periods_with_the_one_planner():
    from reppo.experiments.baselines.brax.schedule import plan_schedule

    hp = {"batch_size": 32, "unroll_length": 30, "num_minibatches": 16, "action_repeat": 1,
          "num_resets_per_eval": 10}
    for total, interval in [(500_000, 50_000), (100_000, 0), (1_000_000, 200_000)]:
        schedule = plan_schedule("brax-ppo", hp, total, interval)
        periods = plan_iterations(15_360, total, interval)
        # Brax's periods are of equal length: as many as the planner's, each of its length.
        assert schedule.num_evals == -(-periods.iterations // periods.iterations_per_eval)
        assert schedule.updates_per_eval == periods.iterations_per_eval
