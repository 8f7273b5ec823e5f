"""Pytrees <-> flat {name: numpy array} maps, for framework-neutral checkpoints and env states.

Names are the pytree key paths (`actor/hidden_0/linear/kernel`), so the saved files are
readable by other tools. Loading fills a *template* pytree of the same structure (built from
the saved config) and checks every name, shape and dtype, so nothing in a checkpoint file is
ever executed or trusted for structure.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class TreeMismatchError(ValueError):
    """A flat map does not fit the template pytree."""


def _name(path: tuple[Any, ...]) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        else:
            parts.append(str(entry).strip(".[]'\""))
    return "/".join(parts)


def _is_key_array(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """{prefix + key path: numpy array} of every leaf (typed PRNG keys as their raw data)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_key_array(leaf):
            leaf = jax.random.key_data(leaf)
        flat[prefix + _name(path)] = np.asarray(leaf)
    return flat


def unflatten(template: Any, flat: dict[str, np.ndarray], prefix: str = "") -> Any:
    """Fill `template`'s structure with the arrays of `flat`, checking names, shapes, dtypes."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, ref in paths:
        name = prefix + _name(path)
        if name not in flat:
            raise TreeMismatchError(f"missing array {name!r}")
        value = flat[name]
        if _is_key_array(ref):
            expected = jax.random.key_data(ref)
            _check(name, value, expected)
            impl = jax.random.key_impl(ref)
            leaves.append(jax.random.wrap_key_data(jnp.asarray(value), impl=impl))
            continue
        _check(name, value, ref)
        leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check(name: str, value: np.ndarray, ref: Any) -> None:
    if tuple(value.shape) != tuple(ref.shape):
        raise TreeMismatchError(
            f"array {name!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        )
    if np.dtype(value.dtype) != np.dtype(ref.dtype):
        raise TreeMismatchError(f"array {name!r} has dtype {value.dtype}, expected {ref.dtype}")
