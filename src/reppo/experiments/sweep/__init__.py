"""Sweeps: every task (x variant) of a suite x K seeds, one child process per run, resumably.

Each run is a child process (`python -m reppo.cli train ...`, or the baseline module), so
runs are isolated from each other: one that crashes, leaks memory or holds a GPU does not take
the others with it. The children's output is echoed with a `[method task seed]` prefix and
appended to a log file beside the run directory.

Layout of `--out OUT`::

    OUT/sweep.json                     the sweep's settings and every invocation of it
    OUT/<method>/<task>/               REPPO (JAX): one run dir holding all K seeds
    OUT/<method>/<task>.log            ... and its output, appended by every attempt
    OUT/<method>/<task>/seed<i>/       REPPO (torch) and the baselines: one run dir per seed
    OUT/<method>/<task>/seed<i>.log

Every run dir also gets an `experiment.json` ({"suite", "method", "task", "algo", "variant",
...}) that `reppo report` groups runs by. Running the same command again resumes the sweep:
finished runs are skipped, interrupted REPPO runs continue from their latest checkpoint
(`reppo train --resume`), and runs that cannot continue (baselines, or a REPPO run that
stopped before its first checkpoint) are moved aside to `<dir>.partial-<time>` and started
again. Different settings in the same OUT are refused; nothing is ever deleted.

With `--launcher slurm` the same runs go to a SLURM cluster as one job array through submitit
(`reppo.experiments.sweep.slurm`), with the same commands, logs and resumption rules.

The parts: `settings` (what a sweep is, resolved from its arguments) <- `plan` (the planned
runs and the state of their directories) <- `outdir` (sweep.json and the lock) <- `execute`
(child processes, the local launcher) and `slurm` (the SLURM launcher).
"""
