"""``BasicLSTMCell`` and ``LSTMCell``: TF1's LSTM cells (gate order ``i, j, f, o``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .base import Cell, LSTMStateTuple
from .checks import (
    KERNEL_INITIALIZER_NOTES,
    LSTM_INITIALIZER_NOTES,
    check_activation,
    check_float_dtype,
    check_key,
    check_kwargs,
    check_positive_int,
    check_real,
    check_scope_name,
    check_state_is_tuple,
)
from .initializers import check_initializer, glorot_uniform, init_weight, zeros_init
from .recurrence import flat, input_rows, is_zero, pre_activation, previous, times, with_slope

__all__ = ["BasicLSTMCell", "LSTMCell", "LSTMRecurrence"]


def _clip(limit: float):
    return lambda x: jnp.clip(x, -limit, limit)


def _forget_bias(value) -> float:
    return check_real(value, "forget_bias", "a number (added to the forget gate)")


def _clip_limit(value, name: str) -> float | None:
    """``None``, or a limit ``>= 0`` (``0.0`` clips to zero, as in TF1)."""
    what = "a number >= 0 or None (0.0 clips to zero, as in TF1)"
    return None if value is None else check_real(value, name, what, minimum=0.0)


@dataclasses.dataclass(frozen=True)
class LSTMRecurrence:
    """Both LSTM cells: peepholes, cell clipping and the projection as TF1's ``LSTMCell``.
    State ``(c, m)``; ``m = h`` without a projection.

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
        w_x, w_h = input_rows(cell.kernel, cell.input_size)
        return (w_x, cell.bias), (w_h, *self._extras(cell))

    def _extras(self, cell):
        peep = (cell.w_i_diag, cell.w_f_diag, cell.w_o_diag) if self.peepholes else None
        return peep, (cell.projection_kernel if self.projection else None)

    def fold(self, w_x, b, rec):
        return jnp.concatenate([w_x, rec[0]]), b

    def cell_weights(self, cell):
        return (None, *self._extras(cell)), (cell.kernel, cell.bias)

    def step(self, rec, x_t, state, fold, slopes: bool = True):
        w_h, peep, proj = rec
        c, m = state
        act, sigmoid = self.activation, jax.nn.sigmoid
        zi, zj, zf, zo = jnp.split(pre_activation(x_t, m, w_h, fold), 4, axis=-1)
        if peep is not None:
            zi, zf = zi + peep[0] * c, zf + peep[1] * c
        i, di = with_slope(sigmoid, zi, slopes)
        j, dj = with_slope(act, zj, slopes)
        f, df = with_slope(sigmoid, zf + self.forget_bias, slopes)
        c_new = f * c + i * j
        if self.cell_clip is not None:
            c_new, clip_slope = with_slope(_clip(self.cell_clip), c_new, slopes)
        if peep is not None:
            zo = zo + peep[2] * c_new
        o, do = with_slope(sigmoid, zo, slopes)
        a_c, da_c = with_slope(act, c_new, slopes)
        m_pre = m_new = o * a_c
        if proj is not None:
            m_new = m_pre @ proj
            if self.proj_clip is not None:
                m_new, proj_slope = with_slope(_clip(self.proj_clip), m_new, slopes)
        new_state = LSTMStateTuple(c_new, m_new)
        if not slopes:
            return m_new, new_state, None, None
        # Local derivatives, for the tangent (see the class docstring).
        k_i, k_j, k_f, k_c = di * j, i * dj, df * c, f
        if peep is not None:
            k_c = k_c + k_i * peep[0] + k_f * peep[1]
        if self.cell_clip is not None:
            k_i, k_j, k_f, k_c = (clip_slope * k for k in (k_i, k_j, k_f, k_c))
        k_o, k_m = do * a_c, o * da_c
        if peep is not None:
            k_m = k_m + k_o * peep[2]
        coef = [jnp.concatenate([k_i, k_j, k_f, k_o], axis=-1), k_c, k_m]
        if proj is not None and self.proj_clip is not None:
            coef.append(proj_slope)
        saved = (c_new if peep is not None else None, m_pre if proj is not None else None)
        return m_new, new_state, tuple(coef), saved

    def tangent(self, rec_t, coef, dz_t, extra_t, state_dot):
        w_h_t, _, proj_t = rec_t
        c_dot, m_dot = state_dot
        gates, k_c, k_m = coef[:3]
        a_i, a_j, a_f, a_o = jnp.split((dz_t + times(m_dot, w_h_t)) * gates, 4, axis=-1)
        c_new = k_c * c_dot + a_i + a_j + a_f
        m_new = k_m * c_new + a_o
        if proj_t is not None:
            m_new = times(m_new, proj_t) if extra_t is None else times(m_new, proj_t) + extra_t
            if self.proj_clip is not None:
                m_new = coef[3] * m_new
        return m_new, LSTMStateTuple(c_new, m_new)

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        w_h_dot, peep_dot, proj_dot = rec_dot
        c_new, m_pre = saved
        parts = [] if is_zero(w_h_dot) else [previous(state0.h, ys) @ w_h_dot]
        if peep_dot is not None and not all(is_zero(p) for p in peep_dot):
            c, c_new = previous(state0.c, c_new), flat(c_new)
            zero = jnp.zeros_like(c)
            i_dot, f_dot, o_dot = (
                zero if is_zero(p) else s * p for p, s in zip(peep_dot, (c, c, c_new))
            )
            parts.append(jnp.concatenate([i_dot, zero, f_dot, o_dot], axis=-1))
        dz = sum(parts[1:], parts[0]) if parts else None
        if not self.projection or is_zero(proj_dot):
            return dz, None
        return dz, flat(m_pre) @ proj_dot


class BasicLSTMCell(Cell):
    r"""TF1's basic LSTM cell (no peepholes, no clipping, no projection).

    ``i, j, f, o = split(concat(x, h) @ kernel + bias, 4)`` (TF1's gate order);
    ``c' = c * sigmoid(f + forget_bias) + sigmoid(i) * activation(j)``;
    ``h' = activation(c') * sigmoid(o)``.

    **Arguments:** ``num_units``, ``input_size``, ``key``, ``forget_bias`` (default 1.0, added at
    run time, not stored in ``bias``; NaN is refused), ``activation`` (default ``jnp.tanh``, also
    for ``None``), ``dtype``, and ``kernel_initializer``, ``bias_initializer``: JAX initializers
    ``(key, shape, dtype) -> array`` (default Glorot-uniform and zeros; they stand in for a TF1
    variable scope's initializer). TF1's ``state_is_tuple`` must be ``True`` (its default);
    ``name`` is, as in TF1, the variable scope of the weights' TF1 names (default
    ``basic_lstm_cell``); ``reuse`` is accepted and has no effect. An unknown keyword is a
    ``TypeError`` naming the closest argument.

    **Weights:** ``kernel [input_size + u, 4u]``, ``bias [4u]`` (zeros); TF1:
    ``basic_lstm_cell/kernel``, ``basic_lstm_cell/bias``.

    **Call:** ``cell(inputs [B, input_size], LSTMStateTuple(c [B, u], h [B, u]))
    -> (h' [B, u], LSTMStateTuple(c', h'))``.

    **Example:**

    >>> cell = recurrax.BasicLSTMCell(8, 3, key=jax.random.key(0))
    >>> h, (c, h) = cell(jnp.ones((4, 3)), cell.zero_state(4))
    """

    kernel: jax.Array
    bias: jax.Array
    forget_bias: float = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "basic_lstm_cell"
    tf1_variables: ClassVar = (("kernel", "kernel"), ("bias", "bias"))

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation=jnp.tanh,
        dtype=jnp.float32,
        kernel_initializer=None,
        bias_initializer=None,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs("BasicLSTMCell", kwargs, BasicLSTMCell.__init__, KERNEL_INITIALIZER_NOTES)
        self.name = check_scope_name(name, "BasicLSTMCell")
        check_state_is_tuple(state_is_tuple, "BasicLSTMCell")
        self.num_units = u = check_positive_int(num_units, "num_units")
        self.input_size = n = check_positive_int(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        self.forget_bias = _forget_bias(forget_bias)
        self.activation = check_activation(activation)
        key = check_key(key)
        k_init = check_initializer(kernel_initializer, "kernel_initializer")
        b_init = check_initializer(bias_initializer, "bias_initializer")
        self.kernel = init_weight(
            k_init, glorot_uniform, key, (n + u, 4 * u), dtype, "kernel_initializer"
        )
        bias_key = jax.random.fold_in(key, 1)
        self.bias = init_weight(b_init, zeros_init, bias_key, (4 * u,), dtype, "bias_initializer")

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_units

    def recurrence(self) -> LSTMRecurrence:
        return LSTMRecurrence(self.activation, self.forget_bias)


class LSTMCell(Cell):
    r"""TF1's full LSTM cell: optional peepholes, cell clipping and an output projection.

    With ``i, j, f, o = split(concat(x, m) @ kernel + bias, 4)``:

    - ``c' = sigmoid(f + forget_bias + w_f_diag * c) * c + sigmoid(i + w_i_diag * c) * act(j)``
      (the ``w_*_diag`` terms only with ``use_peepholes``), then clipped to ``±cell_clip``;
    - ``m' = sigmoid(o + w_o_diag * c') * act(c')``, then ``m' @ projection_kernel`` when
      ``num_proj`` is set, clipped to ``±proj_clip``.

    **Arguments** (TF1's, in TF1's order after ``input_size`` and ``key``): ``use_peepholes``;
    ``cell_clip`` (``None`` or ``>= 0``; ``0.0`` clips ``c`` to zero, so every output is zero, as
    in TF1); ``initializer``, a JAX initializer ``(key, shape, dtype) -> array`` for the kernel,
    the peepholes and the projection (default Glorot-uniform; the bias is zeros, as in TF1);
    ``num_proj``; ``proj_clip`` (``None`` or ``>= 0``; ignored without ``num_proj``, as in TF1,
    and then stored as ``None``); ``num_unit_shards``, ``num_proj_shards`` (``None`` or 1: the
    weights are never sharded); ``forget_bias`` (NaN refused); ``state_is_tuple`` (must be
    ``True``); ``activation`` (default ``jnp.tanh``, also for ``None``); ``name`` (the
    variable scope of the weights' TF1 names, default ``lstm_cell``: ``name="basic_lstm_cell"``
    reads a ``BasicLSTMCell``'s weights, as in TF1); ``reuse`` (no effect); ``dtype``. An
    unknown keyword is a ``TypeError`` naming the closest argument.

    **Weights:** ``kernel [input_size + p, 4u]`` where ``p = num_proj or u``, ``bias [4u]``;
    with peepholes ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` ``[u]``; with ``num_proj``
    ``projection_kernel [u, num_proj]`` (TF1: ``lstm_cell/projection/kernel``). Absent weights
    are ``None``.

    **Call:** ``cell(inputs [B, input_size], LSTMStateTuple(c [B, u], m [B, p]))
    -> (m' [B, p], LSTMStateTuple(c', m'))``.

    **Example:**

    >>> cell = recurrax.LSTMCell(8, 3, key=jax.random.key(0), use_peepholes=True, num_proj=4)
    >>> m, (c, m) = cell(jnp.ones((2, 3)), cell.zero_state(2))
    """

    kernel: jax.Array
    bias: jax.Array
    w_f_diag: jax.Array | None
    w_i_diag: jax.Array | None
    w_o_diag: jax.Array | None
    projection_kernel: jax.Array | None
    use_peepholes: bool = eqx.field(static=True)
    cell_clip: float | None = eqx.field(static=True)
    num_proj: int | None = eqx.field(static=True)
    proj_clip: float | None = eqx.field(static=True)
    forget_bias: float = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "lstm_cell"
    tf1_variables: ClassVar = (
        ("kernel", "kernel"),
        ("bias", "bias"),
        ("w_f_diag", "w_f_diag"),
        ("w_i_diag", "w_i_diag"),
        ("w_o_diag", "w_o_diag"),
        ("projection/kernel", "projection_kernel"),
    )

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        initializer=None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        num_unit_shards: int | None = None,
        num_proj_shards: int | None = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation=jnp.tanh,
        reuse=None,
        name=None,
        dtype=jnp.float32,
        **kwargs,
    ):
        check_kwargs("LSTMCell", kwargs, LSTMCell.__init__, LSTM_INITIALIZER_NOTES)
        self.name = check_scope_name(name, "LSTMCell")
        check_state_is_tuple(state_is_tuple, "LSTMCell")
        for arg, shards in (
            ("num_unit_shards", num_unit_shards),
            ("num_proj_shards", num_proj_shards),
        ):
            if shards not in (None, 1):
                raise ValueError(
                    f"{arg} must be None or 1; got {shards!r}. recurrax keeps each weight as one "
                    "array (the math is the same); to load a sharded TF1 checkpoint, join its "
                    "part_<k> variables with np.concatenate first."
                )
        self.num_units = u = check_positive_int(num_units, "num_units")
        self.input_size = n = check_positive_int(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        self.num_proj = None if num_proj is None else check_positive_int(num_proj, "num_proj")
        self.use_peepholes = bool(use_peepholes)
        self.cell_clip = _clip_limit(cell_clip, "cell_clip")
        proj_clip = _clip_limit(proj_clip, "proj_clip")
        self.proj_clip = None if self.num_proj is None else proj_clip  # TF1 ignores it then
        self.forget_bias = _forget_bias(forget_bias)
        self.activation = check_activation(activation)
        init = check_initializer(initializer, "initializer")
        p = self.num_proj or u
        kkey, fkey, ikey, okey, pkey = jax.random.split(check_key(key), 5)

        def weight(key, shape):
            return init_weight(init, glorot_uniform, key, shape, dtype, "initializer")

        self.kernel = weight(kkey, (n + p, 4 * u))
        self.bias = jnp.zeros((4 * u,), dtype)
        if self.use_peepholes:
            self.w_f_diag = weight(fkey, (u,))
            self.w_i_diag = weight(ikey, (u,))
            self.w_o_diag = weight(okey, (u,))
        else:
            self.w_f_diag = self.w_i_diag = self.w_o_diag = None
        self.projection_kernel = weight(pkey, (u, self.num_proj)) if self.num_proj else None

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_proj or self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    def recurrence(self) -> LSTMRecurrence:
        return LSTMRecurrence(
            self.activation,
            self.forget_bias,
            self.use_peepholes,
            self.cell_clip,
            self.num_proj is not None,
            self.proj_clip,
        )
