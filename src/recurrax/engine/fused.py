"""The fused fast path of ``dynamic_rnn`` for the built-in cells (cuDNN's structure, in XLA).

The generic engine calls the cell once per step: each step multiplies ``concat([x_t, h])`` by
the whole kernel, and reverse-mode autodiff of the loop adds every step's weight gradient
``concat([x_t, h])^T dZ_t`` inside the backward loop. For ``BasicRNNCell``, ``GRUCell``,
``BasicLSTMCell``, ``LSTMCell`` and ``MultiRNNCell`` stacks of them, this path instead

1. splits each kernel into its input rows ``W_x`` and recurrent rows ``W_h``; computes
   ``XW = X @ W_x + b`` for all steps as one ``[T*B, I] x [I, G]`` matmul before the loop
   (on CPU a multi-gate step projects its own input instead, measured faster:
   :func:`~.options.projects_first`);
2. runs the recurrence ``z_t = XW_t + h @ W_h`` in one loop, saving per step the local
   derivatives of the gates (cuDNN's "reserve space");
3. differentiates through a ``jax.custom_jvp`` whose tangent is a loop *linear* in its inputs;
   JAX transposes it into the backward pass: one reverse loop computing each step's gate
   gradients ``dZ_t`` (``[T, B, G]`` stacked) with one ``[B, G] x [G, H]`` matmul per step, and
   after it ``dW_h = H_prev^T dZ``, ``dW_x = X^T dZ``, ``db = sum dZ`` (and ``dX = dZ W_x^T``)
   as large matmuls.

Forward-mode autodiff (``jax.jvp``) and ``jax.vmap`` work too. ``sequence_length`` follows TF1's
contract exactly as the generic path does (outputs zero past a row's length, state copied
through; the inputs past a row's length set to zero before the projection reads them, so that
NaN in the padding reaches no gradient), and the loops stop at ``max(sequence_length)``. With
concrete lengths every loop runs that many steps. With traced ones (under ``jax.jit``) that
number is unknown when XLA sizes its buffers, so the layer runs in chunks of
``options.exit_chunk`` steps (:func:`_chunked`; a sequence of at most one chunk runs all its
steps, masked, as with concrete lengths): forward, chunk after chunk until the longest row
ends, keeping the state at each chunk's start; backward, chunk after chunk in reverse,
recomputing one chunk's forward pass and differentiating it as above. Work and scratch memory
follow the longest row (rounded up to a chunk), not the padded ``T``, for one extra forward
pass; forward-mode autodiff then is not available (reverse mode is).

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

from ..cells.base import Cell
from ..cells.checks import is_traced
from ..cells.wrappers import MultiRNNCell
from ..lengths import mask_output, select_state
from .options import RunOptions, projects_first, runs_in_chunks
from .timeaxis import pad_time, time_buffer, time_first

__all__ = ["recurrence_of", "fused_blocker", "supports_fused", "fused_layers"]

tree_map = jax.tree_util.tree_map


def recurrence_of(cell):
    """The recurrence of ``cell`` when its class defines one itself (as each built-in cell class
    does) and keeps :class:`~recurrax.cells.base.Cell`'s call, else ``None``. A subclass that
    defines no recurrence of its own may have changed the math, so it keeps the generic loop."""
    kind = type(cell)
    if isinstance(cell, Cell) and "recurrence" in vars(kind) and kind.__call__ is Cell.__call__:
        return cell.recurrence()
    return None


def fused_blocker(cell) -> str | None:
    """``None`` when ``cell`` has a fused path, else what blocks it, for an error message:
    the cell's type (``"DropoutWrapper"``), or for a ``MultiRNNCell`` the first layer that
    blocks it (``"MultiRNNCell: layer 1 of the MultiRNNCell is a DropoutWrapper"``)."""
    if type(cell) is MultiRNNCell:
        for k, layer in enumerate(cell.cells):
            blocker = fused_blocker(layer)
            if blocker is not None:
                article = "an" if blocker[0] in "AEIOU" else "a"
                return f"MultiRNNCell: layer {k} of the MultiRNNCell is {article} {blocker}"
        return None
    return None if recurrence_of(cell) is not None else type(cell).__name__


def supports_fused(cell) -> bool:
    """Whether ``cell`` has a fused path (:func:`recurrence_of`), or is a ``MultiRNNCell`` of
    such cells. Wrappers and user-written cells do not."""
    return fused_blocker(cell) is None


@dataclasses.dataclass(frozen=True)
class _Layer:
    """Static configuration of one fused layer (hashable: it keys JAX's caches)."""

    recurrence: Any
    dtype: Any  # of the state and the outputs
    masked: bool  # sequence_length given (and not all equal to the trip count)
    unroll: int
    project_first: bool  # XW = X @ W_x for all steps before the loop, else inside each step
    clear: bool = True  # set the inputs past each row's length to zero before reading them


def _cast(tree, dtype):
    return tree_map(lambda a: a.astype(dtype), tree)


def _zero(t) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _is_primal(a) -> bool:
    return isinstance(a, jax.custom_derivatives.CustomVJPPrimal)


def _step(layer: _Layer, rec, x_t, state, valid_t, save: bool, fold):
    """One masked step: ``(new_state, output)`` or ``(new_state, (output, coef, saved))``."""
    out, new, coef, saved = layer.recurrence.step(rec, x_t, state, fold)
    out, new = _cast(out, layer.dtype), _cast(new, layer.dtype)
    if valid_t is not None:
        out, new = mask_output(valid_t, out), select_state(valid_t, new, state)
    return new, ((out, coef, saved) if save else out)


def _forward(layer: _Layer, in_p, rec, xs, state, lengths, save: bool):
    """The recurrence over ``xs [T, B, I]``: ``(final_state, ys)`` or with residuals."""
    time, batch = xs.shape[:2]
    w_x, b = in_p
    fold = None
    if layer.project_first:
        with jax.named_scope("input_projection"):
            flat = xs.reshape(time * batch, xs.shape[-1])  # explicit sizes: B may be 0
            xs = (flat @ w_x + b).reshape(time, batch, b.shape[0])  # (T, B, G)
    else:
        fold = layer.recurrence.fold(w_x, b, rec)
    valid = _valid(layer, lengths, time)

    def body(s, inp):
        x_t, valid_t = inp
        return _step(layer, rec, x_t, s, valid_t, save, fold)

    return lax.scan(body, state, (xs, valid), unroll=layer.unroll)


def _clear_padding(xs, lengths):
    """Time-major ``xs [T, B, I]`` with every step at or past its row's length set to zero,
    before anything reads it: padding may hold NaN, which would reach the weight gradients
    (``X^T dZ``) through ``0 * NaN`` even where ``dZ`` is zero."""
    time = xs.shape[0]
    valid = jnp.arange(time, dtype=jnp.int32)[:, None] < lengths[None, :]  # (T, B)
    return jnp.where(valid[:, :, None], xs, jnp.zeros((), xs.dtype))


def _valid(layer: _Layer, lengths, time: int):
    """``[T, B]`` booleans, step ``t`` inside row ``b``'s length (``None`` when unmasked)."""
    if not layer.masked:
        return None
    return jnp.arange(time, dtype=jnp.int32)[:, None] < lengths[None, :]


def _tangent_loop(layer: _Layer, rec, coef, dz, extra, state_dot, lengths):
    """The linear loop ``(dz, extra, state_dot) -> (ys_dot, final_state_dot)``.

    Every value it reads besides its linear inputs is precomputed (``coef``, the masks, the
    transposed weights), so that JAX's transpose of it is the backward loop alone.
    """
    time = dz.shape[0]
    # The barrier keeps XLA from folding the transposes back into the loop's matmuls.
    rec_t = lax.optimization_barrier(tree_map(lambda w: w.T if w.ndim == 2 else w, rec))
    valid = _valid(layer, lengths, time)

    def body(s_dot, inp):
        coef_t, dz_t, extra_t, valid_t = inp
        out, new = layer.recurrence.tangent(rec_t, coef_t, dz_t, extra_t, s_dot)
        out, new = _cast(out, layer.dtype), _cast(new, layer.dtype)
        if valid_t is not None:
            out, new = mask_output(valid_t, out), select_state(valid_t, new, s_dot)
        return new, out

    return lax.scan(body, state_dot, (coef, dz, extra, valid), unroll=layer.unroll)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _fused_layer(layer: _Layer, in_p, rec, xs, state, lengths):
    """``(ys [T, B, out], final_state)`` of one layer over all ``T`` steps of ``xs``."""
    final, ys = _forward(layer, in_p, rec, xs, state, lengths, save=False)
    return ys, final


def _fused_layer_jvp(layer: _Layer, primals, tangents):
    in_p, rec, xs, state, lengths = primals
    in_dot, rec_dot, xs_dot, state_dot, _ = tangents
    final, (ys, coef, saved) = _forward(layer, in_p, rec, xs, state, lengths, save=True)
    time, batch = xs.shape[:2]
    # Tangents entering the recurrence from outside it, for all steps at once (large matmuls;
    # transposed, they are the weight and input gradients after the backward loop).
    dz, extra = layer.recurrence.weight_dot(rec_dot, state, ys, coef, saved)
    flat_x = xs.reshape(time * batch, xs.shape[-1])
    (w_x, b), (w_x_dot, b_dot) = in_p, in_dot
    terms = [dz] if dz is not None else []
    if not _zero(w_x_dot):
        terms.append(flat_x @ w_x_dot)
    if not _zero(xs_dot):
        terms.append(xs_dot.reshape(time * batch, xs.shape[-1]) @ w_x)
    if not _zero(b_dot):
        terms.append(jnp.broadcast_to(b_dot, (time * batch, b.shape[0])))
    if terms:
        dz = sum(terms[1:], terms[0]).reshape(time, batch, b.shape[0])
    else:
        dz = jnp.zeros((time, batch, b.shape[0]), jnp.result_type(xs, w_x))
    extra = None if extra is None else extra.reshape(time, batch, extra.shape[-1])
    state_dot = tree_map(
        lambda t, p: jnp.zeros_like(p) if _zero(t) else t,
        state_dot,
        state,
        is_leaf=_zero,
    )
    final_dot, ys_dot = _tangent_loop(layer, rec, coef, dz, extra, state_dot, lengths)
    return (ys, final), (ys_dot, final_dot)


_fused_layer.defjvp(_fused_layer_jvp, symbolic_zeros=True)


# Traced trip count: the layer in chunks of static length (see the module's docstring).


def _chunk_in(a, k, chunk: int, axis: int):
    """Steps ``[k * chunk, (k + 1) * chunk)`` of ``a`` (time along ``axis``), time-major."""
    return time_first(lax.dynamic_slice_in_dim(a, k * chunk, chunk, axis), axis)


def _chunk_out(buf, a, k, chunk: int, axis: int):
    """``buf`` (time along ``axis``) with the time-major chunk ``a`` written at chunk ``k``."""
    return lax.dynamic_update_slice_in_dim(buf, time_first(a, axis), k * chunk, axis)


def _inputs_in(layer: _Layer, xs, k, chunk: int, axis: int, lengths):
    """The inputs of chunk ``k``, time-major (the steps past each row's length cleared when
    ``layer.clear``), and the lengths within the chunk."""
    x_k, lengths_k = _chunk_in(xs, k, chunk, axis), lengths - k * chunk
    return (_clear_padding(x_k, lengths_k) if layer.clear else x_k), lengths_k


def _chunk(layer: _Layer, chunk: int, axis: int, in_p, rec, xs, state, lengths, k):
    """Chunk ``k`` of the layer from ``state``: time-major ``(ys_k, final_state)``."""
    x_k, lengths_k = _inputs_in(layer, xs, k, chunk, axis, lengths)
    return _fused_layer(layer, in_p, rec, x_k, state, lengths_k)


def _chunk_count(n, chunk: int):
    return (n + chunk - 1) // chunk


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _chunked(layer: _Layer, chunk: int, axis: int, in_p, rec, xs, state, lengths, n):
    """``(ys, final_state)`` of one layer, running only the chunks of ``xs`` that start before
    the traced trip count ``n``. Time is along ``axis`` of ``xs`` and ``ys``; its length is a
    multiple of ``chunk``. Chunks are read and written in place, so that nothing the size of
    the whole sequence is laid out anew but the outputs."""
    args = (in_p, rec, xs, state, lengths, n)
    ys, final, _ = _chunked_forward(layer, chunk, axis, *args, keep=False)
    return ys, final


def _chunked_forward(layer, chunk, axis, in_p, rec, xs, state, lengths, n, keep: bool):
    """``(ys, final_state, starts)``: ``starts [T / chunk, ...]`` holds each chunk's initial
    state when ``keep`` (``None`` otherwise)."""
    run = partial(_chunk, layer, chunk, axis, in_p, rec, xs)
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


def _chunked_fwd(layer: _Layer, chunk: int, axis: int, in_p, rec, xs, state, lengths, n):
    want_dx = _WantDx(xs.perturbed)
    in_p, rec, xs, state, lengths, n = tree_map(
        lambda a: a.value, (in_p, rec, xs, state, lengths, n), is_leaf=_is_primal
    )
    args = (in_p, rec, xs, state, lengths, n)
    ys, final, starts = _chunked_forward(layer, chunk, axis, *args, keep=True)
    return (ys, final), (in_p, rec, xs, lengths, n, starts, want_dx)


def _chunked_bwd(layer: _Layer, chunk: int, axis: int, res, cts):
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
        x_k, lengths_k = _inputs_in(layer, xs, k, chunk, axis, lengths)
        if _zero(ct_ys):
            shape = jax.eval_shape(lambda: _fused_layer(layer, in_p, rec, x_k, s_k, lengths_k)[0])
            ct_y = jnp.zeros(shape.shape, shape.dtype)
        else:
            ct_y = _chunk_in(ct_ys, k, chunk, axis)
        if want_dx.value:
            _, pull = jax.vjp(
                lambda a, r, x, s: _fused_layer(layer, a, r, x, s, lengths_k), in_p, rec, x_k, s_k
            )
            d_in, d_rec, d_x, d_s = pull((ct_y, ct_s))
            ct_xs = _chunk_out(ct_xs, d_x, k, chunk, axis)
        else:
            _, pull = jax.vjp(
                lambda a, r, s: _fused_layer(layer, a, r, x_k, s, lengths_k), in_p, rec, s_k
            )
            d_in, d_rec, d_s = pull((ct_y, ct_s))
        return d_s, tree_map(jnp.add, g_in, d_in), tree_map(jnp.add, g_rec, d_rec), ct_xs

    zeros = partial(tree_map, jnp.zeros_like)
    init = (ct_final, zeros(in_p), zeros(rec), zeros(xs) if want_dx.value else None)
    ct_s0, g_in, g_rec, ct_xs = lax.fori_loop(0, count, body, init)
    return g_in, g_rec, ct_xs, ct_s0, None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd, symbolic_zeros=True)


def _run_layer(cell, xs, state, dtype, lengths, n, options: RunOptions, unroll: int, clear):
    """One supported cell over ``xs`` (time along ``options.axis``); ``n`` an int or a traced
    trip count. Returns ``(ys, final_state)``, ``ys`` in the layout of ``xs``. ``clear``: the
    steps of ``xs`` past each row's length may hold anything (the caller's inputs, not the
    outputs of a layer below, which are zeros there) and are cleared before they are read."""
    axis = options.axis
    time = xs.shape[axis]
    recurrence = recurrence_of(cell)
    in_p, rec = recurrence.params(cell)
    first = projects_first(options, in_p[0], recurrence.gates)
    if runs_in_chunks(time, n, options.exit_chunk):
        chunk = options.exit_chunk
        layer = _Layer(recurrence, jnp.dtype(dtype), True, unroll, first, clear)
        if time % chunk:  # whole chunks only: pad with steps that every row's length masks
            xs = pad_time(xs, chunk - time % chunk, axis)
        ys, final = _chunked(layer, chunk, axis, in_p, rec, xs, state, lengths, n)
        return lax.slice_in_dim(ys, 0, time, axis=axis), final
    # One chunk at most with a traced count: run every step, masked, without recomputation.
    n = int(n) if isinstance(n, (int, np.integer)) else time
    if n == 0:  # every row has length 0: zero outputs, the initial state
        x0 = lax.index_in_dim(xs, 0, axis, keepdims=False)
        out = jax.eval_shape(lambda: recurrence.step(rec, x0 @ in_p[0], state, None)[0])
        return time_buffer(jax.ShapeDtypeStruct(out.shape, dtype), time, axis=axis), state
    uniform = lengths is None or (not is_traced(lengths) and int(np.min(np.asarray(lengths))) == n)
    layer = _Layer(recurrence, jnp.dtype(dtype), not uniform, unroll, first, clear)
    # Only the first n steps are laid out time-major, run and laid back.
    head = time_first(lax.slice_in_dim(xs, 0, n, axis=axis), axis)
    if layer.masked and layer.clear:
        head = _clear_padding(head, lengths)
    ys, final = _fused_layer(layer, in_p, rec, head, state, None if uniform else lengths)
    return pad_time(time_first(ys, axis), time - n, axis), final


def fused_layers(
    cell, xs, state, dtype, lengths, n, options: RunOptions, unroll: int, clear: bool = True
):
    """``dynamic_rnn``'s loop on the fused path, for a cell where :func:`supports_fused`.

    **Arguments:**

    - ``cell``: a supported cell; a ``MultiRNNCell`` runs layer by layer.
    - ``xs``: inputs ``[T, B, input_size]`` (``[B, T, input_size]`` unless
      ``options.time_major``), already of dtype ``dtype``.
    - ``state``: the initial state, a nest matching ``cell.state_size`` of ``[B, n]`` arrays.
    - ``dtype``: the dtype of the state and the outputs.
    - ``lengths``: ``None`` or validated int32 ``[B]`` lengths (maybe traced); ``n`` their trip
      count (``loop.trip_count``).
    - ``options``, ``unroll``: the call's resolved options and steps per loop iteration.
    - ``clear``: whether the steps of ``xs`` past each row's length may hold anything (NaN
      included) and must be set to zero before they are read: true of the caller's inputs;
      a layer above the first reads the zeros its layer below wrote there.

    **Returns:** ``(outputs, final_state)``, as the generic path.
    """
    if type(cell) is not MultiRNNCell:
        return _run_layer(cell, xs, state, dtype, lengths, n, options, unroll, clear)
    finals = []
    for k, (layer, s) in enumerate(zip(cell.cells, state)):
        with jax.named_scope(f"cell_{k}"):
            first = clear and k == 0
            xs, s = fused_layers(layer, xs, s, dtype, lengths, n, options, unroll, first)
        finals.append(s)
    return xs, tuple(finals)
