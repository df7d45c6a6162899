"""The engine's entry point: one runner call, its options resolved, on the fused or generic path.

``dynamic_rnn`` checks its arguments and resolves its options once, then calls
:func:`run_cell` (once per direction for the bidirectional runner). The path is a policy of the
engine, chosen here per cell: the fused path (``fused.py``) for built-in cells and stacks of
them when every step's values are to be stored on the device, else the generic loop
(``loop.py``) that calls the cell once per step.
"""

from __future__ import annotations

from ..lengths import masked_step
from .fused import fused_layers, supports_fused
from .loop import loop, trip_count
from .options import RunOptions

__all__ = ["takes_fused_path", "run_cell"]


def takes_fused_path(cell, options: RunOptions) -> bool:
    """Whether ``cell`` runs on the fused path under ``options`` (``fused=True`` that cannot be
    honoured is a ``ValueError`` naming why)."""
    supported = supports_fused(cell)
    if options.fused is None:
        return options.stores_all and supported
    if options.fused and not supported:
        raise ValueError(
            "fused=True needs a BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell or a MultiRNNCell "
            f"of them (exact types, unwrapped); got {type(cell).__name__}. Pass fused=None to "
            "pick the path automatically."
        )
    if options.fused and not options.stores_all:
        raise ValueError(
            "fused=True stores every step's values: it needs memory='store', swap_memory=False "
            "and memory_budget=None. Pass fused=None to pick the path automatically."
        )
    return options.fused


def run_cell(cell, xs, state, dtype, sequence_length, options: RunOptions):
    """``(outputs, final_state)`` of ``cell`` over ``xs`` from ``state`` (all checked).

    ``xs`` is ``[B, T, I]`` (``[T, B, I]`` with ``options.time_major``) of dtype ``dtype``;
    ``sequence_length`` ``None`` or int32 ``[B]`` (maybe traced).
    """
    time = xs.shape[options.axis]
    n = trip_count(sequence_length, time)
    fused = takes_fused_path(cell, options)
    unroll = options.unroll_for(fused)
    if fused:
        return fused_layers(cell, xs, state, dtype, sequence_length, n, options, unroll)

    def step(state, x_t, t):
        out, new_state = masked_step(cell, x_t, state, t, sequence_length, dtype)
        return new_state, out

    final_state, outputs = loop(step, state, xs, n, options, unroll)
    return outputs, final_state
