"""`reppo tune`: its search space, its settings and refusals, and tiny searches.

The searches replace the child launch (`sweep_execute.launch`) with a fake `reppo train` whose
evaluation returns are a known function of the searched values, of the seed and of the env
steps, so that a whole search (pruning, stop and resume included) runs in seconds and its
scores can be checked by hand. One slow test runs a tiny search with real training.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from pathlib import Path

import pytest

from reppo.cli import main
from reppo.config import Config
from reppo.errors import UserError
from reppo.experiments.sweep import execute as sweep_execute
from reppo.experiments.tune.space import load_space
from reppo.experiments.tune.trial import rung_steps
from reppo.presets import PRESETS, get_preset
from tests.conftest import TINY

optuna = pytest.importorskip("optuna")

SPACE = """
[actor_lr]
low = 1e-4
high = 1e-2
log = true

[action_noise_correlation]
choices = [0.0, 0.5, 0.9]
"""


def _quality(actor_lr: float, rho: float) -> float:
    """The fake's final score of a config: best at actor_lr 1e-3 and rho 0."""
    return max(0.0, 1.0 - abs(math.log10(actor_lr) + 3.0) / 2.0) * (1.0 - 0.5 * rho)


def _fake_return(actor_lr: float, rho: float, seed: int, steps: int, total: int) -> float:
    return 1000.0 * _quality(actor_lr, rho) * (steps / total) - seed


class FakeTrain:
    """Stands in for `sweep_execute.launch` running `reppo train`: evaluates every
    --eval-interval-steps, one output line per evaluation; a pause request (the sweep's
    SIGINT) saves a checkpoint and exits 130, as `reppo train` does; `--resume` continues from
    the latest checkpoint. `interrupt_at`: (launch count, evaluations) at which the user
    presses Ctrl-C."""

    def __init__(self, interrupt_at: tuple[int, int] | None = None):
        self.commands: list[list[str]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, command, *, prefix, log_path, echo, on_line=None, cores=None,
                 children=None):
        self.commands.append(command)
        stop = _FakeProcess()
        if children is not None:
            children.add(stop)
        try:
            return self._train(command, echo, on_line, stop)
        finally:
            if children is not None:
                children.remove(stop)

    def _train(self, command, echo, on_line, stop) -> int:
        flags = _flags(command)
        if "--resume" in flags:
            run_dir = Path(flags["--resume"])
            config = json.loads((run_dir / "config.json").read_text())
            start = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").iterdir())
            records = [json.loads(line) for line in
                       (run_dir / "metrics.jsonl").read_text().splitlines()]
            kept = [r for r in records if r["env_steps"] <= start]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        else:
            run_dir = Path(flags["--run-dir"])
            base = get_preset(flags["--preset"])
            values = {name.removeprefix("--").replace("-", "_"): value
                      for name, value in flags.items()
                      if name not in ("--preset", "--run-dir")}
            config = base.replace(**values).to_dict()
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text(json.dumps(config))
            (run_dir / "checkpoints").mkdir()
            start = 0
        total, interval = config["total_steps"], config["eval_interval_steps"]
        steps, count = start, 0
        while steps < total:
            steps = min(total, (steps // interval + 1) * interval)
            per_seed = [_fake_return(config["actor_lr"], config["action_noise_correlation"],
                                     config["seed"] + i, steps, total)
                        for i in range(config["num_seeds"])]
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"env_steps": steps, "wall_time": steps / 1000,
                                    "eval/return_mean": sum(per_seed) / len(per_seed),
                                    "eval/return_per_seed": per_seed}) + "\n")
            echo(f"{steps} steps")
            count += 1
            if self.interrupt_at == (len(self.commands), count):
                (run_dir / "checkpoints" / f"ckpt_{steps:012d}.safetensors").write_bytes(b"x")
                raise KeyboardInterrupt
            if on_line is not None:
                on_line()
            if stop.signalled:
                (run_dir / "checkpoints" / f"ckpt_{steps:012d}.safetensors").write_bytes(b"x")
                return 130
        (run_dir / "checkpoints" / f"ckpt_{steps:012d}.safetensors").write_bytes(b"x")
        return 0


class _FakeProcess:
    signalled = False

    def send_signal(self, signum) -> None:
        self.signalled = True


def _flags(command: list[str]) -> dict[str, str]:
    i = next(i for i, c in enumerate(command) if c.startswith("--"))
    rest = command[i:]
    return dict(zip(rest[::2], rest[1::2], strict=True))


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


# 100 transitions per iteration (the fake ignores them; a real run evaluates at iterations).
SMALL = {"num_envs": 2, "num_steps": 50, "num_minibatches": 2}
# Evaluations every tenth of the 1,000-step budget (a sweep's own cadence keeps evaluations
# 50,000 env steps apart, which would leave a run this short one evaluation, at its end).
SMALL_ITERATIONS = [x for name, value in {**SMALL, "eval_interval_steps": 100}.items()
                    for x in ("--set", f"{name}={value}")]


def _tune(capsys, out: Path, space: Path, *extra: str, trials: str = "6") -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["tune", "--suite", "cpu-smoke", "--tasks", "CartpoleBalance,PendulumSwingup",
                 "--space", str(space), "--trials", trials, "--seeds", "2", "--steps", "1000",
                 "--startup-trials", "3", "--prune-after", "2", "--rungs", "2", "--out",
                 str(out), *SMALL_ITERATIONS, *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def _iqm_by_hand(actor_lr: float, rho: float, step: int, total: int = 1000) -> float:
    """Two tasks x seeds 0 and 1, scores q - seed/1000: 4 equal-weight scores whose IQM is the
    mean of the middle two, one of each seed (both tasks score alike)."""
    scores = sorted(_fake_return(actor_lr, rho, s, step, total) / 1000 for s in (0, 1, 0, 1))
    return (scores[1] + scores[2]) / 2


# ---- a tiny search -----------------------------------------------------------------------------


def test_a_tiny_search_scores_prunes_and_writes_a_loadable_preset(tmp_path, space, capsys,
                                                                  monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(sweep_execute, "launch", fake)
    out = tmp_path / "tune"
    code, stdout, _ = _tune(capsys, out, space)
    assert code == 0, stdout
    rows = _rows(out)
    assert [int(r["trial"]) for r in rows] == list(range(6))
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    for row in rows:
        lr, rho = float(row["actor_lr"]), float(row["action_noise_correlation"])
        # The rung score (at 500 of 1000 steps) and the final one are the normalized IQM over
        # tasks and seeds, computed by hand from the fake's returns.
        assert float(row["score@500"]) == pytest.approx(_iqm_by_hand(lr, rho, 500))
        if row["state"] == "complete":
            assert float(row["score"]) == pytest.approx(_iqm_by_hand(lr, rho, 1000))
            assert float(row["CartpoleBalance score"]) == pytest.approx(
                _quality(lr, rho) - 0.0005)
    # The pruner stopped some trial at the rung: its runs hold half the budget.
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned, rows
    for row in pruned:
        run = out / "trials" / f"{int(row['trial']):04d}" / "reppo" / "CartpoleBalance"
        records = (run / "metrics.jsonl").read_text().splitlines()
        assert json.loads(records[-1])["env_steps"] == 500
        assert "pruned at 500 env steps" in row["note"]
        # A rung's score below the median of the finished trials' scores there.
        finished = [float(r["score@500"]) for r in rows
                    if r["state"] == "complete" and int(r["trial"]) < int(row["trial"])]
        assert float(row["score@500"]) < sorted(finished)[len(finished) // 2] + 1e-12
    # Every run of a finished trial was paused at the rung and resumed: one start and one
    # resume per run, and the resumed curve is the uninterrupted one.
    complete = [r for r in rows if r["state"] == "complete"]
    starts = [c for c in fake.commands if "--resume" not in c]
    resumes = [c for c in fake.commands if "--resume" in c]
    assert len(starts) == 2 * len(rows) and len(resumes) == 2 * len(complete)

    # best.json: the best finished trial's whole config, a preset file for --preset.
    best = max(complete, key=lambda r: float(r["score"]))
    config = get_preset(str(out / "best.json"))
    assert config == PRESETS["cpu"].replace(
        actor_lr=float(best["actor_lr"]),
        action_noise_correlation=float(best["action_noise_correlation"]),
        total_steps=1000, eval_interval_steps=100, **SMALL,
    )
    description = json.loads((out / "best.json").read_text())["description"]
    assert f"trial {best['trial']} " in description and "fresh seeds" in description
    assert f"best: trial {best['trial']}," in stdout
    # The study is an SQLite Optuna study; the table's markdown lists the finished first.
    study = optuna.load_study(study_name="reppo-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert study.best_trial.number == int(best["trial"])
    assert study.best_value == pytest.approx(float(best["score"]))
    table = (out / "trials.md").read_text()
    assert table.index(f"| {best['trial']} | complete |") < table.index("| pruned |")
    # Each trial is a sweep directory that `reppo sweep` and `reppo report` read; the trials
    # start from base.json: the cpu preset without its per-task settings.
    sweep = json.loads((out / "trials" / "0000" / "sweep.json").read_text())
    assert sweep["algos"]["reppo"]["preset"] == str((out / "base.json").resolve())
    assert get_preset(str(out / "base.json")) == PRESETS["cpu"]
    assert set(json.loads((out / "tune.json").read_text())["space"]) == {
        "actor_lr", "action_noise_correlation"}

    # A rerun with the same settings has nothing left to do; a larger --trials extends it.
    launched = len(fake.commands)
    code, stdout, _ = _tune(capsys, out, space)
    assert code == 0 and len(fake.commands) == launched
    code, stdout, _ = _tune(capsys, out, space, trials="7")
    assert code == 0 and len(_rows(out)) == 7


def test_a_stopped_search_resumes_its_interrupted_trial(tmp_path, space, capsys, monkeypatch):
    # Without pruning each trial launches its two runs once: Ctrl-C in the 3rd launch (trial
    # 1's first run) at its 2nd evaluation.
    fake = FakeTrain(interrupt_at=(3, 2))
    monkeypatch.setattr(sweep_execute, "launch", fake)
    out = tmp_path / "tune"
    code, stdout, _ = _tune(capsys, out, space, "--pruner", "none", trials="3")
    assert code == 130 and "run the same command again to resume" in stdout
    states = [r["state"] for r in _rows(out)]
    assert states == ["complete", "running"]
    interrupted = out / "trials" / "0001" / "reppo" / "CartpoleBalance"
    assert json.loads((interrupted / "metrics.jsonl").read_text().splitlines()[-1])[
        "env_steps"] == 200

    fake.interrupt_at = None
    launched = len(fake.commands)
    code, stdout, _ = _tune(capsys, out, space, "--pruner", "none", trials="3")
    assert code == 0, stdout
    assert "trial 1: continuing (interrupted before)" in stdout
    again = fake.commands[launched:]
    # Trial 1 resumes its interrupted run and starts the one it had not reached.
    assert _flags(again[0]) == {"--resume": str(interrupted)}
    assert _flags(again[1])["--env"] == "PendulumSwingup"
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["complete"] * 3
    lr, rho = float(rows[1]["actor_lr"]), float(rows[1]["action_noise_correlation"])
    assert float(rows[1]["score"]) == pytest.approx(_iqm_by_hand(lr, rho, 1000))
    # The resumed sampler did not repeat the draws it had made before the stop.
    assert len({r["actor_lr"] for r in rows}) == 3


def test_a_dry_run_writes_nothing(tmp_path, space, capsys):
    out = tmp_path / "tune"
    code, stdout, _ = _tune(capsys, out, space, "--dry-run")
    assert code == 0 and not out.exists()
    assert "searching: actor_lr in [0.0001, 0.01], log scale; action_noise_correlation in " \
           "{0, 0.5, 0.9}" in stdout
    assert "pruning: median, after 2 finished trials, at 500 env steps" in stdout
    assert "--env PendulumSwingup --seed 0 --num-seeds 2 --total-steps 1000" in stdout
    assert "--num-envs 2 --num-steps 50 --num-minibatches 2" in stdout


# ---- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space_text", "argv", "needles"),
    [
        (SPACE, ["--suite", "cpu-eval"], ["evaluation suite", "tune on cpu-smoke"]),
        (SPACE, ["--suite", "cpu-ablations"], ["ablation variants"]),
        (SPACE, ["--trials", "0"], ["--trials must be >= 1"]),
        (SPACE, ["--rungs", "20"], ["first rung is at 50 env steps", "evaluate every 1,000"]),
        (SPACE, ["--rungs", "1"], ["--rungs 1 leaves the pruner nothing"]),
        (SPACE, ["--set", "actor_lr=1e-3"], ["actor_lr is both searched"]),
        (SPACE, ["--set", "eval_interval_steps=0"], ["pruner would have no score"]),
        ("[actor_lrr]\nlow = 1\nhigh = 2\n", [], ["not a config field", "did you mean"]),
        ("[seed]\nlow = 1\nhigh = 2\n", [], ["[seed] cannot be searched", "--first-seed"]),
        ("[eval_episodes]\nchoices = [4, 8]\n", [], ["cannot be searched", "not what it learns"]),
        ("[actor_lr]\nlow = 1e-3\nhigh = 1e-4\n", [], ["low (0.001) must be below high"]),
        ("[kl_target]\nlow = 0\nhigh = 1\nlog = true\n", [], ["log scale needs low > 0"]),
        ("[num_epochs]\nlow = 1\nhigh = 4.5\n", [], ["integer field", "4.5"]),
        ("[norm]\nlow = 1\nhigh = 2\n", [], ["not a number field", "choices"]),
        ("[norm]\nchoices = [\"rms\", \"batch\"]\n", [], ["norm must be one of"]),
        ("[num_minibatches]\nchoices = [16, 7]\n", [], ["7 makes no valid config",
                                                        "not divisible"]),
        ("[actor_lr]\nlow = 1e-4\n", [], ["needs low and high"]),
        ("[actor_lr]\nlow = 1e-4\nhigh = 1e-3\nscale = \"log\"\n", [], ["unknown key(s) scale"]),
        ("[actor_lr\n", [], ["not valid TOML"]),
        ("", [], ["declares no field"]),
    ],
    ids=lambda value: value[0] if isinstance(value, list) and value else None,
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, space_text, argv,
                                                         needles):
    path = tmp_path / "space.toml"
    path.write_text(space_text)
    out = tmp_path / "tune"
    args = {"--suite": "cpu-smoke", "--trials": "2", "--rungs": "2"}
    rest = []
    it = iter(argv)
    for flag in it:
        value = next(it)
        if flag in args:
            args[flag] = value
        else:
            rest += [flag, value]
    capsys.readouterr()
    code = main(["tune", "--space", str(path), "--seeds", "1", "--steps", "1000", "--out",
                 str(out), *[x for kv in args.items() for x in kv], *rest])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("reppo: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


def test_a_search_with_other_settings_or_a_foreign_dir_is_refused(tmp_path, space, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(sweep_execute, "launch", FakeTrain())
    out = tmp_path / "tune"
    assert _tune(capsys, out, space, trials="1")[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".db"}
    other = tmp_path / "other.toml"
    other.write_text(SPACE.replace("1e-2", "3e-2"))
    code, _, err = _tune(capsys, out, other, trials="1")
    assert code == 2 and "the search space differs" in err and "nothing was changed" in err
    code, _, err = _tune(capsys, out, space, "--sampler-seed", "1", trials="1")
    assert code == 2 and "sampler_seed 0 there, 1 now" in err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".db"}
    assert after == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = _tune(capsys, foreign, space, trials="1")
    assert code == 2 and "not a search" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


# ---- the search space --------------------------------------------------------------------------


def test_space_files_declare_ranges_and_choices(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({
        "num_bootstrap_samples": {"low": 1, "high": 8},
        "critic_lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "lam": {"low": 0.8, "high": 1.0, "step": 0.05},
        "lr_schedule": {"choices": ["constant", "linear"]},
        "normalize_obs": {"choices": [True, False]},
        "gamma": {"choices": [None, 0.99]},
    }))
    space = load_space(path, PRESETS["cpu"])
    assert space.names == ("num_bootstrap_samples", "critic_lr", "lam", "lr_schedule",
                           "normalize_obs", "gamma")
    assert [p.kind for p in space.params] == ["int", "float", "float", "choice", "choice",
                                              "choice"]
    assert space.as_dict()["num_bootstrap_samples"] == {"low": 1, "high": 8, "log": False}
    assert space.as_dict()["lam"] == {"low": 0.8, "high": 1.0, "log": False, "step": 0.05}
    # Optuna draws typed values inside the declared ranges.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = space.suggest(study.ask())
        assert isinstance(values["num_bootstrap_samples"], int)
        assert 1 <= values["num_bootstrap_samples"] <= 8
        assert 1e-4 <= values["critic_lr"] <= 3e-3
        assert round(values["lam"] / 0.05, 6).is_integer()
        assert values["lr_schedule"] in ("constant", "linear")
        assert values["gamma"] in (None, 0.99)
        PRESETS["cpu"].replace(**values)  # every draw makes a valid config
    (tmp_path / "space.yaml").write_text("actor_lr: [1e-4, 1e-3]\n")
    with pytest.raises(UserError, match="must be a .toml or .json file"):
        load_space(tmp_path / "space.yaml", Config())


# ---- real training -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_real_tiny_search_pauses_resumes_and_writes_a_trainable_preset(tmp_path, capsys):
    """`reppo train` children: each run is paused at the rung (SIGINT: it saves a checkpoint),
    scored, and resumed to the end; the winner is a preset file that trains."""
    base = tmp_path / "tiny.json"
    base.write_text(json.dumps(TINY.replace(log_interval_steps=128, eval_interval_steps=128,
                                            checkpoint_interval_steps=256).to_dict()))
    space = tmp_path / "space.toml"
    space.write_text("[actor_lr]\nchoices = [0.001, 0.0003]\n")
    out = tmp_path / "tune"
    argv = ["tune", "--suite", "cpu-smoke", "--tasks", "CartpoleBalance", "--space", str(space),
            "--trials", "1", "--seeds", "2", "--steps", "512", "--rungs", "2", "--preset",
            str(base), "--set", "eval_interval_steps=128", "--out", str(out)]
    code = main(argv)
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    (row,) = _rows(out)
    assert row["state"] == "complete" and float(row["score@256"]) >= 0
    run = out / "trials" / "0000" / "reppo" / "CartpoleBalance"
    log = (run.parent / "CartpoleBalance.log").read_text()
    assert "paused with a checkpoint" in stdout and "--resume" in log
    assert rung_steps(512, 2) == (256,)
    # Paused and resumed, the run's evaluations are every 128 steps to the end, once each.
    steps = [json.loads(line)["env_steps"] for line in
             (run / "metrics.jsonl").read_text().splitlines() if "eval/return_mean" in line]
    assert steps == [128, 256, 384, 512]
    config = get_preset(str(out / "best.json"))
    assert config.total_steps == 512 and config.num_envs == TINY.num_envs
    assert config.actor_lr == float(row["actor_lr"])
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone() == (1,)
