"""The baselines (Brax PPO, Brax SAC, FastTD3, ManiSkill's PPO) that write REPPO's run-directory
format.

FastTD3 is implemented here (`fasttd3/`), ManiSkill's PPO runs rsl-rl-lib's PPO on ManiSkill3
tasks (`maniskill_ppo/`; docs/baselines.md for both); the rest of this docstring is about the
Brax ones.

The baselines are Brax's own trainers (`brax.training.agents.ppo.train`,
`brax.training.agents.sac.train`) with MuJoCo Playground's tuned per-task hyperparameters, on
the same Playground DM Control tasks with the same settings as REPPO runs (MJX physics, the
task's 1000-step episodes, no action repeat). What makes them comparable with REPPO is the
evaluation: at every evaluation point the current Brax policy is evaluated with this project's
protocol (`reppo.envs.evaluation.evaluate`: deterministic actions, `eval_episodes` fresh
episodes in parallel, undiscounted return of each env's first episode) on a
`reppo.envs.registry.make_env` batch, and the result is logged exactly as REPPO logs its own.
Brax's evaluation is not run (see `brax.compat.capture_evaluations`).

Run directory (see `reppo.runs`): `config.json` with `algo`, `env`, `seed`, `num_seeds` (1),
`total_steps`, `eval_episodes`, `eval_interval_steps`, `preset`, `hyperparameters` (the
preset's values after overrides) and `schedule` (how the budget is cut into evaluation
periods, including the `num_evals` and `num_resets_per_eval` actually given to Brax);
`versions.json`; `metrics.jsonl` with one record per evaluation point (`env_steps`,
`wall_time`, `sps`, `eval/*`, and Brax's training metrics under `brax/`). The last record has
`env_steps >= total_steps` and `"final": true`. Brax cannot resume a run from these files: an
interrupted run directory is incomplete for good and must be run again from scratch.

Usage: `reppo baseline --algo brax-ppo --env CartpoleBalance --seed 0 --steps 100000 --run-dir
runs/ppo-cartpole --preset cpu` (or `python -m reppo.experiments.baselines` with the same flags);
from Python, `train_baseline` and `run_baseline`. docs/baselines.md has the details.

The parts: `registry` (every baseline in one place: name, title, task family, presets, and
the module that implements it, which offers `resolve_hyperparameters` and `train`),
`hyperparameters` (the checks of a run's inputs, dispatching to the module), `iterations` (the
one planner of evaluation periods), `evaluation` (the protocol, the recorder) <- `run` (one run,
any baseline) <- `brax/` (Brax PPO and SAC: hyperparameters, schedule as Brax's arguments,
run, what Brax needs from JAX), `fasttd3/`, `maniskill_ppo/`. Nothing heavy is imported at
module level (JAX, Brax, Playground and torch load when a run starts).
"""
from __future__ import annotations

from reppo.lazy import lazy_names

# The calls users make, loaded on first use: `reppo.experiments.suites` imports the list of
# baselines from `hyperparameters`, and the runner imports the suites back.
_PUBLIC = {
    "BASELINES": "reppo.experiments.baselines.hyperparameters",
    "BaselineResult": "reppo.experiments.baselines.evaluation",
    "run_baseline": "reppo.experiments.baselines.run",
    "train_baseline": "reppo.experiments.baselines.run",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC, globals())
