"""What the static and dynamic runners share: argument checks, initial state, one masked step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._base import _is_size_leaf, cell_dtype, check_float_dtype, size_to_str
from ._lengths import mask_output, select_state, valid_mask
from ._wrappers import bind_step

__all__ = [
    "check_cell",
    "check_feature_size",
    "resolve_initial_state",
    "resolve_directions",
    "masked_step",
]


def check_cell(cell, name: str = "cell") -> None:
    """Raise ``TypeError`` unless ``cell`` follows the cell protocol."""
    missing = [a for a in ("state_size", "output_size") if not hasattr(cell, a)]
    if missing or not callable(cell):
        what = missing or ["__call__"]
        raise TypeError(
            f"{name} must be a cell: callable as cell(inputs, state) -> (output, new_state), "
            f"with state_size and output_size; got {type(cell).__name__} lacking {what}."
        )


def check_feature_size(cell, features: int, where: str, name: str = "cell") -> None:
    input_size = getattr(cell, "input_size", None)
    if input_size is not None and int(features) != int(input_size):
        raise ValueError(
            f"{where} has feature size {features} but {name}.input_size is {input_size}: "
            f"the inputs' last axis must equal the cell's input_size."
        )


def _plain(tree):
    """Structure with namedtuples turned into plain tuples, for lenient comparison."""
    if isinstance(tree, tuple):
        return tuple(_plain(x) for x in tree)
    if isinstance(tree, list):
        return [_plain(x) for x in tree]
    return tree


def resolve_initial_state(cell, initial_state, dtype, batch_size: int, name="initial_state"):
    """Return ``(state, dtype)``: the validated initial state and the dtype of the run.

    ``dtype`` wins when given; otherwise the ``initial_state``'s dtype, then the cell's own.
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
        zero = getattr(cell, "zero_state", None)
        if zero is not None:
            return zero(batch_size, dtype), dtype
        return (
            jax.tree_util.tree_map(
                lambda n: jnp.zeros((batch_size, int(n)), dtype),
                cell.state_size,
                is_leaf=_is_size_leaf,
            ),
            dtype,
        )

    expected = jax.tree_util.tree_map(
        lambda n: jax.ShapeDtypeStruct((batch_size, int(n)), jnp.float32),
        cell.state_size,
        is_leaf=_is_size_leaf,
    )
    exp_leaves, exp_def = jax.tree_util.tree_flatten(expected)
    exp_shapes = [s.shape for s in exp_leaves]
    leaves = jax.tree_util.tree_leaves(initial_state)
    same_structure = len(leaves) == len(exp_leaves) and jax.tree_util.tree_structure(
        _plain(initial_state)
    ) == jax.tree_util.tree_structure(
        _plain(jax.tree_util.tree_unflatten(exp_def, [0] * len(exp_leaves)))
    )
    if not same_structure:
        raise ValueError(
            f"{name} must match the cell's state_size {size_to_str(cell.state_size)} in "
            f"structure; got {jax.tree_util.tree_structure(initial_state)} with "
            f"{len(leaves)} arrays. Build it with cell.zero_state(batch_size, dtype) "
            "(a plain tuple may stand for an LSTMStateTuple)."
        )
    for k, (x, shape) in enumerate(zip(leaves, exp_shapes)):
        if tuple(jnp.shape(x)) != shape:
            raise ValueError(
                f"{name} must have shapes {exp_shapes} (batch, state size) in order; "
                f"array {k} has shape {tuple(jnp.shape(x))}, expected {shape}."
            )
    if dtype is None:
        dtype = check_float_dtype(jnp.result_type(leaves[0]), f"{name} dtype")
    leaves = [jnp.asarray(x, dtype) for x in leaves]
    return jax.tree_util.tree_unflatten(exp_def, leaves), dtype


def resolve_directions(cells, initial_states, dtype, features: int, batch_size: int):
    """For the bidirectional runners: check both cells' ``input_size`` against ``features`` and
    resolve their initial states, each error naming its direction (``cell_fw``,
    ``initial_state_bw``, ...). Returns ``((state_fw, dtype_fw), (state_bw, dtype_bw))``."""
    for cell, name in zip(cells, ("cell_fw", "cell_bw")):
        check_feature_size(cell, features, "inputs", name)
    return tuple(
        resolve_initial_state(cell, init, dtype, batch_size, f"initial_state_{d}")
        for cell, init, d in zip(cells, initial_states, ("fw", "bw"))
    )


def cast_tree(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)


def masked_step(cell, x_t, state, t, sequence_length, dtype) -> tuple[Any, Any]:
    """One step of the TF1 contract: call the cell, then zero outputs / copy state past lengths."""
    out, new_state = bind_step(cell, t)(x_t, state)
    out, new_state = cast_tree(out, dtype), cast_tree(new_state, dtype)
    if sequence_length is not None:
        valid = valid_mask(t, sequence_length)
        out = mask_output(valid, out)
        new_state = select_state(valid, new_state, state)
    return out, new_state
