"""``sequence_length``: its checks, the masks, one masked step, and ``reverse_sequence``.

TF1's contract, per batch row ``b`` and step ``t``: steps ``t >= sequence_length[b]`` output zeros
and carry the state of step ``sequence_length[b] - 1`` through unchanged (the initial state when
the length is 0). The backward direction of a bidirectional run reverses each row within its own
length (``tf.reverse_sequence``), so padding stays at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .cells.base import bind_step, is_traced

__all__ = [
    "check_sequence_length",
    "reverse_sequence",
    "select_state",
    "mask_output",
    "masked_step",
]


def check_sequence_length(sequence_length, batch_size: int, max_time: int):
    """Validate ``sequence_length`` and return it as an int32 ``[batch]`` array (or ``None``).

    Shapes and dtypes are always checked. Values (``0 <= length <= max_time``) are checked when
    they are concrete; under ``jax.jit`` they are traced and cannot be checked, and then a length
    above ``max_time`` acts as ``max_time`` and a negative one as 0.
    """
    if sequence_length is None:
        return None
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
    return jnp.asarray(sequence_length, jnp.int32)


def valid_mask(t, sequence_length):
    """``[batch]`` booleans: is step ``t`` inside each row's length."""
    return t < sequence_length


def _expand(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def select_state(valid, new_state, old_state):
    """Per row: the new state where ``valid`` else the old one (TF1's copy-through)."""
    return jax.tree_util.tree_map(
        lambda n, o: jnp.where(_expand(valid, n), n, o), new_state, old_state
    )


def mask_output(valid, output):
    """Per row: the output where ``valid`` else zeros."""
    return jax.tree_util.tree_map(
        lambda y: jnp.where(_expand(valid, y), y, jnp.zeros((), y.dtype)), output
    )


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)


def masked_step(cell, x_t, state, t, sequence_length, dtype):
    """One step of the TF1 contract: call the cell, then zero outputs / copy state past lengths."""
    out, new_state = bind_step(cell, t)(x_t, state)
    out, new_state = _cast(out, dtype), _cast(new_state, dtype)
    if sequence_length is not None:
        valid = valid_mask(t, sequence_length)
        out = mask_output(valid, out)
        new_state = select_state(valid, new_state, state)
    return out, new_state


def reverse_sequence(xs, sequence_length, time_axis: int = 0, batch_axis: int = 1):
    """Reverse each row of every leaf of ``xs`` within its own length (``tf.reverse_sequence``).

    **Arguments:**

    - ``xs``: an array (or a nest of arrays) with a time axis and a batch axis, e.g.
      ``[T, B, ...]``.
    - ``sequence_length``: int ``[B]``; row ``b`` has its first ``sequence_length[b]`` steps
      reversed and the steps at or past that length left where they are. ``None`` flips the
      whole time axis. Lengths outside ``[0, T]`` act as the nearest end (clipped).
    - ``time_axis``, ``batch_axis``: where those axes are (default ``0`` and ``1``).

    **Returns:** ``xs`` reversed, same shapes and dtypes.
    """
    if sequence_length is None:
        return jax.tree_util.tree_map(lambda x: jnp.flip(x, time_axis), xs)

    def rev(x):
        x_tm = jnp.moveaxis(x, (time_axis, batch_axis), (0, 1))  # (T, B, ...)
        t = jnp.arange(x_tm.shape[0])[:, None]  # (T, 1)
        # Traced lengths are unchecked: clip so that one above T acts as T (not an
        # out-of-range gather, which fills NaN) and a negative one as 0, as the runners do.
        n = jnp.clip(jnp.asarray(sequence_length), 0, x_tm.shape[0])[None, :]  # (1, B)
        src = jnp.where(t < n, n - 1 - t, t)
        out = jnp.take_along_axis(x_tm, _expand(src, x_tm), axis=0)
        return jnp.moveaxis(out, (0, 1), (time_axis, batch_axis))

    return jax.tree_util.tree_map(rev, xs)
