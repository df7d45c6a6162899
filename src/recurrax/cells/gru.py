"""``GRUCell``: the gated recurrent unit with TF1's formulation (``gru_cell``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .base import Cell
from .checks import (
    KERNEL_INITIALIZER_NOTES,
    ONE_ARRAY_STATE_NOTES,
    check_activation,
    check_float_dtype,
    check_key,
    check_kwargs,
    check_positive_int,
    check_scope_name,
)
from .initializers import check_initializer, glorot_uniform, init_weight, ones_init, zeros_init
from .recurrence import flat, input_rows, is_zero, pre_activation, previous, times, with_slope

__all__ = ["GRUCell", "GRURecurrence"]


@dataclasses.dataclass(frozen=True)
class GRURecurrence:
    """``r, u = sigmoid(xw_g + h @ W_gh)``; ``c = act(xw_c + (r*h) @ W_ch)``;
    ``h' = u*h + (1-u)*c``. The candidate's recurrent input is ``r*h``, so a step runs two
    dependent matmuls and ``dW_ch = (R*H)^T dZ_c``."""

    gates: ClassVar[int] = 3  # column blocks of the pre-activations: r, u, candidate
    activation: Callable

    def params(self, cell):
        n = cell.input_size
        gx, gh = input_rows(cell.gates_kernel, n)
        cx, ch = input_rows(cell.candidate_kernel, n)
        w_x = jnp.concatenate([gx, cx], axis=1)  # (I, 3u): r, u, candidate
        return (w_x, jnp.concatenate([cell.gates_bias, cell.candidate_bias])), (gh, ch)

    def fold(self, w_x, b, rec):
        (w_gh, w_ch), u2 = rec, rec[0].shape[1]
        gates = jnp.concatenate([w_x[:, :u2], w_gh]), b[:u2]
        return gates, (jnp.concatenate([w_x[:, u2:], w_ch]), b[u2:])

    def cell_weights(self, cell):
        gates = cell.gates_kernel, cell.gates_bias
        return (None, None), (gates, (cell.candidate_kernel, cell.candidate_bias))

    def step(self, rec, x_t, h, fold, slopes: bool = True):
        w_gh, w_ch = rec
        if fold is None:
            u2 = w_gh.shape[1]
            x_g, x_c, fold_g, fold_c = x_t[:, :u2], x_t[:, u2:], None, None
        else:
            x_g, x_c, (fold_g, fold_c) = x_t, x_t, fold
        gates, d_gates = with_slope(jax.nn.sigmoid, pre_activation(x_g, h, w_gh, fold_g), slopes)
        r, u = jnp.split(gates, 2, axis=-1)
        rh = r * h
        c, dc = with_slope(self.activation, pre_activation(x_c, rh, w_ch, fold_c), slopes)
        h_new = u * h + (1 - u) * c
        if not slopes:
            return h_new, h_new, None, None
        dr, du = jnp.split(d_gates, 2, axis=-1)
        k_gates = jnp.concatenate([dr * h, du * (h - c)], axis=-1)
        return h_new, h_new, (k_gates, r, u, (1 - u) * dc), ()

    def tangent(self, rec_t, coef, dz_t, extra_t, h_dot):
        w_gh_t, w_ch_t = rec_t
        k_gates, r, u, k_cand = coef
        u2 = w_gh_t.shape[0]
        r_part, u_part = jnp.split((dz_t[:, :u2] + times(h_dot, w_gh_t)) * k_gates, 2, axis=-1)
        rh_dot = r_part + r * h_dot
        h_new = u_part + u * h_dot + k_cand * (dz_t[:, u2:] + times(rh_dot, w_ch_t))
        return h_new, h_new

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        w_gh_dot, w_ch_dot = rec_dot
        if is_zero(w_gh_dot) and is_zero(w_ch_dot):
            return None, None
        h = previous(state0, ys)
        rh = flat(coef[1]) * h
        gates = (
            jnp.zeros((h.shape[0], 2 * h.shape[1]), h.dtype) if is_zero(w_gh_dot) else h @ w_gh_dot
        )
        cand = jnp.zeros_like(h) if is_zero(w_ch_dot) else rh @ w_ch_dot
        return jnp.concatenate([gates, cand], axis=-1), None


class GRUCell(Cell):
    r"""Gated recurrent unit (Cho et al. 2014) with TF1's formulation.

    ``r, u = split(sigmoid(concat(x, h) @ gates_kernel + gates_bias), 2)``;
    ``c = activation(concat(x, r * h) @ candidate_kernel + candidate_bias)``;
    ``h' = u * h + (1 - u) * c``.

    **Arguments:** ``num_units``, ``input_size``, ``key`` (keyword-only PRNG key),
    ``activation`` (default ``jnp.tanh``, also for ``None``), ``dtype`` (default float32), and
    TF1's ``kernel_initializer`` and ``bias_initializer``: JAX initializers ``(key, shape,
    dtype) -> array`` for both kernels (default Glorot-uniform) and both biases (default: ones
    for the gates, zeros for the candidate, as in TF1). ``name`` is, as in TF1, the variable
    scope of the weights' TF1 names (default ``gru_cell``); ``reuse`` is accepted for ported
    TF1 code and has no effect; an unknown keyword is a ``TypeError`` naming the
    closest argument.

    **Weights:** ``gates_kernel [input_size + u, 2u]``, ``gates_bias [2u]`` (ones),
    ``candidate_kernel [input_size + u, u]``, ``candidate_bias [u]`` (zeros). TF1 names them
    ``gru_cell/gates/kernel``, ``gru_cell/gates/bias``, ``gru_cell/candidate/kernel`` and
    ``gru_cell/candidate/bias``.

    **Call:** ``cell(inputs [B, input_size], state [B, u]) -> (output [B, u], state [B, u])``.

    **Example:**

    >>> cell = recurrax.GRUCell(8, 3, key=jax.random.key(0))
    >>> h, h = cell(jnp.ones((4, 3)), cell.zero_state(4))
    """

    gates_kernel: jax.Array
    gates_bias: jax.Array
    candidate_kernel: jax.Array
    candidate_bias: jax.Array
    activation: Callable = eqx.field(static=True)
    _dtype_weight: ClassVar[str] = "gates_kernel"
    tf1_scope: ClassVar[str] = "gru_cell"
    tf1_variables: ClassVar = (
        ("gates/kernel", "gates_kernel"),
        ("gates/bias", "gates_bias"),
        ("candidate/kernel", "candidate_kernel"),
        ("candidate/bias", "candidate_bias"),
    )

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        activation=jnp.tanh,
        dtype=jnp.float32,
        kernel_initializer=None,
        bias_initializer=None,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs(
            "GRUCell",
            kwargs,
            GRUCell.__init__,
            {**KERNEL_INITIALIZER_NOTES, **ONE_ARRAY_STATE_NOTES},
        )
        self.name = check_scope_name(name, "GRUCell")
        self.num_units = u = check_positive_int(num_units, "num_units")
        self.input_size = n = check_positive_int(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        gkey, ckey = jax.random.split(check_key(key))
        self.activation = check_activation(activation)
        k_init = check_initializer(kernel_initializer, "kernel_initializer")
        b_init = check_initializer(bias_initializer, "bias_initializer")

        def weight(init, default, key, shape, what):
            return init_weight(init, default, key, shape, dtype, what)

        self.gates_kernel = weight(
            k_init, glorot_uniform, gkey, (n + u, 2 * u), "kernel_initializer"
        )
        self.gates_bias = weight(
            b_init, ones_init, jax.random.fold_in(gkey, 1), (2 * u,), "bias_initializer"
        )
        self.candidate_kernel = weight(
            k_init, glorot_uniform, ckey, (n + u, u), "kernel_initializer"
        )
        self.candidate_bias = weight(
            b_init, zeros_init, jax.random.fold_in(ckey, 1), (u,), "bias_initializer"
        )

    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units

    def recurrence(self) -> GRURecurrence:
        return GRURecurrence(self.activation)
