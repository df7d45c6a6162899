"""The built-in cells split for the fused path: input projection, recurrence, linear tangent.

Each kernel below describes one cell family to the engine in ``_fused.py``:

- ``params(cell) -> (w_x [I, G], b [G]), rec``: the kernel's input rows (for every gate, side by
  side) and bias, and the recurrent weights ``rec``. Projecting before the loop, the engine
  computes ``xw = x @ w_x + b`` for all steps as one matmul (``_fused.INPUT_PROJECTION``).
- ``fold(w_x, b, rec)``: the weights a step needs to project its own input, when the input
  projection runs inside the loop (``concat([x_t, h]) @ kernel`` as the generic cell does).
- ``step(rec, x_t, state, fold) -> (output, new_state, coef, saved)``: one step of the cell.
  With ``fold=None``, ``x_t [B, G]`` is the projected input ``xw_t``; otherwise the raw input
  ``[B, I]``, projected with ``fold``. ``coef`` (per step, ``[B, ...]``) are the local
  derivatives the tangent needs; ``saved`` what the weight tangents need besides the outputs
  (``LSTMCell``'s cell state with peepholes, its output before the projection).
- ``tangent(rec_t, coef, dz_t, extra_t, state_dot) -> (output_dot, new_state_dot)``: the step's
  tangent, *linear* in ``dz_t``, ``extra_t`` and ``state_dot``; ``rec_t`` is ``rec`` with every
  matrix transposed (see :func:`_times`). ``dz_t [B, G]`` is the tangent of
  the step's pre-activations that comes from outside the recurrence (the input projection and the
  weights' own tangents); ``extra_t`` is ``None`` except for ``LSTMCell``'s projection.
- ``weight_dot(rec_dot, state0, ys, coef, saved) -> (dz [T*B, G], extra [T*B, P])``: the
  weights' tangent contribution for all steps at once, e.g. ``H_prev @ dW_h`` as one
  ``[T*B, H] x [H, G]`` matmul (``None`` where the weights' tangents are zero). ``H_prev`` is
  the outputs ``ys [T, B, out]`` shifted by one step (:func:`_previous`), not a saved copy.

JAX transposes ``tangent`` into the backward step (``dZ_t``, then ``dZ_t @ W_h^T``) and
``weight_dot`` into the weight gradients as large matmuls after the loop
(``dW_h = H_prev^T dZ``): the structure of cuDNN's RNN backward pass. Local derivatives come from
``jax.jvp`` of the very functions the cells call, so they follow JAX's conventions exactly (e.g.
at the edge of a ``jnp.clip``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from ._base import LSTMStateTuple
from ._cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell

__all__ = ["kernel_for", "RNNKernel", "GRUKernel", "LSTMKernel"]


def _with_slope(fn, x):
    """``(fn(x), fn'(x))`` for an elementwise ``fn``."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))


def _zero(t) -> bool:
    return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def _flat(a):
    return a.reshape(-1, a.shape[-1])  # (T, B, n) -> (T*B, n)


def _previous(first, stack):
    """``[first, stack[0], ..., stack[T-2]]`` flattened to ``[T*B, n]``: each step's input state.

    Past a row's length the outputs are zeros, not the carried state, but there the step's
    tangent is discarded (forward mode) and its ``dZ_t`` is zero (reverse mode).
    """
    return _flat(jnp.concatenate([first[None], stack[:-1]]))


def _input_rows(kernel, n_in: int):
    return kernel[:n_in], kernel[n_in:]


def _times(v, w_t):
    """``v @ w`` given ``w_t = w.T``: the tangent reads transposed copies of the recurrent
    weights, made once before the loop, so that its transpose, the backward step ``dZ_t @ W^T``,
    reads a contiguous matrix (on CPU, 1.4x faster for ``[16, 4096] x [4096, 1024]``)."""
    return lax.dot_general(v, w_t, (((1,), (1,)), ((), ())))  # no transpose op to hoist or fold


def _pre(x_t, h, w_h, fold):
    """Pre-activations: ``xw_t + h @ W_h``, or ``concat([x_t, h]) @ kernel + b`` with ``fold``."""
    if fold is None:
        return x_t + h @ w_h
    kernel, b = fold
    return jnp.concatenate([x_t, h], axis=-1) @ kernel + b


@dataclasses.dataclass(frozen=True)
class RNNKernel:
    """``BasicRNNCell``: ``h' = act(xw_t + h @ W_h)``."""

    gates: ClassVar[int] = 1  # column blocks of the pre-activations
    activation: Callable

    def params(self, cell):
        w_x, w_h = _input_rows(cell.kernel, cell.input_size)
        return (w_x, cell.bias), (w_h,)

    def fold(self, w_x, b, rec):
        return jnp.concatenate([w_x, rec[0]]), b

    def step(self, rec, x_t, h, fold):
        (w_h,) = rec
        h_new, slope = _with_slope(self.activation, _pre(x_t, h, w_h, fold))
        return h_new, h_new, (slope,), ()

    def tangent(self, rec_t, coef, dz_t, extra_t, h_dot):
        (w_h_t,) = rec_t
        (slope,) = coef
        h_dot = slope * (dz_t + _times(h_dot, w_h_t))
        return h_dot, h_dot

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        (w_h_dot,) = rec_dot
        return (None if _zero(w_h_dot) else _previous(state0, ys) @ w_h_dot), None


@dataclasses.dataclass(frozen=True)
class GRUKernel:
    """``GRUCell`` (TF1): ``r, u = sigmoid(xw_g + h @ W_gh)``; ``c = act(xw_c + (r*h) @ W_ch)``;
    ``h' = u*h + (1-u)*c``. The candidate's recurrent input is ``r*h``, so the step runs two
    dependent matmuls and ``dW_ch = (R*H)^T dZ_c``."""

    gates: ClassVar[int] = 3  # column blocks of the pre-activations
    activation: Callable

    def params(self, cell):
        n = cell.input_size
        gx, gh = _input_rows(cell.gates_kernel, n)
        cx, ch = _input_rows(cell.candidate_kernel, n)
        w_x = jnp.concatenate([gx, cx], axis=1)  # (I, 3u): r, u, candidate
        return (w_x, jnp.concatenate([cell.gates_bias, cell.candidate_bias])), (gh, ch)

    def fold(self, w_x, b, rec):
        (w_gh, w_ch), u2 = rec, rec[0].shape[1]
        gates = jnp.concatenate([w_x[:, :u2], w_gh]), b[:u2]
        return gates, (jnp.concatenate([w_x[:, u2:], w_ch]), b[u2:])

    def step(self, rec, x_t, h, fold):
        w_gh, w_ch = rec
        u2 = w_gh.shape[1]
        if fold is None:
            x_g, x_c, fold_g, fold_c = x_t[:, :u2], x_t[:, u2:], None, None
        else:
            x_g, x_c, (fold_g, fold_c) = x_t, x_t, fold
        (r, u), (dr, du) = (
            jnp.split(a, 2, axis=-1)
            for a in _with_slope(jax.nn.sigmoid, _pre(x_g, h, w_gh, fold_g))
        )
        rh = r * h
        c, dc = _with_slope(self.activation, _pre(x_c, rh, w_ch, fold_c))
        h_new = u * h + (1 - u) * c
        k_gates = jnp.concatenate([dr * h, du * (h - c)], axis=-1)
        return h_new, h_new, (k_gates, r, u, (1 - u) * dc), ()

    def tangent(self, rec_t, coef, dz_t, extra_t, h_dot):
        w_gh_t, w_ch_t = rec_t
        k_gates, r, u, k_cand = coef
        u2 = w_gh_t.shape[0]
        r_part, u_part = jnp.split((dz_t[:, :u2] + _times(h_dot, w_gh_t)) * k_gates, 2, axis=-1)
        rh_dot = r_part + r * h_dot
        h_new = u_part + u * h_dot + k_cand * (dz_t[:, u2:] + _times(rh_dot, w_ch_t))
        return h_new, h_new

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        w_gh_dot, w_ch_dot = rec_dot
        if _zero(w_gh_dot) and _zero(w_ch_dot):
            return None, None
        h = _previous(state0, ys)
        rh = _flat(coef[1]) * h
        gates = (
            jnp.zeros((h.shape[0], 2 * h.shape[1]), h.dtype) if _zero(w_gh_dot) else h @ w_gh_dot
        )
        cand = jnp.zeros_like(h) if _zero(w_ch_dot) else rh @ w_ch_dot
        return jnp.concatenate([gates, cand], axis=-1), None


@dataclasses.dataclass(frozen=True)
class LSTMKernel:
    """``BasicLSTMCell`` and ``LSTMCell`` (gate order ``i, j, f, o``; peepholes, clipping and
    the projection as TF1). State ``(c, m)``; ``m = h`` without a projection.

    The tangent of a step is ``a = (dz_t + m_dot @ W_h) * G``, ``c' = F*c_dot + a_i + a_j + a_f``,
    ``m' = K*c' + a_o`` (then ``@ P`` and the clip's slope with a projection), where the per-step
    coefficients ``G [B, 4u]``, ``F``, ``K [B, u]`` absorb the gates' slopes, the peepholes and
    the slope of ``cell_clip``.
    """

    gates: ClassVar[int] = 4  # column blocks of the pre-activations
    activation: Callable
    forget_bias: float
    peepholes: bool = False
    cell_clip: float | None = None
    projection: bool = False
    proj_clip: float | None = None

    def params(self, cell):
        w_x, w_h = _input_rows(cell.kernel, cell.input_size)
        peep = (cell.w_i_diag, cell.w_f_diag, cell.w_o_diag) if self.peepholes else None
        proj = cell.projection_kernel if self.projection else None
        return (w_x, cell.bias), (w_h, peep, proj)

    def fold(self, w_x, b, rec):
        return jnp.concatenate([w_x, rec[0]]), b

    def step(self, rec, x_t, state, fold):
        w_h, peep, proj = rec
        c, m = state
        act, sigmoid = self.activation, jax.nn.sigmoid
        zi, zj, zf, zo = jnp.split(_pre(x_t, m, w_h, fold), 4, axis=-1)
        if peep is not None:
            zi, zf = zi + peep[0] * c, zf + peep[1] * c
        i, di = _with_slope(sigmoid, zi)
        j, dj = _with_slope(act, zj)
        f, df = _with_slope(sigmoid, zf + self.forget_bias)
        c_new = f * c + i * j
        k_i, k_j, k_f, k_c = di * j, i * dj, df * c, f
        if peep is not None:
            k_c = k_c + k_i * peep[0] + k_f * peep[1]
        if self.cell_clip is not None:
            c_new, clip_slope = _with_slope(self._clip(self.cell_clip), c_new)
            k_i, k_j, k_f, k_c = (clip_slope * k for k in (k_i, k_j, k_f, k_c))
        if peep is not None:
            zo = zo + peep[2] * c_new
        o, do = _with_slope(sigmoid, zo)
        a_c, da_c = _with_slope(act, c_new)
        k_o, k_m = do * a_c, o * da_c
        if peep is not None:
            k_m = k_m + k_o * peep[2]
        m_new = o * a_c
        coef = [jnp.concatenate([k_i, k_j, k_f, k_o], axis=-1), k_c, k_m]
        saved = (c_new if peep is not None else None, m_new if proj is not None else None)
        if proj is not None:
            m_new = m_new @ proj
            if self.proj_clip is not None:
                m_new, proj_slope = _with_slope(self._clip(self.proj_clip), m_new)
                coef.append(proj_slope)
        return m_new, LSTMStateTuple(c_new, m_new), tuple(coef), saved

    @staticmethod
    def _clip(limit: float):
        return lambda x: jnp.clip(x, -limit, limit)

    def tangent(self, rec_t, coef, dz_t, extra_t, state_dot):
        w_h_t, _, proj_t = rec_t
        c_dot, m_dot = state_dot
        gates, k_c, k_m = coef[:3]
        a_i, a_j, a_f, a_o = jnp.split((dz_t + _times(m_dot, w_h_t)) * gates, 4, axis=-1)
        c_new = k_c * c_dot + a_i + a_j + a_f
        m_new = k_m * c_new + a_o
        if proj_t is not None:
            m_new = _times(m_new, proj_t) if extra_t is None else _times(m_new, proj_t) + extra_t
            if self.proj_clip is not None:
                m_new = coef[3] * m_new
        return m_new, LSTMStateTuple(c_new, m_new)

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        w_h_dot, peep_dot, proj_dot = rec_dot
        c_new, m_pre = saved
        parts = [] if _zero(w_h_dot) else [_previous(state0.h, ys) @ w_h_dot]
        if peep_dot is not None and not all(_zero(p) for p in peep_dot):
            c, c_new = _previous(state0.c, c_new), _flat(c_new)
            zero = jnp.zeros_like(c)
            i_dot, f_dot, o_dot = (
                zero if _zero(p) else s * p for p, s in zip(peep_dot, (c, c, c_new))
            )
            parts.append(jnp.concatenate([i_dot, zero, f_dot, o_dot], axis=-1))
        dz = sum(parts[1:], parts[0]) if parts else None
        if not self.projection or _zero(proj_dot):
            return dz, None
        return dz, _flat(m_pre) @ proj_dot


def kernel_for(cell):
    """The kernel of a built-in cell of exactly one of the supported types, else ``None``."""
    kind = type(cell)
    if kind is BasicRNNCell:
        return RNNKernel(cell.activation)
    if kind is GRUCell:
        return GRUKernel(cell.activation)
    if kind is BasicLSTMCell:
        return LSTMKernel(cell.activation, cell.forget_bias)
    if kind is LSTMCell:
        return LSTMKernel(
            cell.activation,
            cell.forget_bias,
            cell.use_peepholes,
            cell.cell_clip,
            cell.num_proj is not None,
            cell.proj_clip,
        )
    return None
