"""Tests of reppo.runs: checkpoints, run directories, metrics, plots and progress lines."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from reppo.runs import (
    CheckpointError,
    MetricsLogger,
    RunDirError,
    checkpoint_path,
    collect_versions,
    create_run_dir,
    default_run_dir,
    format_duration,
    format_progress,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    open_run_dir,
    plot_learning_curve,
    read_metrics,
    save_checkpoint,
    truncate_metrics,
)

# ---- checkpoints ------------------------------------------------------------------------------


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "actor/w": rng.standard_normal((4, 3)).astype(np.float32),
        "actor/b": np.array([np.nan, -0.0, np.inf], dtype=np.float32),
        "critic/w64": rng.standard_normal(5),
        "half": np.array([1.5, -2.25], dtype=np.float16),
        "key": np.array([0xFFFFFFFF, 0, 123456789, 2**31], dtype=np.uint32),
        "counts": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
        "i64": np.array([2**62, -1], dtype=np.int64),
        "u8": np.arange(7, dtype=np.uint8),
        "done": np.array([True, False, True]),
        "step": np.array(7, dtype=np.int64),
        "scalar_key": np.array(4294967295, dtype=np.uint32),
        "scalar_bool": np.array(True),
        "scalar_f": np.array(0.25, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert b[name].dtype == a[name].dtype, name
        assert b[name].shape == a[name].shape, name
        assert b[name].tobytes() == a[name].tobytes(), name  # bitwise, so NaN and -0.0 count


def test_checkpoint_round_trip_is_exact(tmp_path):
    state = _state()
    meta = {"env_steps": 123, "config": {"lr": 3e-4, "env": "Cartpole"}, "ret": np.float32(1.5)}
    path = save_checkpoint(tmp_path, 123, state, meta, keep=3)
    assert path == tmp_path / "checkpoints" / "ckpt_000000000123.safetensors"
    assert path == checkpoint_path(tmp_path, 123)
    arrays, metadata = load_checkpoint(path)
    _assert_identical(state, arrays)
    assert metadata == {"env_steps": 123, "config": {"lr": 3e-4, "env": "Cartpole"}, "ret": 1.5}


def test_checkpoint_accepts_non_contiguous_and_big_endian(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = {"t": base.T, "be": np.array([1, 2, 3], dtype=">i4")}
    arrays, _ = load_checkpoint(save_checkpoint(tmp_path, 1, state, {}, keep=1))
    np.testing.assert_array_equal(arrays["t"], base.T)
    np.testing.assert_array_equal(arrays["be"], [1, 2, 3])


def test_checkpoint_rejects_object_arrays(tmp_path):
    with pytest.raises(CheckpointError, match="'bad'"):
        save_checkpoint(tmp_path, 1, {"bad": np.array([object()])}, {}, keep=1)
    assert list_checkpoints(tmp_path) == []


def test_list_prune_and_leftover_temp_files(tmp_path):
    assert list_checkpoints(tmp_path) == []
    assert latest_checkpoint(tmp_path) is None
    state = {"x": np.zeros(2, np.float32)}
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    # What an interrupted save leaves behind, plus an unrelated file of the user's.
    leftover = ckpt_dir / ".ckpt_000000000999.safetensors.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    notes = ckpt_dir / "notes.txt"
    notes.write_text("mine")

    for step in (10, 30, 20, 40):
        save_checkpoint(tmp_path, step, {"x": np.full(2, step, np.float32)}, {"s": step}, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt_000000000030.safetensors", "ckpt_000000000040.safetensors"]
    assert latest_checkpoint(tmp_path) == ckpt_dir / "ckpt_000000000040.safetensors"
    arrays, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta == {"s": 40}
    assert arrays["x"].tolist() == [40.0, 40.0]
    # Pruning only touches checkpoints.
    assert leftover.read_bytes() == b"half a checkpoint"
    assert notes.read_text() == "mine"
    # No temp file of our own saves is left behind.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == sorted([leftover.name, notes.name, *names])

    # Saving an older step (after resuming from an old checkpoint) never deletes the new file.
    path = save_checkpoint(tmp_path, 5, state, {}, keep=2)
    assert path.exists()


def test_failed_save_leaves_previous_checkpoints_intact(tmp_path, monkeypatch):
    import reppo.runs.rundir as rundir

    first = save_checkpoint(tmp_path, 1, {"x": np.zeros(3)}, {"v": 1}, keep=1)
    before = first.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(rundir.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"x": np.ones(3)}, {"v": 2}, keep=1)
    monkeypatch.undo()
    # The old checkpoint was neither pruned nor touched, and no partial file is left behind.
    assert list_checkpoints(tmp_path) == [first]
    assert first.read_bytes() == before
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_atomic_write_never_overwrites_when_asked(tmp_path):
    from reppo.runs import atomic_write_bytes

    target = tmp_path / "config.json"
    target.write_bytes(b"user data")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"new", overwrite=False)
    assert target.read_bytes() == b"user data"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_save_replaces_same_step_atomically(tmp_path):
    save_checkpoint(tmp_path, 1, {"x": np.zeros(1)}, {"v": 1}, keep=3)
    path = save_checkpoint(tmp_path, 1, {"x": np.ones(1)}, {"v": 2}, keep=3)
    arrays, meta = load_checkpoint(path)
    assert meta == {"v": 2} and arrays["x"].tolist() == [1.0]
    assert len(list(path.parent.iterdir())) == 1


def test_save_rejects_bad_keep(tmp_path):
    with pytest.raises(CheckpointError, match="keep"):
        save_checkpoint(tmp_path, 1, {}, {}, keep=0)


@pytest.fixture()
def ckpt(tmp_path):
    return save_checkpoint(tmp_path, 5, _state(), {"env_steps": 5}, keep=1)


def _expect_error(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.mark.parametrize("keep_bytes", [3, 100, -10])
def test_truncated_checkpoint(ckpt, keep_bytes):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:keep_bytes])
    _expect_error(ckpt, "truncated", "delete it")


def test_random_bytes_are_not_a_checkpoint(ckpt):
    ckpt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _expect_error(ckpt, "not a safetensors file", "delete it")


def test_text_file_is_not_a_checkpoint(ckpt):
    ckpt.write_text("this is not a checkpoint at all, but it is long enough\n" * 10)
    _expect_error(ckpt, "not a safetensors file")


def test_flipped_data_byte_fails_checksum(ckpt):
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0x01  # inside the array payload, after the header
    ckpt.write_bytes(bytes(data))
    _expect_error(ckpt, "checksum", "delete it")


def _rewrite_metadata(path, **changes):
    """Rewrite a checkpoint's safetensors header metadata, keeping the data as is."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    for key, value in changes.items():
        if value is None:
            header["__metadata__"].pop(key)
        else:
            header["__metadata__"][key] = value
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_tampered_metadata_fails_checksum(ckpt):
    _rewrite_metadata(ckpt, **{"reppo.metadata": json.dumps({"env_steps": 6})})
    _expect_error(ckpt, "checksum")


def test_wrong_format_version(ckpt):
    _rewrite_metadata(ckpt, **{"reppo.format_version": "99"})
    _expect_error(ckpt, "format version 99")


def test_missing_metadata(ckpt):
    _rewrite_metadata(ckpt, **{"reppo.checksum": None})
    _expect_error(ckpt, "missing reppo metadata")


def test_foreign_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    _expect_error(path, "missing reppo metadata")


def test_missing_checkpoint(tmp_path):
    _expect_error(tmp_path / "nope.safetensors", "does not exist")


def test_load_never_unpickles(tmp_path):
    import pickle

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"x": 1}))
    _expect_error(path, "not a safetensors file")


# ---- run directories ---------------------------------------------------------------------------

CONFIG = {"env": "CartpoleBalance", "seed": 0, "actor_lr": 3e-4, "num_envs": 1024, "gamma": None}


def _snapshot(directory) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_create_and_open_run_dir(tmp_path):
    run = create_run_dir(tmp_path / "runs" / "a", CONFIG, {"python": "3.11"})
    assert json.loads((run / "config.json").read_text()) == CONFIG
    assert json.loads((run / "versions.json").read_text()) == {"python": "3.11"}
    assert (run / "config.json").read_text().startswith("{\n  ")  # pretty JSON
    assert open_run_dir(run) == CONFIG
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "versions.json"]


def test_create_in_empty_existing_dir(tmp_path):
    create_run_dir(tmp_path, CONFIG, {})
    assert open_run_dir(tmp_path) == CONFIG


def test_refuses_existing_run_with_same_config(tmp_path):
    create_run_dir(tmp_path, CONFIG, {"v": 1})
    (tmp_path / "metrics.jsonl").write_text('{"env_steps": 1}\n')
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirError) as info:
        create_run_dir(tmp_path, CONFIG, {"v": 2})
    message = str(info.value)
    assert "already holds a run" in message and "same config" in message
    assert "nothing was changed" in message
    assert f"reppo train --resume {tmp_path}" in message and "--run-dir" in message
    assert _snapshot(tmp_path) == before


def test_refuses_existing_run_with_different_config(tmp_path):
    create_run_dir(tmp_path, CONFIG, {})
    before = _snapshot(tmp_path)
    other = {**CONFIG, "seed": 1, "actor_lr": 1e-3, "num_envs": 8, "gamma": 0.9, "new": 1}
    with pytest.raises(RunDirError) as info:
        create_run_dir(tmp_path, other, {})
    message = str(info.value)
    assert "different config" in message
    assert "actor_lr, gamma, new and 2 more" in message
    assert _snapshot(tmp_path) == before

    with pytest.raises(RunDirError, match=r"differs in seed\)"):
        create_run_dir(tmp_path, {**CONFIG, "seed": 2}, {})
    assert _snapshot(tmp_path) == before


def test_refuses_foreign_non_empty_dir(tmp_path):
    (tmp_path / "thesis.tex").write_text("important")
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirError, match="not empty.*nothing was changed.*--run-dir"):
        create_run_dir(tmp_path, CONFIG, {})
    assert _snapshot(tmp_path) == before


def test_refuses_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"data")
    with pytest.raises(RunDirError, match="is a file.*nothing was changed"):
        create_run_dir(target, CONFIG, {})
    assert target.read_bytes() == b"data"


def test_one_refusal_of_an_occupied_output_directory(tmp_path):
    from reppo.errors import UserError
    from reppo.runs.rundir import check_output_directory

    check_output_directory(tmp_path / "new", "--out")  # missing: free
    (tmp_path / "empty").mkdir()
    check_output_directory(tmp_path / "empty", "--out")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / ".lock").write_text("")
    check_output_directory(locked, "--out", ignore=(".lock",))  # only what the command made
    with pytest.raises(UserError, match=r"^--out .*locked is not empty; nothing was changed; "
                                        r"pick a new or empty directory$"):
        check_output_directory(locked, "--out")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(RunDirError, match=r"^.*file is a file; nothing was changed; fix it$"):
        check_output_directory(tmp_path / "file", "", advice="fix it", error=RunDirError)
    (locked / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"--out .*locked is not empty and holds no sweep.json, "
                                        r"so it is not a sweep; nothing was changed"):
        check_output_directory(locked, "--out", record="sweep.json", kind="sweep",
                               ignore=(".lock",))
    assert (locked / "notes.txt").read_text() == "mine" and (tmp_path / "file").exists()


def test_open_run_dir_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        open_run_dir(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        open_run_dir(tmp_path / "f")
    with pytest.raises(RunDirError, match="not a reppo run directory"):
        open_run_dir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"env": ')
    with pytest.raises(RunDirError, match=r"config.json is not valid JSON \(.*line 1"):
        open_run_dir(run)
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="JSON object"):
        open_run_dir(run)


def test_default_run_dir(tmp_path):
    first = default_run_dir("CartpoleBalance", root=tmp_path)
    assert first.parent == tmp_path
    assert first.name.startswith("CartpoleBalance-")
    stamp = first.name.removeprefix("CartpoleBalance-")
    assert len(stamp) == 15 and stamp[8] == "-" and stamp.replace("-", "").isdigit()
    assert not first.exists()  # only names it
    first.mkdir()
    second = default_run_dir("CartpoleBalance", root=tmp_path)
    if second.name.startswith(first.name):  # the same second: a suffix was added
        assert second.name == first.name + "-2"
    assert second != first and not second.exists()
    assert default_run_dir("suite/task", root=tmp_path).parent == tmp_path


def test_collect_versions():
    info = collect_versions({"device": "cpu", "python": "override"})
    assert info["device"] == "cpu" and info["python"] == "override"
    assert info["packages"]["numpy"] == np.__version__
    assert info["cpu_count"] == os.cpu_count()
    assert info["timestamp_utc"].endswith("+00:00")
    assert "hostname" not in json.dumps(info)
    import platform

    assert platform.node() not in json.dumps(info) or not platform.node()


def test_import_is_framework_neutral():
    code = "import sys, reppo.runs; print([m for m in ('jax', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- metrics -----------------------------------------------------------------------------------


def test_metrics_write_and_read(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        written = logger.log(
            {
                "env_steps": np.int64(1000),
                "loss": np.float32(0.5),
                "zero_d": np.array(2.5),
                "nan": float("nan"),
                "inf": np.float32(np.inf),
                "per_seed": np.array([1.0, np.nan]),
                "flag": np.bool_(True),
                "name": "x",
            }
        )
        logger.log({"env_steps": 2000, "loss": 0.25})
    assert written["nan"] is None
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert len(text.splitlines()) == 2
    records = read_metrics(tmp_path)
    assert records == read_metrics(tmp_path / "metrics.jsonl")
    assert records[0] == {
        "env_steps": 1000,
        "loss": 0.5,
        "zero_d": 2.5,
        "nan": None,
        "inf": None,
        "per_seed": [1.0, None],
        "flag": True,
        "name": "x",
    }
    assert type(records[0]["env_steps"]) is int
    assert records[1] == {"env_steps": 2000, "loss": 0.25}


def test_metrics_flushes_each_record(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"env_steps": 1})
    assert read_metrics(tmp_path) == [{"env_steps": 1}]  # visible before close
    logger.close()
    logger.close()  # idempotent


def test_metrics_rejects_huge_arrays(tmp_path):
    with MetricsLogger(tmp_path) as logger, pytest.raises(TypeError, match="'big'"):
        logger.log({"big": np.zeros(10_000)})


def test_read_metrics_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"env_steps": 1, "a": 1}\n{"env_steps": 2, "a": 2}\n{"env_steps": 3, "a"')
    assert read_metrics(tmp_path) == [{"env_steps": 1, "a": 1}, {"env_steps": 2, "a": 2}]
    assert read_metrics(tmp_path / "missing") == []
    # Appending after a crash does not glue the new record onto the fragment.
    with MetricsLogger(tmp_path) as logger:
        logger.log({"env_steps": 3, "a": 3})
    assert [r["a"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_truncate_metrics(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        for steps in (100, 200, 300, 400):
            logger.log({"env_steps": steps, "x": steps / 100})
        logger.log({"note": "no steps"})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert truncate_metrics(tmp_path, 200) == 2
    assert [r.get("env_steps") for r in read_metrics(tmp_path)] == [100, 200, None]
    new_lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert new_lines == [lines[0], lines[1], lines[4]]  # kept byte for byte
    assert truncate_metrics(tmp_path, 200) == 0
    assert truncate_metrics(tmp_path / "nothing-here", 5) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temp left


def test_tensorboard_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="pip install tensorboardX"):
        MetricsLogger(tmp_path, tensorboard=True)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_wandb_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError, match="pip install wandb"):
        MetricsLogger(tmp_path, wandb=True)


def test_wandb_is_offline_by_default(tmp_path, monkeypatch):
    calls = {}

    class FakeRun:
        def log(self, data, step):
            calls.setdefault("log", []).append((data, step))

        def finish(self):
            calls["finished"] = True

    class FakeWandb:
        @staticmethod
        def init(**kwargs):
            calls["init"] = kwargs
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with MetricsLogger(tmp_path, wandb=True, wandb_project="p", config={"a": 1}) as logger:
        logger.log({"env_steps": 10, "loss": np.float32(2.0), "nan": np.nan, "s": "x"})
    assert calls["init"]["mode"] == "offline" and calls["init"]["project"] == "p"
    assert calls["init"]["config"] == {"a": 1}
    assert calls["log"] == [({"env_steps": 10.0, "loss": 2.0}, 10)]
    assert calls["finished"]

    monkeypatch.setenv("WANDB_MODE", "online")
    MetricsLogger(tmp_path, wandb=True).close()
    assert calls["init"]["mode"] == "online"


def test_tensorboard_writes_events(tmp_path):
    pytest.importorskip("tensorboardX")
    with MetricsLogger(tmp_path, tensorboard=True) as logger:
        logger.log({"env_steps": 5, "loss": 1.0})
    assert any(p.name.startswith("events.") for p in (tmp_path / "tensorboard").iterdir())


# ---- plots and progress ----------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_learning_curve(tmp_path):
    records = [
        {"env_steps": 0, "wall_time": 1.0, "sps": 10.0},
        {"env_steps": 1000, "wall_time": 60.0, "eval/return_mean": 10.0, "eval/return_std": 2.0},
        {"env_steps": 2000, "wall_time": 120.0, "eval/return_mean": 30.0},
        {"env_steps": 3000, "wall_time": 180.0, "eval/return_mean": None},
        {"env_steps": 4000, "eval/return_mean": [40.0, 50.0]},
    ]
    out = plot_learning_curve(records, tmp_path / "sub" / "curve.png", "Cartpole")
    assert out == tmp_path / "sub" / "curve.png"
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in out.parent.iterdir()) == ["curve.png"]


@pytest.mark.parametrize("stochastic", [True, False], ids=["with-stochastic", "without"])
def test_plot_learning_curve_draws_the_stochastic_return(tmp_path, monkeypatch, stochastic):
    """With `eval/stochastic_return_mean` in the records, both panels draw it beside the
    deterministic return, labelled; metrics files without it plot the one curve as before."""
    from reppo.runs import plots

    drawn = []
    draw = plots.draw_curves

    def spy(ax, xs, means, stds, xlabel, label=None, color=None):
        drawn.append((xlabel, label, list(means)))
        draw(ax, xs, means, stds, xlabel, label=label, color=color)

    monkeypatch.setattr(plots, "draw_curves", spy)
    records = [
        {"env_steps": 0, "wall_time": 1.0, "sps": 10.0},
        {"env_steps": 1000, "wall_time": 60.0, "eval/return_mean": 10.0, "eval/return_std": 2.0},
        {"env_steps": 2000, "wall_time": 120.0, "eval/return_mean": 30.0},
    ]
    if stochastic:
        records[1].update({"eval/stochastic_return_mean": 8.0, "eval/stochastic_return_std": 1.0})
        records[2].update({"eval/stochastic_return_mean": 20.0})
    out = plot_learning_curve(records, tmp_path / "curve.png", "Cartpole")
    assert out.read_bytes().startswith(PNG_MAGIC)
    det, sto = "deterministic policy (tanh of the mean)", "stochastic policy"
    expected = [(x, det if stochastic else None, [10.0, 30.0])
                for x in ("environment steps", "wall time (minutes)")]
    if stochastic:
        expected.insert(1, ("environment steps", sto, [8.0, 20.0]))
        expected.append(("wall time (minutes)", sto, [8.0, 20.0]))
    assert drawn == expected


@pytest.mark.parametrize(
    "records", [[], [{"env_steps": 5, "sps": 1.0}], [{"eval/return_mean": 3.0}], ["junk"]]
)
def test_plot_without_evaluations(tmp_path, records):
    out = plot_learning_curve(records, tmp_path / "curve.png", "empty")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_format_progress_full():
    record = {
        "env_steps": 1_230_000,
        "sps": 45_100.0,
        "wall_time": 27.3,
        "temp/alpha": np.float32(0.0123),
        "temp/beta": 0.031,
        "kl": 0.081,
        "entropy": -1.2,
        "critic/value_error": 0.41,
    }
    line = format_progress(record, 5_000_000, 812.34)
    assert line == (
        "  1.23M/5.00M (25%) | 45.1k sps | ETA 1m24s | eval 812.3 | "
        "alpha 0.0123 beta 0.0310 | KL 0.081 H -1.20 | critic err 0.41"
    )


def test_format_progress_partial():
    assert format_progress({}, 1000, None) == "  "
    line = format_progress({"env_steps": 500, "wall_time": 10.0, "kl": None}, 1000, None)
    assert line == "  500/1.00k (50%) | 50 sps | ETA 10s"
    line = format_progress({"env_steps": 999_999, "entropy": float("nan")}, 1_000_000, 3.0)
    assert line == "  1.00M/1.00M (99%) | eval 3.0"
    line = format_progress({"temp/beta": 0.5, "eval/return_mean": 7.0}, 10, None)
    assert line == "  eval 7.0 | beta 0.5000"


def test_format_duration():
    assert format_duration(0) == "0s"
    assert format_duration(45.2) == "45s"
    assert format_duration(83) == "1m23s"
    assert format_duration(7500) == "2h05m"
    assert format_duration(3 * 86400 + 4 * 3600) == "3d04h"
    assert format_duration(-1) == "?"
    assert format_duration(math.inf) == "?"


def test_format_progress_eta_counts_every_seed():
    # 50 steps left per seed, 2 seeds, 10 steps/s over all seeds: 10 s.
    line = format_progress({"env_steps": 50, "sps": 10.0}, 100, None, num_seeds=2)
    assert "ETA 10s" in line


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    import os
    import stat

    from reppo.runs.rundir import atomic_write_bytes

    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.json", b"{}", overwrite=False)
        plain = tmp_path / "b.json"
        plain.write_bytes(b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_run_being_trained_without_a_checkpoint_yet_names_its_writer(tmp_path):
    from reppo.config import Config
    from reppo.runs import create_run_dir, load_run_checkpoint
    from reppo.runs.lock import RunLock

    run = create_run_dir(tmp_path / "run", Config().to_dict(), {})
    with RunLock.acquire(run), pytest.raises(CheckpointError) as err:
        load_run_checkpoint(run)
    message = str(err.value)
    assert f"pid {os.getpid()}" in message and "is training it" in message, message
    assert "--resume" not in message
    with pytest.raises(CheckpointError, match="logged no progress") as err:
        load_run_checkpoint(run)
    assert "--resume" not in str(err.value)
