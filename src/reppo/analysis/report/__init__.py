"""Reports (`reppo report`): figures and tables comparing methods across run directories.

    reppo report runs/dmc-sweep runs/baselines --out reports/dmc --reference

reads every finished run under the given directories (see `reppo.analysis.runs`), groups them by
method and task, and writes into the (new or empty) report directory:

* ``curves/<task>.png``: per task, the mean over runs with a 95% bootstrap band of every method
  vs env steps and vs wall time; ``curves/<task>_success_at_end.png`` the same for ManiSkill3's
  success at the episodes' last step, where the runs recorded it;
* ``aggregates_<family>.png`` / ``aggregates.csv``: IQM, median, mean and optimality gap of the
  final normalized scores, with 95% stratified bootstrap intervals, per method;
* ``sample_efficiency_<family>.png`` / ``.csv``: the IQM over tasks and runs vs env steps;
* ``reliable_performance_<family>.png`` / ``.csv``: the fraction of reliably performant runs;
* ``ablations_<family>.png`` / ``ablations.csv``: final IQM per ablation variant and batch size,
  only for runs whose experiment.json names a variant;
* ``performance_profile_<family>.png`` / ``performance_profile.csv``: the fraction of runs whose
  final normalized score exceeds tau, over a grid of tau, per method;
* ``probability_of_improvement.csv`` (and a table in summary.md): P(X > Y) of the final scores
  for every pair of methods of a family;
* ``summary.md`` and ``summary.csv``: per-task final results, aggregates, the runs used and
  skipped, the command line and the date.

A family is a benchmark (DM Control or ManiSkill3); aggregates are never pooled across the two,
as the paper reports them separately. `--stats` picks how scores are aggregated (see
`reppo.analysis.stats`): "rliable" reproduces the rliable package's numbers and is the default
(`auto`) for reports of the paper's suites, "weighted" weighs every task equally whatever its
run count. docs/report.md defines every quantity.

The parts: `model` (the result types, shared constants) <- `build` (computing) and `tables`,
`summary`, `figures` (writing).
"""
