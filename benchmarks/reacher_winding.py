"""How a trained policy moves on ReacherEasy: its return, how often and how far it winds the
shoulder (the unlimited joint whose raw angle is part of the observation), and its return when
the two angle observations are wrapped into [-pi, pi] at evaluation only.

    python benchmarks/reacher_winding.py RUN_DIR [--seed-index I] [--episodes 128]
    python benchmarks/reacher_winding.py --brax-ppo-seed S --out DIR   # trains Brax PPO first

RUN_DIR is a REPPO run directory of ReacherEasy (its latest checkpoint is replayed). With
`--brax-ppo-seed`, Brax PPO (`cpu` baseline preset, 500,000 steps, one evaluation at the end)
is trained into DIR and its final policy replayed. Both replay the deterministic policy on the
same fresh episodes (MJX physics). docs/experiments.md ("How REPPO's ReacherEasy policies
move") records what it printed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

EPISODE_STEPS = 1000
FAILED_BELOW = 100.0  # an episode that never reaches the target earns (almost) nothing
SHOULDER, ELBOW, SHOULDER_VELOCITY = 0, 1, 4  # ReacherEasy's observation: qpos, to_target, qvel


def wrap_angles(obs: np.ndarray) -> np.ndarray:
    """The observations with both joint angles mapped into [-pi, pi)."""
    out = np.array(obs, dtype=np.float64, copy=True)
    out[:, [SHOULDER, ELBOW]] = (out[:, [SHOULDER, ELBOW]] + math.pi) % (2 * math.pi) - math.pi
    return out


def replay(act: Callable[[np.ndarray], np.ndarray], episodes: int, wrap: bool) -> dict[str, float]:
    """Run `act` (batched observations -> actions in [-1, 1]) for one episode per env."""
    import jax
    import jax.numpy as jnp
    from mujoco_playground import registry

    env = registry.load("ReacherEasy", config_overrides={"impl": "jax"})
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(jax.random.PRNGKey(123), episodes))
    returns = np.zeros(episodes)
    largest = np.zeros(episodes)
    speed = np.zeros(episodes)
    for _ in range(EPISODE_STEPS):
        obs = np.asarray(state.obs)
        largest = np.maximum(largest, np.abs(obs[:, SHOULDER]))
        speed += np.abs(obs[:, SHOULDER_VELOCITY]) / EPISODE_STEPS
        action = act(wrap_angles(obs) if wrap else obs)
        state = step(state, jnp.asarray(action, dtype=jnp.float32))
        returns += np.asarray(state.reward)
    return {
        "return": float(returns.mean()),
        "failed": float((returns < FAILED_BELOW).mean()),
        "ever_past_pi": float((largest > math.pi).mean()),
        "largest_shoulder_median": float(np.median(largest)),
        "largest_shoulder_p90": float(np.percentile(largest, 90)),
        "shoulder_speed": float(speed.mean()),
    }


def _reppo_policy(run_dir: Path, seed_index: int) -> Callable[[np.ndarray], np.ndarray]:
    import reppo

    return reppo.load_policy(run_dir, seed_index=seed_index)


def _brax_ppo_policy(seed: int, out: Path) -> Callable[[np.ndarray], np.ndarray]:
    import jax
    import jax.numpy as jnp

    from reppo.experiments.baselines.run import train_baseline

    result = train_baseline(
        "brax-ppo", "ReacherEasy", seed, 500_000, out, preset="cpu", eval_interval_steps=0,
        eval_episodes=128,
    )
    policy = result.policy_factory(result.params)
    key = jax.random.PRNGKey(0)  # unused by a deterministic policy
    return lambda obs: np.asarray(policy(jnp.asarray(obs), key)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a REPPO run of ReacherEasy")
    parser.add_argument("--seed-index", type=int, default=0, help="which seed of the run")
    parser.add_argument("--brax-ppo-seed", type=int, help="train Brax PPO with this seed instead")
    parser.add_argument("--out", type=Path, help="the new run directory of the Brax PPO run")
    parser.add_argument("--episodes", type=int, default=128)
    args = parser.parse_args()
    if (args.run_dir is None) == (args.brax_ppo_seed is None):
        parser.error("give either RUN_DIR or --brax-ppo-seed (with --out)")
    if args.brax_ppo_seed is not None:
        if args.out is None:
            parser.error("--brax-ppo-seed needs --out DIR, a new directory for the Brax run")
        act, label = _brax_ppo_policy(args.brax_ppo_seed, args.out), "Brax PPO"
    else:
        act, label = _reppo_policy(args.run_dir, args.seed_index), f"REPPO {args.run_dir}"
    for wrap in (False, True):
        r = replay(act, args.episodes, wrap)
        print(
            f"{label}, angles {'wrapped' if wrap else 'as observed'}: return {r['return']:.1f}, "
            f"failed {r['failed']:.0%}, ever past +-pi {r['ever_past_pi']:.0%}, largest "
            f"|shoulder| median {r['largest_shoulder_median']:.1f} / p90 "
            f"{r['largest_shoulder_p90']:.1f} rad, mean |shoulder velocity| "
            f"{r['shoulder_speed']:.2f} rad/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
