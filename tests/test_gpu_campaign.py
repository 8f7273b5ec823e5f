"""benchmarks/gpu_campaign.py: its pure parts (plan, time boxes, result files, partial results,
offline installation) as unit tests, and a dry run of the whole campaign on the CPU."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_campaign.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


gc = _load()


# ---- the plan and its time boxes ----------------------------------------------------------------


def test_the_full_plan_has_every_part_and_fits_nine_minutes():
    parts = gc.plan(dry=False)
    names = [p.name for p in parts]
    assert names == ["precompile", "jax-CheetahRun", "jax-WalkerRun", "jax-HopperHop",
                     "seeds-1", "seeds-4", "seeds-8", "torch-eager", "torch-compile",
                     "torch-cuda-graphs", "maniskill-PushCube-v1", "maniskill-PickCube-v1"]
    assert all(p.skip is None for p in parts)
    # Each part may overrun its box by run_part's grace; the boxes leave room for it.
    assert sum(p.seconds for p in parts) <= 9 * 60
    tasks = [p for p in parts if p.name.startswith("jax-")]
    assert {p.spec["env"] for p in tasks} == set(gc.TASKS)
    assert all(p.spec["num_seeds"] == 3 and p.spec["evaluate"] for p in tasks)
    assert [p.spec["num_seeds"] for p in parts if p.name.startswith("seeds-")] == [1, 4, 8]
    assert [p.spec["fields"]["torch_compile"] for p in parts if p.worker == "torch"] == [
        False, True, True]
    assert [p.spec["fields"]["cuda_graphs"] for p in parts if p.worker == "torch"] == [
        False, False, True]
    maniskill = [(p.spec["env"], p.spec["preset"], p.spec["train_seconds"]) for p in parts
                 if p.worker == "maniskill"]
    assert maniskill == [("PushCube-v1", "maniskill", 50), ("PickCube-v1", "maniskill", 50)]


def test_the_dry_plan_is_tiny_and_says_why_it_skips():
    parts = gc.plan(dry=True)
    for part in parts:
        if part.worker == "train":
            assert part.spec["env"] == "CartpoleBalance"
            assert part.spec["fields"]["num_envs"] <= 8
        if part.worker in ("train", "torch"):
            assert part.spec["max_chunks"] == 2  # its box only bounds a broken part
    # One JAX program for every JAX part: compiling is most of a dry run's time.
    programs = {json.dumps([p.spec[k] for k in ("env", "num_seeds", "fields", "chunk")])
                for p in parts if p.worker == "train"}
    assert len(programs) == 1
    skipped = {p.name: p.skip for p in parts if p.skip}
    assert set(skipped) == {"torch-compile", "torch-cuda-graphs"}
    assert all("dry run" in why for why in skipped.values())


def test_time_boxes_stay_within_what_is_left():
    assert gc.time_box(75, 500) == 75
    assert gc.time_box(75, 40) == 40
    assert gc.time_box(75, 4) is None  # too short to measure anything: skipped
    assert gc.plan(dry=False, seconds={"maniskill-PickCube-v1": 10})[-1].seconds == 10


def test_steady_drops_the_first_value():
    assert gc.steady([100.0, 5.0, 7.0, 6.0]) == 6.0
    assert gc.steady([100.0, 5.0, 7.0]) == 6.0
    assert gc.steady([3.0]) == 3.0
    assert gc.steady([]) is None


# ---- result files -------------------------------------------------------------------------------


def _campaign_with(parts):
    return {"meta": {"date": "2026-12-07", "machine": "test"}, "state": "running",
            "parts": parts}


def test_results_are_written_as_json_and_markdown(tmp_path):
    campaign = _campaign_with({
        "jax-CheetahRun": {"status": "ok", "seconds": 75, "ran_s": 70.2, "result": {
            "task": "CheetahRun", "num_seeds": 3, "compile_s": 12.5, "steady_sps": 305000.0,
            "peak_gpu_mib": 2400.0, "eval_episodes": 128, "chunk_train_s": 3.3, "eval_s": 0.5,
            "eval_share": 0.13, "points": [
                {"env_steps": 1_048_576, "wall_s": 20.0, "return_mean": 150.0,
                 "return_per_seed": [140.0, 150.0, 160.0], "stochastic_return_mean": 120.0},
            ]}},
        "seeds-1": {"status": "ok", "result": {"num_seeds": 1, "steady_sps": 160000.0}},
        "seeds-4": {"status": "ok", "result": {"num_seeds": 4, "steady_sps": 360000.0}},
        "torch-eager": {"status": "ok", "result": {"steady_sps": 40000.0, "compile_s": 0.0}},
        "maniskill-PushCube-v1": {"status": "skipped", "note": "no usable Vulkan",
                                  "result": None},
        "maniskill-PickCube-v1": {"status": "ok", "result": {"preset": "maniskill", "points": [
            {"env_steps": 262_144, "wall_s": 41.0, "success_once": 0.25}]}},
    })
    gc.write_results(tmp_path, campaign)
    assert json.loads((tmp_path / gc.JSON_NAME).read_text()) == campaign
    md = (tmp_path / gc.MD_NAME).read_text()
    assert "| jax-CheetahRun | ok | 3 | 1,048,576 | 20.0 | 12.5 | 305,000.0 |" in md
    assert "140.0 / 150.0 / 160.0" in md
    # Torch and batched seeds against one JAX seed, measured in the same campaign.
    assert "| torch-eager | ok | 40,000.0 | 0 | - | 0.25 |" in md
    assert "| jax-CheetahRun | 128 | 3.3 | 0.5 | 0.13 |" in md  # small figures: 3 digits
    assert "| 4 | ok | 360,000.0 | 2.25 |" in md
    # The published figure at 1,048,576 steps is the project's own run; at 50M not reached.
    assert "| CheetahRun | 1,048,576 | 127.1 | 150.0 |" in md
    assert "| CheetahRun | 50,000,000 | 933.0 | not reached |" in md
    assert "| WalkerRun | - | - | - | none in the docs |" not in md  # WalkerRun did not run
    assert "skipped (no usable Vulkan)" in md
    # One section per ManiSkill task: success against wall time.
    assert "## ManiSkill PushCube-v1 (maniskill preset)" in md
    assert "## ManiSkill PickCube-v1 (maniskill preset)" in md
    assert "| 262,144 | 41.0 | 0.25 |" in md
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, nothing left behind


def test_a_part_that_did_not_finish_still_shows_what_it_measured(tmp_path):
    campaign = _campaign_with({
        "jax-WalkerRun": {"status": "timeout", "result": {
            "task": "WalkerRun", "num_seeds": 3, "points": [
                {"env_steps": 1_048_576, "wall_s": 30.0, "return_mean": 80.0}]}},
        "jax-HopperHop": {"status": "failed (exit status 1)", "result": None},
        "seeds-8": {"status": "pending"},
    })
    gc.write_results(tmp_path, campaign)
    md = (tmp_path / gc.MD_NAME).read_text()
    assert "| jax-WalkerRun | timeout | 3 | 1,048,576 | 30.0 |" in md
    assert "| jax-HopperHop | failed (exit status 1) |" in md
    assert "| WalkerRun | - | - | - | none in the docs |" in md
    assert "| seeds-8 | pending |" in md


# ---- running parts ------------------------------------------------------------------------------


def _writer(path: Path, then: str) -> list[str]:
    """A stand-in worker: writes a partial result, then does `then`."""
    code = ("import json, sys, time\n"
            f"open({str(path)!r}, 'w').write(json.dumps({{'points': [1]}}))\n" + then)
    return [sys.executable, "-c", code]


def test_a_part_past_its_time_box_is_stopped_and_keeps_its_partial_result(tmp_path):
    result = tmp_path / "part.json"
    start = time.perf_counter()
    part = gc.run_part(_writer(result, "time.sleep(60)"), result, 2.0, grace=1.0,
                       log=tmp_path / "part.log")
    assert time.perf_counter() - start < 20
    assert part["status"] == "timeout"
    assert part["result"] == {"points": [1]}


def test_a_part_that_ignores_ctrl_c_is_killed(tmp_path):
    result = tmp_path / "part.json"
    stubborn = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "time.sleep(60)")
    start = time.perf_counter()
    part = gc.run_part(_writer(result, stubborn), result, 1.0, grace=1.0)
    assert time.perf_counter() - start < 20
    assert part["status"] == "timeout" and part["result"] == {"points": [1]}


def test_a_failing_part_reports_its_status_and_last_lines(tmp_path):
    result = tmp_path / "part.json"
    part = gc.run_part(_writer(result, "raise SystemExit('the worker broke')"), result, 30,
                       log=tmp_path / "part.log")
    assert part["status"] == "failed (exit status 1)"
    assert part["result"] == {"points": [1]}
    assert part["log_tail"][-1] == "the worker broke"


def test_the_recorder_rewrites_its_file_whole(tmp_path):
    rec = gc.Recorder(tmp_path / "r.json", a=1)
    rec.update(points=[{"env_steps": 8}])
    assert gc.read_json(tmp_path / "r.json") == {"a": 1, "points": [{"env_steps": 8}]}
    assert gc.read_json(tmp_path / "absent.json") is None


# ---- offline installation -----------------------------------------------------------------------


def test_wheel_names_and_what_is_left_out():
    assert gc.wheel_distribution("mujoco_mjx-3.3.0-py3-none-any.whl") == "mujoco-mjx"
    assert gc.wheel_distribution("ml_collections-1.0.0.tar.gz") == "ml-collections"
    for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax_cuda12_pjrt", "torch", "triton",
                 "nvidia-cublas-cu12"):
        assert gc.is_large(name), name
    for name in ("jaxopt", "jaxtyping", "torchvision-like", "mujoco", "optax", "numpy"):
        assert not gc.is_large(name), name


def test_only_distributions_not_installed_are_installed():
    files = ["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl",
             "mani_skill-3.0.1-py3-none-any.whl", "sapien-3.0.3-cp311-cp311-linux.whl"]
    installed = {"numpy"}
    assert gc.missing_files(files, lambda d: d in installed) == files[1:]


def test_what_the_gpu_machine_has_is_read_from_its_list(tmp_path):
    have = tmp_path / "installed.txt"
    have.write_text("# pip freeze\nNumPy==2.4.6\nmujoco_mjx==3.3.0\n\nsapien @ file:///x\n")
    assert gc.read_have(have) == {"numpy", "mujoco-mjx", "sapien"}
    assert gc.read_have(None) == set()
    listed = gc.read_have_text(gc.installed_list())
    assert "pytest" in listed and "reppo" in listed


def test_the_requirements_come_from_pyproject():
    reqs = gc.requirements()
    assert any(r.startswith("playground") for r in reqs)
    assert any(r.startswith("mani-skill") for r in reqs)
    assert not any(r.startswith("reppo") for r in reqs)


# ---- the dry run --------------------------------------------------------------------------------


# Run before taking the campaign to a GPU (docs/backends.md); CI's tier checks its parts'
# plans, time boxes and result files with the unit tests above.
@pytest.mark.e2e
@pytest.mark.extended
@pytest.mark.timeout(1200)
def test_the_dry_run_runs_every_part_and_writes_the_figures(tmp_path):
    out = tmp_path / "campaign"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    campaign = json.loads((out / gc.JSON_NAME).read_text())
    assert campaign["state"] == "finished"
    parts = campaign["parts"]
    assert set(parts) == {p.name for p in gc.plan(dry=True)}
    for name, part in parts.items():
        if name in ("torch-compile", "torch-cuda-graphs"):
            assert part["status"] == "skipped"
        elif name.startswith("maniskill-") and part["status"] == "skipped":
            assert part["note"]  # ManiSkill or Vulkan missing here: said so
        else:
            assert part["status"] == "ok", (name, part)
    task = parts["jax-CheetahRun"]["result"]
    assert task["points"] and "return_mean" in task["points"][-1]
    assert task["steady_sps"] > 0 and task["eval_s"] > 0
    assert parts["seeds-1"]["result"]["steady_sps"] > 0
    assert parts["torch-eager"]["result"]["steady_sps"] > 0
    assert (out / gc.MD_NAME).read_text().startswith("# GPU campaign")
