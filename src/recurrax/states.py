"""Initial states at the public boundary: the structure, shapes and dtypes a cell's state must
have, and the dtype of a run (:func:`resolve_initial_state`); used by every runner."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .cells.base import cell_dtype, zero_state_of
from .cells.checks import check_float_dtype, is_size_leaf, size_to_str
from .cells.shapes import size_shape

__all__ = ["resolve_initial_state", "same_structure"]


def _plain(tree):
    """Structure with namedtuples turned into plain tuples, for lenient comparison."""
    if isinstance(tree, tuple):
        return tuple(_plain(x) for x in tree)
    if isinstance(tree, list):
        return [_plain(x) for x in tree]
    return tree


def same_structure(tree, treedef) -> bool:
    """Whether ``tree`` has the structure ``treedef`` describes, a namedtuple (such as an
    ``LSTMStateTuple``) and a plain tuple of the same leaves counting as alike."""
    n = treedef.num_leaves
    plain = jax.tree_util.tree_structure
    return len(jax.tree_util.tree_leaves(tree)) == n and plain(_plain(tree)) == plain(
        _plain(jax.tree_util.tree_unflatten(treedef, [0] * n))
    )


def resolve_initial_state(cell, initial_state, dtype, batch_size: int, name="initial_state"):
    """Return ``(state, dtype)``: the validated initial state and the dtype of the run.

    ``dtype`` wins when given; otherwise the ``initial_state``'s (its first floating leaf's),
    then the cell's own. Floating leaves are cast to that dtype. As in TF1, a cell's own state
    may also hold integer or boolean leaves and leaves of rank 0 (no batch axis, such as a step
    counter): a leaf where the cell's ``zero_state`` has one keeps its dtype and shape.
    """
    if dtype is not None:
        dtype = check_float_dtype(dtype, "dtype")
    if initial_state is None:
        dtype = dtype or cell_dtype(cell)
        if dtype is None:
            raise ValueError(
                f"dtype is required when {name} is not given and the cell declares no dtype: "
                "pass dtype=jnp.float32 (or an initial_state)."
            )
        state = zero_state_of(cell, batch_size, dtype)
        return jax.tree_util.tree_map(lambda x: _state_leaf(x, None, dtype), state), dtype

    expected = jax.tree_util.tree_map(
        lambda n: jax.ShapeDtypeStruct((batch_size, *size_shape(n)), jnp.float32),
        cell.state_size,
        is_leaf=is_size_leaf,
    )
    exp_leaves, exp_def = jax.tree_util.tree_flatten(expected)
    exp_shapes = [s.shape for s in exp_leaves]
    leaves = jax.tree_util.tree_leaves(initial_state)
    if not same_structure(initial_state, exp_def):
        raise ValueError(
            f"{name} must match the cell's state_size {size_to_str(cell.state_size)} in "
            f"structure; got {jax.tree_util.tree_structure(initial_state)} with "
            f"{len(leaves)} arrays. Build it with cell.zero_state(batch_size, dtype) "
            "(a plain tuple may stand for an LSTMStateTuple)."
        )
    own = _own_leaves(cell, leaves, exp_shapes, batch_size, dtype)
    layout = "batch, state size" if all(len(s) == 2 for s in exp_shapes) else "batch, *state shape"
    for k, (x, shape) in enumerate(zip(leaves, exp_shapes)):
        got = tuple(jnp.shape(x))
        if got != shape and not (own is not None and got == () and own[k].shape == ()):
            raise ValueError(
                f"{name} must have shapes {exp_shapes} ({layout}) in order; "
                f"array {k} has shape {got}, expected {shape}."
            )
    if dtype is None:
        floating = [x for x in leaves if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
        dtype = check_float_dtype(jnp.result_type((floating or leaves)[0]), f"{name} dtype")
    leaves = [_state_leaf(x, None if own is None else own[k], dtype) for k, x in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(exp_def, leaves), dtype


def _own_leaves(cell, leaves, exp_shapes, batch_size: int, dtype):
    """The leaves of the cell's own zero state (shapes and dtypes, nothing computed) when some
    of ``leaves`` is not floating or has rank 0, else ``None`` (the usual case)."""
    unusual = any(
        jnp.ndim(x) == 0 or not jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves
    )
    if not unusual:
        return None
    zero = jax.eval_shape(lambda: zero_state_of(cell, batch_size, dtype or jnp.float32))
    own = jax.tree_util.tree_leaves(zero)
    return own if len(own) == len(exp_shapes) else None


def _state_leaf(x, own, dtype):
    """One initial-state leaf for the loop: floating ones in ``dtype``; an integer or boolean
    one keeps its dtype from the cell's zero state (``own``; ``None``: the leaf is the zero
    state's), else it is cast to ``dtype``."""
    x = x if hasattr(x, "dtype") else jnp.asarray(x)
    kind = jnp.result_type(x)
    if jnp.issubdtype(kind, jnp.inexact):
        return jnp.asarray(x, dtype)
    keep = own is None or not jnp.issubdtype(own.dtype, jnp.inexact)
    return jnp.asarray(x) if keep else jnp.asarray(x, dtype)
