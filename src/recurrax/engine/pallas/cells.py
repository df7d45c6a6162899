"""The Pallas path of ``dynamic_rnn``: which cells and options it runs, and running them.

The kernel reads its weights from the cell as the fused path does (the family's recurrence
splits the kernels into input rows ``W_x`` and recurrent rows ``W_h``); the input projection
``X @ W_x + b`` for all steps is one XLA matmul before the kernel. A ``MultiRNNCell`` runs layer
by layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ...cells.base import LSTMStateTuple
from ...cells.gru import GRUCell
from ...cells.lstm import BasicLSTMCell, LSTMCell
from ...cells.rnn import BasicRNNCell
from ...cells.wrappers import MultiRNNCell
from ..options import RunOptions
from ..timeaxis import time_first
from .config import Family, plan_for
from .layer import pallas_layer, project

__all__ = ["cell_family", "cell_params", "unsupported", "pallas_layers", "pallas_dynamic_rnn"]

_KINDS = {BasicRNNCell: "rnn", GRUCell: "gru", BasicLSTMCell: "lstm", LSTMCell: "lstm"}
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _cell_reason(cell, dtype) -> str | None:
    """Why one layer cannot run on the kernel, or ``None``."""
    kind = _KINDS.get(type(cell))
    if kind is None:
        return (
            f"{type(cell).__name__} (it runs BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell and "
            "MultiRNNCell stacks of them)"
        )
    if cell.activation is not jnp.tanh:
        return f"the activation {getattr(cell.activation, '__name__', cell.activation)} (tanh only)"
    try:
        plan_for(cell_family(cell), _width(cell), dtype)
    except ValueError as e:
        return f"num_units={cell.num_units} ({e})"
    return None


def _width(cell) -> int:
    """The widest state vector: ``max(num_units, num_proj)``."""
    return max(cell.num_units, getattr(cell, "num_proj", None) or 0)


def unsupported(cell, dtype, options: RunOptions) -> str | None:
    """What about ``cell``, ``dtype`` or ``options`` the kernel cannot run, or ``None``."""
    if not options.stores_all:
        return (
            "memory strategies other than 'store', swap_memory or memory_budget (the kernel keeps "
            "every step's values on the device)"
        )
    if jnp.dtype(dtype) not in DTYPES:
        return f"dtype {jnp.dtype(dtype)} (float32 and bfloat16 only: Triton has no float64)"
    layers = cell.cells if type(cell) is MultiRNNCell else (cell,)
    for k, layer in enumerate(layers):
        reason = _cell_reason(layer, dtype)
        if reason is not None:
            return reason if len(layers) == 1 else f"layer {k} of the MultiRNNCell: {reason}"
    return None


def cell_family(cell) -> Family:
    """The :class:`Family` of a ``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell`` or
    ``LSTMCell`` (exact types, ``tanh`` activation); ``ValueError`` for anything else."""
    if type(cell) not in _KINDS:
        raise ValueError(
            "the Pallas layer supports BasicRNNCell, GRUCell, BasicLSTMCell and LSTMCell; "
            f"got {type(cell).__name__}."
        )
    if cell.activation is not jnp.tanh:
        raise ValueError("the Pallas layer supports the tanh activation only.")
    kind = _KINDS[type(cell)]
    if kind != "lstm":
        return Family(kind)
    r = cell.recurrence()  # the LSTM family's options, as the cell's own math reads them
    return Family(
        "lstm",
        r.forget_bias,
        peepholes=r.peepholes,
        cell_clip=r.cell_clip,
        projection=r.projection,
        proj_clip=r.proj_clip,
    )


def cell_params(cell):
    """``(w_x [I, gH], b [gH], w_h)`` of a supported cell, ``w_h`` as :func:`pallas_layer`
    takes it, split by the cell family's own recurrence (TF1's layout: input rows first)."""
    (w_x, b), rec = cell.recurrence().params(cell)
    if type(cell) is LSTMCell:
        return w_x, b, rec  # (w_h, peepholes or None, projection or None)
    return w_x, b, (rec if type(cell) is GRUCell else rec[0])


def _layer(cell, x_tm, state, dtype, lengths):
    """One supported cell over time-major ``x_tm``; weights cast to ``dtype``."""
    family = cell_family(cell)
    w_x, b, w_h = jax.tree_util.tree_map(lambda w: w.astype(dtype), cell_params(cell))
    xw = project(x_tm, w_x, b)
    state0 = (state.c, state.h) if family.kind == "lstm" else state
    ys, final = pallas_layer(family, w_h, xw, state0, lengths)
    return ys, (LSTMStateTuple(*final) if family.kind == "lstm" else final)


def pallas_layers(cell, xs, state, dtype, lengths, options: RunOptions):
    """``dynamic_rnn``'s loop on the Pallas path (checked by :func:`unsupported`):
    ``(outputs, final_state)`` in the layout of ``xs``, as the other paths return them."""
    x_tm = time_first(xs, options.axis)
    if type(cell) is not MultiRNNCell:
        ys, final = _layer(cell, x_tm, state, dtype, lengths)
        return time_first(ys, options.axis), final
    finals = []
    for k, (layer, s) in enumerate(zip(cell.cells, state)):
        with jax.named_scope(f"cell_{k}"):
            x_tm, s = _layer(layer, x_tm, s, dtype, lengths)
        finals.append(s)
    return time_first(x_tm, options.axis), tuple(finals)


def pallas_dynamic_rnn(
    cell, inputs, sequence_length=None, initial_state=None, *, time_major=False, **options
):
    """One supported cell through :func:`pallas_layer` directly (``options`` go to it):
    ``(outputs, final_state)`` as ``recurrax.dynamic_rnn`` returns them (zero initial state by
    default). ``dynamic_rnn(..., implementation="pallas")`` is the checked way in."""
    family = cell_family(cell)
    x = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
    w_x, b, w_h = cell_params(cell)
    if initial_state is None:
        initial_state = cell.zero_state(x.shape[1], x.dtype)
    state0 = tuple(initial_state) if family.kind == "lstm" else initial_state
    ys, state = pallas_layer(family, w_h, project(x, w_x, b), state0, sequence_length, **options)
    if family.kind == "lstm":
        state = LSTMStateTuple(*state)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), state
