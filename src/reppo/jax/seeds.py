"""Several seeds of one program: the seed axis leads every argument and output."""

from __future__ import annotations

from collections.abc import Callable

import jax

from reppo.envs.autoreset import SEED_AXIS


def over_seeds(fn: Callable, num_seeds: int, batching: str) -> Callable:
    """`fn` applied to every seed of arguments with a leading seed axis (outputs stacked):
    vmapped ("vmap", one program over all seeds) or one seed after another ("map")."""
    if num_seeds == 1:
        def single(*args):
            out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
            return jax.tree_util.tree_map(lambda x: x[None], out)

        return single
    if batching == "vmap":
        return jax.vmap(fn, axis_name=SEED_AXIS)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)
