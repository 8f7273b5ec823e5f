"""`reppo sweep`, its suites and the ablation presets.

Most tests replace the child launch (`sweep_execute.launch`) with a fake that writes a run
directory the way `reppo train` or a Brax baseline would (finished, interrupted with or without
a checkpoint, or failed), so the resumption rules run in milliseconds. `launch` itself is tested
with small Python children, and one slow test runs the real `reppo train` end to end (2 tasks x
2 seeds of a tiny config) and then reruns the sweep to check that nothing is launched again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

import pytest

from reppo.cli import main
from reppo.config import Config
from reppo.envs.maniskill import MANISKILL_TASKS
from reppo.envs.registry import DMC_TASKS
from reppo.errors import UserError
from reppo.experiments import suites
from reppo.experiments.sweep import execute as sweep_execute
from reppo.experiments.sweep import plan as sweep_plan
from reppo.experiments.sweep import settings as sweep_settings
from reppo.presets import ABLATION_BASES, ABLATIONS, PRESETS, get_preset
from reppo.runs import read_metrics
from tests.conftest import TINY

# ---- ablation presets --------------------------------------------------------------------------


def _differing(a: Config, b: Config) -> dict[str, tuple]:
    return {
        f.name: (getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(Config)
        if getattr(a, f.name) != getattr(b, f.name)
    }


@pytest.mark.parametrize("base", ABLATION_BASES)
def test_each_ablation_preset_changes_exactly_its_fields(base):
    intended = {
        "no-hl-gauss": {"use_hl_gauss": (True, False)},
        "no-norm": {"norm": ("rms", "none")},
        "no-aux": {"aux_loss_mult": (1.0, 0.0)},
        "no-kl": {"actor_objective": ("clipped", "value")},
    }
    assert set(ABLATIONS) == set(intended)
    for ablation, changes in intended.items():
        preset = get_preset(f"{base}-{ablation}")
        assert _differing(PRESETS[base], preset) == changes, ablation
        # Built without validation for import speed: it must still be a valid config.
        assert Config.from_dict(preset.to_dict()) == preset


def test_ablation_presets_keep_the_two_paper_batch_sizes():
    for ablation in ABLATIONS:
        assert get_preset(f"paper-{ablation}").steps_per_iteration == 1024 * 128 == 131_072
        assert get_preset(f"small-{ablation}").steps_per_iteration == 1024 * 32 == 32_768
    # The presets that existed before the ablations are untouched.
    assert PRESETS["paper"] == Config()
    assert list(PRESETS)[:4] == ["paper", "medium", "small", "cpu"]


# ---- suites ------------------------------------------------------------------------------------

PAPER_DMC23 = {
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidRun", "HumanoidStand", "HumanoidWalk", "PendulumSwingup", "ReacherEasy",
    "ReacherHard", "WalkerRun", "WalkerStand", "WalkerWalk",
}


def test_suites_hold_the_papers_tasks():
    dmc = suites.SUITES["dmc23"]
    assert len(dmc.tasks) == 23 and set(dmc.tasks) == PAPER_DMC23 <= set(DMC_TASKS)
    assert (dmc.backend, dmc.preset, dmc.steps) == ("jax", "paper", 50_000_000)
    ms = suites.SUITES["maniskill"]
    assert ms.backend == "torch" and len(ms.tasks) == 9 and set(ms.tasks) <= set(MANISKILL_TASKS)
    assert {"PegInsertionSide-v1", "UnitreeG1TransportBox-v1", "OpenCabinetDrawer-v1"} <= set(
        ms.tasks
    )
    assert "PickCube-v1" not in ms.tasks
    assert (ms.baseline_preset, ms.baselines) == ("maniskill", ("maniskill-ppo",))
    assert ms.preset == "maniskill"
    ms_cpu = suites.SUITES["maniskill-cpu"]
    assert ms_cpu.tasks == ("PushCube-v1", "PickCube-v1", "PullCube-v1")
    assert (ms_cpu.backend, ms_cpu.preset, ms_cpu.steps) == ("torch", "maniskill-cpu", 507_904)
    assert (ms_cpu.baseline_preset, ms_cpu.baselines) == ("cpu", ("maniskill-ppo",))
    smoke = suites.SUITES["cpu-smoke"]
    assert smoke.tasks == ("CartpoleBalance", "PendulumSwingup", "ReacherEasy")
    assert (smoke.preset, smoke.steps, smoke.baseline_preset) == ("cpu", 1_000_000, "cpu")
    for suite in suites.SUITES.values():
        assert len(set(suite.tasks)) == len(suite.tasks)
        for variant in suite.methods("reppo"):
            get_preset(variant.preset)


def test_the_tuning_and_evaluation_suites_are_apart():
    smoke, cpu_eval = suites.SUITES["cpu-smoke"], suites.SUITES["cpu-eval"]
    assert (smoke.role, smoke.first_seed) == ("tuning", 0)
    assert cpu_eval.tasks == ("CartpoleSwingup", "AcrobotSwingup", "PointMass",
                              "FingerTurnEasy", "HopperStand", "WalkerStand")
    assert set(cpu_eval.tasks) <= set(DMC_TASKS) and not set(cpu_eval.tasks) & set(smoke.tasks)
    assert (cpu_eval.role, cpu_eval.first_seed, cpu_eval.steps) == ("evaluation", 100, 507_904)
    assert (cpu_eval.preset, cpu_eval.baseline_preset) == ("cpu", "cpu")
    assert "evaluation suite" in cpu_eval.description and "tuning suite" in smoke.description
    # No other suite is an evaluation suite, and no ablation suite tunes.
    assert [s.name for s in suites.SUITES.values() if s.is_evaluation] == ["cpu-eval"]


def test_an_evaluation_suite_trains_fresh_seeds_only(tmp_path, capsys):
    settings = sweep_settings.resolve(_args(tmp_path, "cpu-eval", seeds=5))
    runs = sweep_plan.plan(settings)
    assert [r.task for r in runs] == list(suites.CPU_EVAL_TASKS)
    assert {r.seeds for r in runs} == {(100, 101, 102, 103, 104)}
    flags = _flags(sweep_plan.start_command(runs[0], settings))
    assert (flags["--seed"], flags["--num-seeds"], flags["--total-steps"]) == (
        "100", "5", "507904")
    ppo = sweep_settings.resolve(_args(tmp_path, "cpu-eval", seeds=2, algo="brax-ppo"))
    assert [r.run_dir.name for r in sweep_plan.plan(ppo)][:2] == ["seed100", "seed101"]
    assert _flags(sweep_plan.start_command(sweep_plan.plan(ppo)[1], ppo))["--seed"] == "101"
    later = sweep_settings.resolve(_args(tmp_path, "cpu-eval", seeds=5, first_seed=105))
    assert sweep_plan.plan(later)[0].seeds == (105, 106, 107, 108, 109)
    assert "--first-seed 105" in later.command() and "--first-seed" not in settings.command()
    # Other suites start at 0 and take any first seed.
    assert sweep_plan.plan(sweep_settings.resolve(_args(tmp_path, seeds=2)))[0].seeds == (0, 1)
    shifted = sweep_settings.resolve(_args(tmp_path, seeds=2, first_seed=5))
    assert sweep_plan.plan(shifted)[0].seeds == (5, 6)

    code = main(["sweep", "--suite", "cpu-eval", "--seeds", "5", "--first-seed", "0",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "evaluation suite, whose seeds start at 100" in err and "100 or more" in err
    assert not (tmp_path / "s").exists()


def test_the_first_seed_is_part_of_a_sweeps_settings(tmp_path, capsys, fake):
    out = tmp_path / "s"
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance", "--first-seed", "10")[0] == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["first_seed"] == 10
    config = json.loads((out / "reppo" / "CartpoleBalance" / "config.json").read_text())
    assert config["seed"] == 10
    code, _, err = _sweep(capsys, out, "--tasks", "CartpoleBalance")
    assert code == 2 and "first_seed 10 there, 0 now" in err


def test_a_preset_file_is_passed_to_every_run_and_must_not_change(tmp_path, capsys, fake,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("best.json").write_text(json.dumps({"base": "cpu", "actor_lr": 0.002}))
    out = tmp_path / "s"
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance", "--preset", "best.json")[0] == 0
    # Absolute, so that children and reruns from elsewhere read the same file.
    assert _flags(fake.commands[0])["--preset"] == str(tmp_path / "best.json")
    record = json.loads((out / "sweep.json").read_text())["algos"]["reppo"]
    assert record["preset_config"]["actor_lr"] == 0.002
    Path("best.json").write_text(json.dumps({"base": "cpu", "actor_lr": 0.003}))
    code, _, err = _sweep(capsys, out, "--tasks", "CartpoleBalance", "--preset", "best.json")
    assert code == 2 and "the preset file" in err and "has changed since: actor_lr" in err
    code, _, err = _sweep(capsys, out, "--preset", "missing.json")
    assert code == 2 and "missing.json does not exist" in err


def test_ablation_suites_compare_the_full_algorithm_with_each_ablation():
    labels = [v.label for v in suites.SUITES["ablations"].variants]
    assert labels == [
        "paper", "paper-no-hl-gauss", "paper-no-norm", "paper-no-aux", "paper-no-kl",
        "small", "small-no-hl-gauss", "small-no-norm", "small-no-aux", "small-no-kl",
    ]
    cpu = suites.SUITES["cpu-ablations"]
    assert [(v.preset, v.variant, v.ablation) for v in cpu.variants] == [
        ("cpu", "full", None), ("cpu-no-hl-gauss", "no-hl-gauss", "no-hl-gauss"),
        ("cpu-no-norm", "no-norm", "no-norm"), ("cpu-no-aux", "no-aux", "no-aux"),
        ("cpu-no-kl", "no-kl", "no-kl"),
    ]
    assert cpu.tasks == suites.SUITES["cpu-smoke"].tasks and cpu.baseline_preset is None


# ---- planning ----------------------------------------------------------------------------------


def _args(out: Path, suite: str = "cpu-smoke", seeds: int = 2, **kw):
    import argparse

    values = dict(suite=suite, seeds=seeds, out=out, algo="reppo", steps=None, tasks=None,
                  variants=None, preset=None, overrides=[], dry_run=False, first_seed=None)
    values.update(kw)
    return argparse.Namespace(**values)


def _flags(command: list[str]) -> dict[str, str]:
    """`--name value` pairs of a child command."""
    i = next(i for i, c in enumerate(command) if c.startswith("--"))
    rest = command[i:]
    return dict(zip(rest[::2], rest[1::2], strict=True))


def test_plan_of_each_suite(tmp_path):
    dmc = sweep_settings.resolve(_args(tmp_path, "dmc23", seeds=3))
    runs = sweep_plan.plan(dmc)
    assert len(runs) == 23
    assert [r.run_dir for r in runs] == [tmp_path / "reppo" / t for t in suites.DMC23]
    assert {r.seeds for r in runs} == {(0, 1, 2)}
    cheetah = _flags(sweep_plan.start_command(runs[7], dmc))
    assert cheetah == {
        "--preset": "paper", "--backend": "jax", "--env": "CheetahRun", "--seed": "0",
        "--num-seeds": "3", "--total-steps": "50000000",
        "--run-dir": str(tmp_path / "reppo" / "CheetahRun"),
        # Evaluated as often as the baselines: 10 times per run.
        "--eval-interval-steps": "5000000",
    }
    command = sweep_plan.start_command(runs[0], dmc)
    assert command[:4] == [sys.executable, "-m", "reppo.cli", "train"]

    # torch refuses several seeds in one process: one process per seed.
    ms = sweep_settings.resolve(_args(tmp_path, "maniskill", seeds=2))
    runs = sweep_plan.plan(ms)
    assert len(runs) == 18
    assert runs[1].run_dir == tmp_path / "reppo" / suites.MANISKILL9[0] / "seed1"
    flags = _flags(sweep_plan.start_command(runs[1], ms))
    assert (flags["--backend"], flags["--seed"], flags["--num-seeds"]) == ("torch", "1", "1")

    abl = sweep_settings.resolve(
        _args(tmp_path, "ablations", seeds=2, tasks="WalkerRun,CheetahRun"))
    runs = sweep_plan.plan(abl)
    assert len(runs) == 2 * 10
    assert runs[3].run_dir == tmp_path / "paper-no-hl-gauss" / "WalkerRun"  # suite order
    assert _flags(sweep_plan.start_command(runs[3], abl))["--preset"] == "paper-no-hl-gauss"
    assert runs[19].experiment(abl.suite) == {
        "suite": "ablations", "method": "small-no-kl", "task": "WalkerRun", "algo": "reppo",
        "variant": "no-kl", "preset": "small-no-kl", "seeds": [0, 1],
    }
    assert runs[10].experiment(abl.suite)["variant"] == "full"  # small on WalkerRun
    picked = sweep_settings.resolve(_args(tmp_path, "cpu-ablations", variants="cpu-no-kl,cpu"))
    assert [m.label for m in picked.methods] == ["cpu", "cpu-no-kl"]

    ppo = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", algo="brax-ppo", steps=1000,
                              overrides=["eval_episodes=4"]))
    runs = sweep_plan.plan(ppo)
    assert len(runs) == 6 and runs[5].run_dir == tmp_path / "brax-ppo" / "ReacherEasy" / "seed1"
    command = sweep_plan.start_command(runs[5], ppo)
    assert command[:4] == [sys.executable, "-m", "reppo.cli", "baseline"]
    assert _flags(command) == {
        "--algo": "brax-ppo", "--env": "ReacherEasy", "--seed": "1", "--steps": "1000",
        "--run-dir": str(runs[5].run_dir), "--preset": "cpu", "--eval-episodes": "4",
    }


def test_baseline_commands_fit_the_baseline_module(tmp_path):
    import argparse

    from reppo.commands import baseline as baseline_command
    from reppo.experiments.baselines import hyperparameters

    assert suites.BASELINE_ALGOS == hyperparameters.BASELINES
    assert suites.BASELINE_PRESETS == hyperparameters.PRESETS
    settings = sweep_settings.resolve(_args(tmp_path, "dmc23", algo="brax-sac", steps=5000,
                                   overrides=["eval_interval_steps=1000", "eval_episodes=2"]))
    command = sweep_plan.start_command(sweep_plan.plan(settings)[3], settings)
    parser = argparse.ArgumentParser()
    baseline_command.configure_parser(parser)
    args = parser.parse_args(command[4:])
    assert (args.algo, args.env, args.seed, args.steps, args.preset) == (
        "brax-sac", "AcrobotSwingupSparse", "1", "5000", "playground")
    assert (args.eval_interval_steps, args.eval_episodes) == ("1000", "2")
    assert args.run_dir == tmp_path / "brax-sac" / "AcrobotSwingupSparse" / "seed1"


def test_a_baseline_under_another_preset_is_its_own_method(tmp_path):
    """Brax PPO with the paper's tuned preset sits beside Brax PPO with the suite's preset in
    one OUT: its own directory, method name and recorded settings."""
    tuned = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", algo="brax-ppo",
                                         preset="paper-tuned", steps=500_000))
    assert [m.label for m in tuned.methods] == ["brax-ppo-paper-tuned"]
    runs = sweep_plan.plan(tuned)
    assert runs[0].run_dir == tmp_path / "brax-ppo-paper-tuned" / "CartpoleBalance" / "seed0"
    assert _flags(sweep_plan.start_command(runs[0], tuned))["--preset"] == "paper-tuned"
    assert tuned.method_key == "brax-ppo-paper-tuned"
    plain = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", algo="brax-ppo", steps=500_000))
    assert [m.label for m in plain.methods] == ["brax-ppo"] and plain.method_key == "brax-ppo"

    with pytest.raises(UserError, match="brax-sac has the presets playground, cpu"):
        sweep_settings.resolve(_args(tmp_path, "cpu-smoke", algo="brax-sac", preset="paper-tuned"))


def test_reppo_is_evaluated_as_often_as_the_baselines(tmp_path):
    settings = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", steps=500_000))
    flags = _flags(sweep_plan.start_command(sweep_plan.plan(settings)[0], settings))
    assert flags["--eval-interval-steps"] == "50000"  # the baselines' default: a tenth
    assert sweep_plan.start_command(sweep_plan.plan(settings)[0], settings).count(
        "--eval-interval-steps") == 1
    # A short run is not evaluated more often than every 50,000 env steps (a tenth of 65,536
    # would step the envs more evaluating than training), and one shorter than that only at
    # its end.
    for steps, interval in ((65_536, "50000"), (2_000_000, "200000"), (20_000, "20000")):
        short = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", steps=steps))
        command = sweep_plan.start_command(sweep_plan.plan(short)[0], short)
        assert _flags(command)["--eval-interval-steps"] == interval, steps
    # An explicit --set wins, and is passed once.
    settings = sweep_settings.resolve(_args(tmp_path, "cpu-smoke", steps=500_000,
                                   overrides=["eval_interval_steps=1e5"]))
    command = sweep_plan.start_command(sweep_plan.plan(settings)[0], settings)
    assert command.count("--eval-interval-steps") == 1
    assert _flags(command)["--eval-interval-steps"] == "100000"


def test_dry_run_prints_the_commands_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--suite", "cpu-smoke", "--seeds", "2", "--out", str(out),
                 "--steps", "1e6", "--set", "actor_lr=5e-4", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    lines = [line for line in text.splitlines() if ": start: " in line]
    assert len(lines) == 3
    assert "--env PendulumSwingup --seed 0 --num-seeds 2 --total-steps 1000000" in lines[1]
    assert lines[1].endswith("--actor-lr 0.0005")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--suite", "dmc", "--seeds", "1"], ["unknown suite 'dmc'", "dmc23"]),
        (["--suite", "cpu-smoke", "--seeds", "0"], ["--seeds must be >= 1"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--tasks", "Cartpole"],
         ["unknown task 'Cartpole'", "CartpoleBalance"]),
        (["--suite", "maniskill", "--seeds", "1", "--algo", "brax-sac"],
         ["does not train the maniskill suite", "maniskill-ppo"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--algo", "maniskill-ppo"],
         ["does not train the cpu-smoke suite", "brax-ppo"]),
        (["--suite", "ablations", "--seeds", "1", "--algo", "brax-ppo"], ["has no baselines"]),
        (["--suite", "maniskill", "--seeds", "1", "--algo", "maniskill-ppo", "--preset",
          "playground"], ["maniskill-ppo has the presets maniskill, cpu"]),
        (["--suite", "ablations", "--seeds", "1", "--preset", "small"], ["--variants"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--preset", "papr"], ["unknown preset"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--set", "seed=3"], ["use --seeds"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--set", "actor_lr"], ["FIELD=VALUE"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--set", "num_minibatches=7"],
         ["not divisible"]),
        (["--suite", "cpu-smoke", "--seeds", "1", "--algo", "brax-ppo", "--set", "actor_lr=1"],
         ["REPPO runs only"]),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, needles):
    code = main(["sweep", *argv, "--out", str(tmp_path / "s"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("reppo: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "s").exists()


# ---- a fake child ------------------------------------------------------------------------------


class FakeLaunch:
    """Stands in for `sweep_execute.launch`: writes what the child would, as `behaviour` says for
    "task/seedN" or else for "task".

    ok: a finished run; fail: config and one record, no checkpoint, exit 1; interrupt: half the
    steps with a checkpoint, exit 130 (what `reppo train` does on Ctrl-C); unfinished: exit 0
    without reaching total_steps; ctrl-c: the user presses Ctrl-C in the sweep.
    """

    def __init__(self, behaviour: dict[str, str] | None = None):
        self.behaviour = behaviour or {}
        self.commands: list[list[str]] = []
        self.cores: list[list[int] | None] = []
        # The first `barrier.parties` runs must be in flight together.
        self.barrier: threading.Barrier | None = None
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, command, *, prefix, log_path, echo, on_line=None, cores=None,
                 children=None):
        with self._lock:
            self.commands.append(command)
            self.cores.append(cores)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            first = len(self.commands) <= (self.barrier.parties if self.barrier else 0)
        try:
            if first:
                self.barrier.wait()  # BrokenBarrierError unless the others come too
            return self._child(command, log_path, on_line)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _child(self, command, log_path, on_line):
        assert log_path.parent.is_dir()
        if "--resume" in command:
            run_dir = Path(command[command.index("--resume") + 1])
            config = json.loads((run_dir / "config.json").read_text())
            self._records(run_dir, config, [config["total_steps"]])
            return 0
        flags = _flags(command)
        run_dir, task = Path(flags["--run-dir"]), flags["--env"]
        what = self.behaviour.get(f"{task}/seed{flags['--seed']}",
                                  self.behaviour.get(task, "ok"))
        if what == "ctrl-c":
            raise KeyboardInterrupt
        steps = int(flags.get("--total-steps", flags.get("--steps")))
        config = {"env": task, "seed": int(flags["--seed"]), "total_steps": steps}
        if "--algo" in flags:
            config.update(algo=flags["--algo"], num_seeds=1)
        else:
            config.update(num_seeds=int(flags["--num-seeds"]), backend=flags["--backend"])
        assert not run_dir.exists() or not any(run_dir.iterdir()), "launched into a used dir"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config))
        if on_line is not None:
            on_line()
        if what == "ok":
            self._records(run_dir, config, [steps // 2, steps])
            return 0
        if what == "unfinished":
            self._records(run_dir, config, [steps // 2])
            return 0
        if what == "interrupt":
            self._records(run_dir, config, [steps // 2])
            (run_dir / "checkpoints").mkdir()
            (run_dir / "checkpoints" / f"ckpt_{steps // 2:012d}.safetensors").write_bytes(b"x")
            return 130
        assert what == "fail"
        self._records(run_dir, config, [])
        return 1

    @staticmethod
    def _records(run_dir: Path, config: dict, eval_steps: list[int]) -> None:
        with open(run_dir / "metrics.jsonl", "a") as f:
            for steps in eval_steps:
                f.write(json.dumps({"env_steps": steps, "wall_time": steps / 100.0,
                                    "eval/return_mean": 100.0 + config["seed"] + steps / 1000,
                                    "eval/return_per_seed": [0.0]}) + "\n")

    def tasks(self) -> list[str]:
        return [_flags(c).get("--env", "resume") for c in self.commands]


@pytest.fixture
def fake(monkeypatch) -> FakeLaunch:
    launcher = FakeLaunch()
    monkeypatch.setattr(sweep_execute, "launch", launcher)
    return launcher


def _sweep(capsys, out: Path, *extra: str, suite: str = "cpu-smoke", seeds: str = "2",
           steps: str = "1000") -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["sweep", "--suite", suite, "--seeds", seeds, "--steps", steps,
                 "--out", str(out), *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _table(stdout: str) -> dict[str, list[str]]:
    """The final table: run name -> [status, final return, wall time]."""
    lines = stdout[stdout.index("\nrun "):].strip().splitlines()[2:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines if "  " in line]
    return {row[0]: row[1:] for row in rows}


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


def test_sweep_writes_the_layout_and_a_rerun_launches_nothing(tmp_path, capsys, fake):
    out = tmp_path / "sweep"
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0
    assert fake.tasks() == ["CartpoleBalance", "PendulumSwingup", "ReacherEasy"]
    for task in suites.CPU_TASKS:
        experiment = json.loads((out / "reppo" / task / "experiment.json").read_text())
        assert experiment == {"suite": "cpu-smoke", "method": "reppo", "task": task,
                              "algo": "reppo", "variant": None, "preset": "cpu",
                              "seeds": [0, 1]}
    record = json.loads((out / "sweep.json").read_text())
    assert (record["suite"], record["seeds"], record["steps"]) == ("cpu-smoke", 2, 1000)
    assert record["algos"] == {"reppo": {"preset": "cpu", "overrides": {}}}
    assert record["command"].startswith("reppo sweep --suite cpu-smoke --seeds 2")
    assert "date" in record and len(record["invocations"]) == 1
    # The final table: run, status, final return (the fake's 100 + seed + steps / 1000).
    assert _table(stdout)["reppo/ReacherEasy"] == ["done", "101.0", "10s"]
    assert "3 of 3 runs finished" in stdout

    before = _snapshot(out / "reppo")
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0 and len(fake.commands) == 3  # nothing launched again
    assert stdout.count("finished before, skipped") == 3
    assert _snapshot(out / "reppo") == before
    assert len(json.loads((out / "sweep.json").read_text())["invocations"]) == 2


def test_a_failed_run_does_not_stop_the_others(tmp_path, capsys, fake):
    fake.behaviour = {"PendulumSwingup": "fail", "ReacherEasy": "unfinished"}
    code, stdout, _ = _sweep(capsys, tmp_path / "s", "--algo", "brax-sac", seeds="1")
    assert code == 1
    assert fake.tasks() == ["CartpoleBalance", "PendulumSwingup", "ReacherEasy"]
    table = _table(stdout)
    assert table["brax-sac/PendulumSwingup/seed0"] == ["failed (exit 1)", "-", "-"]
    assert table["brax-sac/ReacherEasy/seed0"] == ["failed (ended unfinished)", "100.5", "5s"]
    assert table["brax-sac/CartpoleBalance/seed0"][0] == "done"
    assert "1 of 3 runs finished; 2 did not" in stdout
    # The experiment record is written even for a failed run (the report can then list it).
    exp = json.loads((tmp_path / "s/brax-sac/PendulumSwingup/seed0/experiment.json").read_text())
    assert (exp["method"], exp["algo"], exp["seeds"]) == ("brax-sac", "brax-sac", [0])


def test_rerun_resumes_reppo_and_restarts_what_cannot_resume(tmp_path, capsys, fake):
    out = tmp_path / "s"
    fake.behaviour = {"CartpoleBalance": "interrupt", "PendulumSwingup": "fail"}
    code, _, _ = _sweep(capsys, out)
    assert code == 1
    first = list(fake.commands)

    fake.behaviour = {}
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0, stdout
    again = fake.commands[len(first):]
    # The interrupted run continues from its checkpoint; the one without a checkpoint is moved
    # aside (kept, never deleted) and started again; the finished one is skipped.
    assert again[0][-3:] == ["train", "--resume", str(out / "reppo" / "CartpoleBalance")]
    assert _flags(again[1])["--env"] == "PendulumSwingup" and len(again) == 2
    partial = sorted((out / "reppo").glob("PendulumSwingup.partial-*"))
    assert len(partial) == 1 and (partial[0] / "config.json").is_file()
    assert "stopped before its first checkpoint: moved to PendulumSwingup.partial-" in stdout
    assert _table(stdout)["reppo/CartpoleBalance"][0] == "resumed"
    assert _table(stdout)["reppo/ReacherEasy"][0] == "skipped (finished)"
    records = read_metrics(out / "reppo" / "CartpoleBalance")
    assert [r["env_steps"] for r in records] == [500, 1000]


def test_interrupted_baseline_runs_are_moved_aside_and_restarted(tmp_path, capsys, fake):
    out = tmp_path / "s"
    fake.behaviour = {"CartpoleBalance/seed0": "interrupt"}
    code, _, _ = _sweep(capsys, out, "--algo", "brax-ppo", "--tasks", "CartpoleBalance")
    assert code == 1
    fake.behaviour = {}
    code, stdout, _ = _sweep(capsys, out, "--algo", "brax-ppo", "--tasks", "CartpoleBalance")
    assert code == 0
    relaunched = fake.commands[2:]
    assert [_flags(c)["--seed"] for c in relaunched] == ["0"]  # seed 1 finished the first time
    assert "--resume" not in relaunched[0]
    assert "a baseline run cannot continue from its files" in stdout
    assert len(list((out / "brax-ppo" / "CartpoleBalance").glob("seed0.partial-*"))) == 1


def test_reppo_and_baselines_share_an_out_dir(tmp_path, capsys, fake):
    out = tmp_path / "s"
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance")[0] == 0
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance", "--algo", "brax-ppo")[0] == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["algos"] == {"reppo": {"preset": "cpu", "overrides": {}},
                               "brax-ppo": {"preset": "cpu", "overrides": {}}}
    assert (out / "brax-ppo" / "CartpoleBalance" / "seed1" / "config.json").is_file()
    # Adding a task later is a rerun with the same settings.
    assert _sweep(capsys, out, "--tasks", "ReacherEasy")[0] == 0
    assert fake.tasks()[-1] == "ReacherEasy" and len(fake.commands) == 1 + 2 + 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"steps": "2000"}, "steps 1000 there, 2000 now"),
        ({"seeds": "3"}, "seeds 2 there, 3 now"),
        ({"suite": "cpu-ablations"}, "suite 'cpu-smoke' there, 'cpu-ablations' now"),
        ({"extra": ("--set", "actor_lr=1e-4")}, "--set no actor_lr there, actor_lr=0.0001 now"),
        ({"extra": ("--preset", "small")}, "reppo preset 'cpu' there, 'small' now"),
    ],
)
def test_a_rerun_with_other_settings_is_refused(tmp_path, capsys, fake, change, needle):
    out = tmp_path / "s"
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance")[0] == 0
    before = _snapshot(out)
    extra = change.pop("extra", ())
    code, _, err = _sweep(capsys, out, "--tasks", "CartpoleBalance", *extra, **change)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert "nothing was changed" in err
    assert _snapshot(out) == before and len(fake.commands) == 1


def test_out_dirs_that_are_not_sweeps_are_refused(tmp_path, capsys, fake):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = _sweep(capsys, other)
    assert code == 2 and "is not empty and holds no sweep.json" in err
    assert _snapshot(other) == {"notes.txt": b"mine"} and not fake.commands


def test_a_foreign_run_in_a_planned_dir_is_left_alone(tmp_path, capsys, fake):
    out = tmp_path / "s"
    assert _sweep(capsys, out, "--tasks", "CartpoleBalance")[0] == 0
    config = out / "reppo" / "CartpoleBalance" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "env": "WalkerRun"}))
    before = _snapshot(out / "reppo")
    code, stdout, _ = _sweep(capsys, out, "--tasks", "CartpoleBalance")
    assert code == 1 and "its config differs in env" in stdout
    assert _snapshot(out / "reppo") == before and len(fake.commands) == 1


def test_ctrl_c_stops_the_sweep_and_prints_the_table(tmp_path, capsys, fake):
    fake.behaviour = {"PendulumSwingup": "ctrl-c"}
    code, stdout, _ = _sweep(capsys, tmp_path / "s")
    assert code == 130
    assert fake.tasks() == ["CartpoleBalance", "PendulumSwingup"]
    assert _table(stdout)["reppo/PendulumSwingup"][0] == "interrupted"
    assert _table(stdout)["reppo/ReacherEasy"][0] == "not started"
    assert "run the same command again to resume" in stdout



def _finished_and_unfinished_runs(out: Path, fake: FakeLaunch, capsys) -> None:
    """A sweep whose CartpoleBalance run finished, PendulumSwingup stopped with a checkpoint
    and ReacherEasy stopped before its first one (so a rerun would skip, resume, restart)."""
    fake.behaviour = {"PendulumSwingup": "interrupt", "ReacherEasy": "fail"}
    _sweep(capsys, out)
    fake.behaviour = {}


def test_a_rerun_leaves_alone_the_runs_a_live_process_still_writes(tmp_path, capsys, fake):
    # A sweep killed with SIGKILL leaves its children finishing their runs; its rerun must not
    # skip, resume into, or move aside a directory whose writer lock a live process holds.
    from reppo.runs.lock import RunLock

    out = tmp_path / "s"
    _finished_and_unfinished_runs(out, fake, capsys)
    launched = len(fake.commands)
    runs = [out / "reppo" / task for task in suites.CPU_TASKS]
    before = _snapshot(out / "reppo")
    locks = [RunLock.acquire(run) for run in runs]
    try:
        code, stdout, _ = _sweep(capsys, out)
        held = _snapshot(out / "reppo")
    finally:
        for lock in locks:
            lock.release()
    assert code == 1 and len(fake.commands) == launched, stdout
    assert "finished before" not in stdout and "moved to" not in stdout
    assert stdout.count(f"still running: pid {os.getpid()} on host") == 3, stdout
    table = _table(stdout)
    assert all(table[f"reppo/{task}"][0] == "left alone (running)" for task in suites.CPU_TASKS)
    assert not list((out / "reppo").glob("*.partial-*"))
    assert {k: v for k, v in held.items() if not k.endswith(".writer.lock")} == {
        k: v for k, v in before.items() if not k.endswith(".writer.lock")}
    # Once the writers are gone, the same rerun resumes and restarts as usual.
    code, stdout, _ = _sweep(capsys, out)
    assert code == 0 and len(fake.commands) == launched + 2, stdout


def test_a_dry_run_says_which_runs_are_still_running(tmp_path, capsys, fake):
    from reppo.runs.lock import RunLock

    out = tmp_path / "s"
    _finished_and_unfinished_runs(out, fake, capsys)
    with RunLock.acquire(out / "reppo" / "ReacherEasy"):
        code, stdout, _ = _sweep(capsys, out, "--dry-run")
    assert code == 0
    assert "reppo/ReacherEasy: left alone: still running: pid" in stdout
    assert "partial" not in stdout.split("reppo/ReacherEasy", 1)[1]


# ---- several runs at a time (--jobs) -----------------------------------------------------------


def test_core_sets_split_the_cores_into_disjoint_equal_shares():
    ex = sweep_execute
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    assert ex.core_sets(2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert ex.core_sets(2, [4, 5, 6]) == [[4], [5]]  # the odd core is left to the sweep
    assert ex.core_sets(3, [0, 1]) == [None, None, None]  # fewer cores than runs: no pinning
    assert ex.core_sets(1, [0, 1]) == [None]  # one run at a time keeps every core


def test_jobs_run_side_by_side_on_their_own_cores_in_the_runs_order(tmp_path, capsys, fake):
    fake.barrier = threading.Barrier(2, timeout=30)  # the first two runs must overlap
    code, stdout, _ = _sweep(capsys, tmp_path / "s", "--jobs", "2", seeds="1")
    assert code == 0 and "3 of 3 runs finished" in stdout
    assert sorted(fake.tasks()) == sorted(suites.CPU_TASKS)
    shares = sweep_execute.core_sets(2)
    assert all(cores in shares for cores in fake.cores)
    # The table lists the runs in the plan's order, whatever order they ended in.
    assert list(_table(stdout)) == [f"reppo/{task}" for task in suites.CPU_TASKS]


def test_jobs_one_runs_one_at_a_time_on_every_core(tmp_path, capsys, fake):
    code, _, _ = _sweep(capsys, tmp_path / "s", "--jobs", "1", seeds="1")
    assert code == 0 and fake.tasks() == list(suites.CPU_TASKS)
    assert fake.most_in_flight == 1 and fake.cores == [None, None, None]


def test_ctrl_c_with_jobs_starts_nothing_more(tmp_path, capsys, fake):
    # Both running runs see the Ctrl-C (the barrier holds them in flight together), so the
    # third run's slot frees only after the sweep is stopping: it must never start.
    fake.barrier = threading.Barrier(2, timeout=30)
    fake.behaviour = {"CartpoleBalance": "ctrl-c", "PendulumSwingup": "ctrl-c"}
    code, stdout, _ = _sweep(capsys, tmp_path / "s", "--jobs", "2", seeds="1")
    assert code == 130 and "run the same command again to resume" in stdout
    table = _table(stdout)
    assert table["reppo/CartpoleBalance"][0] == table["reppo/PendulumSwingup"][0] == "interrupted"
    assert table["reppo/ReacherEasy"][0] == "not started"
    assert sorted(fake.tasks()) == ["CartpoleBalance", "PendulumSwingup"]


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_bad_jobs_are_usage_errors(tmp_path, capsys, jobs):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--suite", "cpu-smoke", "--seeds", "1", "--out", str(tmp_path / "s"),
              "--jobs", jobs])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --jobs: expected a count >= 1 or auto" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_launch_pins_the_child_to_its_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    core = sweep_execute.usable_cores()[-1]
    # The child waits a moment so the affinity set after it started is in place when it looks.
    child = ("import os, time; time.sleep(0.5); "
             "print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])")
    lines: list[str] = []
    children = sweep_execute.Children()
    code = sweep_execute.launch([sys.executable, "-c", child], prefix="[x]",
                                log_path=tmp_path / "log", echo=lines.append, cores=[core],
                                children=children)
    assert code == 0 and lines == [f"[x] [{core}] 1"]


# ---- the real launcher -------------------------------------------------------------------------


def test_launch_prefixes_echoes_and_appends_to_the_log(tmp_path):
    log = tmp_path / "run.log"
    lines: list[str] = []
    for word in ("first", "second"):
        code = sweep_execute.launch([sys.executable, "-c", f"print('{word}'); raise SystemExit(3)"],
                            prefix="[T seed 0]", log_path=log, echo=lines.append)
        assert code == 3
    assert lines == ["[T seed 0] first", "[T seed 0] second"]
    text = log.read_text().splitlines()
    assert [line for line in text if not line.startswith("# ")] == ["first", "second"]
    assert sum(line.startswith("# ") and "$ " in line for line in text) == 2


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="POSIX signals")
def test_ctrl_c_in_the_sweep_asks_the_child_to_stop_cleanly(tmp_path):
    # The child stands in for `reppo train`: on SIGINT it "saves a checkpoint" and exits 130.
    # Its handler is in place before it says "ready", and it waits for the signal however
    # long the parent takes: nothing depends on timing.
    child = (
        "import os, signal, sys\n"
        "def stop(signum, frame):\n"
        "    print('saved a checkpoint', flush=True)\n"
        "    os._exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    seen: list[str] = []

    def echo(line: str) -> None:
        seen.append(line)
        if line.endswith("ready"):
            raise KeyboardInterrupt  # Ctrl-C reaches the sweep while it reads the output

    log = tmp_path / "run.log"
    with pytest.raises(KeyboardInterrupt):
        sweep_execute.launch([sys.executable, "-c", child], prefix="[x]", log_path=log, echo=echo)
    assert "[x] saved a checkpoint" in seen
    assert "saved a checkpoint" in log.read_text()
    assert "exit status 130" in log.read_text()



# Stands in for `reppo train` under a sweep: it saves and exits on SIGTERM (noting which signal
# came in a file), and otherwise trains on for far longer than the test waits.
_LONG_RUN = (
    "import os, signal, sys, time\n"
    "from pathlib import Path\n"
    "def stop(signum, frame):\n"
    "    Path(sys.argv[1], 'stopped').write_text(signal.Signals(signum).name)\n"
    "    os._exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('ready', os.getpid(), flush=True)\n"
    "time.sleep(300)\n"
)

# A sweep of one run: the parent that the test kills.
_ONE_RUN_SWEEP = (
    "import sys\n"
    "from pathlib import Path\n"
    "from reppo.experiments.sweep.execute import launch\n"
    "out = Path(sys.argv[1])\n"
    "launch([sys.executable, '-c', sys.argv[2], str(out)], prefix='[x]',\n"
    "       log_path=out / 'run.log', echo=lambda line: print(line, flush=True))\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_a_run_stops_when_its_sweep_is_killed(tmp_path):
    import subprocess
    import time

    sweep_proc = subprocess.Popen(
        [sys.executable, "-c", _ONE_RUN_SWEEP, str(tmp_path), _LONG_RUN],
        stdout=subprocess.PIPE, text=True,
    )
    child = None
    try:
        assert sweep_proc.stdout is not None
        line = sweep_proc.stdout.readline()
        assert line.startswith("[x] ready "), line
        child = int(line.split()[-1])
        sweep_proc.kill()  # SIGKILL: the sweep gets no chance to stop its child itself
        sweep_proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not (tmp_path / "stopped").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # SIGTERM: what `reppo train` saves a checkpoint on before it exits.
        assert (tmp_path / "stopped").read_text() == "SIGTERM"
    finally:
        sweep_proc.kill()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


# ---- end to end --------------------------------------------------------------------------------

TINY_SETS = [
    f"{name}={getattr(TINY, name)}"
    for name in ("num_envs", "num_steps", "num_minibatches", "actor_hidden_dim",
                 "critic_hidden_dim", "num_bins", "kl_num_samples", "eval_episodes")
] + ["num_epochs=1", "log_interval_steps=128", "eval_interval_steps=0",
     "checkpoint_interval_steps=128"]


@pytest.mark.e2e
def test_real_sweep_end_to_end_then_rerun_launches_nothing(tmp_path, capsys, monkeypatch):
    # Two tasks x two seeds in child processes, on the still envs (registered by the children
    # when they import tests.still_envs): the sweep's plumbing, not the physics.
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # where `tests` is importable
    out = tmp_path / "sweep"
    tasks = ("tests.still_envs:StillA", "tests.still_envs:StillB")
    argv = ["sweep", "--suite", "custom", "--seeds", "2", "--steps", "256", "--tasks",
            ",".join(tasks), "--out", str(out)]
    for pair in TINY_SETS:
        argv += ["--set", pair]
    code = main(argv)
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    for task in tasks:
        name = task.replace(":", "__")  # a directory name
        run_dir = out / "reppo" / name
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["env"], config["num_seeds"], config["total_steps"]) == (task, 2, 256)
        assert config["num_envs"] == TINY.num_envs and config["num_epochs"] == 1
        final = read_metrics(run_dir)[-1]
        assert final["env_steps"] == 256 and len(final["eval/return_per_seed"]) == 2
        assert json.loads((run_dir / "experiment.json").read_text())["method"] == "reppo"
        log = (out / "reppo" / f"{name}.log").read_text()
        assert f"run saved in {run_dir}" in log
        assert f"[reppo {task} seeds 0-1] run saved in {run_dir}" in stdout
    assert "2 of 2 runs finished" in stdout

    def no_launch(*args, **kwargs):
        raise AssertionError("a finished run was launched again")

    monkeypatch.setattr(sweep_execute, "launch", no_launch)
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2
