"""Train REPPO on CartpoleBalance from Python, then act with the trained policy.

The budget is tiny (65,536 env steps) so that this runs in about a minute on a CPU; the pole
is not balanced yet. For a real run drop `total_steps=` (the cpu preset's 507,904 steps
balance it; `reppo.preset("paper", env=...)` on a GPU) and pass a `run_dir` to keep the run.
REPPO_EXAMPLE_STEPS=N sets the budget (the tests use 8192, one iteration).
`python examples/train_and_predict.py torch` does the same with the PyTorch backend.
"""

import os
import sys

import numpy as np

import reppo

backend = sys.argv[1] if len(sys.argv) > 1 else "jax"
steps = int(os.environ.get("REPPO_EXAMPLE_STEPS", "65536"))
config = reppo.preset("cpu", env="CartpoleBalance", backend=backend, total_steps=steps)
result = reppo.train(config, echo=print)  # no run_dir: in memory, nothing is left on disk
print(f"evaluation return {result.eval_return_mean:.1f} after {result.env_steps:,} env steps")

policy = result.policy
obs = np.zeros(policy.obs_size, np.float32)
print("one observation -> action", policy(obs))
batch = np.random.default_rng(0).normal(size=(4, policy.obs_size)).astype(np.float32)
print("a batch -> actions", policy(batch).tolist())
print("sampled", policy(batch, deterministic=False, seed=0).tolist())
