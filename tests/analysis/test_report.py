"""Tests of `reppo report` and reppo.analysis.runs on run directories written by hand.

The synthetic runs have final returns chosen so that every number checked below is computed by
hand in the comments (DM Control score = return / 1000; every task weighs equally).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from reppo.analysis.runs import RunSkippedWarning, find_run_dirs, load_run_dir, load_runs
from reppo.cli import main
from reppo.errors import UserError

REPS, GRID = "200", "3"


def _write_run(
    path: Path,
    env: str,
    evals: list[tuple[int, list[float]]],
    *,
    total_steps: int = 100,
    algo: str | None = None,
    experiment: dict | None = None,
    num_envs: int = 8,
    num_steps: int = 16,
    per_seed: bool = True,
    wall: bool = True,
    success: list[float] | None = None,
) -> Path:
    """A run directory: config.json and metrics.jsonl with one training record and one
    evaluation record per (env_steps, per-seed returns) of `evals`."""
    num_seeds = len(evals[0][1])
    path.mkdir(parents=True)
    config = {"env": env, "seed": 10, "num_seeds": num_seeds, "total_steps": total_steps,
              "backend": "jax", "num_envs": num_envs, "num_steps": num_steps}
    if algo is not None:
        config.update(algo=algo, eval_episodes=4, eval_interval_steps=50, hyperparameters={})
    (path / "config.json").write_text(json.dumps(config))
    if experiment is not None:
        (path / "experiment.json").write_text(json.dumps(
            {"suite": "test", "task": env, "algo": algo or "reppo", "variant": None, **experiment}
        ))
    lines = []
    for i, (steps, returns) in enumerate(evals):
        lines.append({"env_steps": steps, "wall_time": 10.0 * i + 1, "loss": 0.5})
        record = {"env_steps": steps, "eval/return_mean": sum(returns) / len(returns),
                  "eval/return_std": 1.0, "eval/episodes": 4 * num_seeds}
        if wall:
            record["wall_time"] = 10.0 * i + 5
        if per_seed:
            record["eval/return_per_seed"] = returns
        if success is not None:
            record["eval/success_once"] = success[i]
            record["eval/success_at_end"] = success[i] / 2
        lines.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _make_runs(root: Path) -> None:
    # REPPO (no experiment.json, no algo): CheetahRun final [900, 600, 300] in one 3-seed dir,
    # WalkerRun finals 800 and 950 in two 1-seed dirs (one logs only eval/return_mean).
    _write_run(root / "reppo" / "cheetah", "CheetahRun", [(50, [950, 920, 200]),
                                                          (100, [900, 600, 300])])
    _write_run(root / "reppo" / "walker-a", "WalkerRun", [(50, [950]), (100, [800])],
               per_seed=False)
    _write_run(root / "reppo" / "walker-b", "WalkerRun", [(50, [300]), (100, [950])], wall=False)
    # Brax PPO: CheetahRun finals 400 and 200, WalkerRun 500.
    for name, env, first, final in (("c0", "CheetahRun", 100, 400), ("c1", "CheetahRun", 150, 200),
                                    ("w0", "WalkerRun", 250, 500)):
        _write_run(root / "ppo" / name, env, [(50, [first]), (100, [final])], algo="brax-ppo")
    # ManiSkill: score = eval/success_once, final 0.75.
    _write_run(root / "maniskill" / "poke", "PokeCube-v1", [(50, [20.0]), (100, [30.0])],
               success=[0.5, 0.75])
    # Ablations on CheetahRun at 256 and 64 transitions per iteration.
    for name, variant, envs, final in (("full-256", "full", 16, 950),
                                       ("nokl-256", "no-kl", 16, 500),
                                       ("nokl-64", "no-kl", 4, 250)):
        _write_run(root / "ablation" / name, "CheetahRun", [(50, [100]), (100, [final])],
                   experiment={"method": f"REPPO {name}", "variant": variant}, num_envs=envs)
    # Skipped: an unfinished run and one with a corrupt config.json.
    _write_run(root / "unfinished" / "cheetah", "CheetahRun", [(50, [500])])
    broken = _write_run(root / "broken" / "cheetah", "CheetahRun", [(100, [500])])
    (broken / "config.json").write_text("{not json")


def _report(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _make_runs(root)
    out = tmp_path_factory.mktemp("report")  # exists and is empty: accepted
    # root/reppo is also under root: its runs must be counted once.
    code, stdout, stderr = _report([str(root), str(root / "reppo"), "--out", str(out),
                                    "--reps", REPS, "--steps-grid", GRID, "--reference"])
    assert code == 0, stderr
    return {"root": root, "out": out, "stdout": stdout, "stderr": stderr}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writes_every_figure_and_table(report):
    out = report["out"]
    expected = [
        "curves/CheetahRun.png", "curves/WalkerRun.png", "curves/PokeCube-v1.png",
        "curves/PokeCube-v1_success_at_end.png",
        "aggregates_dm_control.png", "aggregates_maniskill.png",
        "sample_efficiency_dm_control.png", "sample_efficiency_maniskill.png",
        "reliable_performance_dm_control.png", "reliable_performance_maniskill.png",
        "ablations_dm_control.png",
        "performance_profile_dm_control.png", "performance_profile_maniskill.png",
        "summary.md", "summary.csv", "aggregates.csv", "sample_efficiency.csv",
        "reliable_performance.csv", "ablations.csv", "performance_profile.csv",
        "probability_of_improvement.csv",
    ]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "ablations_maniskill.png").exists()  # no ManiSkill ablation runs
    assert "12 runs (5 methods, 3 tasks)" in report["stdout"]
    assert "2 run directories skipped" in report["stdout"]


def test_skipped_runs_are_named(report):
    root, stderr = report["root"], report["stderr"]
    assert f"skipping {root / 'unfinished' / 'cheetah'}: unfinished: last evaluation at 50 of " \
           "100 env steps" in stderr
    assert f"skipping {root / 'broken' / 'cheetah'}: config.json is unreadable" in stderr
    summary = (report["out"] / "summary.md").read_text()
    assert "## Runs skipped (2)" in summary
    assert str(root / "unfinished" / "cheetah") in summary


def test_per_task_finals_match_hand_computation(report):
    rows = {(r["source"], r["task"], r["method"]): r for r in _csv(report["out"] / "summary.csv")}
    cheetah = rows["measured", "CheetahRun", "reppo"]
    assert cheetah["n_runs"] == "3"  # the 3-seed directory, counted once
    assert float(cheetah["final_return_mean"]) == pytest.approx(600.0)
    assert float(cheetah["final_score_mean"]) == pytest.approx(0.6)
    # The bootstrap interval of the mean of [300, 600, 900] lies within [300, 900].
    assert 300 <= float(cheetah["final_return_ci_low"]) < 600 < float(
        cheetah["final_return_ci_high"]) <= 900
    walker = rows["measured", "WalkerRun", "reppo"]
    assert (walker["n_runs"], float(walker["final_return_mean"])) == ("2", pytest.approx(875.0))
    ppo = rows["measured", "CheetahRun", "brax-ppo"]
    assert (ppo["n_runs"], float(ppo["final_return_mean"])) == ("2", pytest.approx(300.0))
    # One run: the interval collapses to it.
    ppo_walker = rows["measured", "WalkerRun", "brax-ppo"]
    assert float(ppo_walker["final_return_ci_low"]) == float(ppo_walker["final_return_ci_high"])
    assert float(ppo_walker["final_return_ci_low"]) == pytest.approx(500.0)
    poke = rows["measured", "PokeCube-v1", "reppo"]
    assert poke["family"] == "maniskill"
    assert float(poke["final_score_mean"]) == pytest.approx(0.75)  # success rate, not return
    assert float(poke["final_return_mean"]) == pytest.approx(30.0)
    published = rows["published", "CheetahRun", "REPPO (published)"]
    assert float(published["final_return_mean"]) == 933.0
    assert published["n_runs"] == ""
    authors = rows["reference", "CartpoleBalance", "REPPO (authors' code)"]
    assert float(authors["final_return_mean"]) == pytest.approx((988 + 973 + 872) / 3)
    assert authors["n_runs"] == "3" and authors["final_env_steps"] == "507904"


def test_aggregates_match_hand_computation(report):
    rows = {(r["family"], r["method"], r["statistic"]): r
            for r in _csv(report["out"] / "aggregates.csv")}
    # REPPO: CheetahRun [.9, .6, .3] (weight 1/6 each), WalkerRun [.8, .95] (1/4 each).
    # Sorted with their quantile intervals: .3 (0, 1/6], .6 (1/6, 1/3], .8 (1/3, 7/12],
    # .9 (7/12, 3/4], .95 (3/4, 1]. Inside [1/4, 3/4]: .6 for 1/12, .8 for 1/4, .9 for 1/6,
    # so IQM = (.6/12 + .8*3/12 + .9*2/12) / (1/2) = 0.8; 0.5 falls inside .8's interval.
    expected = {"iqm": 0.8, "median": 0.8, "mean": (0.6 + 0.875) / 2, "optimality_gap": 0.2625}
    for stat, value in expected.items():
        row = rows["dm_control", "reppo", stat]
        assert float(row["value"]) == pytest.approx(value), stat
        assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
        assert (row["n_tasks"], row["n_runs"]) == ("2", "5")
    # Brax PPO: CheetahRun [.4, .2] (1/4 each), WalkerRun [.5] (1/2): sorted .2 (0, 1/4],
    # .4 (1/4, 1/2], .5 (1/2, 1]: IQM = (.4/4 + .5/4) / (1/2) = .45; median = (.4 + .5) / 2.
    expected = {"iqm": 0.45, "median": 0.45, "mean": 0.4, "optimality_gap": 0.6}
    for stat, value in expected.items():
        assert float(rows["dm_control", "brax-ppo", stat]["value"]) == pytest.approx(value)
    # ManiSkill is aggregated on its own; one run, so every interval is the point.
    row = rows["maniskill", "reppo", "iqm"]
    assert float(row["value"]) == float(row["ci_low"]) == float(row["ci_high"]) == 0.75


def test_reliable_performance_matches_hand_computation(report):
    rows = [r for r in _csv(report["out"] / "reliable_performance.csv")
            if (r["family"], r["method"]) == ("dm_control", "reppo")]
    assert [float(r["env_steps"]) for r in rows] == [50.0, 75.0, 100.0]
    # tau 0.9. CheetahRun seeds: [.95, .9] reliable from 50; [.92, .6] and [.2, .3] never.
    # WalkerRun: [.95, .8] never; [.3, .95] from 100. Task weights: 1/2 over 3 and 2 runs.
    fractions = [float(r["fraction"]) for r in rows]
    assert fractions == pytest.approx([1 / 6, 1 / 6, 1 / 6 + 1 / 4])
    assert {r["tau"] for r in rows} == {"0.9"}


def test_ablations_match_hand_computation(report):
    rows = {(r["transitions_per_iteration"], r["variant"]): r
            for r in _csv(report["out"] / "ablations.csv")}
    # One run each on one task: IQM is its score, the interval collapses.
    expected = {("256", "full"): 0.95, ("256", "no-kl"): 0.5, ("64", "no-kl"): 0.25}
    assert set(rows) == set(expected)
    for key, value in expected.items():
        assert float(rows[key]["iqm"]) == pytest.approx(value)
        assert float(rows[key]["ci_low"]) == pytest.approx(value)


def test_summary_markdown(report):
    summary = (report["out"] / "summary.md").read_text()
    assert "`reppo report " in summary and "--reference" in summary
    assert "--stats auto" in summary  # the command line, with the option's value
    # No run comes from a paper suite (the ablation runs' experiment.json says "test").
    assert ("Statistics mode: weighted (--stats auto: 12 of 12 runs are not from a paper suite "
            "(dmc23, maniskill, ablations)). Every task weighs equally") in summary
    assert "## DM Control (MuJoCo Playground): probability of improvement" in summary
    assert "| P(row > column) | REPPO full-256 |" in summary
    assert "Each pair is compared on the tasks both methods cover" in summary
    assert "## DM Control (MuJoCo Playground): aggregate metrics" in summary
    assert "| reppo | 2 | 5 | 0.800 [" in summary
    assert "600.0 [" in summary and "(n=3)" in summary
    assert "## Published reference" in summary
    assert "| REPPO (published) | 775 | 23 of 23 |" in summary
    assert "| reppo (measured) | — | 2 of 23 |" in summary
    # The authors' code at our cpu settings, per seed, as a like-for-like reference.
    assert ("| CartpoleBalance | REPPO (authors' code) | cpu preset | 507,904 | 0 / 1 / 2 | "
            "988 / 973 / 872 | 944.3 | 128 |") in summary
    assert "Methods cover different dm_control tasks" in summary  # ablation methods: 1 task
    assert "## Runs used (12)" in summary
    assert "1 of 2 reppo runs on WalkerRun have no increasing wall times" in summary
    assert "[seed 2]" in summary
    assert "(curves/CheetahRun.png)" in summary


def test_profile_and_improvement_match_hand_computation(report):
    rows = {(r["family"], r["method"], r["tau"]): r
            for r in _csv(report["out"] / "performance_profile.csv")}
    # Weighted (auto, no paper suite). REPPO above 0.5: CheetahRun 2 of 3, WalkerRun 2 of 2,
    # tasks weighted equally: (2/3 + 1) / 2. Brax PPO: 0 of 2 and 0 of 1 ([.5] is not above).
    assert float(rows["dm_control", "reppo", "0.5"]["fraction"]) == pytest.approx(5 / 6)
    assert float(rows["dm_control", "brax-ppo", "0.5"]["fraction"]) == 0.0
    assert float(rows["dm_control", "reppo", "0"]["fraction"]) == 1.0
    taus = [float(r["tau"]) for r in _csv(report["out"] / "performance_profile.csv")
            if (r["family"], r["method"]) == ("dm_control", "reppo")]
    assert len(taus) == 101 and taus[0] == 0.0 and taus[-1] == 1.0
    assert float(rows["maniskill", "reppo", "0.7"]["fraction"]) == 1.0  # success rate 0.75
    pairs = {(r["family"], r["method_x"], r["method_y"]): r
             for r in _csv(report["out"] / "probability_of_improvement.csv")}
    # CheetahRun: [.9, .6, .3] vs [.4, .2], 5 of 6 pairs; WalkerRun: [.8, .95] vs [.5], 1.
    forward = pairs["dm_control", "reppo", "brax-ppo"]
    assert float(forward["probability"]) == pytest.approx((5 / 6 + 1) / 2)
    assert (forward["n_tasks"], forward["n_runs_x"], forward["n_runs_y"]) == ("2", "5", "3")
    assert float(forward["ci_low"]) <= float(forward["probability"]) <= float(forward["ci_high"])
    backward = pairs["dm_control", "brax-ppo", "reppo"]
    assert float(backward["probability"]) == pytest.approx(1 / 12)
    assert float(backward["ci_low"]) == pytest.approx(1 - float(forward["ci_high"]))
    # The ablation methods cover CheetahRun only: compared with reppo there, .95 beats all 3.
    ablation = pairs["dm_control", "REPPO full-256", "reppo"]
    assert (float(ablation["probability"]), ablation["n_tasks"]) == (1.0, "1")
    # 5 DM Control methods: 20 ordered pairs; ManiSkill has one method, so none.
    assert len(pairs) == 20 and all(f == "dm_control" for f, _, _ in pairs)


# ---- --stats: the rliable mode for the paper's suites ----------------------------------------

# Two methods x 2 tasks x 3 seeds of the dmc23 suite: 6 scores per method, not a multiple of 4.
PAPER_FINALS = {
    "REPPO": {"CheetahRun": [900, 600, 300], "WalkerRun": [800, 950, 100]},
    "Brax PPO": {"CheetahRun": [400, 200, 100], "WalkerRun": [500, 500, 700]},
}


def _make_paper_runs(root: Path, suite: str = "dmc23", extra: bool = False) -> Path:
    for method, finals in PAPER_FINALS.items():
        for task, returns in finals.items():
            for i, final in enumerate(returns + ([850] if extra and task == "CheetahRun"
                                                 and method == "REPPO" else [])):
                _write_run(root / method.replace(" ", "") / f"{task}-{i}", task,
                           [(50, [100]), (100, [final])],
                           experiment={"suite": suite, "method": method})
    return root


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    return _make_paper_runs(tmp_path_factory.mktemp("paper"))


def _paper_report(paper_runs, out: Path, *flags: str) -> tuple[str, dict, str]:
    code, stdout, stderr = _report([str(paper_runs), "--out", str(out), "--reps", REPS,
                                    "--steps-grid", GRID, *flags])
    assert code == 0, stderr
    rows = {(r["method"], r["statistic"]): float(r["value"])
            for r in _csv(out / "aggregates.csv")}
    return (out / "summary.md").read_text(), rows, stderr


def test_paper_suite_report_uses_rliable_statistics(paper_runs, tmp_path):
    summary, rows, stderr = _paper_report(paper_runs, tmp_path / "rep")
    assert ("Statistics mode: rliable (--stats auto: every run is from the paper suites "
            "(dmc23)). The aggregates are those of the rliable package") in summary
    assert "reppo: note" not in stderr
    # REPPO's 6 scores sorted: .1 .3 .6 .8 .9 .95; trim_mean cuts int(1.5) = 1 from each end:
    # mean(.3, .6, .8, .9) = .65 (the weighted IQM is 2/3). Median of the task means .6 and
    # .61667 (the pooled median is .7).
    assert rows["REPPO", "iqm"] == pytest.approx(0.65)
    assert rows["REPPO", "median"] == pytest.approx((0.6 + 1.85 / 3) / 2)
    assert rows["REPPO", "mean"] == pytest.approx((0.6 + 1.85 / 3) / 2)
    assert rows["REPPO", "optimality_gap"] == pytest.approx(1 - (0.6 + 1.85 / 3) / 2)
    # The same as the rliable package on the (runs, tasks) matrix.
    from rliable import metrics

    for method, finals in PAPER_FINALS.items():
        matrix = np.array([finals["CheetahRun"], finals["WalkerRun"]]).T / 1000.0
        assert rows[method, "iqm"] == pytest.approx(float(metrics.aggregate_iqm(matrix)))
        assert rows[method, "median"] == pytest.approx(float(metrics.aggregate_median(matrix)))
    # The sample-efficiency IQM at the last step is the final IQM, also trimmed as rliable.
    last = [r for r in _csv(tmp_path / "rep" / "sample_efficiency.csv") if r["method"] == "REPPO"]
    assert float(last[-1]["iqm"]) == pytest.approx(0.65)
    pairs = {(r["method_x"], r["method_y"]): float(r["probability"])
             for r in _csv(tmp_path / "rep" / "probability_of_improvement.csv")}
    # CheetahRun [.9 .6 .3] vs [.4 .2 .1]: 8 of 9; WalkerRun [.8 .95 .1] vs [.5 .5 .7]: 6 of 9.
    assert pairs == {("REPPO", "Brax PPO"): pytest.approx(7 / 9),
                     ("Brax PPO", "REPPO"): pytest.approx(2 / 9)}
    profile = {(r["method"], r["tau"]): float(r["fraction"])
               for r in _csv(tmp_path / "rep" / "performance_profile.csv")}
    assert profile["REPPO", "0.5"] == pytest.approx(4 / 6)  # .6 .8 .9 .95 of 6 runs
    assert (tmp_path / "rep" / "performance_profile_dm_control.png").read_bytes()[:4] == \
        b"\x89PNG"


def test_stats_weighted_overrides_auto(paper_runs, tmp_path):
    summary, rows, _ = _paper_report(paper_runs, tmp_path / "rep", "--stats", "weighted")
    assert "Statistics mode: weighted (--stats weighted)." in summary
    assert "--stats weighted`" in summary
    # 6 scores of weight 1/6: .3 and .9 count 1/12 inside [1/4, 3/4], .6 and .8 count 1/6.
    assert rows["REPPO", "iqm"] == pytest.approx((0.3 / 12 + 0.6 / 6 + 0.8 / 6 + 0.9 / 12) * 2)
    assert rows["REPPO", "median"] == pytest.approx(0.7)
    assert rows["REPPO", "mean"] == pytest.approx((0.6 + 1.85 / 3) / 2)


def test_stats_rliable_is_accepted_for_any_suite_with_equal_counts(tmp_path):
    runs = _make_paper_runs(tmp_path / "runs", suite="cpu-smoke")
    summary, rows, _ = _paper_report(runs, tmp_path / "auto")
    assert "Statistics mode: weighted (--stats auto: 12 of 12 runs are not from a paper" in summary
    assert rows["REPPO", "iqm"] == pytest.approx(2 / 3)
    summary, rows, _ = _paper_report(runs, tmp_path / "rliable", "--stats", "rliable")
    assert "Statistics mode: rliable (--stats rliable)." in summary
    assert rows["REPPO", "iqm"] == pytest.approx(0.65)


def test_auto_falls_back_to_weighted_on_unequal_run_counts(tmp_path):
    runs = _make_paper_runs(tmp_path / "runs", extra=True)  # REPPO: 4 CheetahRun seeds
    summary, rows, stderr = _paper_report(runs, tmp_path / "rep")
    note = ("--stats auto used the weighted statistics, not rliable's, although every run is "
            "from a paper suite (dmc23): rliable needs the same number of runs on every task "
            "of a method, but REPPO (dm_control): 4 runs on CheetahRun, 3 runs on WalkerRun.")
    assert f"reppo: note: {note}" in stderr
    assert f"- {note}" in summary
    assert ("Statistics mode: weighted (--stats auto: paper suites, but unequal run counts "
            "(see Notes))") in summary
    # Weighted: CheetahRun [.9 .85 .6 .3] (1/8 each), WalkerRun [.8 .95 .1] (1/6 each).
    assert rows["REPPO", "mean"] == pytest.approx(((2.65 / 4) + 1.85 / 3) / 2)


def test_stats_rliable_refuses_unequal_run_counts(tmp_path):
    runs = _make_paper_runs(tmp_path / "runs", extra=True)
    code, _, stderr = _report([str(runs), "--out", str(tmp_path / "rep"), "--stats", "rliable",
                               "--reps", REPS])
    assert code == 2
    assert ("reppo: error: --stats rliable needs the same number of runs on every task of a "
            "method (rliable takes a runs x tasks matrix), but REPPO (dm_control): 4 runs on "
            "CheetahRun, 3 runs on WalkerRun; pass --stats weighted") in stderr
    assert not (tmp_path / "rep").exists()


def test_unknown_stats_mode_is_an_error(tmp_path):
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["report", str(tmp_path), "--out", str(tmp_path / "rep"), "--stats", "scipy"])
    assert info.value.code == 2
    assert "invalid choice: 'scipy'" in err.getvalue()


def test_without_reference_has_no_published_rows(tmp_path):
    _write_run(tmp_path / "runs" / "poke", "PokeCube-v1", [(100, [30.0])], success=[0.5])
    code, _, stderr = _report([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                               "--reps", REPS])
    assert code == 0, stderr
    sources = {r["source"] for r in _csv(tmp_path / "rep" / "summary.csv")}
    assert sources == {"measured"}
    assert "published" not in (tmp_path / "rep" / "summary.md").read_text().lower()
    assert not (tmp_path / "rep" / "aggregates_dm_control.png").exists()


# ---- bad input --------------------------------------------------------------------------------


def test_no_runs_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = _report([str(tmp_path / "empty"), "--out", str(tmp_path / "rep")])
    assert code == 2
    assert "reppo: error: no run directories" in stderr
    assert not (tmp_path / "rep").exists()


def test_only_unfinished_runs_is_an_error(tmp_path):
    _write_run(tmp_path / "runs" / "a", "CheetahRun", [(50, [500])])
    code, _, stderr = _report([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert code == 2
    assert "reppo: warning: skipping" in stderr
    assert "reppo: error: no finished runs" in stderr


def test_existing_non_empty_out_dir_is_refused(tmp_path):
    _write_run(tmp_path / "runs" / "a", "CheetahRun", [(100, [500])])
    out = tmp_path / "rep"
    out.mkdir()
    (out / "summary.md").write_text("mine")
    code, _, stderr = _report([str(tmp_path / "runs"), "--out", str(out)])
    assert code == 2
    assert "is not empty; nothing was changed; choose another report directory" in stderr
    assert (out / "summary.md").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["summary.md"]


@pytest.mark.parametrize(
    "flags, message",
    [(["--tau", "0"], "--tau must be in (0, 1]"), (["--reps", "10"], "--reps must be >= 100"),
     (["--steps-grid", "1"], "--steps-grid must be >= 2")],
)
def test_bad_options_are_errors(tmp_path, flags, message):
    code, _, stderr = _report([str(tmp_path), "--out", str(tmp_path / "rep"), *flags])
    assert code == 2
    assert message in stderr


def test_missing_dir_is_an_error(tmp_path):
    code, _, stderr = _report([str(tmp_path / "nope"), "--out", str(tmp_path / "rep")])
    assert code == 2
    assert f"{tmp_path / 'nope'} does not exist" in stderr


# ---- reading run directories ------------------------------------------------------------------


def test_num_seeds_dir_expands_into_runs(tmp_path):
    path = _write_run(tmp_path / "r", "CheetahRun", [(50, [1.0, 2.0]), (100, [3.0, 4.0])])
    runs = load_run_dir(path)
    assert [(r.seed, r.seed_index, r.method, r.final_return) for r in runs] == [
        (10, 0, "reppo", 3.0), (11, 1, "reppo", 4.0)]
    assert runs[1].name == f"{path} [seed 1]"
    assert runs[0].transitions_per_iteration == 8 * 16
    assert list(runs[0].env_steps) == [50, 100]
    assert list(runs[0].wall_time) == [5.0, 15.0]


def test_maniskill_success_at_end_has_its_own_curve_and_table(report):
    summary = (report["out"] / "summary.md").read_text()
    section = summary.split("final success rate (success_at_end) per task")[1].split("##")[0]
    # The fixture records success_at_end as half of success_once: final 0.375, not 0.75.
    assert "| PokeCube-v1 | 0.375" in section, section
    assert "CheetahRun" not in section  # DM Control runs record no success


def test_runs_without_success_at_end_get_no_such_curve(tmp_path):
    run = _write_run(tmp_path / "runs" / "poke", "PokeCube-v1", [(50, [2.0]), (100, [3.0])],
                     success=[0.5, 1.0])
    lines = (run / "metrics.jsonl").read_text().splitlines()
    stripped = [json.loads(x) for x in lines]
    for record in stripped:
        record.pop("eval/success_at_end", None)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    code, _, stderr = _report([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                               "--reps", REPS, "--steps-grid", GRID])
    assert code == 0, stderr
    assert (tmp_path / "rep" / "curves" / "PokeCube-v1.png").is_file()
    assert not (tmp_path / "rep" / "curves" / "PokeCube-v1_success_at_end.png").exists()
    assert "success_at_end" not in (tmp_path / "rep" / "summary.md").read_text()


def test_pooled_success_of_several_seeds_is_skipped_with_reason(tmp_path):
    _write_run(tmp_path / "r", "PokeCube-v1", [(100, [1.0, 2.0])], success=[0.5])
    pooled = "only the pooled eval/success_once of its 2 seeds"
    with pytest.warns(RunSkippedWarning, match=pooled), pytest.raises(UserError, match="no fin"):
        load_runs([tmp_path])


def test_a_task_without_known_normalization_scores_its_raw_return_in_its_own_family(tmp_path):
    from reppo.analysis.runs import family_title, is_raw, raw_family, score_name

    _write_run(tmp_path / "a", "MyOwnTask", [(100, [-150.0])])
    _write_run(tmp_path / "b", "my_pkg.envs:Other", [(100, [7.0])])
    runs = load_runs([tmp_path]).runs
    by_task = {r.task: r for r in runs}
    assert by_task["MyOwnTask"].family == raw_family("MyOwnTask")
    assert by_task["MyOwnTask"].final_score == -150.0  # not divided by anything
    assert by_task["my_pkg.envs:Other"].family != by_task["MyOwnTask"].family  # never pooled
    assert is_raw(raw_family("X")) and not is_raw("dm_control")
    assert "raw return" in family_title(raw_family("X")) and "not normalized" in score_name(
        raw_family("X"))


def test_find_run_dirs_reports_dirs_without_metrics(tmp_path):
    # A sweep root with its own config.json holds runs: it is not a skipped run.
    (tmp_path / "config.json").write_text("{}")
    _write_run(tmp_path / "a", "CheetahRun", [(100, [1.0])])
    (tmp_path / "a" / "checkpoints").mkdir()  # not descended into
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text("{}")  # started, nothing logged yet
    (tmp_path / ".hidden").mkdir()
    _write_run(tmp_path / ".hidden" / "c", "CheetahRun", [(100, [1.0])])
    found, skipped = find_run_dirs([tmp_path, tmp_path / "a"])
    assert found == [tmp_path / "a"]
    assert [(s.path, s.reason) for s in skipped] == [
        (tmp_path / "b", "no metrics.jsonl (the run has not logged anything yet)")]


def test_results_of_one_run_are_named_as_having_no_spread(report):
    summary = (report["out"] / "summary.md").read_text()
    note = next(line for line in summary.splitlines() if line.startswith("- One run only:"))
    # brax-ppo has one WalkerRun run (its interval collapses to it, above); reppo has three.
    assert "brax-ppo on WalkerRun" in note and "zero width" in note
    assert "reppo on CheetahRun" not in note


def test_a_family_without_known_normalization_gets_no_optimality_gap(tmp_path):
    for seed, ret in enumerate([-150.0, -90.0]):
        _write_run(tmp_path / "runs" / f"s{seed}", "MyOwnTask", [(100, [ret])])
    code, _, err = _report([str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                            "--reps", REPS, "--steps-grid", GRID])
    assert code == 0, err
    stats = {r["statistic"] for r in _csv(tmp_path / "out" / "aggregates.csv")}
    assert stats == {"iqm", "median", "mean"}
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "no optimality gap" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| reppo | 1 | 2 |"))
    assert row.rstrip().endswith("| - |")
