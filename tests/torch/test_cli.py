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

from reppo.cli import main  # noqa: E402
from reppo.jax.policy import load_policy as load_jax_policy  # noqa: E402
from reppo.runs import latest_checkpoint, load_checkpoint, read_metrics  # noqa: E402
from tests.conftest import TINY, tiny_flags  # noqa: E402

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


@pytest.mark.e2e
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


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_eval_json_with_either_backend(torch_run, jax_run, capsys, backend):
    for run in (torch_run[0], jax_run):
        code, out, err = _cli(capsys, "eval", run, "--episodes", 2, "--json",
                              "--backend", backend)
        assert code == 0, err
        report = json.loads(out)
        assert report["backend"] == backend and report["episodes"] == 2
        assert np.isfinite(report["mean_return"]) and report["std_return"] >= 0


@pytest.mark.e2e
def test_torch_resume_extends_the_run(torch_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(torch_run[0], run)
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", 768)
    assert code == 0, err
    assert "resuming" in out
    assert [r["env_steps"] for r in read_metrics(run)] == [256, 512, 768]


@pytest.mark.e2e
def test_resuming_a_run_with_the_other_backend_is_refused(jax_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(jax_run, run)
    code, _, err = _cli(capsys, "train", "--resume", run, "--backend", "torch")
    assert code == 2 and "cannot change backend" in err


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_compile_without_a_cpp_compiler_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = _cli(capsys, "train", *TORCH_FLAGS, "--torch-compile", "true",
                        "--device", "cpu", "--run-dir", tmp_path / "run")
    assert code == 2 and "C++ compiler" in err and "--torch-compile" in err
    assert not (tmp_path / "run").exists()


# ---- export: file mode, metadata, nothing left behind, unwritable destinations -------------


def _assert_user_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("reppo: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def _no_onnx_export(monkeypatch):
    """Make the (slow) export fail the test: what is refused must be refused before it."""
    def export(*args, **kwargs):
        pytest.fail("the ONNX export ran before the refused input was checked")

    monkeypatch.setattr(torch.onnx, "export", export)


@pytest.mark.e2e
@pytest.mark.parametrize("which", ["torch", "jax"])
def test_export_writes_one_umask_mode_file_with_metadata(torch_run, jax_run, tmp_path, capsys,
                                                         which):
    import os

    import onnx

    import reppo

    run = torch_run[0] if which == "torch" else jax_run
    out_dir = tmp_path / "robot"
    out_dir.mkdir()
    path = out_dir / "policy.onnx"
    old = os.umask(0o022 if which == "torch" else 0o027)
    try:
        code, out, err = _cli(capsys, "export", run, "--onnx", path)
    finally:
        os.umask(old)
    assert code == 0, err
    # The umask's mode (readable by others under 022), and no .*.onnx.data or temp file.
    assert path.stat().st_mode & 0o777 == (0o644 if which == "torch" else 0o640)
    assert os.listdir(out_dir) == ["policy.onnx"]

    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["env"] == "CartpoleBalance"
    assert meta["backend"] == which  # the backend the run was trained with
    assert meta["obs_size"] == "5" and meta["action_size"] == "1"
    assert json.loads(meta["action_low"]) == [-1.0] and json.loads(meta["action_high"]) == [1.0]
    assert "[-1, 1]" in meta["action_bounds"]
    assert meta["normalize_obs"] == "true"
    assert meta["reppo_version"] == reppo.__version__
    assert meta["env_steps"] == "512" and meta["seed_index"] == "0"
    assert meta["checkpoint"] == latest_checkpoint(run).name
    # The one file is the whole model: it runs from its bytes alone.
    obs = np.zeros((2, 5), np.float32)
    session = ort.InferenceSession(path.read_bytes())
    assert session.run(["action"], {"obs": obs})[0].shape == (2, 1)
    assert session.get_modelmeta().custom_metadata_map["env"] == "CartpoleBalance"


@pytest.mark.e2e
@pytest.mark.parametrize("failure", ["mismatch", "ENOSPC", "EACCES", "interrupt"])
def test_export_failing_midway_leaves_nothing(torch_run, tmp_path, capsys, monkeypatch,
                                              failure):
    import errno
    import os

    import reppo.torch.export as export

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = out_dir / "policy.onnx"
    if failure == "mismatch":
        monkeypatch.setattr(export, "_TOLERANCE", -1.0)
    else:
        # The disk fails (or Ctrl-C arrives) while the file's bytes are being flushed.
        def fsync(fd):
            if failure == "interrupt":
                raise KeyboardInterrupt
            code = getattr(errno, failure)
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "fsync", fsync)
    run = torch_run[0]
    code, out, err = _cli(capsys, "export", run, "--onnx", path)
    if failure == "interrupt":
        assert code == 130
    else:
        needle = {"mismatch": "differs from the torch policy", "ENOSPC": "no space left",
                  "EACCES": "not writable"}[failure]
        _assert_user_error(code, err, needle, "nothing was written")
        if failure != "mismatch":
            assert f"--onnx {path}" in err
    assert out == "" and os.listdir(out_dir) == []
    assert run.is_dir()


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["missing-dir", "parent-is-a-file", "chmod", "EACCES", "EROFS"])
def test_export_destination_is_checked_before_exporting(torch_run, tmp_path, capsys,
                                                        monkeypatch, case):
    import errno
    import os
    import tempfile

    _no_onnx_export(monkeypatch)
    out_dir = tmp_path / "out"
    needle = {"missing-dir": "mkdir -p", "parent-is-a-file": "is not a directory",
              "chmod": "not writable", "EACCES": "not writable",
              "EROFS": "read-only file system"}[case]
    if case == "missing-dir":
        out_dir = out_dir / "sub"
    elif case == "parent-is-a-file":
        out_dir.write_bytes(b"a user's file")
    else:
        out_dir.mkdir()
    if case == "chmod":
        out_dir.chmod(0o555)
        if os.access(out_dir, os.W_OK):  # root: chmod does not stop writes
            out_dir.chmod(0o755)
            pytest.skip("running as root: chmod does not make a directory read-only")
    elif case in ("EACCES", "EROFS"):
        real = tempfile.mkstemp
        code_value = getattr(errno, case)

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and os.path.samefile(dir, out_dir):
                raise OSError(code_value, os.strerror(code_value))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    path = out_dir / "policy.onnx"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        code, out, err = _cli(capsys, "export", torch_run[0], "--onnx", path)
    finally:
        if case == "chmod":
            out_dir.chmod(0o755)
    _assert_user_error(code, err, f"--onnx {path}", needle)
    assert out == "" and sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.e2e
def test_export_of_a_path_that_is_not_a_checkpoint(torch_run, tmp_path, capsys, monkeypatch):
    _no_onnx_export(monkeypatch)
    run = torch_run[0]
    bad = tmp_path / "out.gif"
    bad.write_bytes(b"GIF89a a user's video")
    code, out, err = _cli(capsys, "export", run, "--onnx", tmp_path / "p.onnx",
                          "--checkpoint", bad)
    _assert_user_error(code, err, str(bad), f"a checkpoint file of run {run}",
                       latest_checkpoint(run).name)
    assert "delete" not in err.lower()
    assert bad.read_bytes() == b"GIF89a a user's video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif"]


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["export", "eval"])
def test_export_and_torch_eval_refuse_an_edited_config_json(torch_run, tmp_path, capsys,
                                                            monkeypatch, command):
    _no_onnx_export(monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(torch_run[0], run)
    config = json.loads((run / "config.json").read_text())
    config.update(norm="layer", num_bins=51, backend="jax")
    (run / "config.json").write_text(json.dumps(config))
    args = (["--onnx", tmp_path / "p.onnx"] if command == "export"
            else ["--backend", "torch", "--json"])
    code, out, err = _cli(capsys, command, run, *args)
    _assert_user_error(code, err, str(latest_checkpoint(run)),
                       'norm (config.json: "layer", checkpoint: "rms")',
                       "num_bins (config.json: 51, checkpoint: 21)",
                       'backend (config.json: "jax", checkpoint: "torch")', "restore")
    assert out == "" and not (tmp_path / "p.onnx").exists()
