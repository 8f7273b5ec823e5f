"""Train REPPO on your own JAX environment: the point mass of point_mass_env.py.

Importing point_mass_env registers "PointMass2D"; from then on it is a task like any other.
100k env steps take about a minute on a CPU and bring the return (100 at most) from about 26,
what a policy that does not move scores, to over 85. REPPO_EXAMPLE_STEPS=N sets the budget.
"""

import os

import numpy as np
import point_mass_env  # noqa: F401  (registers PointMass2D)

import reppo

steps = int(os.environ.get("REPPO_EXAMPLE_STEPS", "100000"))
config = reppo.preset("cpu", env="PointMass2D", total_steps=steps, eval_episodes=64)
result = reppo.train(config, echo=print)
print(f"PointMass2D: evaluation return {result.eval_return_mean:.1f} after "
      f"{result.env_steps:,} env steps")
print("action at (0.5, -0.5), at rest:", result.policy(np.array([0.5, -0.5, 0.0, 0.0])))
