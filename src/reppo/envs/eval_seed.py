"""Which episodes an evaluation runs: one function for every evaluator (the backends name it
through their seam, `reppo.loop.seam`). Framework-free, so that every layer may use it."""

from __future__ import annotations

import hashlib

__all__ = ["eval_seed"]


def eval_seed(seed: int, env_steps: int) -> int:
    """The seed of the evaluation episodes at `env_steps` of a run with `seed`, in [0, 2**31).

    Every evaluator derives its episodes from it: REPPO's of either backend, the Brax baselines
    and `reppo eval`. JAX evaluators reset their batch of envs with
    `jax.random.PRNGKey(eval_seed(...))` (`reppo.envs.evaluation.eval_key`), and torch envs
    (Playground through DLPack, ManiSkill3, Gymnasium) with the integer, which the DLPack
    bridge turns into the same key. So evaluations at the same (seed, env_steps) start from the
    same initial states whatever the algorithm or backend, each evaluation point of a run sees
    fresh episodes, and `reppo eval` of a checkpoint replays the run's own evaluation there.
    A hash, not a JAX key stream, so that training never draws from it and torch needs no JAX.
    """
    digest = hashlib.blake2b(f"{seed}:{env_steps}".encode(), digest_size=8,
                             person=b"reppo-eval").digest()
    return int.from_bytes(digest, "little") % 2**31
