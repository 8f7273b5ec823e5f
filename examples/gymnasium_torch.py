"""Train REPPO's torch backend on a Gymnasium environment.

Any `gymnasium.Env` with Box spaces works: register a factory that builds one env, and reppo
batches it, rescales its actions from [-1, 1] to the action space's bounds, and handles
terminations, truncations and final observations. Ids of Gymnasium's registry need no
registration at all: `reppo.preset("cpu", env="HalfCheetah-v5", backend="torch")`, or
`reppo train --backend torch --env HalfCheetah-v5`.

Here: Pendulum-v1 (actions in [-2, 2], rewards in [-16.3, 0] per step, 200-step episodes).
REPPO_EXAMPLE_STEPS=N sets the budget (default 65,536 env steps, about a minute on a CPU,
which take the return from about -1300 to better than -400).
"""

import os

import gymnasium as gym

import reppo


def make_pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


reppo.register_env(
    "MyPendulum", make_pendulum, episode_length=200, reward_range=(-16.3, 0.0), backend="torch"
)
steps = int(os.environ.get("REPPO_EXAMPLE_STEPS", "65536"))
config = reppo.preset("cpu", env="MyPendulum", backend="torch", total_steps=steps,
                      eval_episodes=16)
result = reppo.train(config, echo=print)
print(f"MyPendulum: evaluation return {result.eval_return_mean:.1f} after "
      f"{result.env_steps:,} env steps")
env = make_pendulum()
obs, _ = env.reset(seed=0)
print("action for the first observation:", result.policy(obs))
