"""The fused fast path of ``dynamic_rnn`` for the built-in cells (cuDNN's structure, in XLA).

The generic engine calls the cell once per step: each step multiplies ``concat([x_t, h])`` by
the whole kernel, and reverse-mode autodiff of the loop adds every step's weight gradient
``concat([x_t, h])^T dZ_t`` inside the backward loop. For ``BasicRNNCell``, ``GRUCell``,
``BasicLSTMCell``, ``LSTMCell`` and ``MultiRNNCell`` stacks of them, this path instead

1. splits each kernel into its input rows ``W_x`` and recurrent rows ``W_h``; computes
   ``XW = X @ W_x + b`` for all steps as one ``[T*B, I] x [I, G]`` matmul before the loop
   (:data:`INPUT_PROJECTION`; on CPU the step projects its own input instead, measured faster);
2. runs the recurrence ``z_t = XW_t + h @ W_h`` in one loop, saving per step the local
   derivatives of the gates (cuDNN's "reserve space");
3. differentiates through a ``jax.custom_jvp`` whose tangent is a loop *linear* in its inputs;
   JAX transposes it into the backward pass: one reverse loop computing each step's gate
   gradients ``dZ_t`` (``[T, B, G]`` stacked) with one ``[B, G] x [G, H]`` matmul per step, and
   after it ``dW_h = H_prev^T dZ``, ``dW_x = X^T dZ``, ``db = sum dZ`` (and ``dX = dZ W_x^T``)
   as large matmuls.

Forward-mode autodiff (``jax.jvp``) and ``jax.vmap`` work too. ``sequence_length`` follows TF1's
contract exactly as the generic path does (outputs zero past a row's length, state copied
through), and the loops stop at ``max(sequence_length)``. With concrete lengths every loop runs
that many steps. With traced ones (under ``jax.jit``) that number is unknown when XLA sizes its
buffers, so the layer runs in chunks of ``_loop.EXIT_CHUNK`` steps (:func:`_chunked`; a sequence
of at most one chunk runs all its steps, masked, as with concrete lengths): forward,
chunk after chunk until the longest row ends, keeping the state at each chunk's start; backward,
chunk after chunk in reverse, recomputing one chunk's forward pass and differentiating it as
above. Work and scratch memory follow the longest row (rounded up to a chunk), not the padded
``T``, for one extra forward pass; forward-mode autodiff then is not available (reverse mode is).

Each layer of a ``MultiRNNCell`` runs over the whole sequence before the next: the outputs and
final states are those of the step-by-step stack, since a row's steps past its length change
nothing in any layer.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _loop
from ._backprop import time_buffer
from ._fused_cells import kernel_for
from ._lengths import mask_output, select_state
from ._loop import _check_unroll, _time_first, trip_count
from ._memory import StoreAll, resolve_memory
from ._wrappers import MultiRNNCell

__all__ = ["supports_fused", "use_fused", "fused_dynamic_rnn"]

tree_map = jax.tree_util.tree_map

#: Where the fused path projects the inputs: ``"before_loop"`` (``XW = X @ W_x`` for all steps as
#: one matmul, cuDNN's way), ``"in_loop"`` (``concat([x_t, h]) @ kernel`` inside each step, as
#: the generic cell) or ``"auto"``: before the loop on GPU and TPU; on CPU before the loop for
#: a cell with one gate (``BasicRNNCell``) or where ``W_x`` is larger than
#: :data:`CPU_CACHE_BYTES`, else in the loop. On CPU, a step reading its gates from a
#: ``[T, B, G]`` array ``XW`` measured up to 2x slower than recomputing ``x_t @ W_x``: XLA:CPU's
#: loop fusions are slow at static slices (the gates) of a per-step dynamic slice
#: (benchmarks/RESULTS.md, "The input projection on CPU"); with one gate there is no slicing and
#: the projection before the loop measured faster at every shape. The backward pass is the same
#: either way: ``dW_x = X^T dZ`` after the loop.
INPUT_PROJECTION = "auto"
CPU_CACHE_BYTES = 4 * 2**20

#: Steps per loop iteration the fused path runs on a GPU when ``unroll`` is not given. Each
#: iteration of XLA's compiled loop carries a fixed cost there; on an H200, 8 steps per
#: iteration ran 1.15x to 2.4x faster than 1 for GRU and LSTM at every shape of the speed grid
#: (README, "Speed").
#: On CPU, 1 is as fast as any and compiles fastest.
GPU_UNROLL = 8


def default_unroll(fused: bool) -> int:
    """``unroll`` when the caller gives ``None``: :data:`GPU_UNROLL` for the fused path on a GPU,
    else 1."""
    return GPU_UNROLL if fused and jax.default_backend() == "gpu" else 1


def _project_first(w_x, kernel) -> bool:
    if INPUT_PROJECTION not in ("auto", "before_loop", "in_loop"):
        raise ValueError(
            "recurrax._fused.INPUT_PROJECTION must be 'auto', 'before_loop' or 'in_loop'; "
            f"got {INPUT_PROJECTION!r}."
        )
    if INPUT_PROJECTION == "auto":
        big = w_x.size * w_x.dtype.itemsize > CPU_CACHE_BYTES
        return jax.default_backend() != "cpu" or big or kernel.gates == 1
    return INPUT_PROJECTION == "before_loop"


def supports_fused(cell) -> bool:
    """Whether ``cell`` has a fused path: a built-in cell of exactly a supported type, or a
    ``MultiRNNCell`` of such cells. Subclasses, wrappers and user-written cells do not."""
    if type(cell) is MultiRNNCell:
        return all(supports_fused(c) for c in cell.cells)
    return kernel_for(cell) is not None


def use_fused(cell, fused, *, memory="store", swap_memory=False, memory_budget=None) -> bool:
    """Decide the path of a ``dynamic_rnn`` call: ``fused=None`` (auto) takes the fused path when
    the cell supports it and the memory strategy is the default (store everything, in device
    memory); ``True`` requires it; ``False`` takes the generic path."""
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"fused must be None (automatic), True or False; got {fused!r}.")
    default_memory = (
        isinstance(resolve_memory(memory), StoreAll) and not swap_memory and memory_budget is None
    )
    if fused is None:
        return default_memory and supports_fused(cell)
    if fused and not supports_fused(cell):
        raise ValueError(
            "fused=True needs a BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell or a MultiRNNCell "
            f"of them (exact types, unwrapped); got {type(cell).__name__}. Pass fused=None to "
            "pick the path automatically."
        )
    if fused and not default_memory:
        raise ValueError(
            "fused=True stores every step's values: it needs memory='store', swap_memory=False "
            "and memory_budget=None. Pass fused=None to pick the path automatically."
        )
    return fused


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static configuration of one fused layer (hashable: it keys JAX's caches)."""

    kernel: Any
    dtype: Any  # of the state and the outputs
    masked: bool  # sequence_length given (and not all equal to the trip count)
    unroll: int
    project_first: bool  # XW = X @ W_x for all steps before the loop, else inside each step


def _cast(tree, dtype):
    return tree_map(lambda a: a.astype(dtype), tree)


def _zero(t) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _is_primal(a) -> bool:
    return isinstance(a, jax.custom_derivatives.CustomVJPPrimal)


def _step(plan: _Plan, rec, x_t, state, valid_t, save: bool, fold):
    """One masked step: ``(new_state, output)`` or ``(new_state, (output, coef, saved))``."""
    out, new, coef, saved = plan.kernel.step(rec, x_t, state, fold)
    out, new = _cast(out, plan.dtype), _cast(new, plan.dtype)
    if valid_t is not None:
        out, new = mask_output(valid_t, out), select_state(valid_t, new, state)
    return new, ((out, coef, saved) if save else out)


def _forward(plan: _Plan, in_p, rec, xs, state, lengths, save: bool):
    """The recurrence over ``xs [T, B, I]``: ``(final_state, ys)`` or with residuals."""
    time, batch = xs.shape[:2]
    w_x, b = in_p
    fold = None
    if plan.project_first:
        with jax.named_scope("input_projection"):
            xs = (xs.reshape(time * batch, -1) @ w_x + b).reshape(time, batch, -1)  # (T, B, G)
    else:
        fold = plan.kernel.fold(w_x, b, rec)
    valid = _valid(plan, lengths, time)

    def body(s, inp):
        x_t, valid_t = inp
        return _step(plan, rec, x_t, s, valid_t, save, fold)

    return lax.scan(body, state, (xs, valid), unroll=plan.unroll)


def _valid(plan: _Plan, lengths, time: int):
    """``[T, B]`` booleans, step ``t`` inside row ``b``'s length (``None`` when unmasked)."""
    if not plan.masked:
        return None
    return jnp.arange(time, dtype=jnp.int32)[:, None] < lengths[None, :]


def _tangent_loop(plan: _Plan, rec, coef, dz, extra, state_dot, lengths):
    """The linear loop ``(dz, extra, state_dot) -> (ys_dot, final_state_dot)``.

    Every value it reads besides its linear inputs is precomputed (``coef``, the masks, the
    transposed weights), so that JAX's transpose of it is the backward loop alone.
    """
    time = dz.shape[0]
    # The barrier keeps XLA from folding the transposes back into the loop's matmuls.
    rec_t = lax.optimization_barrier(tree_map(lambda w: w.T if w.ndim == 2 else w, rec))
    valid = _valid(plan, lengths, time)

    def body(s_dot, inp):
        coef_t, dz_t, extra_t, valid_t = inp
        out, new = plan.kernel.tangent(rec_t, coef_t, dz_t, extra_t, s_dot)
        out, new = _cast(out, plan.dtype), _cast(new, plan.dtype)
        if valid_t is not None:
            out, new = mask_output(valid_t, out), select_state(valid_t, new, s_dot)
        return new, out

    return lax.scan(body, state_dot, (coef, dz, extra, valid), unroll=plan.unroll)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _layer(plan: _Plan, in_p, rec, xs, state, lengths):
    """``(ys [T, B, out], final_state)`` of one layer over all ``T`` steps of ``xs``."""
    final, ys = _forward(plan, in_p, rec, xs, state, lengths, save=False)
    return ys, final


def _layer_jvp(plan: _Plan, primals, tangents):
    in_p, rec, xs, state, lengths = primals
    in_dot, rec_dot, xs_dot, state_dot, _ = tangents
    final, (ys, coef, saved) = _forward(plan, in_p, rec, xs, state, lengths, save=True)
    time, batch = xs.shape[:2]
    # Tangents entering the recurrence from outside it, for all steps at once (large matmuls;
    # transposed, they are the weight and input gradients after the backward loop).
    dz, extra = plan.kernel.weight_dot(rec_dot, state, ys, coef, saved)
    flat_x = xs.reshape(time * batch, -1)
    (w_x, b), (w_x_dot, b_dot) = in_p, in_dot
    terms = [dz] if dz is not None else []
    if not _zero(w_x_dot):
        terms.append(flat_x @ w_x_dot)
    if not _zero(xs_dot):
        terms.append(xs_dot.reshape(time * batch, -1) @ w_x)
    if not _zero(b_dot):
        terms.append(jnp.broadcast_to(b_dot, (time * batch, b.shape[0])))
    if terms:
        dz = sum(terms[1:], terms[0]).reshape(time, batch, -1)
    else:
        dz = jnp.zeros((time, batch, b.shape[0]), jnp.result_type(xs, w_x))
    extra = None if extra is None else extra.reshape(time, batch, -1)
    state_dot = tree_map(
        lambda t, p: jnp.zeros_like(p) if _zero(t) else t,
        state_dot,
        state,
        is_leaf=_zero,
    )
    final_dot, ys_dot = _tangent_loop(plan, rec, coef, dz, extra, state_dot, lengths)
    return (ys, final), (ys_dot, final_dot)


_layer.defjvp(_layer_jvp, symbolic_zeros=True)


# Traced trip count: the layer in chunks of static length (see the module's docstring).


def _chunk_in(a, k, chunk: int, axis: int):
    """Steps ``[k * chunk, (k + 1) * chunk)`` of ``a`` (time along ``axis``), time-major."""
    return _time_first(lax.dynamic_slice_in_dim(a, k * chunk, chunk, axis), axis)


def _chunk_out(buf, a, k, chunk: int, axis: int):
    """``buf`` (time along ``axis``) with the time-major chunk ``a`` written at chunk ``k``."""
    return lax.dynamic_update_slice_in_dim(buf, _time_first(a, axis), k * chunk, axis)


def _chunk(plan: _Plan, chunk: int, axis: int, in_p, rec, xs, state, lengths, k):
    """Chunk ``k`` of the layer from ``state``: time-major ``(ys_k, final_state)``."""
    x_k = _chunk_in(xs, k, chunk, axis)
    return _layer(plan, in_p, rec, x_k, state, lengths - k * chunk)


def _chunk_count(n, chunk: int):
    return (n + chunk - 1) // chunk


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _chunked(plan: _Plan, chunk: int, axis: int, in_p, rec, xs, state, lengths, n):
    """``(ys, final_state)`` of one layer, running only the chunks of ``xs`` that start before
    the traced trip count ``n``. Time is along ``axis`` of ``xs`` and ``ys``; its length is a
    multiple of ``chunk``. Chunks are read and written in place, so that nothing the size of
    the whole sequence is laid out anew but the outputs."""
    args = (in_p, rec, xs, state, lengths, n)
    ys, final, _ = _chunked_forward(plan, chunk, axis, *args, keep=False)
    return ys, final


def _chunked_forward(plan, chunk, axis, in_p, rec, xs, state, lengths, n, keep: bool):
    """``(ys, final_state, starts)``: ``starts [T / chunk, ...]`` holds each chunk's initial
    state when ``keep`` (``None`` otherwise)."""
    run = partial(_chunk, plan, chunk, axis, in_p, rec, xs)
    first = jax.eval_shape(lambda: run(state, lengths, 0)[0])  # [chunk, B, out]
    time = xs.shape[axis]
    ys = time_buffer(jax.ShapeDtypeStruct(first.shape[1:], first.dtype), time, axis=axis)
    starts = time_buffer(state, time // chunk) if keep else None

    def body(k, c):
        s, ys, starts = c
        if keep:
            starts = tree_map(lambda buf, v: buf.at[k].set(v), starts, s)
        y_k, s = run(s, lengths, k)
        return s, _chunk_out(ys, y_k, k, chunk, axis), starts

    final, ys, starts = lax.fori_loop(0, _chunk_count(n, chunk), body, (state, ys, starts))
    return ys, final, starts


class _WantDx(eqx.Module):
    """Whether the inputs need a cotangent (static: it travels in the residuals' structure)."""

    value: bool = eqx.field(static=True)


def _chunked_fwd(plan: _Plan, chunk: int, axis: int, in_p, rec, xs, state, lengths, n):
    want_dx = _WantDx(xs.perturbed)
    in_p, rec, xs, state, lengths, n = tree_map(
        lambda a: a.value, (in_p, rec, xs, state, lengths, n), is_leaf=_is_primal
    )
    args = (in_p, rec, xs, state, lengths, n)
    ys, final, starts = _chunked_forward(plan, chunk, axis, *args, keep=True)
    return (ys, final), (in_p, rec, xs, lengths, n, starts, want_dx)


def _chunked_bwd(plan: _Plan, chunk: int, axis: int, res, cts):
    """Chunks in reverse: recompute one chunk's forward pass from its initial state and pull
    its cotangents back through the fused layer's own derivative."""
    in_p, rec, xs, lengths, n, starts, want_dx = res
    ct_ys, ct_final = cts
    ct_final = tree_map(
        lambda c, buf: jnp.zeros(buf.shape[1:], buf.dtype) if _zero(c) else c,
        ct_final,
        starts,
        is_leaf=_zero,
    )
    count = _chunk_count(n, chunk)

    def body(i, c):
        k = count - 1 - i
        ct_s, g_in, g_rec, ct_xs = c
        s_k = tree_map(lambda buf: buf[k], starts)
        x_k = _chunk_in(xs, k, chunk, axis)
        lengths_k = lengths - k * chunk
        if _zero(ct_ys):
            shape = jax.eval_shape(lambda: _layer(plan, in_p, rec, x_k, s_k, lengths_k)[0])
            ct_y = jnp.zeros(shape.shape, shape.dtype)
        else:
            ct_y = _chunk_in(ct_ys, k, chunk, axis)
        if want_dx.value:
            _, pull = jax.vjp(
                lambda a, r, x, s: _layer(plan, a, r, x, s, lengths_k), in_p, rec, x_k, s_k
            )
            d_in, d_rec, d_x, d_s = pull((ct_y, ct_s))
            ct_xs = _chunk_out(ct_xs, d_x, k, chunk, axis)
        else:
            _, pull = jax.vjp(lambda a, r, s: _layer(plan, a, r, x_k, s, lengths_k), in_p, rec, s_k)
            d_in, d_rec, d_s = pull((ct_y, ct_s))
        return d_s, tree_map(jnp.add, g_in, d_in), tree_map(jnp.add, g_rec, d_rec), ct_xs

    zeros = partial(tree_map, jnp.zeros_like)
    init = (ct_final, zeros(in_p), zeros(rec), zeros(xs) if want_dx.value else None)
    ct_s0, g_in, g_rec, ct_xs = lax.fori_loop(0, count, body, init)
    return g_in, g_rec, ct_xs, ct_s0, None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd, symbolic_zeros=True)


def _pad_time(a, steps: int, axis: int):
    """``a`` with ``steps`` zero steps appended along its time ``axis``."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, steps)
    return jnp.pad(a, pad)


def _run_layer(cell, xs, state, dtype, lengths, n, unroll: int, axis: int):
    """One supported cell over ``xs`` (time along ``axis``, 0 or 1); ``n`` an int or a traced
    trip count. Returns ``(ys, final_state)``, ``ys`` in the layout of ``xs``."""
    time = xs.shape[axis]
    kernel = kernel_for(cell)
    in_p, rec = kernel.params(cell)
    first = _project_first(in_p[0], kernel)
    if not isinstance(n, (int, np.integer)) and time <= _loop.EXIT_CHUNK:
        n = time  # one chunk at most: run every step, masked, without recomputation
    if isinstance(n, (int, np.integer)):
        n = int(n)
        if n == 0:  # every row has length 0: zero outputs, the initial state
            x0 = lax.index_in_dim(xs, 0, axis, keepdims=False)
            out = jax.eval_shape(lambda: kernel.step(rec, x0 @ in_p[0], state, None)[0])
            return time_buffer(jax.ShapeDtypeStruct(out.shape, dtype), time, axis=axis), state
        uniform = lengths is None or (
            not isinstance(lengths, jax.core.Tracer) and int(np.min(np.asarray(lengths))) == n
        )
        plan = _Plan(kernel, jnp.dtype(dtype), not uniform, unroll, first)
        # Only the first n steps are laid out time-major, run and laid back.
        head = _time_first(lax.slice_in_dim(xs, 0, n, axis=axis), axis)
        ys, final = _layer(plan, in_p, rec, head, state, None if uniform else lengths)
        return _pad_time(_time_first(ys, axis), time - n, axis), final
    plan = _Plan(kernel, jnp.dtype(dtype), True, unroll, first)
    chunk = _loop.EXIT_CHUNK  # time > chunk here
    if time % chunk:  # whole chunks only: pad with steps that every row's length masks
        xs = _pad_time(xs, chunk - time % chunk, axis)
    ys, final = _chunked(plan, chunk, axis, in_p, rec, xs, state, lengths, n)
    return lax.slice_in_dim(ys, 0, time, axis=axis), final


def fused_dynamic_rnn(
    cell, xs, state, dtype, sequence_length=None, unroll: int = 1, time_major: bool = True
):
    """``dynamic_rnn``'s loop on the fused path, for a cell where :func:`supports_fused`.

    **Arguments:**

    - ``cell``: a supported cell (see :func:`supports_fused`).
    - ``xs``: inputs ``[T, B, input_size]`` (``[B, T, input_size]`` unless ``time_major``),
      already of dtype ``dtype``.
    - ``state``: the initial state, a nest matching ``cell.state_size`` of ``[B, n]`` arrays.
    - ``dtype``: the dtype of the state and the outputs.
    - ``sequence_length``: ``None`` or validated int32 ``[B]`` lengths (maybe traced).
    - ``unroll``: steps per iteration of the compiled loops.
    - ``time_major``: the layout of ``xs`` and of the outputs.

    **Returns:** ``(outputs, final_state)``, ``outputs [T, B, output_size]`` (or batch-major),
    as the generic path.
    """
    unroll = _check_unroll(unroll)
    axis = 0 if time_major else 1
    n = trip_count(sequence_length, xs.shape[axis])
    if type(cell) is not MultiRNNCell:
        return _run_layer(cell, xs, state, dtype, sequence_length, n, unroll, axis)
    finals = []
    for k, (layer, s) in enumerate(zip(cell.cells, state)):
        with jax.named_scope(f"cell_{k}"):
            xs, s = fused_dynamic_rnn(layer, xs, s, dtype, sequence_length, unroll, time_major)
        finals.append(s)
    return xs, tuple(finals)
