"""``BasicRNNCell``: ``h' = activation(concat(x, h) @ kernel + bias)``, TF1's ``basic_rnn_cell``."""

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
from .initializers import check_initializer, glorot_uniform, init_weight, zeros_init
from .recurrence import input_rows, is_zero, pre_activation, previous, times, with_slope

__all__ = ["BasicRNNCell", "RNNRecurrence"]


@dataclasses.dataclass(frozen=True)
class RNNRecurrence:
    """``h' = act(xw_t + h @ W_h)`` (see ``recurrence.py`` for the methods' contract)."""

    gates: ClassVar[int] = 1  # column blocks of the pre-activations
    activation: Callable

    def params(self, cell):
        w_x, w_h = input_rows(cell.kernel, cell.input_size)
        return (w_x, cell.bias), (w_h,)

    def fold(self, w_x, b, rec):
        return jnp.concatenate([w_x, rec[0]]), b

    def cell_weights(self, cell):
        return (None,), (cell.kernel, cell.bias)

    def step(self, rec, x_t, h, fold, slopes: bool = True):
        (w_h,) = rec
        h_new, slope = with_slope(self.activation, pre_activation(x_t, h, w_h, fold), slopes)
        return h_new, h_new, (slope,), ()

    def tangent(self, rec_t, coef, dz_t, extra_t, h_dot):
        (w_h_t,) = rec_t
        (slope,) = coef
        h_dot = slope * (dz_t + times(h_dot, w_h_t))
        return h_dot, h_dot

    def weight_dot(self, rec_dot, state0, ys, coef, saved):
        (w_h_dot,) = rec_dot
        return (None if is_zero(w_h_dot) else previous(state0, ys) @ w_h_dot), None


class BasicRNNCell(Cell):
    r"""The most basic RNN cell: ``h' = activation(concat(x, h) @ kernel + bias)``.

    **Arguments:**

    - ``num_units``: ``u``, the size of the state and of the output.
    - ``input_size``: the feature size of one step's inputs.
    - ``key``: a PRNG key (keyword-only) for the initial weights.
    - ``activation``: default ``jnp.tanh`` (also for ``None``, as in TF1).
    - ``dtype``: the weights' dtype (default float32).
    - ``kernel_initializer``, ``bias_initializer``: JAX initializers ``(key, shape, dtype) ->
      array`` for the kernel (default Glorot-uniform, TF1's) and the bias (default zeros), e.g.
      :func:`~recurrax.random_uniform_initializer`. They stand in for the
      initializer of a TF1 variable scope.
    - ``name``: as in TF1, the variable scope of the weights' TF1 names (default
      ``basic_rnn_cell``); ``reuse``: accepted for ported code, no effect (the cell object is
      its weights).

    An unknown keyword is a ``TypeError`` naming the closest argument.

    **Weights:** ``kernel [input_size + u, u]``, ``bias [u]`` (zeros); TF1 names them
    ``basic_rnn_cell/kernel`` and ``basic_rnn_cell/bias``.

    **Call:** ``cell(inputs [B, input_size], state [B, u]) -> (output [B, u], state [B, u])``;
    output and new state are the same array.

    **Example:**

    >>> cell = recurrax.BasicRNNCell(5, 3, key=jax.random.key(0))
    >>> h, h = cell(jnp.ones((4, 3)), cell.zero_state(4))
    """

    kernel: jax.Array
    bias: jax.Array
    activation: Callable = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "basic_rnn_cell"
    tf1_variables: ClassVar = (("kernel", "kernel"), ("bias", "bias"))

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
            "BasicRNNCell",
            kwargs,
            BasicRNNCell.__init__,
            {**KERNEL_INITIALIZER_NOTES, **ONE_ARRAY_STATE_NOTES},
        )
        self.name = check_scope_name(name, "BasicRNNCell")
        self.num_units = u = check_positive_int(num_units, "num_units")
        self.input_size = n = check_positive_int(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        key = check_key(key)
        self.activation = check_activation(activation)
        k_init = check_initializer(kernel_initializer, "kernel_initializer")
        b_init = check_initializer(bias_initializer, "bias_initializer")
        self.kernel = init_weight(
            k_init, glorot_uniform, key, (n + u, u), dtype, "kernel_initializer"
        )
        bias_key = jax.random.fold_in(key, 1)
        self.bias = init_weight(b_init, zeros_init, bias_key, (u,), dtype, "bias_initializer")

    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units

    def recurrence(self) -> RNNRecurrence:
        return RNNRecurrence(self.activation)
