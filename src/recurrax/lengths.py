"""``sequence_length``: its checks, the masks, one masked step, and ``reverse_sequence``.

TF1's contract, per batch row ``b`` and step ``t``: steps ``t >= sequence_length[b]`` output zeros
and carry the state of step ``sequence_length[b] - 1`` through unchanged (the initial state when
the length is 0). The backward direction of a bidirectional run reverses each row within its own
length (``tf.reverse_sequence``), so padding stays at the end.

Padding may hold anything: the inputs at steps ``t >= sequence_length[b]`` are replaced by zeros
before the cell sees them, so that NaN or inf there reaches no output, state or gradient (a cell
run on NaN would give NaN local derivatives, and ``0 * NaN`` is NaN in the weight gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .cells.base import bind_step
from .cells.checks import is_traced
from .states import same_structure

__all__ = [
    "check_sequence_length",
    "clip_lengths",
    "reverse_sequence",
    "reverse_rows",
    "select_state",
    "mask_output",
    "masked_step",
    "conform_state",
    "zero_padding",
]


def _check_length_type(sequence_length, batch_size: int):
    """``sequence_length`` as an array of integer dtype and shape ``[batch_size]``, or an error."""
    if not hasattr(sequence_length, "dtype"):
        try:
            sequence_length = np.asarray(sequence_length)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"sequence_length must be an integer array of shape [batch={batch_size}]; "
                f"got {type(sequence_length).__name__}."
            ) from e
    dt = jnp.dtype(sequence_length.dtype)
    if not jnp.issubdtype(dt, jnp.integer):
        raise TypeError(
            f"sequence_length must have an integer dtype (int32 or int64); got {dt}. "
            "Lengths count time steps: cast them with .astype(int)."
        )
    if tuple(sequence_length.shape) != (batch_size,):
        raise ValueError(
            f"sequence_length must have shape [batch]=({batch_size},); "
            f"got {tuple(sequence_length.shape)}."
        )
    return sequence_length


def clip_lengths(sequence_length, max_time: int):
    """Integer lengths clipped to ``[0, max_time]`` in their own dtype, then cast to int32.

    Clipping first keeps every dtype exact: a uint32 ``2**32 - 1`` or an int64 above ``2**31``
    acts as ``max_time`` (a cast first would wrap it to a small or negative int32).
    """
    n = jnp.asarray(sequence_length)
    top = min(max_time, int(jnp.iinfo(n.dtype).max))
    return jnp.clip(n, 0, top).astype(jnp.int32)


def check_sequence_length(sequence_length, batch_size: int, max_time: int):
    """Validate ``sequence_length`` and return it as an int32 ``[batch]`` array (or ``None``).

    Shapes and dtypes are always checked; any integer dtype is accepted. Values
    (``0 <= length <= max_time``) are checked when they are concrete; under ``jax.jit`` they are
    traced and cannot be checked, and then a length above ``max_time`` acts as ``max_time`` and a
    negative one as 0 (:func:`clip_lengths`).
    """
    if sequence_length is None:
        return None
    sequence_length = _check_length_type(sequence_length, batch_size)
    if not is_traced(sequence_length):
        values = np.asarray(sequence_length)
        bad = np.nonzero((values < 0) | (values > max_time))[0]
        if bad.size:
            b = int(bad[0])
            raise ValueError(
                f"sequence_length must lie in [0, {max_time}] (the number of time steps); "
                f"got sequence_length[{b}]={int(values[b])}."
            )
        # Kept on the host: a NumPy constant stays concrete under jax.jit (a jnp array made
        # there would be traced), so the trip count max(lengths) stays a Python int.
        return values.astype(np.int32)
    return clip_lengths(sequence_length, max_time)


def valid_mask(t, sequence_length):
    """``[batch]`` booleans: is step ``t`` inside each row's length."""
    return t < sequence_length


def _expand(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def select_state(valid, new_state, old_state):
    """Per row: the new state where ``valid`` else the old one (TF1's copy-through). A leaf of
    rank 0 has no rows (TF1's ``_copy_one_through`` passes it through): it takes the new value
    while any row runs, since TF1 runs no step past the longest row."""
    return jax.tree_util.tree_map(
        lambda n, o: (
            jnp.where(jnp.any(valid), n, o)
            if jnp.ndim(o) == 0
            else jnp.where(_expand(valid, n), n, o)
        ),
        new_state,
        old_state,
    )


def mask_output(valid, output):
    """Per row: the output where ``valid`` else zeros (also how padded inputs are cleared). A
    leaf of rank 0 has no rows: it passes through."""
    return jax.tree_util.tree_map(
        lambda y: (
            y if jnp.ndim(y) == 0 else jnp.where(_expand(valid, y), y, jnp.zeros((), y.dtype))
        ),
        output,
    )


def zero_padding(xs, sequence_length, time_axis: int, batch_axis: int):
    """``xs`` with every step at or past its row's length set to zero (``None``: unchanged).

    ``sequence_length`` is checked int32 ``[B]``; ``jnp.where`` also gives those steps a zero
    cotangent, so NaN or inf there reaches neither values nor gradients.
    """
    if sequence_length is None:
        return xs

    def clear(x):
        def along(axis):  # a shape that broadcasts a vector along ``axis`` of ``x``
            return [-1 if a == axis else 1 for a in range(x.ndim)]

        t = jnp.arange(x.shape[time_axis], dtype=jnp.int32).reshape(along(time_axis))
        n = jnp.asarray(sequence_length).reshape(along(batch_axis))
        return jnp.where(t < n, x, jnp.zeros((), x.dtype))

    return jax.tree_util.tree_map(clear, xs)


def masked_step(cell, x_t, state, t, sequence_length, dtype):
    """One step of the TF1 contract: clear the padded inputs, call the cell, then zero outputs /
    copy state past lengths.

    Floating outputs are cast to ``dtype``, other outputs keep their dtype; every state leaf
    keeps the dtype and shape it had (:func:`conform_state`). A state leaf of rank 0 (a cell's
    own unbatched counter, TF1's scalar state) is not masked: it advances at every step run,
    that is while ``t < max(sequence_length)``."""
    valid = None if sequence_length is None else valid_mask(t, sequence_length)
    if valid is not None:
        x_t = mask_output(valid, x_t)  # padding may hold NaN: the cell never sees it
    out, new_state = bind_step(cell, t)(x_t, state)
    out, new_state = _cast(out, dtype), conform_state(new_state, state)
    if valid is not None:
        out = mask_output(valid, out)
        new_state = select_state(valid, new_state, state)
    return out, new_state


def _cast(tree, dtype):
    """Floating leaves cast to ``dtype``; integer and boolean ones keep their dtype."""

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else x

    return jax.tree_util.tree_map(cast, tree)


def _kind(dtype) -> str:
    for kind, base in (("floating", jnp.inexact), ("integer", jnp.integer), ("bool", jnp.bool_)):
        if jnp.issubdtype(dtype, base):
            return kind
    return str(dtype)


def conform_state(new_state, state):
    """The cell's ``new_state`` with the structure, dtypes and shapes of ``state``, the state it
    received (the loop carries it): each leaf cast to its old dtype within its kind (floating,
    integer, bool). A leaf whose kind or shape changed, or a different structure, is a
    ``TypeError`` / ``ValueError`` naming the leaf."""
    old_leaves, old_def = jax.tree_util.tree_flatten(state)
    new_with_path, new_def = jax.tree_util.tree_flatten_with_path(new_state)
    if new_def != old_def and not same_structure(new_state, old_def):
        raise ValueError(
            f"the cell's new state must have the structure of the state it received, "
            f"{old_def}; got {new_def}. A cell returns one state leaf per leaf of its "
            "state_size, in the same nest."
        )
    leaves = []
    for (path, new), old in zip(new_with_path, old_leaves):
        new = jnp.asarray(new)
        where = f"new_state{jax.tree_util.keystr(path)}"
        old_dtype, new_dtype = jnp.result_type(old), new.dtype
        if _kind(old_dtype) != _kind(new_dtype):
            raise TypeError(
                f"the cell's {where} has dtype {new_dtype} but that state leaf is {old_dtype} "
                f"({_kind(old_dtype)}): a state leaf keeps its dtype from step to step. Return "
                f"it as {old_dtype} (e.g. new.astype(state.dtype)), or start from an initial "
                f"state of dtype {new_dtype}."
            )
        if tuple(new.shape) != tuple(jnp.shape(old)):
            raise ValueError(
                f"the cell's {where} has shape {tuple(new.shape)} but that state leaf has "
                f"shape {tuple(jnp.shape(old))}: a state leaf keeps its shape from step to step "
                "(the loop carries it)."
            )
        leaves.append(new.astype(old_dtype))
    return jax.tree_util.tree_unflatten(old_def, leaves)


def _check_axis(axis, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int (an axis of xs); got {type(axis).__name__}.")
    return int(axis)


def reverse_sequence(xs, sequence_length, time_axis: int = 0, batch_axis: int = 1):
    """Reverse each row of every leaf of ``xs`` within its own length (``tf.reverse_sequence``).

    **Arguments:**

    - ``xs``: an array (or a nest of arrays) with a time axis and a batch axis, e.g.
      ``[T, B, ...]``.
    - ``sequence_length``: integer ``[B]`` (any integer dtype); row ``b`` has its first
      ``sequence_length[b]`` steps reversed and the steps at or past that length left where
      they are. ``None`` flips the whole time axis. Lengths outside ``[0, T]`` act as the
      nearest end (clipped).
    - ``time_axis``, ``batch_axis``: where those axes are (default ``0`` and ``1``); distinct
      ints, negative ones counting from the end.

    **Returns:** ``xs`` reversed, same shapes and dtypes.

    A leaf that is not an array, an axis out of range or equal to the other, or lengths of the
    wrong shape or dtype are a ``TypeError`` or ``ValueError`` naming the argument.
    """
    time_axis = _check_axis(time_axis, "time_axis")
    batch_axis = _check_axis(batch_axis, "batch_axis")
    leaves = jax.tree_util.tree_leaves_with_path(xs)
    for path, x in leaves:
        where = f"xs{jax.tree_util.keystr(path)}"
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise TypeError(f"{where} must be an array; got {type(x).__name__}.")
        for axis, name in ((time_axis, "time_axis"), (batch_axis, "batch_axis")):
            if not -x.ndim <= axis < x.ndim:
                raise ValueError(
                    f"{name}={axis} is out of range for {where} of shape {tuple(x.shape)} "
                    f"(rank {x.ndim})."
                )
        if time_axis % x.ndim == batch_axis % x.ndim:
            raise ValueError(
                f"time_axis and batch_axis must be different axes of {where} (rank {x.ndim}); "
                f"got time_axis={time_axis} and batch_axis={batch_axis}."
            )
        if sequence_length is not None:
            sequence_length = _check_length_type(sequence_length, x.shape[batch_axis])
    return reverse_rows(xs, sequence_length, time_axis, batch_axis)


def reverse_rows(xs, sequence_length, time_axis: int = 0, batch_axis: int = 1):
    """:func:`reverse_sequence` on checked arguments (the runners' internal call)."""
    if sequence_length is None:
        return jax.tree_util.tree_map(lambda x: jnp.flip(x, time_axis), xs)

    def rev(x):
        x_tm = jnp.moveaxis(x, (time_axis, batch_axis), (0, 1))  # (T, B, ...)
        t = jnp.arange(x_tm.shape[0], dtype=jnp.int32)[:, None]  # (T, 1)
        # Unchecked lengths: clip so that one above T acts as T (not an out-of-range gather,
        # which fills NaN) and a negative one as 0, as the runners do.
        n = clip_lengths(sequence_length, x_tm.shape[0])[None, :]  # (1, B)
        src = jnp.where(t < n, n - 1 - t, t)
        out = jnp.take_along_axis(x_tm, _expand(src, x_tm), axis=0)
        return jnp.moveaxis(out, (0, 1), (time_axis, batch_axis))

    return jax.tree_util.tree_map(rev, xs)
