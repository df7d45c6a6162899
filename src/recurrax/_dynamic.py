"""``dynamic_rnn`` and ``bidirectional_dynamic_rnn``: one compiled loop, whatever the length."""

from __future__ import annotations

import jax.numpy as jnp

from ._fused import default_unroll, fused_dynamic_rnn, use_fused
from ._lengths import check_sequence_length, reverse_sequence
from ._loop import run_loop, trip_count
from ._runner import (
    check_cell,
    check_feature_size,
    masked_step,
    resolve_directions,
    resolve_initial_state,
)

__all__ = ["dynamic_rnn", "bidirectional_dynamic_rnn"]


def _check_inputs(inputs, time_major: bool, name: str = "inputs"):
    """Return ``(inputs as an array, batch, time, features)`` or raise a clear error."""
    if isinstance(inputs, (list, tuple)):
        raise TypeError(
            f"{name} must be one array of shape "
            f"{'[time, batch, input_size]' if time_major else '[batch, time, input_size]'}; "
            f"got a {type(inputs).__name__} of {len(inputs)} items. For a list of per-step "
            "arrays use static_rnn, or stack them with jnp.stack(steps, axis=1)."
        )
    if not hasattr(inputs, "ndim"):
        try:
            inputs = jnp.asarray(inputs)
        except TypeError as e:
            raise TypeError(f"{name} must be an array; got {type(inputs).__name__}.") from e
    layout = "[time, batch, input_size]" if time_major else "[batch, time, input_size]"
    if inputs.ndim != 3:
        raise ValueError(f"{name} must have rank 3, {layout}; got shape {tuple(inputs.shape)}.")
    if time_major:
        time, batch, features = inputs.shape
    else:
        batch, time, features = inputs.shape
    if time == 0:
        raise ValueError(f"{name} must have at least one time step; got shape {inputs.shape}.")
    return inputs, batch, time, features


def _check_parallel_iterations(parallel_iterations) -> None:
    if parallel_iterations is not None and (
        isinstance(parallel_iterations, bool)
        or not isinstance(parallel_iterations, int)
        or parallel_iterations < 1
    ):
        raise ValueError(
            f"parallel_iterations must be a positive int or None; got {parallel_iterations!r}."
        )


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
    fused: bool | None = None,
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
    the padded ``T`` but the inputs and outputs (README, "Early exit").

    **Arguments:**

    - ``cell``: a cell (built-in, wrapper, or any object following the cell protocol).
    - ``inputs``: ``[batch, time, input_size]`` (``[time, batch, input_size]`` with
      ``time_major=True``); non-floating arrays are cast to ``dtype``.
    - ``sequence_length``: optional int ``[batch]`` with values in ``[0, time]``. Checked when
      concrete; under ``jax.jit`` values are traced and unchecked, and then a length above
      ``time`` acts as ``time`` and a negative one as 0.
    - ``initial_state``: a nest matching ``cell.state_size`` of ``[batch, n]`` arrays.
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
      loop's VJP compiled on its own; see the README). Exclusive with ``memory``; raises
      ``ValueError`` naming the least budget that works when none fits.
    - ``fused``: keyword-only; ``None`` (default) takes the fused fast path (cuDNN-style: the
      weight gradients as large matmuls after the backward loop; see ``_fused.py`` and the
      README's "Speed") for the built-in cells and ``MultiRNNCell`` stacks of them with the
      default memory strategy; ``True`` requires it, ``False`` takes the generic path. Same
      results.

    Without traced lengths, with the default strategy and ``swap_memory=False``, the loop
    supports every JAX transformation (forward mode included); otherwise it carries a custom
    VJP (reverse mode: ``jax.grad``, ``jax.vjp``; not ``jax.jvp``), as TF1's while loop does.
    NumPy lengths stay concrete under ``jax.jit``.

    **Returns:** ``(outputs, final_state)``: ``outputs`` is ``[batch, time, output_size]`` (or
    time-major), zero past each row's length; ``final_state`` matches ``cell.state_size``.

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
    _check_parallel_iterations(parallel_iterations)
    if not isinstance(swap_memory, bool):
        raise TypeError(f"swap_memory must be a bool; got {type(swap_memory).__name__}.")
    inputs, batch, time, features = _check_inputs(inputs, time_major)
    check_feature_size(cell, features, "inputs")
    sequence_length = check_sequence_length(sequence_length, batch, time)
    state, dtype = resolve_initial_state(cell, initial_state, dtype, batch)
    fused = use_fused(
        cell, fused, memory=memory, swap_memory=swap_memory, memory_budget=memory_budget
    )
    if unroll is None:
        unroll = default_unroll(fused)
    if fused:
        xs = inputs.astype(dtype)
        return fused_dynamic_rnn(cell, xs, state, dtype, sequence_length, unroll, time_major)

    def step(state, x_t, t):
        out, new_state = masked_step(cell, x_t, state, t, sequence_length, dtype)
        return new_state, out

    final_state, outputs = run_loop(
        step,
        state,
        inputs.astype(dtype),
        length=trip_count(sequence_length, time),
        unroll=unroll,
        memory=memory,
        swap_memory=swap_memory,
        memory_budget=memory_budget,
        time_major=time_major,
    )
    return outputs, final_state


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
    fused: bool | None = None,
):
    """Forward and backward :func:`dynamic_rnn` over the same inputs (TF1's version).

    The backward cell reads each row reversed within its own length (``reverse_sequence``);
    its outputs are reversed back so that step ``t`` of both directions lines up.

    **Arguments:** as :func:`dynamic_rnn`, with a cell and an optional initial state per
    direction; ``unroll``, ``memory``, ``memory_budget``, ``swap_memory`` and ``fused`` apply
    to both directions' loops, each of which runs ``max(sequence_length)`` steps.

    **Returns:** ``((output_fw, output_bw), (state_fw, state_bw))``; the outputs are not
    concatenated (``jnp.concatenate(outputs, -1)`` does that).
    """
    del scope
    check_cell(cell_fw, "cell_fw")
    check_cell(cell_bw, "cell_bw")
    inputs, batch, time, features = _check_inputs(inputs, time_major)
    sequence_length = check_sequence_length(sequence_length, batch, time)
    # Checked here so that a message names the direction at fault.
    (init_fw, dtype_fw), (init_bw, dtype_bw) = resolve_directions(
        (cell_fw, cell_bw), (initial_state_fw, initial_state_bw), dtype, features, batch
    )
    t_axis, b_axis = (0, 1) if time_major else (1, 0)
    common = dict(
        sequence_length=sequence_length,
        parallel_iterations=parallel_iterations,
        swap_memory=swap_memory,
        time_major=time_major,
        unroll=unroll,
        memory=memory,
        memory_budget=memory_budget,
        fused=fused,
    )
    out_fw, state_fw = dynamic_rnn(cell_fw, inputs, initial_state=init_fw, dtype=dtype_fw, **common)
    reversed_inputs = reverse_sequence(inputs, sequence_length, t_axis, b_axis)
    out_bw, state_bw = dynamic_rnn(
        cell_bw, reversed_inputs, initial_state=init_bw, dtype=dtype_bw, **common
    )
    out_bw = reverse_sequence(out_bw, sequence_length, t_axis, b_axis)
    return (out_fw, out_bw), (state_fw, state_bw)
