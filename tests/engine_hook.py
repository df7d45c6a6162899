"""The runners through the engine's entry point, with options the public runners fix.

``dynamic_rnn`` resolves its options once and calls ``recurrax.engine.dispatch.run_cell``;
tests call the same entry point here to set the engine's own policies (``exit_chunk``, the
fused path's ``input_projection``) instead of patching module globals.
"""

from __future__ import annotations

import jax.numpy as jnp

from recurrax.engine.dispatch import run_cell
from recurrax.engine.options import resolve_options
from recurrax.lengths import check_sequence_length, reverse_sequence


def engine_rnn(cell, x, lengths=None, initial_state=None, *, dtype=jnp.float64, **options):
    """``dynamic_rnn(cell, x, lengths, initial_state, dtype=dtype, **options)`` where
    ``options`` may also name ``exit_chunk`` and ``input_projection``."""
    options = resolve_options(**options)
    batch = x.shape[1] if options.time_major else x.shape[0]
    lengths = check_sequence_length(lengths, batch, x.shape[options.axis])
    if initial_state is None:
        initial_state = cell.zero_state(batch, dtype)
    return run_cell(cell, x.astype(dtype), initial_state, dtype, lengths, options)


def engine_bidirectional(cell_fw, cell_bw, x, lengths, init_fw, init_bw, **kwargs):
    """``bidirectional_dynamic_rnn`` composed as the runner composes it, through
    :func:`engine_rnn`."""
    time_major = kwargs.get("time_major", False)
    t_axis, b_axis = (0, 1) if time_major else (1, 0)
    out_fw, state_fw = engine_rnn(cell_fw, x, lengths, init_fw, **kwargs)
    reversed_x = reverse_sequence(x, lengths, t_axis, b_axis)
    out_bw, state_bw = engine_rnn(cell_bw, reversed_x, lengths, init_bw, **kwargs)
    return (out_fw, reverse_sequence(out_bw, lengths, t_axis, b_axis)), (state_fw, state_bw)
