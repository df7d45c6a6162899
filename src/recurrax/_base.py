"""The cell protocol, the LSTM state tuple and the checks every cell and runner shares.

A *cell* is any object with

* ``cell(inputs, state) -> (output, new_state)`` called on a whole batch:
  ``inputs`` is ``[batch, input_size]``, ``state`` a nest of ``[batch, n]`` arrays;
* ``state_size``: an ``int`` or a nest of ints (tuples, :class:`LSTMStateTuple`);
* ``output_size``: an ``int`` or a nest of ints;
* ``zero_state(batch_size, dtype)``: the nest of zeros matching ``state_size``.

Optional attributes the runners use when present: ``input_size`` (checked against the inputs'
feature size), ``dtype`` (the default state dtype) and ``at_step(t)`` (returns the cell to use at
time step ``t``; :class:`~recurrax.DropoutWrapper` uses it to draw a fresh mask per step).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LSTMStateTuple", "zero_state_for", "glorot_uniform"]


class LSTMStateTuple(NamedTuple):
    """The state of an LSTM cell, as in TF1: ``c`` is the memory cell, ``h`` the output.

    For :class:`~recurrax.LSTMCell` with ``num_proj`` the second field holds the projected
    output ``m`` (TF1 calls it ``(c, m)``; the field is still named ``h``).
    """

    c: Any
    h: Any


def _is_size_leaf(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def zero_state_for(state_size, batch_size: int, dtype) -> Any:
    """Zeros of shape ``[batch_size, n]`` for every ``n`` in the nest ``state_size``."""
    check_batch_size(batch_size)
    dtype = check_float_dtype(dtype, "dtype")
    return jax.tree_util.tree_map(
        lambda n: jnp.zeros((batch_size, int(n)), dtype), state_size, is_leaf=_is_size_leaf
    )


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int; got {type(batch_size).__name__}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")


def check_float_dtype(dtype, name: str):
    """Return ``dtype`` as a ``jnp.dtype`` if it is floating, else raise a ``TypeError``."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{name} must be a floating dtype; got {dtype!r}.") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (float16, bfloat16, float32, float64); got {dt}."
        )
    return dt


def check_num_units(num_units, name: str = "num_units") -> int:
    if isinstance(num_units, bool) or not isinstance(num_units, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; got {type(num_units).__name__}.")
    if num_units <= 0:
        raise ValueError(f"{name} must be a positive int; got {num_units}.")
    return int(num_units)


def check_key(key, name: str = "key", purpose: str = "to initialise weights"):
    if key is None:
        raise TypeError(
            f"{name} is required: pass a PRNG key such as jax.random.key(0) {purpose}; got None."
        )
    return key


def glorot_uniform(key, shape, dtype) -> jax.Array:
    """TF1's default ``glorot_uniform_initializer`` (fans as TF computes them, rank 1 included)."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)


def cell_dtype(cell):
    """The cell's own dtype if it declares one (built-in cells do), else ``None``."""
    dt = getattr(cell, "dtype", None)
    return None if dt is None else jnp.dtype(dt)


def size_to_str(size) -> str:
    return str(jax.tree_util.tree_map(int, size, is_leaf=_is_size_leaf))


def flat_sizes(size) -> list[int]:
    return [int(n) for n in jax.tree_util.tree_leaves(size, is_leaf=_is_size_leaf)]
