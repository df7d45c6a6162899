"""The checks of the public boundary: the runners call these once per call, nothing below them
checks again."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .cells.checks import is_size_leaf, size_to_str
from .cells.shapes import TensorShape, size_shape
from .cells.wrappers import MultiRNNCell
from .states import resolve_initial_state, same_structure

__all__ = [
    "NestFeatures",
    "cast_inputs",
    "check_sequence_inputs",
    "check_step_inputs",
    "check_parallel_iterations",
    "check_feature_size",
    "is_nest",
    "resolve_directions",
    "takes_integer_inputs",
    "takes_nested_inputs",
    "takes_shaped_inputs",
]


def takes_integer_inputs(cell) -> bool:
    """Whether ``cell`` reads integer inputs (ids) that the runners pass through uncast: its
    class sets ``integer_inputs = True`` (an ``EmbeddingWrapper`` does), or it is a
    ``MultiRNNCell`` whose first layer does."""
    if type(cell) is MultiRNNCell:
        return takes_integer_inputs(cell.cells[0])
    return bool(getattr(cell, "integer_inputs", False))


def takes_shaped_inputs(*cells) -> bool:
    """Whether every one of ``cells`` may read inputs with several feature axes
    (``[batch, time, *shape]``; TF1's runners take any rank): a cell whose ``input_size`` is a
    :class:`~recurrax.TensorShape` or that declares none. A cell with an int ``input_size``
    reads ``[batch, time, input_size]`` only."""
    for cell in cells:
        input_size = getattr(cell, "input_size", None)
        if input_size is not None and not isinstance(input_size, TensorShape):
            return False
    return True


def is_nest(inputs) -> bool:
    """Whether ``inputs`` is a nest of arrays (a tuple, namedtuple, list or dict) rather than
    one array."""
    return isinstance(inputs, (tuple, list, dict))


def takes_nested_inputs(cell) -> bool:
    """Whether ``cell`` may read a nest of inputs (TF1's runners pass a cell the nest, step by
    step): a cell that declares no ``input_size``, or a nest of sizes. A cell with an int or
    :class:`~recurrax.TensorShape` ``input_size`` (every built-in cell) reads one array."""
    if takes_integer_inputs(cell):
        return False
    input_size = getattr(cell, "input_size", None)
    return input_size is None or not is_size_leaf(input_size)


class NestFeatures:
    """The feature axes of each leaf of a nest of inputs (for :func:`check_feature_size`):
    ``paths`` the leaves' key paths, ``shapes`` their axes after batch (and time), ``tree`` the
    structure."""

    def __init__(self, inputs, shapes):
        paths_leaves, self.tree = jax.tree_util.tree_flatten_with_path(inputs)
        self.paths = [jax.tree_util.keystr(p) for p, _ in paths_leaves]
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]


def _refuse_nest(inputs, cells: dict, name: str, one: str, hint: str) -> None:
    """A ``TypeError`` when a cell of ``cells`` reads one array and ``inputs`` is a nest."""
    for cell_name, cell in cells.items():
        if not takes_nested_inputs(cell):
            leaves = len(jax.tree_util.tree_leaves(inputs))
            takes = (
                "integer ids (integer_inputs=True)"
                if takes_integer_inputs(cell)
                else f"one array (its input_size is {getattr(cell, 'input_size', None)})"
            )
            raise TypeError(
                f"{name} must be one array of shape {one}; got a {type(inputs).__name__} of "
                f"{len(inputs)} items ({leaves} arrays): {cell_name} ({type(cell).__name__}) "
                f"reads {takes}. A nest of inputs needs a cell that reads one (input_size None "
                f"or a nest of sizes).{hint}"
            )


def cast_inputs(cell, inputs, dtype, name: str = "cell", where: str = "inputs"):
    """The inputs ``cell`` runs on: cast to ``dtype``, or, for a cell that
    :func:`takes_integer_inputs`, left intact (their dtype must then be an integer one)."""
    if not takes_integer_inputs(cell):
        return jax.tree_util.tree_map(lambda x: x.astype(dtype), inputs)
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


def check_feature_size(cell, features, where: str, name: str = "cell") -> None:
    """``features`` (an int, or the tuple of feature axes of inputs with several) against
    ``cell.input_size`` when the cell declares one (not for a cell that
    :func:`takes_integer_inputs`: its ids are not features)."""
    if takes_integer_inputs(cell):
        return
    input_size = getattr(cell, "input_size", None)
    if input_size is None:
        return
    if isinstance(features, NestFeatures) or not is_size_leaf(input_size):
        _check_nest_features(input_size, features, where, name)
        return
    if isinstance(input_size, TensorShape) or not isinstance(features, (int, np.integer)):
        got = tuple(features) if isinstance(features, tuple) else (int(features),)
        if got != size_shape(input_size):
            raise ValueError(
                f"{where} has feature shape {got} but {name}.input_size is {input_size}: the "
                "inputs' axes after the batch (and time) axes must equal the cell's input_size."
            )
        return
    if int(features) != int(input_size):
        raise ValueError(
            f"{where} has feature size {features} but {name}.input_size is {input_size}: "
            f"the inputs' last axis must equal the cell's input_size."
        )


def _check_nest_features(input_size, features, where: str, name: str) -> None:
    """A nest of inputs against a cell's nest of sizes ``input_size`` (an int ``n``: feature
    axes ``(n,)``; a :class:`~recurrax.TensorShape`: its dimensions)."""
    sizes, size_tree = jax.tree_util.tree_flatten(input_size, is_leaf=is_size_leaf)
    if not isinstance(features, NestFeatures):
        raise ValueError(
            f"{where} must be a nest of arrays matching {name}.input_size "
            f"{size_to_str(input_size)}; got one array."
        )
    if len(sizes) != len(features.shapes) or not same_structure(
        jax.tree_util.tree_unflatten(features.tree, [0] * len(sizes)), size_tree
    ):
        raise ValueError(
            f"{where} must match {name}.input_size {size_to_str(input_size)} in structure; "
            f"got {features.tree}."
        )
    for path, got, size in zip(features.paths, features.shapes, sizes):
        if got != size_shape(size):
            raise ValueError(
                f"{where}{path} has feature shape {got} but {name}.input_size{path} is "
                f"{size}: each input's axes after the batch (and time) axes must equal its "
                "size in the cell's input_size."
            )


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


def check_sequence_inputs(inputs, time_major: bool, cells: dict, name: str = "inputs"):
    """Return ``(inputs, batch, time, features)`` or raise a clear error. ``time`` may be 0
    (TF1's ``dynamic_rnn`` accepts it: no steps, the initial state). ``cells`` maps each cell's
    name (``"cell"``, ``"cell_fw"``, ...) to the cell.

    When every cell :func:`takes_shaped_inputs`, the inputs may have more than one feature
    axis, ``[batch, time, *shape]``; ``features`` is then the tuple ``shape`` for a rank above 3
    (an int for rank 3). When every cell :func:`takes_nested_inputs`, ``inputs`` may be a nest
    (tuple, namedtuple, list, dict) of such arrays, all with the same batch and time axes (TF1's
    ``nest.flatten(inputs)``); ``features`` is then a :class:`NestFeatures`."""
    shaped = takes_shaped_inputs(*cells.values())
    if is_nest(inputs):
        one = "[time, batch, input_size]" if time_major else "[batch, time, input_size]"
        hint = (
            " For a list of per-step arrays use static_rnn, or stack them with "
            "jnp.stack(steps, axis=1)."
            if isinstance(inputs, list)
            else ""
        )
        _refuse_nest(inputs, cells, name, one, hint)
        return _check_nested_sequence(inputs, time_major, name, hint)
    if not hasattr(inputs, "ndim"):
        try:
            inputs = jnp.asarray(inputs)
        except TypeError as e:
            raise TypeError(f"{name} must be an array; got {type(inputs).__name__}.") from e
    layout = "[time, batch, input_size]" if time_major else "[batch, time, input_size]"
    if shaped and inputs.ndim < 3:
        layout = "[time, batch, *input_shape]" if time_major else "[batch, time, *input_shape]"
        raise ValueError(
            f"{name} must have rank 3 or more, {layout}; got shape {tuple(inputs.shape)}."
        )
    if not shaped and inputs.ndim != 3:
        raise ValueError(f"{name} must have rank 3, {layout}; got shape {tuple(inputs.shape)}.")
    if time_major:
        time, batch, *feature_axes = inputs.shape
    else:
        batch, time, *feature_axes = inputs.shape
    features = feature_axes[0] if len(feature_axes) == 1 else tuple(feature_axes)
    _check_real(inputs, name)
    return inputs, batch, time, features


def _as_array(x, where: str):
    if hasattr(x, "ndim") and hasattr(x, "dtype"):
        return x
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{where} must be an array; got {type(x).__name__}.") from e


def _check_nested_sequence(inputs, time_major: bool, name: str, hint: str):
    """:func:`check_sequence_inputs` for a nest: every leaf ``[batch, time, *shape]`` (time
    first with ``time_major``), the same batch and time for all (TF1's ``dynamic_rnn``)."""
    paths_leaves, tree = jax.tree_util.tree_flatten_with_path(inputs)
    if not paths_leaves:
        raise ValueError(
            f"{name} must hold at least one array; got an empty {type(inputs).__name__}."
        )
    layout = "[time, batch, *input_shape]" if time_major else "[batch, time, *input_shape]"
    axes = ("time", "batch") if time_major else ("batch", "time")
    leaves, first = [], None
    for path, x in paths_leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        x = _as_array(x, where)
        if x.ndim < 3:
            raise ValueError(
                f"{where} must have rank 3 or more, {layout} (every array of a nest of inputs "
                f"holds the whole sequence); got shape {tuple(x.shape)}.{hint}"
            )
        _check_real(x, where)
        if first is None:
            first = (where, x.shape)
        for k in range(2):
            if x.shape[k] != first[1][k]:
                raise ValueError(
                    f"every array of {name} must have the same {axes[k]} axis (axis {k}, "
                    f"{layout}): {first[0]} has {axes[k]} {first[1][k]} but {where} has "
                    f"{x.shape[k]} (shape {tuple(x.shape)})."
                )
        leaves.append(x)
    time, batch = first[1][:2] if time_major else first[1][1::-1]
    features = NestFeatures(inputs, [x.shape[2:] for x in leaves])
    return jax.tree_util.tree_unflatten(tree, leaves), batch, time, features


def check_parallel_iterations(parallel_iterations) -> None:
    if parallel_iterations is not None and (
        isinstance(parallel_iterations, bool)
        or not isinstance(parallel_iterations, int)
        or parallel_iterations < 1
    ):
        raise ValueError(
            f"parallel_iterations must be a positive int or None; got {parallel_iterations!r}."
        )


def check_step_inputs(inputs, cells: dict, name: str = "inputs"):
    """Return ``(list of [B, I] arrays, B, I)`` or raise a clear error; ``cells`` maps each
    cell's name to the cell. When every cell :func:`takes_shaped_inputs` a step may be
    ``[B, *shape]``, and ``I`` is then the tuple ``shape`` for a rank above 2. When every cell
    :func:`takes_nested_inputs` a step may be a nest of such arrays (the same nest at every
    step, one batch for all); ``I`` is then a :class:`NestFeatures`."""
    shaped = takes_shaped_inputs(*cells.values())
    if hasattr(inputs, "ndim") or not isinstance(inputs, Sequence):
        got = f"an array of shape {tuple(inputs.shape)}" if hasattr(inputs, "shape") else None
        raise TypeError(
            f"{name} must be a list of [batch, input_size] arrays, one per time step; got "
            f"{got or type(inputs).__name__}. For a [batch, time, input_size] array use "
            "dynamic_rnn, or split it with list(jnp.moveaxis(x, 1, 0))."
        )
    if len(inputs) == 0:
        raise ValueError(f"{name} must hold at least one time step; got an empty list.")
    if is_nest(inputs[0]):
        _refuse_nest(inputs[0], cells, f"{name}[0]", "[batch, input_size]", "")
        return _check_nested_steps(inputs, name)
    xs = [x if hasattr(x, "ndim") else jnp.asarray(x) for x in inputs]
    for t, x in enumerate(xs):
        _check_real(x, f"{name}[{t}]")
        if shaped and x.ndim < 2:
            raise ValueError(
                f"{name}[{t}] must have shape [batch, *input_shape] (rank 2 or more); "
                f"got shape {tuple(x.shape)}."
            )
        if not shaped and x.ndim != 2:
            raise ValueError(
                f"{name}[{t}] must have shape [batch, input_size] (rank 2); "
                f"got shape {tuple(x.shape)}."
            )
    first = tuple(xs[0].shape)
    for t, x in enumerate(xs[1:], start=1):
        if tuple(x.shape) != first:
            raise ValueError(
                f"every step of {name} must have the same shape [batch, input_size]; "
                f"{name}[0] has {first} but {name}[{t}] has {tuple(x.shape)}."
            )
    batch, *feature_axes = first
    features = feature_axes[0] if len(feature_axes) == 1 else tuple(feature_axes)
    return xs, batch, features


def _check_nested_steps(inputs, name: str):
    """:func:`check_step_inputs` for steps that are nests: the nest of step 0 at every step,
    each leaf ``[batch, *shape]`` with one batch for all and the same shape at every step (TF1's
    ``static_rnn`` merges the batch of every leaf)."""
    paths_leaves, tree = jax.tree_util.tree_flatten_with_path(inputs[0])
    if not paths_leaves:
        raise ValueError(
            f"{name}[0] must hold at least one array; got an empty {type(inputs[0]).__name__}."
        )
    paths = [jax.tree_util.keystr(p) for p, _ in paths_leaves]
    first_shapes = None
    steps = []
    for t, step in enumerate(inputs):
        leaves, step_tree = jax.tree_util.tree_flatten(step)
        if step_tree != tree:
            raise ValueError(
                f"every step of {name} must be the same nest of arrays; {name}[0] is {tree} "
                f"but {name}[{t}] is {step_tree}."
            )
        leaves = [_as_array(x, f"{name}[{t}]{p}") for x, p in zip(leaves, paths)]
        for x, p in zip(leaves, paths):
            where = f"{name}[{t}]{p}"
            _check_real(x, where)
            if x.ndim < 2:
                raise ValueError(
                    f"{where} must have shape [batch, *input_shape] (rank 2 or more); got "
                    f"shape {tuple(x.shape)}."
                )
            if x.shape[0] != leaves[0].shape[0]:
                raise ValueError(
                    f"every array of {name}[{t}] must have the same batch axis (axis 0): "
                    f"{name}[{t}]{paths[0]} has batch {leaves[0].shape[0]} but {where} has "
                    f"{x.shape[0]} (shape {tuple(x.shape)})."
                )
        shapes = [tuple(x.shape) for x in leaves]
        if first_shapes is None:
            first_shapes = shapes
        for p, got, want in zip(paths, shapes, first_shapes):
            if got != want:
                raise ValueError(
                    f"every step of {name} must have the same shapes; {name}[0]{p} has {want} "
                    f"but {name}[{t}]{p} has {got}."
                )
        steps.append(jax.tree_util.tree_unflatten(tree, leaves))
    features = NestFeatures(inputs[0], [shape[1:] for shape in first_shapes])
    return steps, first_shapes[0][0], features
