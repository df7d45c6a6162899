"""The checks of the public boundary: the runners call these once per call, nothing below them
checks again."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .cells.base import cell_dtype, zero_state_of
from .cells.checks import check_float_dtype, is_size_leaf, size_to_str
from .cells.wrappers import MultiRNNCell

__all__ = [
    "cast_inputs",
    "check_sequence_inputs",
    "check_step_inputs",
    "check_parallel_iterations",
    "check_feature_size",
    "resolve_initial_state",
    "resolve_directions",
    "takes_integer_inputs",
]


def takes_integer_inputs(cell) -> bool:
    """Whether ``cell`` reads integer inputs (ids) that the runners pass through uncast: its
    class sets ``integer_inputs = True`` (an ``EmbeddingWrapper`` does), or it is a
    ``MultiRNNCell`` whose first layer does."""
    if type(cell) is MultiRNNCell:
        return takes_integer_inputs(cell.cells[0])
    return bool(getattr(cell, "integer_inputs", False))


def cast_inputs(cell, inputs, dtype, name: str = "cell", where: str = "inputs"):
    """The inputs ``cell`` runs on: cast to ``dtype``, or, for a cell that
    :func:`takes_integer_inputs`, left intact (their dtype must then be an integer one)."""
    if not takes_integer_inputs(cell):
        return inputs.astype(dtype)
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
        raise TypeError(
            f"{name} ({type(cell).__name__}) takes integer inputs (ids: its integer_inputs is "
            f"True), so {where} must have an integer dtype; got {inputs.dtype}. Pass the ids "
            "as an int array, e.g. x.astype(jnp.int32)."
        )
    return inputs


def _check_real(x, where: str) -> None:
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{where} must be real (a floating or integer dtype, cast to dtype); got "
            f"{x.dtype}. Pass jnp.real(x), or the real and imaginary parts as separate features."
        )


def check_feature_size(cell, features: int, where: str, name: str = "cell") -> None:
    """``features`` against ``cell.input_size`` when the cell declares one (not for a cell that
    :func:`takes_integer_inputs`: its ids are not features)."""
    if takes_integer_inputs(cell):
        return
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
        return zero_state_of(cell, batch_size, dtype), dtype

    expected = jax.tree_util.tree_map(
        lambda n: jax.ShapeDtypeStruct((batch_size, int(n)), jnp.float32),
        cell.state_size,
        is_leaf=is_size_leaf,
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


def check_sequence_inputs(inputs, time_major: bool, name: str = "inputs"):
    """Return ``(inputs as an array, batch, time, features)`` or raise a clear error. ``time``
    may be 0 (TF1's ``dynamic_rnn`` accepts it: no steps, the initial state)."""
    if isinstance(inputs, (list, tuple)):
        raise TypeError(
            f"{name} must be one array of shape "
            f"{'[time, batch, input_size]' if time_major else '[batch, time, input_size]'}; "
            f"got a {type(inputs).__name__} of {len(inputs)} items. For a list of per-step "
            "arrays use static_rnn, or stack them with jnp.stack(steps, axis=1)."
        )
    if not hasattr(inputs, "ndim"):
        try:
            inputs = jnp.asarray(inputs)
        except TypeError as e:
            raise TypeError(f"{name} must be an array; got {type(inputs).__name__}.") from e
    layout = "[time, batch, input_size]" if time_major else "[batch, time, input_size]"
    if inputs.ndim != 3:
        raise ValueError(f"{name} must have rank 3, {layout}; got shape {tuple(inputs.shape)}.")
    if time_major:
        time, batch, features = inputs.shape
    else:
        batch, time, features = inputs.shape
    _check_real(inputs, name)
    return inputs, batch, time, features


def check_parallel_iterations(parallel_iterations) -> None:
    if parallel_iterations is not None and (
        isinstance(parallel_iterations, bool)
        or not isinstance(parallel_iterations, int)
        or parallel_iterations < 1
    ):
        raise ValueError(
            f"parallel_iterations must be a positive int or None; got {parallel_iterations!r}."
        )


def check_step_inputs(inputs, name: str = "inputs"):
    """Return ``(list of [B, I] arrays, B, I)`` or raise a clear error."""
    if hasattr(inputs, "ndim") or not isinstance(inputs, Sequence):
        got = f"an array of shape {tuple(inputs.shape)}" if hasattr(inputs, "shape") else None
        raise TypeError(
            f"{name} must be a list of [batch, input_size] arrays, one per time step; got "
            f"{got or type(inputs).__name__}. For a [batch, time, input_size] array use "
            "dynamic_rnn, or split it with list(jnp.moveaxis(x, 1, 0))."
        )
    if len(inputs) == 0:
        raise ValueError(f"{name} must hold at least one time step; got an empty list.")
    xs = [x if hasattr(x, "ndim") else jnp.asarray(x) for x in inputs]
    for t, x in enumerate(xs):
        _check_real(x, f"{name}[{t}]")
        if x.ndim != 2:
            raise ValueError(
                f"{name}[{t}] must have shape [batch, input_size] (rank 2); "
                f"got shape {tuple(x.shape)}."
            )
    batch, features = xs[0].shape
    for t, x in enumerate(xs[1:], start=1):
        if x.shape != (batch, features):
            raise ValueError(
                f"every step of {name} must have the same shape [batch, input_size]; "
                f"{name}[0] has {(batch, features)} but {name}[{t}] has {tuple(x.shape)}."
            )
    return xs, batch, features
