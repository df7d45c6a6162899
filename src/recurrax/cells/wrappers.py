"""Cells made of cells: MultiRNNCell, DropoutWrapper and ResidualWrapper (TF1 semantics)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .base import (
    LSTMStateTuple,
    bind_step,
    cell_dtype,
    check_cell,
    check_key,
    size_to_str,
    zero_state_of,
)

__all__ = ["MultiRNNCell", "DropoutWrapper", "ResidualWrapper"]


class MultiRNNCell(eqx.Module):
    """Stack cells: layer ``k`` feeds its output to layer ``k + 1`` at the same step.

    **Arguments:** ``cells``, a non-empty sequence of cells whose sizes chain: the output size of
    each layer equals the ``input_size`` of the next (checked when both are known).

    The state is the tuple of the layers' states and the output that of the last layer; the layers
    are kept, in order, in ``.cells``. TF1 names their variables ``multi_rnn_cell/cell_<k>/...``.
    """

    cells: tuple

    def __init__(self, cells: Sequence[Any], state_is_tuple: bool = True):
        if not state_is_tuple:
            raise ValueError("state_is_tuple=False is deprecated in TF1 and not supported.")
        if isinstance(cells, eqx.Module) or not isinstance(cells, (list, tuple)):
            raise TypeError(f"cells must be a list or tuple of cells; got {type(cells).__name__}.")
        if not cells:
            raise ValueError("cells must hold at least one cell; got an empty sequence.")
        for k, cell in enumerate(cells):
            check_cell(cell, f"cells[{k}]")
        for k in range(len(cells) - 1):
            out, nxt = cells[k].output_size, getattr(cells[k + 1], "input_size", None)
            if nxt is not None and isinstance(out, int) and out != nxt:
                raise ValueError(
                    f"MultiRNNCell layers do not chain: cells[{k}].output_size={out} but "
                    f"cells[{k + 1}].input_size={nxt}. Build layer {k + 1} with input_size={out}."
                )
        self.cells = tuple(cells)

    @property
    def input_size(self):
        return getattr(self.cells[0], "input_size", None)

    @property
    def dtype(self):
        return cell_dtype(self.cells[0])

    @property
    def state_size(self) -> tuple:
        return tuple(c.state_size for c in self.cells)

    @property
    def output_size(self):
        return self.cells[-1].output_size

    def zero_state(self, batch_size: int, dtype=None):
        return tuple(zero_state_of(c, batch_size, dtype or cell_dtype(c)) for c in self.cells)

    def at_step(self, t) -> MultiRNNCell:
        return eqx.tree_at(lambda m: m.cells, self, tuple(bind_step(c, t) for c in self.cells))

    def __call__(self, inputs, state):
        if not isinstance(state, (tuple, list)) or len(state) != len(self.cells):
            raise ValueError(
                f"MultiRNNCell: state must be a tuple of {len(self.cells)} layer states; "
                f"got {type(state).__name__}"
                + (f" of length {len(state)}." if isinstance(state, (tuple, list)) else ".")
            )
        x, new_states = inputs, []
        for k, (cell, s) in enumerate(zip(self.cells, state)):
            with jax.named_scope(f"cell_{k}"):
                x, s = cell(x, s)
            new_states.append(s)
        return x, tuple(new_states)


def _check_keep_prob(name: str, p) -> float:
    # A Python or NumPy number; not an array, since it is static configuration.
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"{name} must be a float in (0, 1] (static, not an array); got {type(p).__name__}."
        )
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(
            f"{name} must be in (0, 1], the probability of keeping a unit; got {p}. "
            "Use 1.0 for no dropout."
        )
    return float(p)


def _dropout(x, keep_prob: float, key):
    if keep_prob >= 1.0:
        return x
    mask = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(mask, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))


class _Wrapper(eqx.Module):
    """A cell around one cell, with its sizes, dtype and zero state (TF1's ``RNNCell``
    wrappers add no variable scope of their own)."""

    cell: Any

    input_size = property(lambda self: getattr(self.cell, "input_size", None))
    dtype = property(lambda self: cell_dtype(self.cell))
    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)

    def zero_state(self, batch_size: int, dtype=None):
        return zero_state_of(self.cell, batch_size, dtype or cell_dtype(self.cell))

    def at_step(self, t):
        return eqx.tree_at(lambda w: w.cell, self, bind_step(self.cell, t))


class DropoutWrapper(_Wrapper):
    """Dropout on a cell's inputs, outputs and new state, as TF1's ``DropoutWrapper``.

    **Arguments:**

    - ``cell``: the cell to wrap.
    - ``input_keep_prob``, ``output_keep_prob``, ``state_keep_prob``: probabilities in ``(0, 1]``
      of keeping each unit (kept units are scaled by ``1 / keep_prob``); ``1.0`` disables.
    - ``variational_recurrent``: if ``True`` the same masks are used at every time step of a run
      (Gal & Ghahramani 2016); otherwise the runners draw fresh masks per step through
      :meth:`at_step`.
    - ``key``: a PRNG key (keyword-only), required unless every keep probability is 1.

    Like TF1's default state filter, the memory ``c`` of an :class:`LSTMStateTuple` is never
    dropped; only its ``h`` is. To evaluate, rebuild the wrapper with keep probabilities of 1.0
    (``eqx.tree_at`` on the probabilities is not possible: they are static configuration).
    """

    key: jax.Array | None
    step: jax.Array | None
    input_keep_prob: float = eqx.field(static=True)
    output_keep_prob: float = eqx.field(static=True)
    state_keep_prob: float = eqx.field(static=True)
    variational_recurrent: bool = eqx.field(static=True)

    def __init__(
        self,
        cell,
        input_keep_prob: float = 1.0,
        output_keep_prob: float = 1.0,
        state_keep_prob: float = 1.0,
        variational_recurrent: bool = False,
        *,
        key=None,
    ):
        check_cell(cell, "cell")
        self.cell = cell
        self.input_keep_prob = _check_keep_prob("input_keep_prob", input_keep_prob)
        self.output_keep_prob = _check_keep_prob("output_keep_prob", output_keep_prob)
        self.state_keep_prob = _check_keep_prob("state_keep_prob", state_keep_prob)
        self.variational_recurrent = bool(variational_recurrent)
        active = min(self.input_keep_prob, self.output_keep_prob, self.state_keep_prob) < 1.0
        self.key = (
            check_key(key, purpose="to draw the dropout masks (a keep probability is < 1)")
            if active
            else key
        )
        self.step = None

    def at_step(self, t) -> DropoutWrapper:
        """This wrapper bound to time step ``t`` (fresh masks per step unless variational)."""
        inner = bind_step(self.cell, t)
        step = None if self.variational_recurrent else jnp.asarray(t, jnp.int32)
        return eqx.tree_at(
            lambda w: (w.cell, w.step), self, (inner, step), is_leaf=lambda x: x is None
        )

    def _keys(self):
        key = self.key
        if self.step is not None:
            key = jax.random.fold_in(key, self.step)
        return jax.random.split(key, 3)

    def __call__(self, inputs, state):
        if self.key is None:
            return self.cell(inputs, state)
        k_in, k_state, k_out = self._keys()
        inputs = _dropout(inputs, self.input_keep_prob, k_in)
        output, new_state = self.cell(inputs, state)
        output = jax.tree_util.tree_map(
            lambda x, k: _dropout(x, self.output_keep_prob, k),
            output,
            _split_like(k_out, output),
        )
        if self.state_keep_prob < 1.0:
            new_state = _dropout_state(new_state, self.state_keep_prob, k_state)
        return output, new_state


def _split_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def _dropout_state(state, keep_prob: float, key):
    """Drop every state leaf except the ``c`` of an LSTMStateTuple (TF1's default filter)."""

    def keep_c(s):
        return isinstance(s, LSTMStateTuple)

    def apply(s, k):
        if isinstance(s, LSTMStateTuple):
            return LSTMStateTuple(s.c, _dropout(s.h, keep_prob, k))
        return _dropout(s, keep_prob, k)

    leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=keep_c)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [apply(s, k) for s, k in zip(leaves, keys)])


class ResidualWrapper(_Wrapper):
    """Add the cell's inputs to its outputs: ``output = residual_fn(inputs, cell_output)``.

    **Arguments:** ``cell``, whose ``output_size`` must equal its ``input_size``;
    ``residual_fn`` (static), default ``inputs + output``.
    """

    residual_fn: Callable | None = eqx.field(static=True)

    def __init__(self, cell, residual_fn: Callable | None = None):
        check_cell(cell, "cell")
        n_in, n_out = getattr(cell, "input_size", None), cell.output_size
        if residual_fn is None and n_in is not None and n_in != n_out:
            raise ValueError(
                f"ResidualWrapper needs output_size == input_size to add inputs to outputs; "
                f"got input_size={n_in}, output_size={size_to_str(n_out)}. Pass residual_fn "
                "or project the inputs first."
            )
        self.cell = cell
        self.residual_fn = residual_fn

    def __call__(self, inputs, state):
        output, new_state = self.cell(inputs, state)
        if self.residual_fn is not None:
            return self.residual_fn(inputs, output), new_state
        if inputs.shape != output.shape:
            raise ValueError(
                f"ResidualWrapper: inputs {tuple(inputs.shape)} and cell outputs "
                f"{tuple(output.shape)} must have the same shape."
            )
        return inputs + output, new_state
