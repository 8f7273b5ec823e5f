"""Load a saved run and step its policy in a plain loop over a MuJoCo Playground env.

    reppo train --run-dir runs/cartpole          # or reppo.train(config, "runs/cartpole")
    python examples/load_and_step.py runs/cartpole [--steps 1000] [--seed 0]

`--steps` bounds the loop (one DM Control episode is 1000 steps; the tests use 20).
"""

import argparse

import jax
import numpy as np
from mujoco_playground import registry

import reppo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir", help="a run directory written by `reppo train`")
parser.add_argument("--steps", type=int, default=1000, help="steps to run at most")
parser.add_argument("--seed", type=int, default=0, help="seed of the env's reset")
args = parser.parse_args()

policy = reppo.load_policy(args.run_dir)  # the latest checkpoint, normalization included
env = registry.load(policy.config.env, config_overrides={"impl": "jax"})  # MJX, as reppo
reset, step = jax.jit(env.reset), jax.jit(env.step)

state = reset(jax.random.PRNGKey(args.seed))
episode_return, steps = 0.0, 0
while steps < args.steps and not state.done:
    action = policy(np.asarray(state.obs))  # (obs_size,) -> (action_size,), in [-1, 1]
    state = step(state, action)
    episode_return += float(state.reward)
    steps += 1
print(f"{policy.config.env}: return {episode_return:.1f} over {steps} steps "
      f"(policy of {policy.env_steps:,} env steps)")
