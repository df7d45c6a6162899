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
    RNNCell,
    bind_step,
    call_cell,
    cell_dtype,
    fold_in_keys,
    zero_state_of,
)
from .checks import (
    check_cell,
    check_float_dtype,
    check_key,
    check_kwargs,
    check_state_is_tuple,
    is_size_leaf,
    size_to_str,
)
from .shapes import TensorShape, size_shape

__all__ = ["MultiRNNCell", "DropoutWrapper", "ResidualWrapper"]


class MultiRNNCell(RNNCell):
    """Stack cells: layer ``k`` feeds its output to layer ``k + 1`` at the same step.

    **Arguments:** ``cells``, a non-empty sequence of cells whose sizes chain: the output size of
    each layer equals the ``input_size`` of the next (checked when both are known);
    ``state_is_tuple``, TF1's, must be ``True`` (its default).

    The state is the tuple of the layers' states and the output that of the last layer; the layers
    are kept, in order, in ``.cells``. TF1 names their variables ``multi_rnn_cell/cell_<k>/...``.

    **Call:** ``cell(inputs, state, *, key=None)``; layer ``k`` gets ``fold_in(key, k)``. Bound to
    a step (:meth:`at_step`), layer ``k``'s dropout keys have ``k`` folded in: layers whose
    wrappers were built with one key still draw different masks.
    """

    cells: tuple

    def __init__(self, cells: Sequence[Any], state_is_tuple: bool = True, **kwargs):
        check_kwargs("MultiRNNCell", kwargs, MultiRNNCell.__init__)
        check_state_is_tuple(state_is_tuple, "MultiRNNCell")
        if isinstance(cells, eqx.Module) or not isinstance(cells, (list, tuple)):
            raise TypeError(f"cells must be a list or tuple of cells; got {type(cells).__name__}.")
        if not cells:
            raise ValueError("cells must hold at least one cell; got an empty sequence.")
        for k, cell in enumerate(cells):
            check_cell(cell, f"cells[{k}]")
        for k in range(len(cells) - 1):
            out, nxt = cells[k].output_size, getattr(cells[k + 1], "input_size", None)
            if _sizes_differ(out, nxt):
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
        return tuple(
            zero_state_of(c, batch_size, cell_dtype(c) if dtype is None else dtype)
            for c in self.cells
        )

    def at_step(self, t) -> MultiRNNCell:
        """Every layer bound to step ``t``, layer ``k``'s dropout keys with ``k`` folded in."""
        layers = tuple(bind_step(fold_in_keys(c, k), t) for k, c in enumerate(self.cells))
        return eqx.tree_at(lambda m: m.cells, self, layers)

    def fold_in_keys(self, data) -> MultiRNNCell:
        """Every layer with ``data`` folded into its dropout keys."""
        layers = tuple(fold_in_keys(c, data) for c in self.cells)
        return eqx.tree_at(lambda m: m.cells, self, layers)

    def __call__(self, inputs, state, *, key=None):
        if not isinstance(state, (tuple, list)) or len(state) != len(self.cells):
            raise ValueError(
                f"MultiRNNCell: state must be a tuple of {len(self.cells)} layer states; "
                f"got {type(state).__name__}"
                + (f" of length {len(state)}." if isinstance(state, (tuple, list)) else ".")
            )
        x, new_states = inputs, []
        for k, (cell, s) in enumerate(zip(self.cells, state)):
            layer_key = None if key is None else jax.random.fold_in(key, k)
            with jax.named_scope(f"cell_{k}"):
                x, s = call_cell(cell, x, s, layer_key)
            new_states.append(s)
        return x, tuple(new_states)


def _sizes_differ(out, nxt) -> bool:
    """Whether an ``output_size`` and the next ``input_size`` are both known sizes (ints or
    :class:`~recurrax.TensorShape`) that describe different per-row shapes."""
    if nxt is None:
        return False
    if isinstance(out, TensorShape) or isinstance(nxt, TensorShape):
        return is_size_leaf(out) and is_size_leaf(nxt) and size_shape(out) != size_shape(nxt)
    return isinstance(out, int) and out != nxt


def check_keep_prob(name: str, p) -> float:
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


def dropout(x, keep_prob: float, key, variational: bool = False):
    """Keep each unit with probability ``keep_prob``, scaled by ``1 / keep_prob``. Variational
    masks have shape ``[1, *shape]`` for ``x [batch, *shape]`` (TF1's ``[1, n]`` for
    ``[batch, n]``): one mask for every row of the batch."""
    if keep_prob >= 1.0:
        return x
    shape = (1, *x.shape[1:]) if variational else x.shape
    mask = jax.random.bernoulli(key, keep_prob, shape)
    return jnp.where(mask, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))


class _Wrapper(RNNCell):
    """A cell around one cell, with its sizes, dtype and zero state (TF1's ``RNNCell``
    wrappers add no variable scope of their own)."""

    cell: Any

    input_size = property(lambda self: getattr(self.cell, "input_size", None))
    dtype = property(lambda self: cell_dtype(self.cell))
    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)

    @property
    def wrapped_cell(self):
        """The wrapped cell (TF1's ``wrapped_cell``)."""
        return self.cell

    def zero_state(self, batch_size: int, dtype=None):
        return zero_state_of(
            self.cell, batch_size, cell_dtype(self.cell) if dtype is None else dtype
        )

    def at_step(self, t):
        return eqx.tree_at(lambda w: w.cell, self, bind_step(self.cell, t))

    def fold_in_keys(self, data):
        return eqx.tree_at(lambda w: w.cell, self, fold_in_keys(self.cell, data))


_DROPOUT_NOTES = {
    "seed": "recurrax draws the masks from a PRNG key: pass key=jax.random.key(seed).",
    "dropout_state_filter_visitor": "recurrax applies TF1's default filter (every state array is "
    "dropped except the c of an LSTMStateTuple).",
}


class DropoutWrapper(_Wrapper):
    """Dropout on a cell's inputs, outputs and new state, as TF1's ``DropoutWrapper``.

    **Arguments:**

    - ``cell``: the cell to wrap.
    - ``input_keep_prob``, ``output_keep_prob``, ``state_keep_prob``: probabilities in ``(0, 1]``
      of keeping each unit (kept units are scaled by ``1 / keep_prob``); ``1.0`` disables.
    - ``variational_recurrent``: if ``True`` (Gal & Ghahramani 2016, as TF1) each mask has shape
      ``[1, size]`` (``[1, *shape]`` for an array ``[batch, *shape]``, a
      :class:`~recurrax.TensorShape` state or output): the same mask for every row of the batch
      and every time step of a run; otherwise each unit of each row draws its own, fresh per
      step.
    - ``input_size``, ``dtype``: TF1 needs them for variational masks; recurrax reads the sizes
      from the data and accepts them for ported code (a known ``input_size`` must agree with the
      cell's).
    - ``key``: a PRNG key (keyword-only), required unless every keep probability is 1.

    **Where the masks come from.** In a call ``cell(inputs, state, key=k)`` from ``k`` (pass a
    fresh ``k`` per step, or per sequence for variational masks); otherwise from the wrapper's
    own ``key`` and the time step bound by :meth:`at_step` (``dynamic_rnn`` and ``static_rnn``
    bind every step; variational masks ignore the step). A call with neither, while a keep
    probability is below 1, is a ``TypeError``: it would repeat one mask on every call.

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
        input_size=None,
        dtype=None,
        *,
        key=None,
        **kwargs,
    ):
        check_kwargs("DropoutWrapper", kwargs, DropoutWrapper.__init__, _DROPOUT_NOTES)
        check_cell(cell, "cell")
        cell_input = getattr(cell, "input_size", None)
        if isinstance(input_size, int) and isinstance(cell_input, int) and input_size != cell_input:
            raise ValueError(
                f"DropoutWrapper: input_size={input_size} disagrees with the cell's input_size "
                f"{cell_input}; drop the argument (recurrax reads it from the cell)."
            )
        if dtype is not None:
            check_float_dtype(dtype, "dtype")
        self.cell = cell
        self.input_keep_prob = check_keep_prob("input_keep_prob", input_keep_prob)
        self.output_keep_prob = check_keep_prob("output_keep_prob", output_keep_prob)
        self.state_keep_prob = check_keep_prob("state_keep_prob", state_keep_prob)
        self.variational_recurrent = bool(variational_recurrent)
        self.key = (
            check_key(key, purpose="to draw the dropout masks (a keep probability is < 1)")
            if self.active
            else key
        )
        self.step = None

    @property
    def active(self) -> bool:
        """Whether a keep probability is below 1 (else the wrapper is the identity)."""
        return min(self.input_keep_prob, self.output_keep_prob, self.state_keep_prob) < 1.0

    def at_step(self, t) -> DropoutWrapper:
        """This wrapper bound to time step ``t``: masks from its ``key`` folded with ``t``
        (with ``key`` alone when variational, the same at every step)."""
        inner = bind_step(self.cell, t)
        step = jnp.asarray(t, jnp.int32)
        return eqx.tree_at(
            lambda w: (w.cell, w.step), self, (inner, step), is_leaf=lambda x: x is None
        )

    def fold_in_keys(self, data) -> DropoutWrapper:
        """This wrapper, and the cells inside it, with ``data`` folded into their keys."""
        inner = fold_in_keys(self.cell, data)
        if self.key is None:
            return eqx.tree_at(lambda w: w.cell, self, inner)
        key = jax.random.fold_in(self.key, data)
        return eqx.tree_at(lambda w: (w.cell, w.key), self, (inner, key))

    def _keys(self, key):
        """``(input, state, output, inner cell)`` keys for one call."""
        if key is not None:
            return tuple(jax.random.split(key, 4))
        if self.step is None:
            probs = ", ".join(
                f"{name}_keep_prob={p}"
                for name, p in (
                    ("input", self.input_keep_prob),
                    ("output", self.output_keep_prob),
                    ("state", self.state_keep_prob),
                )
                if p < 1.0
            )
            raise TypeError(
                f"DropoutWrapper: dropout is active ({probs}) but this call has no key and the "
                "wrapper is not bound to a time step, so every call would draw the same masks. "
                "Pass a fresh key per call, cell(inputs, state, key=k) (with "
                "variational_recurrent=True, one k for all the steps of a sequence), or bind "
                "the step with cell.at_step(t); dynamic_rnn and static_rnn bind every step."
            )
        base = self.key if self.variational_recurrent else jax.random.fold_in(self.key, self.step)
        k_in, k_state, k_out = jax.random.split(base, 3)
        return k_in, k_state, k_out, None

    def __call__(self, inputs, state, *, key=None):
        if not self.active:
            return call_cell(self.cell, inputs, state, key)
        k_in, k_state, k_out, k_cell = self._keys(key)
        variational = self.variational_recurrent
        if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(inputs)):
            inputs = dropout(inputs, self.input_keep_prob, k_in, variational)
        else:  # a nest of inputs (TF1 drops each leaf): a mask per leaf
            inputs = jax.tree_util.tree_map(
                lambda x, k: dropout(x, self.input_keep_prob, k, variational),
                inputs,
                _split_like(k_in, inputs),
            )
        output, new_state = call_cell(self.cell, inputs, state, k_cell)
        output = jax.tree_util.tree_map(
            lambda x, k: dropout(x, self.output_keep_prob, k, variational),
            output,
            _split_like(k_out, output),
        )
        if self.state_keep_prob < 1.0:
            new_state = _dropout_state(new_state, self.state_keep_prob, k_state, variational)
        return output, new_state


def _split_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def _dropout_state(state, keep_prob: float, key, variational: bool = False):
    """Drop every state leaf except the ``c`` of an LSTMStateTuple (TF1's default filter)."""

    def keep_c(s):
        return isinstance(s, LSTMStateTuple)

    def apply(s, k):
        if isinstance(s, LSTMStateTuple):
            return LSTMStateTuple(s.c, dropout(s.h, keep_prob, k, variational))
        return dropout(s, keep_prob, k, variational)

    leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=keep_c)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [apply(s, k) for s, k in zip(leaves, keys)])


def _residual_sizes_differ(n_in, n_out) -> bool:
    """Whether ``input_size`` and ``output_size`` differ; an int ``n`` and a
    :class:`~recurrax.TensorShape` ``(n,)`` are the same size."""
    shaped = isinstance(n_in, TensorShape) or isinstance(n_out, TensorShape)
    if shaped and is_size_leaf(n_in) and is_size_leaf(n_out):
        return size_shape(n_in) != size_shape(n_out)
    return n_in != n_out


class ResidualWrapper(_Wrapper):
    """Add the cell's inputs to its outputs: ``output = residual_fn(inputs, cell_output)``.

    **Arguments:** ``cell``, whose ``output_size`` must equal its ``input_size``;
    ``residual_fn`` (static), default ``inputs + output``. A call's ``key`` goes to the cell.
    """

    residual_fn: Callable | None = eqx.field(static=True)

    def __init__(self, cell, residual_fn: Callable | None = None, **kwargs):
        check_kwargs("ResidualWrapper", kwargs, ResidualWrapper.__init__)
        check_cell(cell, "cell")
        n_in, n_out = getattr(cell, "input_size", None), cell.output_size
        if residual_fn is None and n_in is not None and _residual_sizes_differ(n_in, n_out):
            raise ValueError(
                f"ResidualWrapper needs output_size == input_size to add inputs to outputs; "
                f"got input_size={n_in}, output_size={size_to_str(n_out)}. Pass residual_fn "
                "or project the inputs first."
            )
        self.cell = cell
        self.residual_fn = residual_fn

    def __call__(self, inputs, state, *, key=None):
        output, new_state = call_cell(self.cell, inputs, state, key)
        if self.residual_fn is not None:
            return self.residual_fn(inputs, output), new_state
        if inputs.shape != output.shape:
            raise ValueError(
                f"ResidualWrapper: inputs {tuple(inputs.shape)} and cell outputs "
                f"{tuple(output.shape)} must have the same shape."
            )
        return inputs + output, new_state
