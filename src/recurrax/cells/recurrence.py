"""What a built-in cell family tells the engine: its step math, split for the fused path.

Each family (``rnn.py``, ``gru.py``, ``lstm.py``) describes itself with a small frozen
*recurrence* object (its static configuration: activation, forget bias, ...), returned by the
cell's ``recurrence()`` method:

- ``params(cell) -> ((w_x [I, G], b [G]), rec)``: the kernels' input rows (every gate side by
  side) and bias, and the recurrent weights ``rec``. Projecting before the loop, the engine
  computes ``xw = x @ w_x + b`` for all steps as one matmul.
- ``fold(w_x, b, rec)``: the weights a step needs to project its own input (``concat([x_t, h]) @
  kernel + b``), when the projection runs inside the loop; ``cell_weights(cell) -> (rec, fold)``
  gives the same straight from the cell's weights, for a plain call of the cell.
- ``step(rec, x_t, state, fold, slopes=True) -> (output, new_state, coef, saved)``: one step of
  the cell, *the* cell math (``Cell.__call__`` runs it with ``slopes=False``). With
  ``fold=None``, ``x_t [B, G]`` is the projected input ``xw_t``; otherwise the raw input
  ``[B, I]``, projected with ``fold``. ``coef`` (per step, ``[B, ...]``) are the local
  derivatives the tangent needs and ``saved`` what the weight tangents need besides the outputs
  (both ``None`` without ``slopes``).
- ``tangent(rec_t, coef, dz_t, extra_t, state_dot) -> (output_dot, new_state_dot)``: the step's
  tangent, *linear* in ``dz_t``, ``extra_t`` and ``state_dot``; ``rec_t`` is ``rec`` with every
  matrix transposed (see :func:`times`). ``dz_t [B, G]`` is the tangent of the step's
  pre-activations that comes from outside the recurrence (the input projection and the weights'
  own tangents); ``extra_t`` is ``None`` except for ``LSTMCell``'s projection.
- ``weight_dot(rec_dot, state0, ys, coef, saved) -> (dz [T*B, G], extra [T*B, P])``: the
  weights' tangent contribution for all steps at once, e.g. ``H_prev @ dW_h`` as one
  ``[T*B, H] x [H, G]`` matmul (``None`` where the weights' tangents are zero). ``H_prev`` is
  the outputs ``ys [T, B, out]`` shifted by one step (:func:`previous`), not a saved copy.

JAX transposes ``tangent`` into the backward step (``dZ_t``, then ``dZ_t @ W_h^T``) and
``weight_dot`` into the weight gradients as large matmuls after the loop
(``dW_h = H_prev^T dZ``): the structure of cuDNN's RNN backward pass. Local derivatives come from
``jax.jvp`` of the very functions the step calls, so they follow JAX's conventions exactly (e.g.
at the edge of a ``jnp.clip``).

The helpers below are shared by the families.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["with_slope", "is_zero", "flat", "previous", "input_rows", "times", "pre_activation"]


def with_slope(fn, x, slopes: bool = True):
    """``(fn(x), fn'(x))`` for an elementwise ``fn``; ``(fn(x), None)`` without ``slopes``."""
    if not slopes:
        return fn(x), None
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))


def is_zero(t) -> bool:
    """Whether a tangent is absent (``None`` or JAX's symbolic zero)."""
    return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def flat(a):
    return a.reshape(-1, a.shape[-1])  # (T, B, n) -> (T*B, n)


def previous(first, stack):
    """``[first, stack[0], ..., stack[T-2]]`` flattened to ``[T*B, n]``: each step's input state.

    Past a row's length the outputs are zeros, not the carried state, but there the step's
    tangent is discarded (forward mode) and its ``dZ_t`` is zero (reverse mode).
    """
    return flat(jnp.concatenate([first[None], stack[:-1]]))


def input_rows(kernel, n_in: int):
    """A TF1 kernel ``[n_in + H, G]`` split into its input rows and its recurrent rows."""
    return kernel[:n_in], kernel[n_in:]


def times(v, w_t):
    """``v @ w`` given ``w_t = w.T``: the tangent reads transposed copies of the recurrent
    weights, made once before the loop, so that its transpose, the backward step ``dZ_t @ W^T``,
    reads a contiguous matrix."""
    return lax.dot_general(v, w_t, (((1,), (1,)), ((), ())))  # no transpose op to hoist or fold


def pre_activation(x_t, h, w_h, fold):
    """``xw_t + h @ W_h``, or ``concat([x_t, h]) @ kernel + b`` with ``fold = (kernel, b)``."""
    if fold is None:
        return x_t + h @ w_h
    kernel, b = fold
    return jnp.concatenate([x_t, h], axis=-1) @ kernel + b
