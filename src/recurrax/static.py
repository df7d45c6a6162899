"""``static_rnn`` and ``static_bidirectional_rnn``: one copy of the cell per time step.

The Python loop below runs while JAX traces, so the program holds ``T`` copies of the cell: it
grows with the number of steps, and a new ``T`` means a new trace and a new compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .cells.checks import check_cell, is_traced
from .lengths import check_sequence_length, masked_step, reverse_rows
from .states import resolve_initial_state
from .validate import (
    cast_inputs,
    check_feature_size,
    check_step_inputs,
    resolve_directions,
)

__all__ = ["static_rnn", "static_bidirectional_rnn"]


def static_rnn(cell, inputs, initial_state=None, dtype=None, sequence_length=None, scope=None):
    r"""Unroll ``cell`` over a list of steps, one copy of the cell per step (TF1's ``static_rnn``).

    Per batch row ``b`` and step ``t`` (``state(b, -1)`` is the initial state)::

        output[t][b], state(b, t) = (zeros, state(b, t - 1)) if t >= sequence_length[b]
                                    else cell(inputs[t][b], state(b, t - 1))

    The reference loop with the same meaning::

        state = initial_state or cell.zero_state(batch, dtype)
        outputs = []
        for t, x in enumerate(inputs):
            out, new = cell(x, state)
            valid = t < sequence_length              # all True without lengths
            outputs.append(where(valid, out, 0))
            state = where(valid, new, state)
        return outputs, state

    **Arguments:**

    - ``cell``: a cell (see :mod:`recurrax` for the protocol).
    - ``inputs``: a non-empty list of ``T`` arrays ``[batch, input_size]`` of a real dtype;
      they are cast to ``dtype``, as TF1 casts what it feeds to a placeholder. A cell whose
      class sets ``integer_inputs = True`` (``EmbeddingWrapper``) takes integer ids ``[batch, 1]``
      instead, passed through uncast. Steps at or past a row's length may hold anything (NaN
      included): the cell sees zeros there. A cell whose ``input_size`` is a
      :class:`~recurrax.TensorShape`, or that declares none, may take steps of any rank,
      ``[batch, *input_shape]`` (a convolutional cell's ``[batch, H, W, C]`` frames). As in
      TF1, each step may also be a nest (tuple, namedtuple, list, dict) of such arrays, the
      same nest at every step with one batch for all its leaves, for a cell that reads one (it
      declares no ``input_size``, or a nest of sizes; the built-in cells read one array): the
      cell receives the nest.
    - ``initial_state``: a nest matching ``cell.state_size`` of ``[batch, n]`` arrays
      (``[batch, *shape]`` for a :class:`~recurrax.TensorShape` size); default
      ``cell.zero_state(batch, dtype)``.
    - ``dtype``: the dtype of the state and outputs; required when there is no ``initial_state``
      and the cell declares no dtype; an explicit ``dtype`` wins.
    - ``sequence_length``: optional int ``[batch]`` in ``[0, T]``. When its values are concrete
      the cell is not even called for steps at or past ``max(sequence_length)``.
    - ``scope``: accepted for TF1 compatibility; names nothing.

    **Returns:** ``(outputs, final_state)``: a list of ``T`` arrays ``[batch, output_size]``
    (``[batch, *shape]`` for a :class:`~recurrax.TensorShape` ``output_size``) and the state
    after each row's last valid step.

    The program holds ``T`` copies of the cell, so it grows, and compiles more slowly, with
    ``T``; every new ``T`` retraces. Use :func:`~recurrax.dynamic_rnn` for long or varying ``T``.

    **Example:**

    >>> cell = recurrax.BasicRNNCell(5, 3, key=jax.random.key(0))
    >>> (y0, y1), h = recurrax.static_rnn(cell, [x0, x1], dtype=jnp.float32)
    """
    del scope
    check_cell(cell)
    xs, batch, features = check_step_inputs(inputs, {"cell": cell})
    check_feature_size(cell, features, "inputs")
    sequence_length = check_sequence_length(sequence_length, batch, len(xs))
    state, dtype = resolve_initial_state(cell, initial_state, dtype, batch)
    return _unroll(cell, _cast_steps(cell, xs, dtype, "cell"), state, dtype, sequence_length)


def _cast_steps(cell, xs, dtype, name: str):
    """The steps ``cell`` runs on (:func:`~recurrax.validate.cast_inputs`, step by step)."""
    return [cast_inputs(cell, x, dtype, name, f"inputs[{t}]") for t, x in enumerate(xs)]


def _unroll(cell, xs, state, dtype, sequence_length):
    """:func:`static_rnn` on checked arguments: ``xs`` a list of ``[B, I]`` arrays, cast."""
    # With concrete lengths TF1 skips the cell past the longest row; do the same.
    n_run = len(xs)
    if sequence_length is not None and not is_traced(sequence_length):
        n_run = int(np.max(sequence_length, initial=0))
    outputs = []
    for t, x in enumerate(xs[:n_run]):
        with jax.named_scope(f"step_{t}"):
            out, state = masked_step(cell, x, state, t, sequence_length, dtype)
        outputs.append(out)
    if n_run < len(xs):
        # Shapes of the skipped outputs: from a computed step, else from an abstract one.
        out_shape = (
            outputs[0]
            if outputs
            else jax.eval_shape(
                lambda x, s: masked_step(cell, x, s, 0, None, dtype)[0], xs[0], state
            )
        )
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
        outputs.extend([zeros] * (len(xs) - n_run))
    return outputs, state


def _stack(steps):
    """A list of ``T`` nests of ``[B, ...]`` arrays as one nest of ``[T, B, ...]`` arrays."""
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *steps)


def _unstack(tree):
    """:func:`_stack` undone: the list of ``T`` nests."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return [jax.tree_util.tree_unflatten(treedef, step) for step in zip(*leaves)]


def static_bidirectional_rnn(
    cell_fw,
    cell_bw,
    inputs,
    initial_state_fw=None,
    initial_state_bw=None,
    dtype=None,
    sequence_length=None,
    scope=None,
):
    """Forward and backward :func:`static_rnn` over the same steps (TF1's version).

    The backward cell reads each row reversed within its own length (``reverse_sequence``), and
    its outputs are reversed back so that step ``t`` of both directions lines up.

    **Arguments:** as :func:`static_rnn`, with a cell and an optional initial state per
    direction.

    **Returns:** ``(outputs, state_fw, state_bw)`` where ``outputs[t]`` is
    ``concat([out_fw[t], out_bw[t]], 1)``, of shape ``[batch, out_fw + out_bw]``. As in TF1 the
    concatenation is along axis 1 for every output leaf, so outputs ``[batch, H, W, C]`` (a
    :class:`~recurrax.TensorShape` ``output_size``) give ``[batch, 2 * H, W, C]``; for channels
    side by side, run :func:`static_rnn` per direction and concatenate along ``-1``.
    """
    del scope
    check_cell(cell_fw, "cell_fw")
    check_cell(cell_bw, "cell_bw")
    xs, batch, features = check_step_inputs(inputs, {"cell_fw": cell_fw, "cell_bw": cell_bw})
    sequence_length = check_sequence_length(sequence_length, batch, len(xs))
    # Checked here so that a message names the direction at fault.
    (init_fw, dtype_fw), (init_bw, dtype_bw) = resolve_directions(
        (cell_fw, cell_bw), (initial_state_fw, initial_state_bw), dtype, features, batch
    )
    xs_fw = _cast_steps(cell_fw, xs, dtype_fw, "cell_fw")
    reversed_xs = _unstack(reverse_rows(_stack(xs), sequence_length))
    xs_bw = _cast_steps(cell_bw, reversed_xs, dtype_bw, "cell_bw")
    out_fw, state_fw = _unroll(cell_fw, xs_fw, init_fw, dtype_fw, sequence_length)
    out_bw, state_bw = _unroll(cell_bw, xs_bw, init_bw, dtype_bw, sequence_length)
    out_bw = _unstack(reverse_rows(_stack(out_bw), sequence_length))
    # TF1 concatenates each output leaf along axis 1: the features of a [batch, n] output, the
    # first shape axis of a [batch, *shape] one.
    outputs = [
        jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b], 1), f, b)
        for f, b in zip(out_fw, out_bw)
    ]
    return outputs, state_fw, state_bw
