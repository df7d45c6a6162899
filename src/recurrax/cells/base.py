"""The cell protocol, the base of the built-in cells, the LSTM state tuple and shared checks.

A *cell* is any object with

* ``cell(inputs, state) -> (output, new_state)`` called on a whole batch:
  ``inputs`` is ``[batch, input_size]``, ``state`` a nest of ``[batch, n]`` arrays;
* ``state_size``: an ``int`` or a nest of ints (tuples, :class:`LSTMStateTuple`); a leaf may
  also be a :class:`~recurrax.TensorShape` ``(d1, ..., dk)``, an array ``[batch, d1, ..., dk]``
  (a convolutional cell's ``[H, W, C]`` state), while a tuple of ints stays a nest of sizes;
* ``output_size``: likewise.

Optional attributes the runners use when present: ``zero_state(batch_size, dtype)`` (else zeros
shaped by ``state_size``), ``input_size`` (checked against the inputs' feature size), ``dtype``
(the default state dtype) and ``at_step(t)`` (returns the cell to use at time step ``t``;
:class:`~recurrax.DropoutWrapper` uses it to draw a fresh mask per step). A cell whose
``__call__`` takes a ``key`` keyword receives the per-call key the wrappers pass on.

Every cell and wrapper of recurrax derives from :class:`RNNCell` (TF1's base class): it adds
``get_initial_state`` and accepts ``key=None`` in its call (only dropout uses it).

The built-in cells derive from :class:`Cell`: a family module (``rnn.py``, ``gru.py``,
``lstm.py``) gives its weights, its TF1 variable names and a *recurrence* (``recurrence.py``)
whose ``step`` is the cell's math, written once: :meth:`Cell.__call__` runs it, and so does the
engine's fused path, which also uses the local derivatives the same ``step`` returns.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_batch_size, check_float_dtype, check_step, is_size_leaf
from .shapes import size_shape

__all__ = [
    "Cell",
    "LSTMStateTuple",
    "RNNCell",
    "bind_step",
    "call_cell",
    "cell_dtype",
    "fold_in_keys",
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


def zero_state_for(state_size, batch_size: int, dtype) -> Any:
    """Zeros of shape ``[batch_size, n]`` for every int ``n`` in the nest ``state_size``, and
    ``[batch_size, *shape]`` for every :class:`~recurrax.TensorShape` (TF1's
    ``_zero_state_tensors``)."""
    check_batch_size(batch_size)
    dtype = check_float_dtype(dtype, "dtype")
    return jax.tree_util.tree_map(
        lambda n: jnp.zeros((batch_size, *size_shape(n)), dtype), state_size, is_leaf=is_size_leaf
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


def fold_in_keys(cell, data):
    """``cell`` with ``data`` folded into every dropout key it holds (``cell.fold_in_keys``
    when the cell defines it, else the cell itself). ``MultiRNNCell`` folds in the layer index
    so that layers built with one key still draw different masks."""
    fold = getattr(cell, "fold_in_keys", None)
    return cell if fold is None else fold(data)


@functools.cache
def _takes_key(kind: type) -> bool:
    try:
        params = inspect.signature(kind.__call__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "key" or p.kind is p.VAR_KEYWORD for p in params)


def call_cell(cell, inputs, state, key=None):
    """``cell(inputs, state, key=key)``; without a key, or for a cell whose call takes none
    (the protocol's ``cell(inputs, state)``), ``cell(inputs, state)``."""
    if key is None or not _takes_key(type(cell)):
        return cell(inputs, state)
    return cell(inputs, state, key=key)


def initial_state_arguments(cell, inputs, batch_size, dtype):
    """``(batch_size, dtype)`` for ``get_initial_state``, as TF1 resolves them: from ``inputs``
    (its first array's first axis and dtype) when given, checked against ``batch_size`` and
    ``dtype`` when those are given too; ``dtype`` stays ``None`` (``zero_state``'s default, the
    cell's) when neither gives it."""
    owner = f"{type(cell).__name__}.get_initial_state"
    if inputs is not None:
        leaves = jax.tree_util.tree_leaves(inputs)
        x = leaves[0] if leaves else None
        if x is not None and not (hasattr(x, "shape") and hasattr(x, "dtype")):
            x = np.asarray(x)
        if x is None or x.ndim < 1:
            shape = None if x is None else tuple(x.shape)
            raise ValueError(f"{owner}: inputs must have a leading batch axis; got shape {shape}.")
        in_batch, in_dtype = int(x.shape[0]), jnp.dtype(x.dtype)
        if batch_size is not None and batch_size != in_batch:
            raise ValueError(
                f"{owner}: batch_size={batch_size} disagrees with the inputs' batch {in_batch} "
                f"(inputs.shape[0] of shape {tuple(x.shape)}); pass one or the other."
            )
        if dtype is not None and check_float_dtype(dtype, "dtype") != in_dtype:
            raise ValueError(
                f"{owner}: dtype={jnp.dtype(dtype)} disagrees with the inputs' dtype {in_dtype}; "
                "pass one or the other."
            )
        batch_size, dtype = in_batch, in_dtype
    if batch_size is None:
        raise ValueError(f"{owner} needs inputs or batch_size; got neither.")
    # Without a dtype, zero_state's default: the cell's dtype (each layer's, in a stack).
    if dtype is None and cell_dtype(cell) is None:
        raise ValueError(
            f"{owner}: dtype is required, since the cell declares none: pass dtype= or inputs."
        )
    return batch_size, dtype


# ----------------------------------------------------------------------------------------------
# The cells.


class RNNCell(eqx.Module):
    """The base of every recurrax cell and wrapper, as TF1's ``RNNCell``: a subclass gives
    ``state_size``, ``output_size`` and ``__call__(inputs, state, *, key=None)``, and gets
    :meth:`zero_state` and :meth:`get_initial_state`.

    The ``key`` of a call is a PRNG key for the cell's randomness (dropout); a deterministic
    cell ignores it, so code can pass a key to any cell (Equinox's convention).
    """

    def zero_state(self, batch_size: int, dtype=None):
        """Zeros shaped like ``state_size`` with a leading ``batch_size`` axis: ``[batch, n]``
        per int ``n``, ``[batch, *shape]`` per :class:`~recurrax.TensorShape` (``dtype``
        defaults to the cell's)."""
        return zero_state_for(
            self.state_size, batch_size, cell_dtype(self) if dtype is None else dtype
        )

    def get_initial_state(self, inputs=None, batch_size: int | None = None, dtype=None):
        """TF1's ``get_initial_state``: the zero state for ``inputs`` (its batch is the first
        axis, its dtype the state's) or for ``batch_size`` and ``dtype`` (default: the cell's).

        **Arguments:**

        - ``inputs``: optional, one step ``[batch, input_size]`` or a batch-major sequence
          ``[batch, time, input_size]``; a list of steps uses its first.
        - ``batch_size``, ``dtype``: needed without ``inputs``; with ``inputs`` they must agree
          with it (``ValueError`` naming both otherwise).

        **Returns:** the nest of ``[batch, n]`` (``[batch, *shape]``) zeros of
        :meth:`zero_state`.
        """
        return self.zero_state(*initial_state_arguments(self, inputs, batch_size, dtype))


class Cell(RNNCell):
    """Base of the built-in cells: one family's weights, TF1 names and step math.

    A subclass declares its weights as fields, ``tf1_scope`` and ``tf1_variables`` (TF1's
    variable names under the scope, each paired with the attribute that holds it, in TF1's
    creation order), and :meth:`recurrence`, the cell's step math (``recurrence.py``). A subclass
    that overrides ``__call__`` is a different cell: the engine's fused path then leaves it to
    the generic loop.
    """

    num_units: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    name: str | None = eqx.field(static=True, default=None)
    tf1_scope: ClassVar[str]
    tf1_variables: ClassVar[tuple[tuple[str, str], ...]]
    _dtype_weight: ClassVar[str] = "kernel"

    @property
    def variable_scope(self) -> str:
        """The TF1 variable scope of the cell's weights: its ``name=`` when one was given (as a
        TF1 layer's name sets its scope), else the class's ``tf1_scope``."""
        return self.name or self.tf1_scope

    @property
    def dtype(self):
        """The dtype of the cell's weights; the default dtype of its zero state."""
        return getattr(self, self._dtype_weight).dtype

    def zero_state(self, batch_size: int, dtype=None):
        """Zeros shaped like :attr:`state_size` with a leading ``batch_size`` axis."""
        return zero_state_for(self.state_size, batch_size, self.dtype if dtype is None else dtype)

    def recurrence(self):
        """The cell's step math, as :meth:`__call__` and the fused path read it
        (``recurrence.py``); ``None`` for a cell that writes its own ``__call__`` instead (such
        as ``LayerNormBasicLSTMCell``), which then runs on the generic loop."""
        return None

    def __call__(self, inputs, state, *, key=None):
        """One step: ``(output, new_state)``. ``key`` is accepted and ignored (no randomness)."""
        check_step(type(self).__name__, inputs, self.input_size, self.state_size, state)
        recurrence = self.recurrence()
        rec, fold = recurrence.cell_weights(self)
        with jax.named_scope(self.variable_scope):
            output, new_state, _, _ = recurrence.step(rec, inputs, state, fold, slopes=False)
        return output, new_state
