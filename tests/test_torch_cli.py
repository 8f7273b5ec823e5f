"""The command line with the torch backend: train, eval (either backend), resume, export."""

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import jax  # noqa: E402
from conftest import TINY, tiny_flags  # noqa: E402

from reppo.cli import main  # noqa: E402
from reppo.jax.policy import load_policy as load_jax_policy  # noqa: E402
from reppo.runs import latest_checkpoint, load_checkpoint, read_metrics  # noqa: E402

TORCH_FLAGS = ["--preset", "cpu", *tiny_flags(TINY.replace(backend="torch"))]
JAX_FLAGS = ["--preset", "cpu", *tiny_flags()]


def _cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _train(tmp_path_factory, flags, name):
    run = tmp_path_factory.mktemp(name) / "run"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["train", *flags, "--run-dir", str(run)])
    assert code == 0, err.getvalue()
    return run, out.getvalue()


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    return _train(tmp_path_factory, TORCH_FLAGS, "torch")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    return _train(tmp_path_factory, JAX_FLAGS, "jax")[0]


def test_torch_train_writes_the_same_run_layout(torch_run):
    run, out = torch_run
    assert "REPPO (torch) on CartpoleBalance" in out and "final evaluation" in out
    for name in ("config.json", "versions.json", "metrics.jsonl", "learning_curve.png"):
        assert (run / name).is_file(), name
    records = read_metrics(run)
    assert [r["env_steps"] for r in records] == [256, 512]
    for key in ("wall_time", "sps", "loss/critic", "loss/actor", "temp/alpha", "temp/beta",
                "kl", "entropy", "critic/value_error"):
        assert key in records[-1], key
    assert "eval/return_mean" in records[-1]
    _, metadata = load_checkpoint(latest_checkpoint(run))
    assert metadata["backend"] == "torch" and metadata["env_steps"] == 512
    assert json.loads((run / "versions.json").read_text())["torch_device"] == "cpu"


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_eval_json_with_either_backend(torch_run, jax_run, capsys, backend):
    for run in (torch_run[0], jax_run):
        code, out, err = _cli(capsys, "eval", run, "--episodes", 2, "--json",
                              "--backend", backend)
        assert code == 0, err
        report = json.loads(out)
        assert report["backend"] == backend and report["episodes"] == 2
        assert np.isfinite(report["mean_return"]) and report["std_return"] >= 0


def test_torch_resume_extends_the_run(torch_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(torch_run[0], run)
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", 768)
    assert code == 0, err
    assert "resuming" in out
    assert [r["env_steps"] for r in read_metrics(run)] == [256, 512, 768]


def test_resuming_a_run_with_the_other_backend_is_refused(jax_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(jax_run, run)
    code, _, err = _cli(capsys, "train", "--resume", run, "--backend", "torch")
    assert code == 2 and "cannot change backend" in err


@pytest.mark.parametrize("which", ["torch", "jax"])
def test_export_onnx_matches_the_policy_of_either_backend(torch_run, jax_run, tmp_path,
                                                          capsys, which):
    """The ONNX graph (normalization baked in) gives the actions of the run's own policy."""
    run = torch_run[0] if which == "torch" else jax_run
    path = tmp_path / "policy.onnx"
    code, out, err = _cli(capsys, "export", run, "--onnx", path)
    assert code == 0, err
    assert path.is_file() and "normalization included" in out
    policy = load_jax_policy(run)
    obs = np.random.default_rng(1).normal(0, 2, (32, 5)).astype(np.float32)
    want = np.asarray(policy.act(0)(jax.numpy.asarray(obs)))
    got = ort.InferenceSession(str(path)).run(["action"], {"obs": obs})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)

    # An existing file is never overwritten.
    before = path.read_bytes()
    code, _, err = _cli(capsys, "export", run, "--onnx", path)
    assert code == 2 and "already exists" in err
    assert path.read_bytes() == before


def test_torch_flag_errors(tmp_path, capsys):
    code, _, err = _cli(capsys, "train", *TORCH_FLAGS, "--num-seeds", 2,
                        "--run-dir", tmp_path / "x")
    assert code == 2 and "num_seeds > 1" in err and "--backend jax" in err
    code, _, err = _cli(capsys, "train", *JAX_FLAGS, "--env", "PushCube-v1",
                        "--run-dir", tmp_path / "y")
    assert code == 2 and "--backend torch" in err
    code, _, err = _cli(capsys, "train", *TORCH_FLAGS, "--cuda-graphs", "true",
                        "--run-dir", tmp_path / "z")
    assert code == 2 and "torch_compile" in err
    if not torch.cuda.is_available():
        code, _, err = _cli(capsys, "train", *TORCH_FLAGS, "--device", "cuda",
                            "--run-dir", tmp_path / "w")
        assert code == 2 and "--device cpu" in err
    assert not any((tmp_path / d).exists() for d in "xyzw")


def test_compile_without_a_cpp_compiler_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = _cli(capsys, "train", *TORCH_FLAGS, "--torch-compile", "true",
                        "--device", "cpu", "--run-dir", tmp_path / "run")
    assert code == 2 and "C++ compiler" in err and "--torch-compile" in err
    assert not (tmp_path / "run").exists()
