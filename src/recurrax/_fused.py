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
through), and the loops stop at ``max(sequence_length)``: with concrete lengths every loop runs
that many steps; with traced ones (under ``jax.jit``) the forward loop is a ``lax.while_loop``
that exits early and the backward loop skips the steps past it.

Each layer of a ``MultiRNNCell`` runs over the whole sequence before the next: the outputs and
final states are those of the step-by-step stack, since a row's steps past its length change
nothing in any layer.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._fused_cells import kernel_for
from ._lengths import mask_output, select_state
from ._loop import _check_unroll, trip_count
from ._memory import StoreAll, resolve_memory
from ._wrappers import MultiRNNCell

__all__ = ["supports_fused", "use_fused", "fused_dynamic_rnn"]

tree_map = jax.tree_util.tree_map

#: Where the fused path projects the inputs: ``"before_loop"`` (``XW = X @ W_x`` for all steps as
#: one matmul, cuDNN's way), ``"in_loop"`` (``concat([x_t, h]) @ kernel`` inside each step, as
#: the generic cell) or ``"auto"``: before the loop on GPU and TPU; on CPU in the loop unless
#: ``W_x`` is larger than :data:`CPU_CACHE_BYTES`. On CPU, streaming the ``[T, B, G]`` array
#: ``XW`` from memory at every step measured up to 2x slower than recomputing ``x_t @ W_x``
#: while ``W_x`` stays in cache (README, "Speed"). The backward pass is the same either way:
#: ``dW_x = X^T dZ`` after the loop.
INPUT_PROJECTION = "auto"
CPU_CACHE_BYTES = 4 * 2**20


def _project_first(w_x) -> bool:
    if INPUT_PROJECTION not in ("auto", "before_loop", "in_loop"):
        raise ValueError(
            "recurrax._fused.INPUT_PROJECTION must be 'auto', 'before_loop' or 'in_loop'; "
            f"got {INPUT_PROJECTION!r}."
        )
    if INPUT_PROJECTION == "auto":
        big = w_x.size * w_x.dtype.itemsize > CPU_CACHE_BYTES
        return jax.default_backend() != "cpu" or big
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
    early_exit: bool  # the trip count is traced: a while loop forward, skipped steps backward
    unroll: int
    project_first: bool  # XW = X @ W_x for all steps before the loop, else inside each step


def _cast(tree, dtype):
    return tree_map(lambda a: a.astype(dtype), tree)


def _zero(t) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _step(plan: _Plan, rec, x_t, state, valid_t, save: bool, fold):
    """One masked step: ``(new_state, output)`` or ``(new_state, (output, coef, saved))``."""
    out, new, coef, saved = plan.kernel.step(rec, x_t, state, fold)
    out, new = _cast(out, plan.dtype), _cast(new, plan.dtype)
    if valid_t is not None:
        out, new = mask_output(valid_t, out), select_state(valid_t, new, state)
    return new, ((out, coef, saved) if save else out)


def _forward(plan: _Plan, in_p, rec, xs, state, lengths, n, save: bool):
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
    if not plan.early_exit:

        def body(s, inp):
            x_t, valid_t = inp
            return _step(plan, rec, x_t, s, valid_t, save, fold)

        return lax.scan(body, state, (xs, valid), unroll=plan.unroll)

    # Traced trip count: a while loop writing each step into buffers, stopping at n.
    one = jax.eval_shape(lambda: _step(plan, rec, xs[0], state, _at(valid, 0), save, fold)[1])
    bufs = tree_map(lambda s: jnp.zeros((time, *s.shape), s.dtype), one)

    def body_n(t, c):
        s, bufs = c
        s, res = _step(plan, rec, xs[t], s, _at(valid, t), save, fold)
        return s, tree_map(lambda a, v: lax.dynamic_update_index_in_dim(a, v, t, 0), bufs, res)

    return lax.fori_loop(0, n, body_n, (state, bufs))


def _valid(plan: _Plan, lengths, time: int):
    """``[T, B]`` booleans, step ``t`` inside row ``b``'s length (``None`` when unmasked)."""
    if not plan.masked:
        return None
    return jnp.arange(time, dtype=jnp.int32)[:, None] < lengths[None, :]


def _at(tree, t):
    return tree_map(lambda a: a[t], tree)


def _tangent_loop(plan: _Plan, rec, coef, dz, extra, state_dot, lengths, n):
    """The linear loop ``(dz, extra, state_dot) -> (ys_dot, final_state_dot)``.

    Every value it reads besides its linear inputs is precomputed (``coef``, the masks, the
    transposed weights), so that JAX's transpose of it is the backward loop alone.
    """
    time = dz.shape[0]
    # The barrier keeps XLA from folding the transposes back into the loop's matmuls.
    rec_t = lax.optimization_barrier(tree_map(lambda w: w.T if w.ndim == 2 else w, rec))
    valid = _valid(plan, lengths, time)
    active = jnp.arange(time, dtype=jnp.int32) < n if plan.early_exit else None

    def step(s_dot, coef_t, dz_t, extra_t, valid_t):
        out, new = plan.kernel.tangent(rec_t, coef_t, dz_t, extra_t, s_dot)
        out, new = _cast(out, plan.dtype), _cast(new, plan.dtype)
        if valid_t is not None:
            out, new = mask_output(valid_t, out), select_state(valid_t, new, s_dot)
        return new, out

    def body(s_dot, inp):
        coef_t, dz_t, extra_t, valid_t, active_t = inp
        run = partial(step, coef_t=coef_t, dz_t=dz_t, extra_t=extra_t, valid_t=valid_t)
        if active_t is None:
            return run(s_dot)
        out_shape = jax.eval_shape(run, s_dot)[1]

        def skip(s):  # past the trip count every row is masked: no change, zero outputs
            return s, tree_map(lambda o: jnp.zeros(o.shape, o.dtype), out_shape)

        return lax.cond(active_t, run, skip, s_dot)

    return lax.scan(body, state_dot, (coef, dz, extra, valid, active), unroll=plan.unroll)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _layer(plan: _Plan, in_p, rec, xs, state, lengths, n):
    """``(ys [T, B, out], final_state)`` of one layer; ``n`` the traced trip count or ``None``."""
    final, ys = _forward(plan, in_p, rec, xs, state, lengths, n, save=False)
    return ys, final


def _layer_jvp(plan: _Plan, primals, tangents):
    in_p, rec, xs, state, lengths, n = primals
    in_dot, rec_dot, xs_dot, state_dot, _, _ = tangents
    final, (ys, coef, saved) = _forward(plan, in_p, rec, xs, state, lengths, n, save=True)
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
    final_dot, ys_dot = _tangent_loop(plan, rec, coef, dz, extra, state_dot, lengths, n)
    return (ys, final), (ys_dot, final_dot)


_layer.defjvp(_layer_jvp, symbolic_zeros=True)


def _run_layer(cell, xs, state, dtype, lengths, n, unroll: int):
    """One supported cell over ``xs [T, B, I]``; ``n`` an int or a traced trip count."""
    time = xs.shape[0]
    kernel = kernel_for(cell)
    in_p, rec = kernel.params(cell)
    first = _project_first(in_p[0])
    if isinstance(n, (int, np.integer)):
        n = int(n)
        if n == 0:  # every row has length 0: zero outputs, the initial state
            out = jax.eval_shape(lambda: kernel.step(rec, xs[0] @ in_p[0], state, None)[0])
            return jnp.zeros((time, *out.shape), dtype), state
        uniform = lengths is None or (
            not isinstance(lengths, jax.core.Tracer) and int(np.min(np.asarray(lengths))) == n
        )
        plan = _Plan(kernel, jnp.dtype(dtype), not uniform, False, unroll, first)
        ys, final = _layer(plan, in_p, rec, xs[:n], state, None if uniform else lengths, None)
        if n < time:
            ys = jnp.concatenate([ys, jnp.zeros((time - n, *ys.shape[1:]), ys.dtype)])
        return ys, final
    plan = _Plan(kernel, jnp.dtype(dtype), True, True, unroll, first)
    return _layer(plan, in_p, rec, xs, state, lengths, n)


def fused_dynamic_rnn(cell, xs, state, dtype, sequence_length=None, unroll: int = 1):
    """``dynamic_rnn``'s loop on the fused path, for a cell where :func:`supports_fused`.

    **Arguments:**

    - ``cell``: a supported cell (see :func:`supports_fused`).
    - ``xs``: time-major inputs ``[T, B, input_size]``, already of dtype ``dtype``.
    - ``state``: the initial state, a nest matching ``cell.state_size`` of ``[B, n]`` arrays.
    - ``dtype``: the dtype of the state and the outputs.
    - ``sequence_length``: ``None`` or validated int32 ``[B]`` lengths (maybe traced).
    - ``unroll``: steps per iteration of the compiled loops.

    **Returns:** ``(outputs [T, B, output_size], final_state)``, as the generic path.
    """
    unroll = _check_unroll(unroll)
    n = trip_count(sequence_length, xs.shape[0])
    if type(cell) is not MultiRNNCell:
        return _run_layer(cell, xs, state, dtype, sequence_length, n, unroll)
    finals = []
    for k, (layer, s) in enumerate(zip(cell.cells, state)):
        with jax.named_scope(f"cell_{k}"):
            xs, s = fused_dynamic_rnn(layer, xs, s, dtype, sequence_length, unroll)
        finals.append(s)
    return xs, tuple(finals)
