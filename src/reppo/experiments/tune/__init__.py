"""Hyperparameter searches over a suite with Optuna, resumable (`reppo tune`).

Each trial draws values of the searched config fields (`space`) with
Optuna's TPE sampler, trains the suite's tasks x K seeds with them as a small sweep
(`trial`: the same child processes, logs, resumption and `--jobs` as
`reppo sweep`), and scores the normalized IQM over tasks and seeds; a median pruner stops a
trial whose score at a rung of the budget falls below the median of the finished trials there.

Layout of `--out OUT`::

    OUT/tune.json        the search's settings (checked on every rerun) and its invocations
    OUT/study.db         the Optuna study (SQLite): every trial's values, rung scores, state
    OUT/base.json        the config every trial starts from (the preset, without per-task
                         settings), as a preset file
    OUT/trials/<NNNN>/   trial NNNN: a sweep directory (sweep.json, reppo/<task>/, logs)
    OUT/trials.csv       one row per trial: state, score, rung scores, task scores, values
    OUT/trials.md        the same, best first
    OUT/best.json        the best finished trial's config, a preset file (`--preset FILE`)

Running the same command again resumes the search: a trial that was interrupted continues
from its runs' checkpoints, and new trials are drawn until `--trials` have ended (finished,
pruned or failed); a larger `--trials` extends a search. Different settings in the same OUT are
refused, before anything is written.

The parts: `space` (the searched fields and their ranges), `trial` (one trial as a small sweep,
scored), `search` (the settings, the search directory, the study and its outputs).
"""
