"""The library API (`reppo.preset`, `reppo.train`, `reppo.load_policy`, `reppo.Policy`) and
the examples that use it (docs/api.md)."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reppo
from reppo.runs import (
    CheckpointError,
    RunDirError,
    latest_checkpoint,
    list_checkpoints,
    read_metrics,
)
from tests.conftest import TINY
from tests.fakes import scripted_backend, still_env

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {
    "Config", "ConfigError", "Policy", "StopTraining", "TrainResult", "load_policy", "preset",
    "register_env", "train", "unregister_env",
}


def _obs(policy, n=7, seed=0):
    """A batch of observations spread wide enough that the normalization matters."""
    return np.random.default_rng(seed).normal(0.0, 3.0, (n, policy.obs_size)).astype(np.float32)


class SavedRun(NamedTuple):
    result: reppo.TrainResult
    run_dir: Path
    seen: list
    printed: str


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One tiny JAX run kept on disk, with the records its callback saw (and what it printed
    without an `echo`: nothing, checked by `test_train_is_quiet_without_echo`)."""
    run_dir = tmp_path_factory.mktemp("api") / "run"
    seen = []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        result = reppo.train(TINY, run_dir, callbacks=[seen.append])
    return SavedRun(result, run_dir, seen, printed.getvalue())


@pytest.fixture
def scripted(monkeypatch):
    """`reppo.train` on the still env with the scripted trainer (tests/fakes.py): the API's
    handling of a run without an algorithm or a simulator."""
    scripted_backend(monkeypatch)
    with still_env() as name:
        yield TINY.replace(env=name)


# ---- the package --------------------------------------------------------------------------------
def test_import_reppo_is_light_and_lists_the_public_names():
    code = (
        "import sys, reppo\n"
        "loaded = sorted(m for m in ('jax', 'torch') if m in sys.modules)\n"
        "for name in reppo.__all__: getattr(reppo, name)\n"
        "loaded += sorted(m for m in ('jax', 'torch') if m in sys.modules)\n"
        "print(','.join(loaded) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "none"
    assert set(reppo.__all__) == PUBLIC and len(reppo.__all__) == len(PUBLIC)
    assert reppo.Config is __import__("reppo.config").config.Config
    with pytest.raises(AttributeError):
        reppo.no_such_name  # noqa: B018


# ---- preset ------------------------------------------------------------------------------------
def _cli_error(capsys, argv):
    from reppo.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err.strip().removeprefix("reppo: error: ")


def test_preset_applies_env_backend_and_overrides(reacher_setting):
    from reppo.presets import get_preset

    config = reppo.preset("cpu", env="ReacherEasy", num_envs=64)
    assert isinstance(config, reppo.Config)
    assert config == get_preset("cpu", env="ReacherEasy").replace(num_envs=64)
    assert config.kl_target == 0.2  # the cpu preset's ReacherEasy setting
    assert reppo.preset("cpu").env == "CartpoleBalance"
    assert reppo.preset("cpu", backend="torch").backend == "torch"
    assert reppo.preset("auto") == get_preset("auto")
    assert reppo.preset("cpu", total_steps="1e5").total_steps == 100_000  # coerced like flags


@pytest.mark.parametrize(
    ("kwargs", "argv"),
    [
        ({"name": "papr"}, ["train", "--preset", "papr"]),
        ({"name": "cpu", "num_envs": "many"}, ["train", "--preset", "cpu", "--num-envs", "many"]),
        ({"name": "cpu", "num_minibatches": 3}, ["train", "--preset", "cpu", "--num-minibatches",
                                                 "3"]),
        ({"name": "cpu", "norm": "batch"}, ["train", "--preset", "cpu", "--norm", "batch"]),
    ],
)
def test_preset_errors_match_the_cli(capsys, kwargs, argv):
    name = kwargs.pop("name")
    with pytest.raises(reppo.ConfigError) as err:
        reppo.preset(name, **kwargs)
    assert str(err.value) == _cli_error(capsys, argv)


def test_preset_refuses_unknown_fields_and_backends():
    with pytest.raises(reppo.ConfigError, match="unknown config field.*num_env\\b"):
        reppo.preset("cpu", num_env=8)
    with pytest.raises(reppo.ConfigError, match="backend must be one of 'jax', 'torch'"):
        reppo.preset("cpu", backend="tf")
    with pytest.raises(reppo.ConfigError, match="did you mean 'cpu'"):
        reppo.preset("cpi")


# ---- train ---------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_train_without_run_dir_leaves_no_files(tmp_path, monkeypatch):
    temp_root, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp_root.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    monkeypatch.chdir(cwd)
    seen, during = [], []

    def callback(record):
        seen.append(record)
        during.append(sorted(p.name for p in temp_root.iterdir()))

    lines = []
    result = reppo.train(TINY, callbacks=callback, echo=lines.append)
    assert list(temp_root.iterdir()) == [] and list(cwd.iterdir()) == []
    assert all(len(names) == 1 and names[0].startswith("reppo-") for names in during)
    assert result.run_dir is None and not result.interrupted and result.env_steps == 512
    assert any("512/512" in line for line in lines)
    # The result: the final evaluation, the history, and the policy.
    assert [r["env_steps"] for r in seen] == [256, 512]
    assert seen == result.history
    assert result.eval_return_mean == result.history[-1]["eval/return_mean"]
    assert result.eval_returns.shape == (1, TINY.eval_episodes)
    policy = result.policy
    assert isinstance(policy, reppo.Policy) and policy.checkpoint is None
    assert (policy.obs_size, policy.action_size, policy.backend) == (5, 1, "jax")
    assert policy.config == TINY and policy.env_steps == 512
    batch = _obs(policy)
    actions = policy(batch)
    assert actions.shape == (7, 1) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    single = policy(batch[3])
    assert single.shape == (1,) and single.dtype == np.float32
    np.testing.assert_allclose(single, actions[3], atol=1e-6)
    with pytest.raises(ValueError, match=r"obs must have shape \(5,\) or \(N, 5\)"):
        policy(np.zeros(4))


@pytest.mark.e2e
def test_train_is_quiet_without_echo(saved_run):
    assert saved_run.run_dir.is_dir()
    assert saved_run.printed == ""


def test_a_callback_stops_the_run_with_a_checkpoint(tmp_path, scripted):
    budget = scripted.replace(total_steps=1024)
    other = []

    def stop_at_first(record):
        return True

    result = reppo.train(budget, tmp_path / "run", callbacks=[stop_at_first, other.append])
    assert result.interrupted and result.stop_signal is None
    assert result.env_steps == 256 < budget.total_steps
    assert [r["env_steps"] for r in other] == [256]  # every callback saw the record
    assert [r["env_steps"] for r in read_metrics(tmp_path / "run")] == [256]
    assert latest_checkpoint(tmp_path / "run").name == "ckpt_000000000256.safetensors"
    assert result.policy is not None and result.policy.env_steps == 256
    # The stopped run resumes with its own config to the end of its budget.
    seen = []
    resumed = reppo.train(None, tmp_path / "run", resume=True, callbacks=seen.append)
    assert not resumed.interrupted and resumed.env_steps == 1024
    assert [r["env_steps"] for r in seen] == [512, 768, 1024]

    def raise_stop(record):
        if record["env_steps"] >= 512:
            raise reppo.StopTraining

    memory = reppo.train(budget, callbacks=raise_stop)
    assert memory.interrupted and memory.env_steps == 512 and memory.policy.env_steps == 512


def test_train_refuses_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="reppo.Config"):
        reppo.train({"env": "CartpoleBalance"})
    with pytest.raises(reppo.ConfigError, match="needs the run_dir"):
        reppo.train(TINY, resume=True)


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda: reppo.train(TINY, total_steps=1000),
         ["train() has no argument 'total_steps'", "a config field", "config.replace("]),
        (lambda: reppo.train(TINY, callback=print),
         ["'callback'", "did you mean 'callbacks'", "run_dir, env, resume, callbacks, echo"]),
        (lambda: reppo.train(TINY, callbacks=[print, 3]), ["callbacks", "callable", "3"]),
        (lambda: reppo.train(TINY, echo="yes"), ["echo", "callable", "None"]),
        (lambda: reppo.train(TINY, resume="yes"), ["resume", "True or False"]),
        (lambda: reppo.train(TINY, run_dir=3), ["run_dir", "path", "None"]),
        (lambda: reppo.train(TINY, env=3), ["env", "name"]),
        (lambda: reppo.preset(3), ["name", "preset name", "3"]),
        (lambda: reppo.preset("cpu", env=["CartpoleBalance"]), ["env", "task name"]),
        (lambda: reppo.load_policy(3), ["run_dir", "path"]),
        (lambda: reppo.load_policy("runs/x", checkpoint=5), ["checkpoint", "path"]),
        (lambda: reppo.load_policy("runs/x", seed_index="0"), ["seed_index", "int"]),
        (lambda: reppo.load_policy("runs/x", deterministic=True),
         ["load_policy() has no argument 'deterministic'", "run_dir, backend, checkpoint"]),
    ],
)
def test_api_arguments_of_the_wrong_kind_are_named(tmp_path, call, needles):
    with pytest.raises(reppo.ConfigError) as err:
        call()
    message = str(err.value)
    assert isinstance(err.value, TypeError) and "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_policy_arguments_of_the_wrong_kind_are_named():
    policy = _random_policy()
    obs = np.zeros(policy.obs_size, np.float32)
    for call, needles in [
        (lambda: policy(obs, deterministic="no"), ["deterministic", "True or False"]),
        (lambda: policy(obs, False, seed="1"), ["seed", "int", "None"]),
        (lambda: policy(obs, determinstic=False), ["'determinstic'", "did you mean"]),
        (lambda: policy.save(None), ["path", "None"]),
        (lambda: policy.export_onnx(7), ["path", "7"]),
    ]:
        with pytest.raises(reppo.ConfigError) as err:
            call()
        assert isinstance(err.value, TypeError)
        for needle in needles:
            assert needle in str(err.value), str(err.value)
    assert policy(obs, deterministic=np.bool_(True), seed=np.int64(1)).shape == (1,)


@pytest.mark.e2e
def test_resume_refuses_changes_a_resumed_run_cannot_take(saved_run):
    run_dir = saved_run.run_dir
    with pytest.raises(reppo.ConfigError, match="cannot change actor_lr"):
        reppo.train(TINY.replace(actor_lr=1e-2), run_dir, resume=True)


# ---- saved runs and load_policy -------------------------------------------------------------
@pytest.mark.e2e
def test_train_with_run_dir_keeps_the_run(saved_run):
    result, run_dir, seen, _ = saved_run
    assert result.run_dir == run_dir and result.policy.checkpoint == latest_checkpoint(run_dir)
    logged = read_metrics(run_dir)
    assert [r["env_steps"] for r in seen] == [r["env_steps"] for r in logged] == [256, 512]
    assert [sorted(r) for r in seen] == [sorted(r) for r in logged]
    assert result.eval_return_mean == logged[-1]["eval/return_mean"]


@pytest.mark.e2e
def test_load_policy_acts_as_the_trained_policy_and_reppo_eval(saved_run):
    from reppo.jax.policy import load_policy as eval_loader

    result, run_dir = saved_run.result, saved_run.run_dir
    policy = reppo.load_policy(run_dir)
    assert policy.backend == "jax" and policy.env_steps == 512 and policy.config == TINY
    batch = _obs(policy)
    np.testing.assert_array_equal(policy(batch), result.policy(batch))
    # The policy `reppo eval` scores, on the same observations.
    act = eval_loader(run_dir).act(0)
    np.testing.assert_allclose(policy(batch), np.asarray(act(jnp.asarray(batch))), atol=1e-6)
    np.testing.assert_array_equal(policy(batch), np.asarray(jax.jit(act)(batch)))
    # The native JAX form is the same function, jittable.
    native = jax.jit(policy.jax_fn())
    np.testing.assert_array_equal(np.asarray(native(batch)), policy(batch))
    # An earlier checkpoint is an earlier policy.
    first = reppo.load_policy(run_dir, checkpoint=list_checkpoints(run_dir)[0])
    assert first.env_steps == 256
    assert not np.array_equal(first(batch), policy(batch))


@pytest.mark.e2e
def test_sampled_actions_are_reproducible_with_a_seed(saved_run):
    policy = saved_run[0].policy
    batch = _obs(policy, n=64)
    a = policy(batch, deterministic=False, seed=3)
    b = policy(batch, deterministic=False, seed=3)
    c = policy(batch, deterministic=False, seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 1) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, policy(batch))  # sampled, not tanh(mean)
    unseeded = [policy(batch, deterministic=False) for _ in range(2)]
    assert not np.array_equal(*unseeded)  # the policy's own stream moves on
    assert policy(batch[0], deterministic=False, seed=3).shape == (1,)
    # The native sampling form with the same key gives the same actions.
    sample = jax.jit(policy.jax_fn(deterministic=False))
    np.testing.assert_array_equal(np.asarray(sample(batch, jax.random.PRNGKey(3))), a)


@pytest.mark.e2e
def test_a_jax_run_runs_in_torch_too(saved_run):
    import torch

    run_dir = saved_run.run_dir
    jax_policy = reppo.load_policy(run_dir)
    torch_policy = reppo.load_policy(run_dir, backend="torch")
    assert torch_policy.backend == "torch"
    batch = _obs(jax_policy)
    np.testing.assert_allclose(torch_policy(batch), jax_policy(batch), atol=1e-5)
    module = jax_policy.torch_module()
    assert isinstance(module, torch.nn.Module)
    with torch.no_grad():
        out = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(out, jax_policy(batch), atol=1e-5)


@pytest.mark.e2e
def test_load_policy_errors(saved_run, tmp_path):
    run_dir = saved_run.run_dir
    with pytest.raises(reppo.ConfigError, match="backend must be one of"):
        reppo.load_policy(run_dir, backend="tf")
    with pytest.raises(reppo.ConfigError, match=r"seed_index must lie in \[0, 1\)"):
        reppo.load_policy(run_dir, seed_index=1)
    with pytest.raises(RunDirError):
        reppo.load_policy(tmp_path / "no-run")


# ---- saving and exporting a policy ----------------------------------------------------------
def _random_policy(config=TINY, seed_index=0, backend="jax"):
    """A Policy of random weights and observation statistics (no training): its actions tell
    policies apart, where the scripted trainer's zero weights act the same everywhere."""
    from tests.fakes import ScriptedTrainer

    rng = np.random.default_rng(7)
    arrays = {}
    for name, value in ScriptedTrainer(config).state_arrays(0).items():
        if name.startswith("actor/") or name == "obs_stats/mean":
            value = rng.normal(0.0, 1.0, value.shape).astype(value.dtype)
        elif name == "obs_stats/var":
            value = rng.uniform(0.5, 4.0, value.shape).astype(value.dtype)
        arrays[name] = value
    return reppo.Policy(config, arrays, backend=backend, seed_index=seed_index, env_steps=256,
                        sizes=(5, 1))


def _files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_saved_policy_loads_back_with_the_same_actions(tmp_path):
    two_seeds = TINY.replace(num_seeds=2)
    policy = _random_policy(two_seeds, seed_index=1)
    batch = _obs(policy)
    assert not np.array_equal(policy(batch), _random_policy(two_seeds, seed_index=0)(batch))
    policy.save(tmp_path / "policy")
    loaded = reppo.load_policy(tmp_path / "policy")
    np.testing.assert_array_equal(loaded(batch), policy(batch))
    assert loaded.env_steps == 256 and loaded.backend == "jax"
    # The seed saved is a one-seed policy: the seed it was trained with.
    assert loaded.config == two_seeds.replace(num_seeds=1, seed=two_seeds.seed + 1)
    assert loaded.checkpoint == latest_checkpoint(tmp_path / "policy")
    np.testing.assert_allclose(
        reppo.load_policy(tmp_path / "policy", backend="torch")(batch), policy(batch), atol=1e-5
    )


def test_saving_a_policy_never_overwrites_anything(tmp_path):
    policy = _random_policy()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine too")
    before = _files(tmp_path)
    for path in (taken, tmp_path / "file"):
        with pytest.raises(reppo.ConfigError, match=f"{path} is (a file|not empty); nothing was"):
            policy.save(path)
    assert _files(tmp_path) == before
    with pytest.raises(reppo.ConfigError, match=r"cannot write .*file/policy.*nothing was"):
        policy.save(tmp_path / "file" / "policy")  # its directory would be a file
    assert _files(tmp_path) == before
    policy.save(tmp_path / "saved")
    saved = _files(tmp_path / "saved")
    with pytest.raises(reppo.ConfigError, match="saved is not empty"):
        policy.save(tmp_path / "saved")
    assert _files(tmp_path / "saved") == saved
    empty = tmp_path / "empty"
    empty.mkdir()
    policy.save(empty)  # an empty directory holds nothing to lose
    assert reppo.load_policy(empty).env_steps == 256


def test_a_saved_policy_cannot_be_resumed(tmp_path, scripted):
    policy = _random_policy(scripted)
    policy.save(tmp_path / "policy")
    before = _files(tmp_path)
    with pytest.raises(RunDirError, match=r"Policy.save.*cannot be resumed.*--preset"):
        reppo.train(None, tmp_path / "policy", resume=True)
    assert _files(tmp_path) == before


def test_export_onnx_checks_its_path_before_any_work(tmp_path):
    policy = _random_policy()
    (tmp_path / "taken.onnx").write_text("mine")
    with pytest.raises(reppo.ConfigError, match="taken.onnx already exists"):
        policy.export_onnx(tmp_path / "taken.onnx")
    assert (tmp_path / "taken.onnx").read_text() == "mine"
    with pytest.raises(CheckpointError, match="missing.*does not exist"):
        policy.export_onnx(tmp_path / "missing" / "policy.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


@pytest.mark.e2e
def test_export_onnx_writes_what_reppo_export_writes(saved_run, tmp_path, capsys):
    import onnx
    import onnxruntime

    from reppo.cli import main

    assert main(["export", str(saved_run.run_dir), "--onnx", str(tmp_path / "cli.onnx")]) == 0
    report = saved_run.result.policy.export_onnx(tmp_path / "api.onnx")
    assert report["path"] == str(tmp_path / "api.onnx") and report["max_abs_error"] <= 1e-4
    models = [onnx.load(tmp_path / name) for name in ("cli.onnx", "api.onnx")]
    props = [{p.key: p.value for p in m.metadata_props} for m in models]
    assert props[1] == props[0]
    batch = _obs(saved_run.result.policy)
    outputs = [
        onnxruntime.InferenceSession(str(tmp_path / name)).run(["action"], {"obs": batch})[0]
        for name in ("cli.onnx", "api.onnx")
    ]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    np.testing.assert_allclose(outputs[1], saved_run.result.policy(batch), atol=1e-5)


def test_train_takes_an_env_name_or_registration_but_no_env_object(scripted):
    from reppo.envs.user import lookup
    from tests.fakes import StillEnv

    name = scripted.env
    result = reppo.train(TINY, env=name)
    assert result.policy.config.env == name and result.env_steps == TINY.total_steps
    assert reppo.train(TINY, env=lookup(name)).policy.config.env == name
    for env in (StillEnv(), StillEnv):
        with pytest.raises(reppo.ConfigError, match=r"env=.*name.*reppo.register_env") as err:
            reppo.train(TINY, env=env)
        assert isinstance(err.value, TypeError) and "\n" not in str(err.value)


# ---- the torch backend ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_torch_backend_works_the_same_way(tmp_path):
    import torch

    config = TINY.replace(backend="torch", device="cpu")
    seen = []
    result = reppo.train(config, tmp_path / "run", callbacks=seen.append)
    assert not result.interrupted and result.env_steps == 512
    assert [r["env_steps"] for r in seen] == [256, 512]
    assert result.eval_return_mean == seen[-1]["eval/return_mean"]
    policy = result.policy
    assert policy.backend == "torch" and (policy.obs_size, policy.action_size) == (5, 1)
    batch = _obs(policy)
    actions = policy(batch)
    assert actions.shape == (7, 1) and actions.dtype == np.float32
    assert policy(batch[0]).shape == (1,)
    loaded = reppo.load_policy(tmp_path / "run")
    assert loaded.backend == "torch"
    np.testing.assert_array_equal(loaded(batch), actions)
    with torch.no_grad():
        native = policy.torch_module()(torch.from_numpy(batch)).numpy()
    np.testing.assert_array_equal(native, actions)
    # The checkpoint's shared names let the JAX backend run it as well.
    as_jax = reppo.load_policy(tmp_path / "run", backend="jax")
    np.testing.assert_allclose(as_jax(batch), actions, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(policy.jax_fn())(batch)), actions, atol=1e-5)
    a = policy(batch, deterministic=False, seed=1)
    np.testing.assert_array_equal(a, policy(batch, deterministic=False, seed=1))
    assert not np.array_equal(a, actions) and np.all(np.abs(a) <= 1.0)


# ---- the examples --------------------------------------------------------------------------------
def _run_example(name, *args, **env):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env}, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


# The example with --backend torch: CI's tier runs it with JAX and checks the torch API in
# test_the_torch_backend_works_the_same_way.
@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=pytest.mark.extended)])
def test_example_train_and_predict_runs(backend):
    out = _run_example("train_and_predict.py", backend, REPPO_EXAMPLE_STEPS="8192",
                       OMP_NUM_THREADS="1")
    assert f"REPPO ({backend})" in out
    assert "after 8,192 env steps" in out and "one observation -> action" in out


@pytest.mark.e2e
def test_example_load_and_step_runs(saved_run):
    run_dir = saved_run.run_dir
    out = _run_example("load_and_step.py", str(run_dir), "--steps", "20")
    assert "CartpoleBalance: return" in out and "over 20 steps" in out
