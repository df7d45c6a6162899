"""``raw_rnn``: a loop whose inputs, state and stopping come from a function (TF1's version)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .cells.base import bind_step
from .cells.checks import check_cell, check_positive_int, is_size_leaf
from .cells.shapes import size_shape
from .engine.options import resolve_options
from .engine.raw_loop import while_loop
from .states import resolve_initial_state, same_structure
from .validate import check_parallel_iterations

__all__ = ["raw_rnn"]

_RETURNS = ("elements_finished", "next_input", "next_cell_state", "emit_output", "next_loop_state")


def _unpack(returned, when: str):
    if not isinstance(returned, tuple) or len(returned) != 5:
        raise TypeError(
            f"loop_fn must return a tuple of 5 {_RETURNS} ({when}); got "
            f"{type(returned).__name__}"
            + (f" of length {len(returned)}." if isinstance(returned, tuple) else ".")
        )
    return returned


def _check_finished(finished, batch, when: str) -> jax.Array:
    """``elements_finished`` as a bool ``[batch]`` array (``batch=None``: any length)."""
    name = f"elements_finished ({when})"
    if not hasattr(finished, "dtype"):
        raise TypeError(f"{name} must be a bool array of shape [batch]; got {finished!r}.")
    if jnp.dtype(finished.dtype) != jnp.bool_:
        raise TypeError(
            f"{name} must have dtype bool; got {finished.dtype}. Compare to get one, "
            "e.g. time >= sequence_length."
        )
    if finished.ndim != 1 or (batch is not None and finished.shape[0] != batch):
        expected = "[batch]" if batch is None else f"[batch]=({batch},)"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(finished.shape)}.")
    return jnp.asarray(finished)


def _check_batched(tree, batch: int, name: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(jnp.shape(leaf))
        if not shape or shape[0] != batch:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have a leading batch axis of "
                f"{batch} (the length of elements_finished); got shape {shape}."
            )


def _emit_shapes(template, cell, state):
    """The per-row ``jax.ShapeDtypeStruct`` of every emitted leaf (TF1's emit structure)."""
    if template is None:
        dtype = jnp.result_type(jax.tree_util.tree_leaves(state)[0])
        return jax.tree_util.tree_map(
            lambda n: jax.ShapeDtypeStruct(size_shape(n), dtype),
            cell.output_size,
            is_leaf=is_size_leaf,
        )

    def shape_of(path, leaf):
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(
                f"emit_output{jax.tree_util.keystr(path)} (time 0) must be None or a nest of "
                "per-row templates such as jax.ShapeDtypeStruct((n,), jnp.float32) or "
                f"jnp.zeros(n); got {type(leaf).__name__}."
            )
        return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(shape_of, template)


_KINDS = {"f": jnp.floating, "c": jnp.complexfloating, "i": jnp.integer, "b": jnp.bool_}


def _kind(dtype) -> str:
    """``dtype``'s kind: floating, complex, integer or bool; casts stay within a kind."""
    return next(k for k in "fcib" if jnp.issubdtype(dtype, _KINDS[k]))


def _conform(value, like, name: str, batch: int | None = None):
    """``value`` with the structure, shapes and dtypes of ``like`` (its time-0 counterpart);
    with ``batch``, ``like`` holds per-row shapes. Dtypes of one kind are cast."""
    like_leaves, like_def = jax.tree_util.tree_flatten(like)
    leaves_with_path, value_def = jax.tree_util.tree_flatten_with_path(value)
    if not same_structure(value, like_def):
        raise ValueError(
            f"{name} must keep the structure it had at time 0, {like_def}; got {value_def}."
        )
    out = []
    for (path, leaf), ref in zip(leaves_with_path, like_leaves):
        where = f"{name}{jax.tree_util.keystr(path)}"
        shape = tuple(jnp.shape(ref)) if batch is None else (batch, *ref.shape)
        if tuple(jnp.shape(leaf)) != shape:
            hint = " (the time-0 template has no batch axis)" if batch is not None else ""
            raise ValueError(f"{where} must have shape {shape}{hint}; got {jnp.shape(leaf)}.")
        dtype, got = jnp.dtype(ref.dtype), jnp.dtype(jnp.result_type(leaf))
        if _kind(dtype) != _kind(got):
            raise TypeError(f"{where} must have dtype {dtype} (as at time 0); got {got}.")
        out.append(jnp.asarray(leaf, dtype))
    return jax.tree_util.tree_unflatten(like_def, out)


def _where(finished, old, new):
    """Per row: ``old`` where the row had finished, else ``new``. A leaf of rank 0 has no rows:
    it takes ``new`` (TF1's ``raw_rnn`` passes scalars through)."""

    def pick(o, n):
        if jnp.ndim(o) == 0:
            return n
        mask = finished.reshape(finished.shape + (1,) * (n.ndim - 1))
        return jnp.where(mask, o, n)

    return jax.tree_util.tree_map(pick, old, new)


def raw_rnn(
    cell,
    loop_fn,
    *,
    max_steps: int,
    parallel_iterations=None,
    swap_memory: bool = False,
    memory="store",
):
    r"""Run ``cell`` on inputs, states and stopping that ``loop_fn`` decides (TF1's
    ``tf.compat.v1.nn.raw_rnn``).

    ``loop_fn(time, cell_output, cell_state, loop_state) -> (elements_finished, next_input,
    next_cell_state, emit_output, next_loop_state)`` is called once at ``time = 0`` with
    ``cell_output = cell_state = loop_state = None`` (for the first input, the initial state, the
    emit template and the initial loop state), then after every step ``t`` with ``time = t + 1``
    and the cell's raw output and state. The reference loop with the same meaning::

        finished, x, state, template, loop_state = loop_fn(0, None, None, None)
        emit = zeros([max_steps, batch, *template])          # per leaf
        t = 0
        while not all(finished):
            output, cell_state = cell(x, state)
            done, x, next_state, out, next_loop = loop_fn(t + 1, output, cell_state, loop_state)
            emit[t] = where(finished, 0, out)                 # per row
            state = where(finished, state, next_state)        # per row
            loop_state = loop_state if next_loop is None else next_loop   # never masked
            finished = finished | done | (t + 1 >= max_steps)
            t += 1
        return emit, state, loop_state

    So a row emits at step ``t`` as long as it was unfinished before ``t``; a finished row keeps
    its state and a later ``False`` does not un-finish it; ``loop_fn`` sees unmasked values; once
    every row has finished the loop stops (under ``jax.jit`` too) and nothing changes.

    **Arguments:**

    - ``cell``: a cell (built-in, wrapper, or any object following the cell protocol).
    - ``loop_fn``: the function above. Its returns: ``elements_finished``, bool ``[batch]``;
      ``next_input``, a nest of ``[batch, ...]`` arrays (the cell's input); ``next_cell_state``,
      a nest matching ``cell.state_size`` of ``[batch, n]`` floating arrays (``[batch, *shape]``
      for a :class:`~recurrax.TensorShape` size; also an integer leaf, or one of rank 0 that no
      row masks, as in TF1, where the cell's own ``zero_state`` has one); ``emit_output``: at
      time 0 the emit template, per-row shapes without the batch axis (a nest of
      ``jax.ShapeDtypeStruct`` or arrays, e.g.
      ``jnp.zeros(n)``; ``None``: ``cell.output_size`` in the state's dtype, a ``TensorShape``
      leaf giving its shape), later a nest of ``[batch, *shape]`` arrays; ``next_loop_state``,
      any nest of arrays, or ``None`` (at time 0: no loop state; later: unchanged). Structures and
      shapes stay those of time 0; dtypes are cast to those of time 0 within their kind.
      ``time`` is an int32 scalar, traced after time 0: read sequences with it by indexing
      (``inputs[jnp.minimum(time, T - 1)]``) rather than Python control flow.
    - ``max_steps``: keyword-only positive int, the most steps run (every row counts as
      finished at ``time >= max_steps``) and the length of the emitted arrays.
    - ``parallel_iterations``: accepted for TF1 compatibility (a positive int or ``None``).
    - ``swap_memory``: ``bool``, keep what the backward pass saves in host memory.
    - ``memory``: keyword-only, the backprop strategy as in :func:`~recurrax.dynamic_rnn`:
      ``"store"``, ``"recompute"``, :class:`~recurrax.CheckpointEvery` or
      :class:`~recurrax.Revolve` (which here places all its checkpoints in the backward pass).

    Differentiable in reverse mode (``jax.grad``, ``jax.vjp``; not ``jax.jvp``) through a custom
    VJP, like ``dynamic_rnn``'s loop: gradients reach the cell's weights, whatever ``loop_fn``
    closes over, and the time-0 returns. Integer and boolean values (finished flags, fed-back
    token ids) have none; they are recorded per step, ``[max_steps, ...]``, for the backward
    pass.

    **Returns:** ``(emit, final_state, final_loop_state)``: ``emit`` a nest like the template
    of time-major ``[max_steps, batch, *shape]`` arrays, zero where a row had finished and from
    the last step run on (TF1 returns a TensorArray of the steps run); ``final_state`` like
    ``cell.state_size``; ``final_loop_state`` the last loop state (``None`` without one).

    **Example** (greedy decoding; ``examples/greedy_decoder.py`` runs it in full):

    >>> def loop_fn(time, cell_output, cell_state, loop_state):
    ...     if cell_output is None:  # time 0: start tokens, zero state, emit one id per row
    ...         state = cell.zero_state(B, jnp.float32)
    ...         template = jax.ShapeDtypeStruct((), jnp.int32)
    ...         return jnp.zeros(B, bool), embed[start_ids], state, template, None
    ...     ids = jnp.argmax(cell_output @ W_out, -1).astype(jnp.int32)
    ...     return ids == END, embed[ids], cell_state, ids, None
    >>> ids, state, _ = recurrax.raw_rnn(cell, loop_fn, max_steps=20)  # ids: [20, B]
    """
    check_cell(cell)
    if not callable(loop_fn):
        raise TypeError(
            "loop_fn must be callable as loop_fn(time, cell_output, cell_state, loop_state); "
            f"got {type(loop_fn).__name__}."
        )
    max_steps = check_positive_int(max_steps, "max_steps", "the most steps to run")
    check_parallel_iterations(parallel_iterations)
    options = resolve_options(memory=memory, swap_memory=swap_memory)

    when = "returned by loop_fn at time 0"
    finished, inputs, state, template, loop_state = _unpack(
        loop_fn(jnp.int32(0), None, None, None), "at time 0"
    )
    finished = _check_finished(finished, None, when)
    batch = finished.shape[0]
    _check_batched(inputs, batch, "next_input")
    if state is None:
        raise ValueError(
            f"next_cell_state ({when}) is the initial state and cannot be None: return "
            "cell.zero_state(batch_size, dtype) or a previous final state."
        )
    state, _ = resolve_initial_state(cell, state, None, batch, f"next_cell_state ({when})")
    emit_shapes = _emit_shapes(template, cell, state)
    inputs, loop_state = jax.tree_util.tree_map(jnp.asarray, (inputs, loop_state))
    has_loop_state = loop_state is not None
    later = "returned by loop_fn after time 0"

    def step(carry, t):
        finished, x, state, loop_state = carry
        output, cell_state = bind_step(cell, t)(x, state)
        returned = loop_fn(t + 1, output, cell_state, loop_state if has_loop_state else None)
        done, x, next_state, emit, next_loop = _unpack(returned, "after time 0")
        done = _check_finished(done, batch, later)
        x = _conform(x, inputs, f"next_input ({later})")
        next_state = _conform(next_state, state, f"next_cell_state ({later})")
        emit = _conform(emit, emit_shapes, f"emit_output ({later})", batch)
        if next_loop is None:
            next_loop = loop_state
        elif not has_loop_state:
            raise ValueError(
                "next_loop_state was None at time 0 (no loop state) but not later; return an "
                "initial loop state at time 0 to carry one."
            )
        else:
            next_loop = _conform(next_loop, loop_state, f"next_loop_state ({later})")
        zeros = jax.tree_util.tree_map(jnp.zeros_like, emit)
        emit = _where(finished, zeros, emit)
        state = _where(finished, state, next_state)
        finished = finished | done | (t + 1 >= max_steps)
        return (finished, x, state, next_loop), emit

    carry = (finished, inputs, state, loop_state)
    (_, _, state, loop_state), emit, _ = while_loop(
        step,
        carry,
        max_steps=max_steps,
        done=lambda carry: jnp.all(carry[0]),
        strategy=options.memory,
        swap=options.swap_memory,
    )
    return emit, state, loop_state
