"""``dynamic_rnn`` and ``bidirectional_dynamic_rnn``: one compiled loop, whatever the length."""

from __future__ import annotations

from .cells.checks import check_cell
from .engine.dispatch import run_cell
from .engine.options import resolve_options
from .lengths import check_sequence_length, reverse_rows
from .states import resolve_initial_state
from .validate import (
    cast_inputs,
    check_feature_size,
    check_parallel_iterations,
    check_sequence_inputs,
    resolve_directions,
)

__all__ = ["dynamic_rnn", "bidirectional_dynamic_rnn"]


_OPTIONS = ("implementation", "unroll", "memory", "memory_budget", "swap_memory", "time_major")


def _check_call(inputs, sequence_length, parallel_iterations, arguments: dict, cells):
    """The checks both runners make: ``(options, inputs, sequence_length, batch, features)``
    with the options (named in :data:`_OPTIONS`, read from the runner's ``arguments``)
    resolved once; ``cells`` (name to cell) decide whether inputs may have several feature
    axes, or be a nest."""
    check_parallel_iterations(parallel_iterations)
    options = resolve_options(**{name: arguments[name] for name in _OPTIONS})
    inputs, batch, time, features = check_sequence_inputs(inputs, options.time_major, cells)
    sequence_length = check_sequence_length(sequence_length, batch, time)
    return options, inputs, sequence_length, batch, features


def dynamic_rnn(
    cell,
    inputs,
    sequence_length=None,
    initial_state=None,
    dtype=None,
    parallel_iterations=None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope=None,
    *,
    unroll: int | None = None,
    memory="store",
    memory_budget: int | None = None,
    implementation: str = "auto",
):
    r"""Run ``cell`` over ``inputs`` in one compiled loop (TF1's ``tf.nn.dynamic_rnn``).

    Per batch row ``b`` and step ``t`` (``state(b, -1)`` is the initial state)::

        output[b, t], state(b, t) = (zeros, state(b, t - 1)) if t >= sequence_length[b]
                                    else cell(inputs[b, t], state(b, t - 1))

    and ``final_state[b] = state(b, sequence_length[b] - 1)``. The reference loop with the same
    meaning (time-major)::

        state = initial_state or cell.zero_state(batch, dtype)
        outputs = []
        for t in range(T):
            out, new = cell(inputs[t], state)
            valid = t < sequence_length              # all True without lengths
            outputs.append(where(valid, out, 0))
            state = where(valid, new, state)
        return stack(outputs), state

    The program holds one copy of the cell inside one loop (``unroll`` copies when unrolled), so
    its size and compile time do not depend on ``T``. Like TF1, the loop runs only
    ``max(sequence_length)`` steps, in the forward and in the backward pass, even when that
    number is only known at run time (traced lengths under ``jax.jit``): a batch padded to a long
    ``T`` costs what its longest row costs. With traced lengths the loop runs in chunks of 64
    steps and the backward pass recomputes one chunk at a time, so that no buffer is sized by
    the padded ``T`` but the inputs and outputs (docs: "Long sequences").

    **Arguments:**

    - ``cell``: a cell (built-in, wrapper, or any object following the cell protocol).
    - ``inputs``: ``[batch, time, input_size]`` (``[time, batch, input_size]`` with
      ``time_major=True``) of a real dtype, cast to ``dtype``; ``time`` may be 0 (zero steps:
      outputs ``[batch, 0, output_size]``, the initial state). A cell whose class sets
      ``integer_inputs = True`` (``EmbeddingWrapper``) takes integer ids ``[batch, time, 1]``
      instead, passed through uncast. Steps at or past a row's length may hold anything (NaN
      included): the cell sees zeros there, and no NaN reaches outputs, states or gradients.
      A cell whose ``input_size`` is a :class:`~recurrax.TensorShape`, or that declares none,
      may take inputs of any rank, ``[batch, time, *input_shape]`` (TF1's ``[batch, time,
      ...]``; a convolutional cell's ``[batch, time, H, W, C]`` frames). As in TF1,
      ``inputs`` may also be a nest (tuple, namedtuple, list, dict) of such arrays, every leaf
      with the same batch and time axes, for a cell that reads one (it declares no
      ``input_size``, or a nest of sizes; the built-in cells read one array): the cell
      receives the nest of step ``t``, on the generic loop.
    - ``sequence_length``: optional ``[batch]`` of any integer dtype, values in ``[0, time]``.
      Checked when concrete; under ``jax.jit`` values are traced and unchecked, and then a
      length above ``time`` acts as ``time`` and a negative one as 0 (clipped in their own
      dtype, so a uint32 ``2**32 - 1`` is ``time`` too).
    - ``initial_state``: a nest matching ``cell.state_size`` of ``[batch, n]`` arrays
      (``[batch, *shape]`` for a :class:`~recurrax.TensorShape` size). Where the cell's own
      ``zero_state`` has an integer leaf or one of rank 0 (a step counter), so may this; a
      rank-0 leaf is not masked by ``sequence_length`` (TF1's rule).
    - ``dtype``: dtype of the state and outputs; required without ``initial_state`` unless the
      cell declares one. An explicit ``dtype`` wins.
    - ``parallel_iterations``: accepted for TF1 compatibility (a positive int or ``None``); XLA
      schedules the loop itself, so it changes nothing.
    - ``swap_memory``: ``bool``. Keep what the backward pass saves (the ``memory`` strategy's
      stored values or states) in host memory (JAX's ``pinned_host`` memory kind) rather than in
      device memory, as TF1 swaps to the CPU. Same results.
    - ``time_major``: layout of ``inputs`` and ``outputs``.
    - ``scope``: accepted for TF1 compatibility; names nothing.
    - ``unroll``: keyword-only positive int, the steps run per iteration of the compiled loops
      (fewer loop iterations, a larger program), or ``None`` (default): 8 on the fused path on a
      GPU, where each loop iteration has a fixed cost, else 1. Same results.
    - ``memory``: keyword-only, what the backward pass keeps from the forward pass:
      ``"store"`` (default, :class:`~recurrax.StoreAll`: every step's intermediate values;
      with traced lengths and ``T`` over 64, those of one 64-step chunk at a time, each chunk
      recomputed once in the backward pass),
      ``"recompute"`` (:class:`~recurrax.Recompute`: the state before each step; each step's
      internals are recomputed), :class:`~recurrax.CheckpointEvery` ``(k)`` (every ``k``-th
      state; each segment of ``k`` steps is recomputed once) or :class:`~recurrax.Revolve`
      ``(c)`` (``c`` states placed binomially, Griewank & Walther 2000). Gradients are the same.
    - ``memory_budget``: keyword-only, ``None`` or a positive int of bytes: pick the fastest of
      these strategies whose compiled gradient step needs at most that much temp memory (the
      loop's VJP compiled on its own; docs: "Long sequences"). Exclusive with ``memory``; raises
      ``ValueError`` naming the least budget that works when none fits.
    - ``implementation``: keyword-only, how the loop runs (same results, to rounding):
      ``"auto"`` (default) takes ``"fused"`` where it applies, else ``"generic"``;
      ``"fused"``, cuDNN's structure in XLA (the weight gradients as large matmuls after the
      backward loop; docs: "Speed"), for the built-in cells and ``MultiRNNCell`` stacks of them
      with the default memory strategy; ``"generic"``, the cell called once per step (any cell,
      every strategy); ``"pallas"``, one GPU kernel per layer for the whole recurrence
      (``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell`` with ``tanh``, float32 at the GPU's
      default TF32 matmul precision, or bfloat16; through Pallas's interpreter on a CPU). An
      implementation that cannot run the call is a ``ValueError`` naming the one that can.

    Without traced lengths, with the default strategy and ``swap_memory=False``, the loop
    supports every JAX transformation (forward mode included); otherwise it carries a custom
    VJP (reverse mode: ``jax.grad``, ``jax.vjp``; not ``jax.jvp``), as TF1's while loop does.
    NumPy lengths stay concrete under ``jax.jit``.

    **Returns:** ``(outputs, final_state)``: ``outputs`` is ``[batch, time, output_size]`` (or
    time-major; ``[batch, time, *shape]`` for a :class:`~recurrax.TensorShape` ``output_size``),
    zero past each row's length; ``final_state`` matches ``cell.state_size``.

    **Example:**

    >>> cell = recurrax.BasicLSTMCell(64, 32, key=jax.random.key(0))
    >>> outputs, (c, h) = recurrax.dynamic_rnn(cell, x, sequence_length=lengths, dtype=jnp.float32)
    >>> def loss(cell):  # backprop keeps every 32nd state, recomputes the rest
    ...     _, (c, h) = recurrax.dynamic_rnn(cell, x, memory=recurrax.CheckpointEvery(32))
    ...     return h.sum()
    >>> grads = jax.grad(loss)(cell)
    """
    del scope
    check_cell(cell)
    options, inputs, sequence_length, batch, features = _check_call(
        inputs, sequence_length, parallel_iterations, locals(), {"cell": cell}
    )
    check_feature_size(cell, features, "inputs")
    state, dtype = resolve_initial_state(cell, initial_state, dtype, batch)
    xs = cast_inputs(cell, inputs, dtype)
    return run_cell(cell, xs, state, dtype, sequence_length, options)


def bidirectional_dynamic_rnn(
    cell_fw,
    cell_bw,
    inputs,
    sequence_length=None,
    initial_state_fw=None,
    initial_state_bw=None,
    dtype=None,
    parallel_iterations=None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope=None,
    *,
    unroll: int | None = None,
    memory="store",
    memory_budget: int | None = None,
    implementation: str = "auto",
):
    """Forward and backward :func:`dynamic_rnn` over the same inputs (TF1's version).

    The backward cell reads each row reversed within its own length (``reverse_sequence``);
    its outputs are reversed back so that step ``t`` of both directions lines up.

    **Arguments:** as :func:`dynamic_rnn`, with a cell and an optional initial state per
    direction; ``unroll``, ``memory``, ``memory_budget``, ``swap_memory`` and
    ``implementation`` apply to both directions' loops, each of which runs
    ``max(sequence_length)`` steps.

    **Returns:** ``((output_fw, output_bw), (state_fw, state_bw))``; the outputs are not
    concatenated (``jnp.concatenate(outputs, -1)`` does that).
    """
    del scope
    check_cell(cell_fw, "cell_fw")
    check_cell(cell_bw, "cell_bw")
    options, inputs, sequence_length, batch, features = _check_call(
        inputs,
        sequence_length,
        parallel_iterations,
        locals(),
        {"cell_fw": cell_fw, "cell_bw": cell_bw},
    )
    # Checked here so that a message names the direction at fault.
    (init_fw, dtype_fw), (init_bw, dtype_bw) = resolve_directions(
        (cell_fw, cell_bw), (initial_state_fw, initial_state_bw), dtype, features, batch
    )
    t_axis, b_axis = (0, 1) if options.time_major else (1, 0)
    xs_fw = cast_inputs(cell_fw, inputs, dtype_fw, "cell_fw")
    reversed_inputs = reverse_rows(inputs, sequence_length, t_axis, b_axis)
    xs_bw = cast_inputs(cell_bw, reversed_inputs, dtype_bw, "cell_bw")
    out_fw, state_fw = run_cell(cell_fw, xs_fw, init_fw, dtype_fw, sequence_length, options)
    out_bw, state_bw = run_cell(cell_bw, xs_bw, init_bw, dtype_bw, sequence_length, options)
    out_bw = reverse_rows(out_bw, sequence_length, t_axis, b_axis)
    return (out_fw, out_bw), (state_fw, state_bw)
