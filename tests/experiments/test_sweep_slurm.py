"""`reppo sweep --launcher slurm`: the job array it would submit (dry run), its refusal where
SLURM cannot be reached, and a whole submit-then-resubmit cycle on submitit's local executor
(each job a local process) with a stand-in for the child command."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from reppo.cli import main
from reppo.experiments.sweep import slurm as sweep_slurm

submitit = pytest.importorskip("submitit")

FAKE_CHILD = '''
import json, sys
from pathlib import Path
run_dir, task, seed, num_seeds, steps, mode = sys.argv[1:7]
run_dir = Path(run_dir)
if mode == "resume":
    config = json.loads((run_dir / "config.json").read_text())
else:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"env": task, "seed": int(seed), "num_seeds": int(num_seeds),
              "total_steps": int(steps), "backend": "jax"}
    (run_dir / "config.json").write_text(json.dumps(config))
reached = config["total_steps"] if mode != "stop" else config["total_steps"] // 2
with open(run_dir / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"env_steps": reached, "wall_time": 1.0, "eval/return_mean": 5.0,
                        "eval/return_per_seed": [5.0]}) + "\\n")
if mode == "stop":
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "ckpt_000000000500.safetensors").write_bytes(b"x")
print("fake child", mode, task)
sys.exit(130 if mode == "stop" else 0)
'''


def _flags(command: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(command, command[1:], strict=False) if a.startswith("--")}


@pytest.fixture
def local_slurm(tmp_path, monkeypatch):
    """submitit's local executor, and child commands replaced by FAKE_CHILD (which stops
    PendulumSwingup half-way with a checkpoint on its first run)."""
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    monkeypatch.setattr(sweep_slurm, "CLUSTER", "local")

    def start(run, settings):
        mode = "stop" if run.task == "PendulumSwingup" else "start"
        return [sys.executable, str(script), str(run.run_dir), run.task, str(run.seeds[0]),
                str(len(run.seeds)), str(settings.steps), mode]

    def resume(run):
        return [sys.executable, str(script), str(run.run_dir), run.task, "0", "0", "0",
                "resume"]

    monkeypatch.setattr(sweep_slurm, "start_command", start)
    monkeypatch.setattr(sweep_slurm, "resume_command", resume)


def _sweep(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["sweep", "--suite", "cpu-smoke", "--seeds", "2", "--steps", "1000", "--out",
                 str(out), "--launcher", "slurm", "--slurm-gpus", "0", *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _wait_for_logs(out: Path, count: int, timeout: float = 120.0) -> None:
    """Until `count` jobs have written their log line (local jobs run in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = list((out / "reppo").glob("*.log"))
        ended = sum(p.read_text().count("fake child") for p in logs)
        if ended >= count:
            time.sleep(1.0)  # the job writes experiment.json after its child
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} jobs ended within {timeout}s")


def test_dry_run_prints_the_job_array_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, _ = _sweep(capsys, out, "--slurm-partition", "gpu", "--slurm-time", "90",
                             "--dry-run")
    assert code == 0 and not out.exists()
    head = next(line for line in stdout.splitlines() if line.startswith("SLURM job array"))
    assert "of 3 job(s)" in head
    settings = json.loads(head[head.index("{"):])
    assert settings["slurm_partition"] == "gpu" and settings["timeout_min"] == 90
    assert settings["gpus_per_node"] == 0 and settings["name"] == "reppo-cpu-smoke"
    jobs = [line for line in stdout.splitlines() if line.startswith("  job ")]
    assert len(jobs) == 3 and all("start: " in line for line in jobs)
    flags = _flags(jobs[0].split("start: ", 1)[1].split())
    assert flags["--env"] == "CartpoleBalance" and flags["--num-seeds"] == "2"


def test_without_srun_submission_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(sweep_slurm.shutil, "which", lambda name: None)
    out = tmp_path / "sweep"
    code, _, stderr = _sweep(capsys, out)
    assert code == 2 and "no srun" in stderr and "--dry-run" in stderr
    assert not out.exists()


def test_bad_slurm_settings_are_one_line_errors(tmp_path, capsys):
    code, _, stderr = _sweep(capsys, tmp_path / "sweep", "--slurm-time", "0", "--dry-run")
    assert code == 2 and "--slurm-time must be at least 1" in stderr
    code, _, stderr = _sweep(capsys, tmp_path / "sweep", "--jobs", "2", "--dry-run")
    assert code == 2 and "use --slurm-parallel N" in stderr
    assert not (tmp_path / "sweep").exists()


def test_submit_then_resubmit_skips_finished_and_resumes_interrupted_runs(tmp_path, capsys,
                                                                          local_slurm):
    out = tmp_path / "sweep"
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0, stdout
    assert stdout.count("submitted as job") == 3
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert set(jobs) == {"reppo/CartpoleBalance", "reppo/PendulumSwingup", "reppo/ReacherEasy"}
    _wait_for_logs(out, 3)
    for task in ("CartpoleBalance", "ReacherEasy"):
        record = json.loads((out / "reppo" / task / "experiment.json").read_text())
        assert record["task"] == task and record["seeds"] == [0, 1]
    assert "$ " in (out / "reppo" / "CartpoleBalance.log").read_text()  # the command line

    # Again: the finished runs are skipped, the interrupted one is resumed from its checkpoint.
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0, stdout
    assert stdout.count("skip (finished)") == 2
    assert "reppo/PendulumSwingup: resume: submitted as job" in stdout
    _wait_for_logs(out, 4)
    code, stdout, _ = _sweep(capsys, out)
    assert stdout.count("skip (finished)") == 3 and "nothing to submit" in stdout
    assert len(json.loads((out / "sweep.json").read_text())["invocations"]) == 3


def test_runs_whose_job_is_queued_or_running_are_left_alone(tmp_path):
    from reppo.cli import build_parser
    from reppo.experiments.sweep.plan import plan
    from reppo.experiments.sweep.settings import resolve

    args = build_parser().parse_args(["sweep", "--suite", "cpu-smoke", "--seeds", "1",
                                       "--out", str(tmp_path / "sweep")])
    settings = resolve(args)
    runs = plan(settings)
    lines: list[str] = []
    jobs = sweep_slurm.plan_jobs(settings, runs, lines.append,
                                 {"reppo/CartpoleBalance": "RUNNING",
                                  "reppo/ReacherEasy": "COMPLETED"})
    assert [j.run.task for j in jobs] == ["PendulumSwingup", "ReacherEasy"]
    assert lines == ["reppo/CartpoleBalance: left alone: its SLURM job is running"]
