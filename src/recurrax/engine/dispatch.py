"""The engine's entry point: one runner call, its options resolved, on the path it takes.

``dynamic_rnn`` checks its arguments and resolves its options once, then calls
:func:`run_cell` (once per direction for the bidirectional runner). The path is a policy of the
engine, chosen here per cell (:func:`choose_path`); cells never know which one runs them:

- ``"generic"`` (``loop.py``): the cell called once per step, any cell, every memory strategy;
- ``"fused"`` (``fused.py``): built-in cells and stacks of them, cuDNN's structure in XLA
  (the weight gradients as large matmuls after the loop), every step's values stored;
- ``"pallas"`` (``pallas/``): one GPU kernel launch per layer and direction for the
  recurrence, forward and backward (``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell``,
  ``LSTMCell``; float32 or bfloat16); on a CPU it runs through Pallas's interpreter (slow: for
  checking).

Every path clears the inputs at steps past each row's length before the cell reads them (the
generic loop in ``lengths.masked_step``, the fused path before its projection, the Pallas path
here), and a run over ``T = 0`` steps runs none: zero-length outputs and the initial state.

``implementation="auto"`` takes the fused path where it applies, else the generic one. It does
not take the Pallas path yet: see ``benchmarks/RESULTS.md``, "The Pallas kernel on a GPU", for
the measurements that decide where it will.
"""

from __future__ import annotations

import jax

from ..lengths import masked_step, zero_padding
from .fused import fused_blocker, fused_layers, supports_fused
from .loop import loop, trip_count
from .options import RunOptions
from .pallas import pallas_layers, unsupported
from .timeaxis import time_buffer

__all__ = ["choose_path", "run_cell"]

_FUSED_CELLS = (
    "a BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell or a MultiRNNCell of them (built-in "
    "types, unwrapped)"
)


def _fallback(cell, options: RunOptions) -> str:
    return "fused" if options.stores_all and supports_fused(cell) else "generic"


def choose_path(cell, dtype, options: RunOptions, nested: bool = False) -> str:
    """The path ``cell`` runs on: ``"generic"``, ``"fused"`` or ``"pallas"``. An
    ``implementation`` that cannot run this cell, dtype or option is a ``ValueError`` naming
    what it does not support and the implementation that runs it. ``nested`` inputs (a nest
    of arrays) run on the generic loop: the other paths serve the built-in cells on one
    array."""
    asked = options.implementation
    if nested:
        if asked in ("fused", "pallas"):
            raise ValueError(
                f"implementation={asked!r} runs built-in cells on one array of inputs; got a "
                "nest of inputs. implementation='generic' runs it ('auto' picks the path)."
            )
        return "generic"
    if asked == "auto":
        return _fallback(cell, options)
    if asked == "fused":
        blocker = fused_blocker(cell)
        if blocker is not None:
            raise ValueError(
                f"implementation='fused' needs {_FUSED_CELLS}; got {blocker}. "
                "implementation='generic' runs it ('auto' picks the path)."
            )
        if not options.stores_all:
            raise ValueError(
                "implementation='fused' stores every step's values: it needs memory='store', "
                "swap_memory=False and memory_budget=None. implementation='generic' runs the "
                "other strategies ('auto' picks the path)."
            )
    if asked == "pallas":
        reason = unsupported(cell, dtype, options)
        if reason is not None:
            raise ValueError(
                f"implementation='pallas' does not support {reason}; "
                f"implementation='{_fallback(cell, options)}' runs it ('auto' picks the path)."
            )
    return asked


def run_cell(cell, xs, state, dtype, sequence_length, options: RunOptions):
    """``(outputs, final_state)`` of ``cell`` over ``xs`` from ``state`` (all checked).

    ``xs`` is ``[B, T, I]`` (``[T, B, I]`` with ``options.time_major``) of dtype ``dtype``
    (integer ids for a cell that takes them), or a nest of such arrays sharing ``B`` and ``T``
    (generic loop only); ``sequence_length`` ``None`` or int32 ``[B]`` (maybe traced). Every
    path clears the inputs past each row's length before the cell reads them (padding may hold
    NaN). ``T = 0`` runs no step: zero-length outputs, the initial state.
    """
    leaves = jax.tree_util.tree_leaves(xs)
    path = choose_path(cell, dtype, options, nested=len(leaves) != 1 or leaves[0] is not xs)
    time = leaves[0].shape[options.axis]
    if time == 0:
        return _no_steps(cell, xs, state, dtype, options), state
    if path == "pallas":
        batch_axis = 1 - options.axis
        xs = zero_padding(xs, sequence_length, options.axis, batch_axis)
        return pallas_layers(cell, xs, state, dtype, sequence_length, options)
    n = trip_count(sequence_length, time)
    unroll = options.unroll_for(path)
    if path == "fused":
        return fused_layers(cell, xs, state, dtype, sequence_length, n, options, unroll)

    def step(state, x_t, t):
        out, new_state = masked_step(cell, x_t, state, t, sequence_length, dtype)
        return new_state, out

    final_state, outputs = loop(step, state, xs, n, options, unroll)
    return outputs, final_state


def _no_steps(cell, xs, state, dtype, options: RunOptions):
    """The outputs of a run over zero steps: zeros with a time axis of length 0."""
    axis = options.axis
    x0 = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape[:axis] + x.shape[axis + 1 :], x.dtype), xs
    )
    out = jax.eval_shape(lambda x, s: masked_step(cell, x, s, 0, None, dtype)[0], x0, state)
    return time_buffer(out, 0, axis=options.axis)
