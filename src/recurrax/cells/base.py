"""The cell protocol, the base of the built-in cells, the LSTM state tuple and shared checks.

A *cell* is any object with

* ``cell(inputs, state) -> (output, new_state)`` called on a whole batch:
  ``inputs`` is ``[batch, input_size]``, ``state`` a nest of ``[batch, n]`` arrays;
* ``state_size``: an ``int`` or a nest of ints (tuples, :class:`LSTMStateTuple`);
* ``output_size``: an ``int`` or a nest of ints.

Optional attributes the runners use when present: ``zero_state(batch_size, dtype)`` (else zeros
shaped by ``state_size``), ``input_size`` (checked against the inputs' feature size), ``dtype``
(the default state dtype) and ``at_step(t)`` (returns the cell to use at time step ``t``;
:class:`~recurrax.DropoutWrapper` uses it to draw a fresh mask per step).

The built-in cells derive from :class:`Cell`: a family module (``rnn.py``, ``gru.py``,
``lstm.py``) gives its weights, its TF1 variable names and a *recurrence* (``recurrence.py``)
whose ``step`` is the cell's math, written once: :meth:`Cell.__call__` runs it, and so does the
engine's fused path, which also uses the local derivatives the same ``step`` returns.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Cell",
    "LSTMStateTuple",
    "bind_step",
    "check_cell",
    "glorot_uniform",
    "zero_state_for",
    "zero_state_of",
]


class LSTMStateTuple(NamedTuple):
    """The state of an LSTM cell, as in TF1: ``c`` is the memory cell, ``h`` the output.

    For :class:`~recurrax.LSTMCell` with ``num_proj`` the second field holds the projected
    output ``m`` (TF1 calls it ``(c, m)``; the field is still named ``h``).
    """

    c: Any
    h: Any


def is_size_leaf(x) -> bool:
    """Whether ``x`` is one size of a ``state_size`` / ``output_size`` nest (an int)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def size_to_str(size) -> str:
    return str(jax.tree_util.tree_map(int, size, is_leaf=is_size_leaf))


def zero_state_for(state_size, batch_size: int, dtype) -> Any:
    """Zeros of shape ``[batch_size, n]`` for every ``n`` in the nest ``state_size``."""
    check_batch_size(batch_size)
    dtype = check_float_dtype(dtype, "dtype")
    return jax.tree_util.tree_map(
        lambda n: jnp.zeros((batch_size, int(n)), dtype), state_size, is_leaf=is_size_leaf
    )


def zero_state_of(cell, batch_size: int, dtype) -> Any:
    """``cell.zero_state(batch_size, dtype)`` when the cell has one, else zeros shaped by its
    ``state_size``."""
    zero = getattr(cell, "zero_state", None)
    if zero is not None:
        return zero(batch_size, dtype)
    return zero_state_for(cell.state_size, batch_size, dtype)


def cell_dtype(cell):
    """The cell's own dtype if it declares one (built-in cells do), else ``None``."""
    dt = getattr(cell, "dtype", None)
    return None if dt is None else jnp.dtype(dt)


def bind_step(cell, t):
    """The cell to call at time step ``t``: ``cell.at_step(t)`` when the cell defines it."""
    at_step = getattr(cell, "at_step", None)
    return cell if at_step is None else at_step(t)


# ----------------------------------------------------------------------------------------------
# Checks shared by the cells, the wrappers and the runners.


def check_cell(cell, name: str = "cell") -> None:
    """Raise ``TypeError`` unless ``cell`` follows the cell protocol."""
    missing = [a for a in ("state_size", "output_size") if not hasattr(cell, a)]
    if missing or not callable(cell):
        what = missing or ["__call__"]
        raise TypeError(
            f"{name} must be a cell: callable as cell(inputs, state) -> (output, new_state), "
            f"with state_size and output_size; got {type(cell).__name__} lacking {what}."
        )


def check_positive_int(value, name: str, what: str | None = None) -> int:
    """``value`` as an ``int`` if it is a positive int (not a bool), else a clear error."""
    detail = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int{detail}; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int{detail}; got {value}.")
    return int(value)


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


def check_key(key, name: str = "key", purpose: str = "to initialise weights"):
    if key is None:
        raise TypeError(
            f"{name} is required: pass a PRNG key such as jax.random.key(0) {purpose}; got None."
        )
    return key


def check_activation(activation):
    if not callable(activation):
        raise TypeError(f"activation must be callable; got {activation!r}.")
    return activation


def is_traced(x) -> bool:
    """Whether ``x`` is a tracer (a value only known when the program runs)."""
    return isinstance(x, jax.core.Tracer)


def glorot_uniform(key, shape, dtype) -> jax.Array:
    """TF1's default ``glorot_uniform_initializer`` (fans as TF computes them, rank 1 included)."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)


# ----------------------------------------------------------------------------------------------
# The built-in cells.


class Cell(eqx.Module):
    """Base of the built-in cells: one family's weights, TF1 names and step math.

    A subclass declares its weights as fields, ``tf1_scope`` and ``tf1_variables`` (TF1's
    variable names under the scope, each paired with the attribute that holds it, in TF1's
    creation order), and :meth:`recurrence`, the cell's step math (``recurrence.py``). A subclass
    that overrides ``__call__`` is a different cell: the engine's fused path then leaves it to
    the generic loop.
    """

    num_units: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    tf1_scope: ClassVar[str]
    tf1_variables: ClassVar[tuple[tuple[str, str], ...]]
    _dtype_weight: ClassVar[str] = "kernel"

    @property
    def dtype(self):
        """The dtype of the cell's weights; the default dtype of its zero state."""
        return getattr(self, self._dtype_weight).dtype

    def zero_state(self, batch_size: int, dtype=None):
        """Zeros shaped like :attr:`state_size` with a leading ``batch_size`` axis."""
        return zero_state_for(self.state_size, batch_size, self.dtype if dtype is None else dtype)

    def recurrence(self):
        """The cell's step math, as the fused path reads it (see ``recurrence.py``)."""
        raise NotImplementedError

    def __call__(self, inputs, state):
        name = type(self).__name__
        if inputs.ndim != 2 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: inputs must have shape [batch, input_size={self.input_size}]; "
                f"got {tuple(inputs.shape)}."
            )
        recurrence = self.recurrence()
        rec, fold = recurrence.cell_weights(self)
        with jax.named_scope(self.tf1_scope):
            output, new_state, _, _ = recurrence.step(rec, inputs, state, fold, slopes=False)
        return output, new_state
