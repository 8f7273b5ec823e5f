"""The `reppo` command line, run in-process: envs, train, eval, resume, Ctrl-C and user errors.

Every run uses the tiny test config (`--preset cpu` plus `tiny_flags()`), so a run takes seconds
once compiled. One trained run is shared by the module; tests that write work on a copy of it.
User errors must exit with status 2, print exactly one `reppo: error: ...` line to stderr and
leave an existing run directory byte for byte as it was.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jax
import pytest

from reppo.cli import main
from reppo.envs import list_envs
from reppo.loop import run_loop
from reppo.loop import runner as training
from reppo.runs import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
)
from tests.conftest import TINY, tiny_flags
from tests.fakes import ScriptedTrainer, scripted_backend, still_env

TINY_FLAGS = ["--preset", "cpu", *tiny_flags()]
STEPS = TINY.total_steps  # 512: two chunks of two iterations (256 env steps each)
CHUNK = TINY.log_interval_steps


def _cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every file's bytes (and every folder, as None) under `directory`."""
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def _assert_user_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert err.startswith("reppo: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def _env_steps(run: Path) -> list[int]:
    return [r["env_steps"] for r in read_metrics(run)]


def _latest_steps(run: Path) -> int:
    _, metadata = load_checkpoint(latest_checkpoint(run))
    return metadata["env_steps"]


@pytest.fixture(scope="module", autouse=True)
def _restore_jax_cache_threshold():
    # The CLI sets JAX's persistent-cache threshold for its process; keep other modules' setting.
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run dir, exit code, stdout) of one `reppo train` of the tiny config; do not modify."""
    run = tmp_path_factory.mktemp("cli") / "run"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["train", *TINY_FLAGS, "--run-dir", str(run)])
    assert code == 0, err.getvalue()
    return run, code, out.getvalue()


@pytest.fixture
def scripted_flags(monkeypatch):
    """`reppo train` flags of the tiny config on the still env, whose runs the scripted trainer
    trains (tests/fakes.py): the command and the loop without an algorithm or a simulator."""
    scripted_backend(monkeypatch)
    with still_env() as name:
        yield ["--preset", "cpu", *tiny_flags(TINY.replace(env=name))]


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    return copy


# ---- envs -------------------------------------------------------------------------------------


def test_envs_lists_the_dmc_and_maniskill_tasks(capsys):
    code, out, err = _cli(capsys, "envs")
    assert code == 0
    names = out.splitlines()
    assert len(names) == len(set(names)) == 25 + 11
    assert {"CartpoleBalance", "CheetahRun", "HumanoidRun", "WalkerWalk"} <= set(names)
    assert {"PickCube-v1", "PushCube-v1", "PegInsertionSide-v1"} <= set(names)
    assert names == list_envs()
    code, out, _ = _cli(capsys, "envs", "--family", "maniskill")
    assert code == 0 and out.splitlines() == list_envs("maniskill")


def test_envs_says_which_extra_each_family_needs(capsys):
    # The names alone go to stdout (one per line, for scripts); the extras to stderr.
    code, out, err = _cli(capsys, "envs")
    assert code == 0 and out.splitlines() == list_envs()
    lines = err.splitlines()
    assert len(lines) == 2, err
    maniskill = next(line for line in lines if "ManiSkill3" in line)
    assert '".[maniskill]"' in maniskill and "--backend torch" in maniskill
    assert "11 " in maniskill
    dmc = next(line for line in lines if "DM Control" in line)
    assert '".[jax]"' in dmc and "25 " in dmc
    code, out, err = _cli(capsys, "envs", "--family", "dm_control")
    assert code == 0 and "ManiSkill3" not in err and '".[jax]"' in err


# ---- train and eval ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_train_writes_a_complete_run(trained):
    run, code, out = trained
    assert code == 0
    assert "final evaluation" in out
    assert str(run) in out
    assert out.rstrip().splitlines()[-1] == f"run saved in {run}"
    for name in ("config.json", "versions.json", "metrics.jsonl", "learning_curve.png"):
        assert (run / name).is_file(), name
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The flags reached the config: the saved config is exactly the tiny one.
    assert json.loads((run / "config.json").read_text()) == TINY.to_dict()
    assert isinstance(json.loads((run / "versions.json").read_text()), dict)
    assert latest_checkpoint(run) == checkpoint_path(run, STEPS)
    assert _latest_steps(run) == STEPS
    assert _env_steps(run) == [CHUNK, STEPS]
    final = read_metrics(run)[-1]
    assert math.isfinite(final["eval/return_mean"])
    # The printed final evaluation is the logged one.
    assert f"final evaluation: return {final['eval/return_mean']:.1f}" in out


@pytest.mark.e2e
def test_eval_prints_one_json_object_or_one_line(trained, capsys):
    run = trained[0]
    before = _snapshot(run)
    code, out, err = _cli(capsys, "eval", run, "--json", "--episodes", 2)
    assert code == 0, err
    assert out.count("\n") == 1 and out.endswith("\n"), out
    report = json.loads(out)
    assert isinstance(report, dict)
    num_seeds = TINY.num_seeds
    assert report["episodes"] == 2 * num_seeds
    assert len(report["returns"]) == 2 * num_seeds
    assert len(report["per_seed_mean_return"]) == num_seeds
    for key in ("mean_return", "std_return"):
        assert isinstance(report[key], float) and math.isfinite(report[key]), key
    assert report["std_return"] >= 0
    assert report["mean_return"] == pytest.approx(sum(report["returns"]) / len(report["returns"]))
    assert report["env"] == TINY.env
    assert report["env_steps"] == STEPS
    assert Path(report["checkpoint"]) == latest_checkpoint(run)

    # The same evaluation (same seed) as plain text.
    code, out, err = _cli(capsys, "eval", run, "--episodes", 2)
    assert code == 0, err
    assert out.count("\n") == 1, out
    expected = (
        f"{TINY.env} at {STEPS} env steps: return {report['mean_return']:.1f} "
        f"± {report['std_return']:.1f} over {2 * num_seeds} episodes"
    )
    assert out.strip() == expected
    assert _snapshot(run) == before  # evaluating never writes to the run


def _no_trainer(*_args, **_kwargs):
    raise AssertionError("--print-config built a trainer")


def test_print_config_prints_the_resolved_config_and_writes_nothing(
    tmp_path, monkeypatch, capsys, reacher_setting
):
    from reppo import preset

    monkeypatch.chdir(tmp_path)  # where the default run directory would go
    monkeypatch.setattr(training, "make_trainer", _no_trainer)
    code, out, err = _cli(capsys, "train", "--preset", "cpu", "--env", "ReacherEasy",
                          "--num-envs", 32, "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    # The preset, its settings for the task, and the flags.
    assert printed == preset("cpu", env="ReacherEasy", num_envs=32).to_dict()
    assert printed["kl_target"] == 0.2 and printed["num_envs"] == 32
    assert "preset cpu with its ReacherEasy settings" in err  # the notes are not the JSON
    assert list(tmp_path.iterdir()) == []
    # The output is a preset file: trained with, it gives the same config.
    config_file = tmp_path.parent / "printed.json"
    config_file.write_text(out)
    code, again, err = _cli(capsys, "train", "--preset", config_file, "--print-config")
    assert code == 0, err
    assert json.loads(again) == printed
    # A config error is the same one-line error as without the flag.
    code, _, err = _cli(capsys, "train", "--num-envs", 0, "--print-config")
    _assert_user_error(code, err, "num_envs must be > 0")


# ---- resume -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_resume_extends_the_run(run_copy, capsys):
    run = run_copy
    old_lines = (run / "metrics.jsonl").read_text().splitlines()
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", 2 * STEPS)
    assert code == 0, err
    assert f"resuming {run} from {checkpoint_path(run, STEPS).name}" in out
    assert "final evaluation" in out
    assert _latest_steps(run) == 2 * STEPS > STEPS
    steps = _env_steps(run)
    assert steps == [CHUNK, STEPS, STEPS + CHUNK, 2 * STEPS]
    assert steps == sorted(set(steps))  # strictly increasing, no duplicates
    # Records from before the resume are kept byte for byte.
    assert (run / "metrics.jsonl").read_text().splitlines()[:2] == old_lines


def _scripted_run(capsys, flags, run: Path) -> Path:
    code, _, err = _cli(capsys, "train", *flags, "--run-dir", run)
    assert code == 0, err
    return run


def test_resume_refuses_a_config_json_edited_away_from_its_checkpoint(
    tmp_path, capsys, scripted_flags
):
    import reppo

    run = _scripted_run(capsys, scripted_flags, tmp_path / "run")
    trained_with = json.loads((run / "config.json").read_text())
    _edit_config(run, actor_lr=0.01, num_envs=16)
    before = _snapshot(run)
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", 2 * STEPS)
    _assert_user_error(
        code, err, str(run / "config.json"), str(latest_checkpoint(run)),
        f"actor_lr (config.json: 0.01, checkpoint: {trained_with['actor_lr']})",
        "num_envs (config.json: 16, checkpoint: 8)", "nothing was changed", "restore",
        f"--preset {run / 'config.json'}",
    )
    assert "total_steps" not in err.split("checkpoint:")[0]  # a resumable field is no edit
    assert _snapshot(run) == before
    with pytest.raises(CheckpointError, match="actor_lr"):
        reppo.train(None, run, resume=True)
    assert _snapshot(run) == before
    # What a resumed run may change may also be edited by hand.
    _edit_config(run, actor_lr=trained_with["actor_lr"], num_envs=8, eval_episodes=3,
                 total_steps=2 * STEPS)
    code, out, err = _cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert _latest_steps(run) == 2 * STEPS


def test_resume_with_a_budget_below_the_runs_steps_changes_nothing(
    tmp_path, capsys, scripted_flags
):
    import reppo
    from reppo.config import Config, ConfigError

    run = _scripted_run(capsys, scripted_flags, tmp_path / "run")
    before = _snapshot(run)
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", CHUNK)
    _assert_user_error(code, err, str(run), f"{STEPS:,} env steps", f"total_steps {CHUNK:,}",
                       "nothing was changed", f"--total-steps of at least {STEPS:,}")
    assert out == "" and _snapshot(run) == before
    config = Config.from_dict(json.loads((run / "config.json").read_text()))
    with pytest.raises(ConfigError, match="nothing was changed"):
        reppo.train(config.replace(total_steps=CHUNK), run, resume=True)
    assert _snapshot(run) == before
    # Its own budget, or one that rounds up to the steps it holds, has nothing to do.
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", STEPS - 1)
    assert code == 0, err
    assert "already holds" in out and _snapshot(run) == before


@pytest.mark.parametrize("lost", ["checkpoint files", "checkpoints folder", "every record"])
def test_a_run_without_checkpoints_says_what_is_missing_and_never_advises_resume(
    tmp_path, capsys, scripted_flags, lost
):
    import reppo

    run = _scripted_run(capsys, scripted_flags, tmp_path / "run")
    if lost == "checkpoints folder":
        shutil.rmtree(run / "checkpoints")
        state = "is missing"
    else:
        for path in (run / "checkpoints").iterdir():
            path.unlink()
        state = "is empty"
    if lost == "every record":
        (run / "metrics.jsonl").unlink()
        why = "stopped before its first checkpoint"
    else:
        why = f"logged {STEPS:,} env steps"
    before = _snapshot(run)
    new_run = f"reppo train --preset {run / 'config.json'} --run-dir NEW_DIR"
    for args in (["eval", run], ["export", run, "--onnx", tmp_path / "policy.onnx"],
                 ["train", "--resume", run]):
        code, out, err = _cli(capsys, *args)
        _assert_user_error(code, err, str(run), "no checkpoint", f"{run / 'checkpoints'} {state}",
                           why, new_run)
        assert "--resume" not in err and out == ""
    with pytest.raises(CheckpointError, match="no checkpoint") as loading:
        reppo.load_policy(run)
    assert "--resume" not in str(loading.value)
    assert _snapshot(run) == before and not (tmp_path / "policy.onnx").exists()


_ENV_MODULE = "still_env_module_for_resume"


@pytest.fixture
def module_env(tmp_path):
    """A module in its own directory that registers the still env as 'Still' when imported;
    forgotten (registration and import) after the test."""
    from reppo.envs.user import unregister_env

    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / f"{_ENV_MODULE}.py").write_text(
        "from reppo.envs.user import register_env\n"
        "from tests.fakes import StillEnv\n"
        "register_env('Still', StillEnv, episode_length=1000, reward_range=(0.0, 1.0))\n"
    )

    def forget():
        unregister_env("Still")
        sys.modules.pop(_ENV_MODULE, None)

    yield envs
    forget()


def test_resuming_a_module_env_run_needs_only_its_module_importable(
    tmp_path, capsys, monkeypatch, module_env
):
    from reppo.envs.user import unregister_env

    scripted_backend(monkeypatch)
    monkeypatch.chdir(module_env)  # trained where the module is
    run = tmp_path / "run"
    flags = tiny_flags(TINY.replace(env=f"{_ENV_MODULE}:Still", total_steps=CHUNK))
    code, _, err = _cli(capsys, "train", "--preset", "cpu", *flags, "--run-dir", run)
    assert code == 0, err
    # A new process: nothing registered or imported, started elsewhere.
    unregister_env("Still")
    sys.modules.pop(_ENV_MODULE, None)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(run)
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", STEPS)
    _assert_user_error(code, err, f"no module named '{_ENV_MODULE}'", "PYTHONPATH")
    assert _snapshot(run) == before
    monkeypatch.syspath_prepend(str(module_env))  # as PYTHONPATH=envs does
    code, out, err = _cli(capsys, "train", "--resume", run, "--total-steps", STEPS)
    assert code == 0, err
    assert _latest_steps(run) == STEPS


def test_the_envs_doc_says_what_resuming_a_module_env_needs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "envs.md").read_text()
    section = text.split("#### Resuming a run of your env")[1].split("\n## ")[0]
    for needle in ("--resume", "import `module`", "PYTHONPATH", "episode_length",
                   "reward_range", "before anything is trained or written"):
        assert needle in section, needle


# ---- Ctrl-C -----------------------------------------------------------------------------------


def _interrupt_after_first_chunk(monkeypatch) -> list[str]:
    """Raise KeyboardInterrupt where the training loop reports its first chunk."""
    calls: list[str] = []
    original = run_loop.format_progress

    def format_progress(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return calls[-1]

    monkeypatch.setattr(run_loop, "format_progress", format_progress)
    return calls


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(
    tmp_path, capsys, monkeypatch, scripted_flags
):
    run = tmp_path / "run"
    with monkeypatch.context() as interrupting:
        calls = _interrupt_after_first_chunk(interrupting)
        code, out, err = _cli(capsys, "train", *scripted_flags, "--run-dir", run)
    assert code == 130, err
    assert len(calls) == 1  # interrupted after the first chunk, not later
    assert list_checkpoints(run) == [checkpoint_path(run, CHUNK)]
    assert _latest_steps(run) == CHUNK
    assert f"--resume {run}" in out
    assert "final evaluation" not in out

    code, out, err = _cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert "final evaluation" in out
    assert _latest_steps(run) == STEPS
    assert _env_steps(run) == [CHUNK, STEPS]


def test_interrupted_extension_is_finished_by_a_plain_resume(
    tmp_path, capsys, monkeypatch, scripted_flags
):
    run = tmp_path / "run"
    code, _, err = _cli(capsys, "train", *scripted_flags, "--run-dir", run)
    assert code == 0, err

    def interrupted_compile(self, state, chunk_size):
        raise KeyboardInterrupt  # Ctrl-C while the extension's training program compiles

    with monkeypatch.context() as interrupting:
        interrupting.setattr(ScriptedTrainer, "prepare", interrupted_compile)
        code, out, _ = _cli(capsys, "train", "--resume", run, "--total-steps", 2 * STEPS)
    assert code == 130
    # The interrupt message says how to continue; doing that must finish the extended run.
    assert f"continue with `reppo train --resume {run}`" in out
    code, out, err = _cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert "final evaluation" in out
    assert _latest_steps(run) == 2 * STEPS


# ---- user errors ------------------------------------------------------------------------------


def test_unknown_env_suggests_the_closest_and_lists_all(tmp_path, capsys):
    # A new run's directory is checked before the env (tests/loop/test_faults.py): this one is
    # free.
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", *TINY_FLAGS, "--env", "CartpoleBalanc",
                          "--run-dir", run)
    _assert_user_error(code, err, "'CartpoleBalanc'")
    assert re.search(r"did you mean '?CartpoleBalance'?", err, re.IGNORECASE), err
    listed = err.split("Valid names:")[1]
    for name in list_envs():
        assert name in listed
    assert not run.exists()


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--preset", "gpu"], ["preset", "'gpu'", "cpu"]),
        (["--num-envs", "-3"], ["num_envs", "-3"]),
        (["--norm", "batch"], ["norm", "'batch'"]),
        (["--gamma", "2"], ["gamma"]),
        (["--normalize-obs", "maybe"], ["normalize_obs", "maybe"]),
        (["--num-minibatches", "3"], ["num_minibatches"]),
        (["--resume", "other-dir"], ["--resume", "--run-dir"]),
    ],
    ids=["preset", "num-envs", "norm", "gamma", "bool", "minibatches", "resume-and-run-dir"],
)
@pytest.mark.e2e
def test_invalid_train_flags_are_refused_before_any_work(run_copy, capsys, flags, needles):
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "train", *TINY_FLAGS, *flags, "--run-dir", run_copy)
    _assert_user_error(code, err, *needles)
    assert "already holds a run" not in err  # the flag was checked first
    assert _snapshot(run_copy) == before


def test_resume_of_a_missing_dir(tmp_path, capsys):
    missing = tmp_path / "missing"
    code, out, err = _cli(capsys, "train", "--resume", missing)
    _assert_user_error(code, err, str(missing), "does not exist")
    assert not missing.exists()


def test_resume_of_a_dir_that_is_not_a_run(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run\n")
    before = _snapshot(other)
    code, out, err = _cli(capsys, "train", "--resume", other)
    _assert_user_error(code, err, str(other), "not a reppo run directory", "config.json")
    assert _snapshot(other) == before


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_latest_checkpoint_is_named_and_left_alone(run_copy, capsys, damage):
    ckpt = latest_checkpoint(run_copy)
    data = ckpt.read_bytes()
    if damage == "garbage":
        ckpt.write_bytes(b"\x13 not a checkpoint \xff" * (len(data) // 20))
    else:
        ckpt.write_bytes(data[: len(data) // 2])
    before = _snapshot(run_copy)

    code, out, err = _cli(capsys, "train", "--resume", run_copy)
    _assert_user_error(code, err, str(ckpt))
    if damage == "truncated":
        assert "truncated" in err
    assert _snapshot(run_copy) == before

    code, out, err = _cli(capsys, "eval", run_copy, "--json")
    _assert_user_error(code, err, str(ckpt))
    assert out == ""
    assert _snapshot(run_copy) == before


@pytest.mark.unit
@pytest.mark.parametrize("flags", [["--backend", "torch"], ["--env", "PushCube-v1"]],
                         ids=["torch-flag", "maniskill-preset"])
def test_train_without_torch_says_how_to_install_it_before_writing(
    tmp_path, capsys, monkeypatch, flags
):
    # A torch run named by its flag, or chosen by a ManiSkill3 task's preset.
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    code, out, err = _cli(capsys, "train", *flags, "--run-dir", tmp_path / "run")
    _assert_user_error(code, err, "needs PyTorch", 'pip install -e ".[torch]"')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [([], "same config"), (["--total-steps", 2 * STEPS], "different config")],
    ids=["same-config", "different-config"],
)
@pytest.mark.e2e
def test_train_refuses_a_run_dir_that_holds_a_run(run_copy, capsys, flags, needle):
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "train", *TINY_FLAGS, *flags, "--run-dir", run_copy)
    _assert_user_error(code, err, str(run_copy), "already holds a run", needle,
                       f"--resume {run_copy}")
    if flags:
        assert "total_steps" in err
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("flags", "field"),
    [(["--num-envs", "16"], "num_envs"), (["--seed", "1"], "seed"),
     (["--env", "WalkerRun"], "env")],
)
@pytest.mark.e2e
def test_resume_refuses_to_change_a_frozen_field(run_copy, capsys, flags, field):
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "train", "--resume", run_copy, *flags)
    _assert_user_error(code, err, f"cannot change {field} when", "total_steps")
    assert _snapshot(run_copy) == before


@pytest.mark.e2e
def test_resume_accepts_unchanged_frozen_flags(run_copy, capsys):
    # Repeating the run's own flags is not a change; the run is already complete, so
    # nothing is trained and nothing needs compiling.
    code, out, err = _cli(capsys, "train", "--resume", run_copy, *TINY_FLAGS)
    assert code == 0, err
    assert _latest_steps(run_copy) == STEPS


@pytest.mark.e2e
def test_eval_replays_the_runs_own_final_evaluation(trained, capsys):
    # One evaluation seed (reppo.loop.seam.eval_seed) serves training and `reppo eval`: with the
    # run's episode count, the final checkpoint's episodes are those of the run's last record.
    run = trained[0]
    final = [r for r in read_metrics(run) if "eval/return_mean" in r][-1]
    assert final["env_steps"] == STEPS
    code, out, err = _cli(capsys, "eval", run, "--json", "--episodes", TINY.eval_episodes)
    assert code == 0, err
    report = json.loads(out)
    assert report["mean_return"] == pytest.approx(final["eval/return_mean"], rel=1e-6)
    assert report["per_seed_mean_return"] == pytest.approx(final["eval/return_per_seed"],
                                                           rel=1e-6)
    code, out, err = _cli(capsys, "eval", run, "--json", "--episodes", TINY.eval_episodes,
                          "--seed", TINY.seed + 1)
    assert code == 0, err
    assert json.loads(out)["returns"] != report["returns"]  # other episodes


def test_eval_seed_is_one_stable_function_of_seed_and_env_steps():
    from reppo.loop.seam import eval_seed

    seeds = {eval_seed(s, t) for s in range(4) for t in (0, 8192, 16384, 507904)}
    assert len(seeds) == 16 and all(0 <= x < 2**31 for x in seeds)
    # Changing the function changes every evaluation ever recorded: keep it fixed.
    assert eval_seed(0, 507904) == eval_seed(0, 507904) == 284015439


def test_eval_of_a_missing_dir(tmp_path, capsys):
    missing = tmp_path / "missing"
    code, out, err = _cli(capsys, "eval", missing)
    _assert_user_error(code, err, str(missing), "does not exist")
    assert out == ""


@pytest.mark.e2e
def test_run_without_checkpoints_cannot_be_evaluated_or_resumed(run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints")
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "eval", run_copy)
    _assert_user_error(code, err, str(run_copy), "no checkpoint")
    code, out, err = _cli(capsys, "train", "--resume", run_copy)
    _assert_user_error(code, err, str(run_copy), "no checkpoint")
    assert _snapshot(run_copy) == before


@pytest.mark.e2e
def test_eval_refuses_zero_episodes(trained, capsys):
    code, out, err = _cli(capsys, "eval", trained[0], "--episodes", 0)
    _assert_user_error(code, err, "--episodes")


# ---- input that must be refused ------------------------------------------------------------


@pytest.mark.e2e
def test_abbreviated_flags_are_refused(run_copy, capsys):
    before = _snapshot(run_copy)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY_FLAGS, "--gamm", "0.9", "--run-dir", str(run_copy / "new")])
    assert exit_info.value.code == 2
    assert "--gamm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(run_copy), "--episode", "3"])
    assert _snapshot(run_copy) == before


@pytest.mark.e2e
def test_resume_refuses_a_preset_that_is_not_the_runs(run_copy, capsys):
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "train", "--resume", run_copy, "--preset", "paper")
    _assert_user_error(code, err, "--preset paper differs from the run", "drop --preset")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("name", "needle"),
    [("clip.avi", "must end in .gif or .mp4"), ("existing.gif", "already exists")],
)
@pytest.mark.e2e
def test_eval_video_is_checked_before_evaluating(run_copy, capsys, name, needle):
    video = run_copy.parent / name
    if name.startswith("existing"):
        video.write_bytes(b"a user's file")
    before = _snapshot(run_copy.parent)
    code, out, err = _cli(capsys, "eval", run_copy, "--video", video)
    _assert_user_error(code, err, needle)
    assert out == ""  # refused before any evaluation was run or printed
    assert _snapshot(run_copy.parent) == before



def test_eval_video_of_an_env_it_cannot_render_is_refused_before_evaluating(
    tmp_path, capsys, monkeypatch
):
    from reppo.jax import policy
    from reppo.loop.runner import train
    from tests.fakes import ScriptedTrainer, still_env

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the run was evaluated before the video was refused")

    monkeypatch.setattr(policy, "evaluate_run", no_evaluation)
    video = tmp_path / "clip.gif"
    with still_env() as env:
        config = TINY.replace(env=env)
        run = tmp_path / "run"
        train(config, run, echo=lambda line: None, trainer=ScriptedTrainer(config))
        before = _snapshot(tmp_path)
        code, out, err = _cli(capsys, "eval", run, "--video", video)
    _assert_user_error(code, err, f"--video: reppo cannot render {env}",
                       "evaluate without --video")
    assert out == "" and _snapshot(tmp_path) == before


@pytest.mark.e2e
def test_eval_mp4_without_ffmpeg_is_refused_before_evaluating(run_copy, capsys, monkeypatch):
    import reppo.commands.evaluate as evaluate_command

    monkeypatch.setattr(evaluate_command.shutil, "which", lambda name: None)
    code, out, err = _cli(capsys, "eval", run_copy, "--video", run_copy.parent / "clip.mp4")
    _assert_user_error(code, err, "needs ffmpeg", ".gif")
    assert out == "" and not (run_copy.parent / "clip.mp4").exists()


def _fake_ffmpeg(tmp_path: Path, monkeypatch, message: str) -> None:
    """An `ffmpeg` on PATH that starts the output file, reads the frames and fails with
    `message` on stderr, as ffmpeg does when the disk fills up under it."""
    import os

    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'for last; do :; done\n'
        'printf partial > "$last"\n'
        "cat > /dev/null\n"
        f'echo "$last: {message}" >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("message", "needles"),
    [("No space left on device", ("no space left", "nothing was written")),
     ("Read-only file system", ("read-only file system", "nothing was written")),
     ("Invalid argument", ("ffmpeg could not write", "Invalid argument", ".gif"))],
)
@pytest.mark.e2e
def test_eval_mp4_that_ffmpeg_fails_to_write_is_one_line_and_leaves_nothing(
        run_copy, capsys, monkeypatch, tmp_path, message, needles):
    import os

    _fast_video(monkeypatch)
    _fake_ffmpeg(tmp_path, monkeypatch, message)
    out_dir = run_copy.parent / "videos"
    out_dir.mkdir()
    video = out_dir / "clip.mp4"
    code, out, err = _cli(capsys, "eval", run_copy, "--video", video)
    _assert_user_error(code, err, *needles)
    assert out == ""
    assert os.listdir(out_dir) == []  # neither the partial video nor a temp file

# ---- eval: checkpoints that are not the run's, edited configs, unwritable --video ------------


def _no_evaluation(monkeypatch) -> None:
    """Make any evaluation fail the test: what is checked must be checked before it."""
    import reppo.jax.policy as jax_policy

    def evaluate_run(*args, **kwargs):
        pytest.fail("the evaluation ran before the refused input was checked")

    monkeypatch.setattr(jax_policy, "evaluate_run", evaluate_run)


@pytest.mark.e2e
@pytest.mark.parametrize("given", ["out.gif", "missing.safetensors", "checkpoints-dir"])
def test_eval_of_a_path_that_is_not_a_checkpoint_lists_the_runs_checkpoints(
    run_copy, capsys, given
):
    """A wrong --checkpoint says what was expected, lists the run's checkpoints and never
    advises deleting anything (the file may be the user's)."""
    if given == "out.gif":
        bad = run_copy.parent / "out.gif"
        bad.write_bytes(b"GIF89a a user's video")
    elif given == "missing.safetensors":
        bad = run_copy.parent / given
    else:
        bad = run_copy / "checkpoints"
    before = _snapshot(run_copy.parent)
    code, out, err = _cli(capsys, "eval", run_copy, "--checkpoint", bad)
    _assert_user_error(code, err, str(bad), f"a checkpoint file of run {run_copy}",
                       *(p.name for p in list_checkpoints(run_copy)))
    assert "delete" not in err.lower() and "resume" not in err.lower()
    assert out == "" and _snapshot(run_copy.parent) == before


@pytest.mark.e2e
def test_eval_of_a_corrupt_latest_checkpoint_never_advises_deleting_it(run_copy, capsys):
    ckpt = latest_checkpoint(run_copy)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    earlier = list_checkpoints(run_copy)[0]
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "eval", run_copy, "--json")
    _assert_user_error(code, err, str(ckpt), "truncated", "--checkpoint", earlier.name)
    assert "delete" not in err.lower()
    assert out == "" and _snapshot(run_copy) == before


def _edit_config(run: Path, **changes) -> None:
    path = run / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.e2e
def test_eval_refuses_a_config_json_edited_away_from_its_checkpoint(run_copy, capsys):
    # normalize_obs alone would load and silently act on unnormalized observations.
    _edit_config(run_copy, normalize_obs=False, actor_hidden_dim=32, v_max=10.0)
    before = _snapshot(run_copy)
    code, out, err = _cli(capsys, "eval", run_copy, "--json")
    _assert_user_error(
        code, err, str(run_copy / "config.json"), str(latest_checkpoint(run_copy)),
        "normalize_obs (config.json: false, checkpoint: true)",
        "actor_hidden_dim (config.json: 32, checkpoint: 16)",
        "v_max (config.json: 10.0, checkpoint: null)",
        "restore", "another run",
    )
    assert out == "" and _snapshot(run_copy) == before


@pytest.mark.e2e
def test_config_fields_that_do_not_shape_the_policy_may_be_edited(run_copy):
    from reppo.config import Config
    from reppo.runs import load_run_checkpoint
    from reppo.runs.checkpoint import POLICY_FIELDS

    assert set(POLICY_FIELDS) <= {f.name for f in Config.__dataclass_fields__.values()}
    # e.g. evaluating a GPU-trained run on a CPU, or an extended run's total_steps.
    _edit_config(run_copy, device="cpu", total_steps=10 * STEPS, actor_lr=1e-3,
                 actor_hidden_dim=16.0)
    config, path, arrays, metadata = load_run_checkpoint(run_copy)
    assert path == latest_checkpoint(run_copy) and config["device"] == "cpu"


def _fail_mkstemp_in(monkeypatch, directory: Path, code: int) -> None:
    """Simulate a directory that refuses new files (as root, chmod does not)."""
    import os
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == directory.resolve():
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["missing-dir", "chmod", "EACCES", "EROFS", "ENOSPC"])
def test_eval_video_destination_is_checked_before_evaluating(run_copy, capsys, monkeypatch,
                                                             case):
    import errno
    import os

    _no_evaluation(monkeypatch)
    out_dir = run_copy.parent / "videos"
    needles = {"missing-dir": "mkdir -p", "chmod": "not writable", "EACCES": "not writable",
               "EROFS": "read-only file system", "ENOSPC": "no space left"}[case]
    if case == "missing-dir":
        out_dir = out_dir / "sub"
    else:
        out_dir.mkdir()
    if case == "chmod":
        out_dir.chmod(0o555)
        if os.access(out_dir, os.W_OK):  # root: chmod does not stop writes
            out_dir.chmod(0o755)
            pytest.skip("running as root: chmod does not make a directory read-only")
    elif case != "missing-dir":
        _fail_mkstemp_in(monkeypatch, out_dir, getattr(errno, case))
    video = out_dir / "clip.gif"
    before = _snapshot(run_copy.parent)
    try:
        code, out, err = _cli(capsys, "eval", run_copy, "--video", video)
    finally:
        if case == "chmod":
            out_dir.chmod(0o755)
    _assert_user_error(code, err, f"--video {video}", needles)
    assert out == "" and _snapshot(run_copy.parent) == before


def _fast_video(monkeypatch) -> None:
    """Stub the evaluation, the episode and the rendering: only the writing is real."""
    import numpy as np

    import reppo.envs.evaluation as evaluation
    import reppo.jax.policy as jax_policy

    monkeypatch.setattr(jax_policy, "evaluate_run", lambda run_dir, **kw: {
        "env": "CartpoleBalance", "env_steps": STEPS, "mean_return": 1.0, "std_return": 0.0,
        "episodes": 1,
    })
    monkeypatch.setattr(evaluation, "_rollout", lambda env, act, key: ({}, 3.0, 3))
    frames = np.zeros((4, 24, 32, 3), np.uint8)
    monkeypatch.setattr(evaluation, "render_frames", lambda *args: frames)


@pytest.mark.e2e
def test_eval_video_is_written_with_the_umask_mode_and_no_temp_file(run_copy, capsys,
                                                                    monkeypatch):
    import os

    _fast_video(monkeypatch)
    out_dir = run_copy.parent / "videos"
    out_dir.mkdir()
    video = out_dir / "clip.gif"
    old = os.umask(0o027)
    try:
        code, out, err = _cli(capsys, "eval", run_copy, "--video", video)
    finally:
        os.umask(old)
    assert code == 0, err
    assert f"video written to {video}" in out
    assert os.listdir(out_dir) == ["clip.gif"]
    assert video.stat().st_mode & 0o777 == 0o640
    assert video.read_bytes().startswith(b"GIF8")


@pytest.mark.e2e
@pytest.mark.parametrize("code_name", ["ENOSPC", "EACCES", "EROFS"])
def test_eval_video_write_failure_is_one_line_and_leaves_nothing(run_copy, capsys,
                                                                 monkeypatch, code_name):
    import errno
    import os

    import reppo.envs.evaluation as evaluation

    _fast_video(monkeypatch)
    code_value = getattr(errno, code_name)

    def write_video(path, frames, fps):
        Path(path).write_bytes(b"GIF89a partial")  # a partial file, then the disk fails
        raise OSError(code_value, os.strerror(code_value))

    monkeypatch.setattr(evaluation, "_write_video", write_video)
    out_dir = run_copy.parent / "videos"
    out_dir.mkdir()
    video = out_dir / "clip.gif"
    code, out, err = _cli(capsys, "eval", run_copy, "--video", video)
    needle = {"ENOSPC": "no space left", "EACCES": "not writable",
              "EROFS": "read-only file system"}[code_name]
    _assert_user_error(code, err, f"--video {video}", needle, "nothing was written")
    assert out == ""
    assert os.listdir(out_dir) == []  # neither the partial video nor a temp file
