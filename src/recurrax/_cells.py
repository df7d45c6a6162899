"""TF1's built-in cells: BasicRNNCell, GRUCell, BasicLSTMCell and LSTMCell.

Weights are pytree leaves named and shaped as TF1 names its variables, so a TF1 checkpoint's
arrays can be dropped in with ``eqx.tree_at``. Every kernel acts on ``concat([inputs, state])``
(inputs first), exactly as in ``tensorflow/python/ops/rnn_cell_impl.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import (
    LSTMStateTuple,
    check_float_dtype,
    check_key,
    check_num_units,
    glorot_uniform,
    zero_state_for,
)

__all__ = ["BasicRNNCell", "GRUCell", "BasicLSTMCell", "LSTMCell"]


def _check_inputs(name: str, inputs, input_size: int) -> None:
    if inputs.ndim != 2 or inputs.shape[-1] != input_size:
        raise ValueError(
            f"{name}: inputs must have shape [batch, input_size={input_size}]; "
            f"got {tuple(inputs.shape)}."
        )


def _check_activation(activation) -> Callable:
    if not callable(activation):
        raise TypeError(f"activation must be callable; got {activation!r}.")
    return activation


class _Cell(eqx.Module):
    """Shared behaviour of the built-in cells (not public)."""

    num_units: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    _dtype_weight: ClassVar[str] = "kernel"

    @property
    def dtype(self):
        """The dtype of the cell's weights; the default dtype of its zero state."""
        return getattr(self, self._dtype_weight).dtype

    def zero_state(self, batch_size: int, dtype=None):
        """Zeros shaped like :attr:`state_size` with a leading ``batch_size`` axis."""
        return zero_state_for(self.state_size, batch_size, self.dtype if dtype is None else dtype)


class BasicRNNCell(_Cell):
    r"""The most basic RNN cell: ``h' = activation(concat(x, h) @ kernel + bias)``.

    **Arguments:**

    - ``num_units``: ``u``, the size of the state and of the output.
    - ``input_size``: the feature size of one step's inputs.
    - ``key``: a PRNG key (keyword-only) for the Glorot-uniform kernel.
    - ``activation``: default ``jnp.tanh``.
    - ``dtype``: the weights' dtype (default float32).

    **Weights:** ``kernel [input_size + u, u]``, ``bias [u]`` (zeros).

    **Call:** ``cell(inputs [B, input_size], state [B, u]) -> (output [B, u], state [B, u])``;
    output and new state are the same array.
    """

    kernel: jax.Array
    bias: jax.Array
    activation: Callable = eqx.field(static=True)

    def __init__(self, num_units, input_size, *, key, activation=jnp.tanh, dtype=jnp.float32):
        self.num_units = check_num_units(num_units)
        self.input_size = check_num_units(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        key = check_key(key)
        self.activation = _check_activation(activation)
        self.kernel = glorot_uniform(key, (self.input_size + self.num_units, self.num_units), dtype)
        self.bias = jnp.zeros((self.num_units,), dtype)

    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units

    def __call__(self, inputs, state):
        _check_inputs("BasicRNNCell", inputs, self.input_size)
        with jax.named_scope("basic_rnn_cell"):
            h = self.activation(jnp.concatenate([inputs, state], -1) @ self.kernel + self.bias)
        return h, h


class GRUCell(_Cell):
    r"""Gated recurrent unit (Cho et al. 2014) with TF1's formulation.

    ``r, u = split(sigmoid(concat(x, h) @ gates_kernel + gates_bias), 2)``;
    ``c = activation(concat(x, r * h) @ candidate_kernel + candidate_bias)``;
    ``h' = u * h + (1 - u) * c``.

    **Weights:** ``gates_kernel [input_size + u, 2u]``, ``gates_bias [2u]`` (ones),
    ``candidate_kernel [input_size + u, u]``, ``candidate_bias [u]`` (zeros). TF1 names them
    ``gru_cell/gates/kernel``, ``gru_cell/gates/bias``, ``gru_cell/candidate/kernel`` and
    ``gru_cell/candidate/bias``.

    **Call:** ``cell(inputs [B, input_size], state [B, u]) -> (output [B, u], state [B, u])``.
    """

    gates_kernel: jax.Array
    gates_bias: jax.Array
    candidate_kernel: jax.Array
    candidate_bias: jax.Array
    activation: Callable = eqx.field(static=True)
    _dtype_weight: ClassVar[str] = "gates_kernel"

    def __init__(self, num_units, input_size, *, key, activation=jnp.tanh, dtype=jnp.float32):
        self.num_units = u = check_num_units(num_units)
        self.input_size = n = check_num_units(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        gkey, ckey = jax.random.split(check_key(key))
        self.activation = _check_activation(activation)
        self.gates_kernel = glorot_uniform(gkey, (n + u, 2 * u), dtype)
        self.gates_bias = jnp.ones((2 * u,), dtype)
        self.candidate_kernel = glorot_uniform(ckey, (n + u, u), dtype)
        self.candidate_bias = jnp.zeros((u,), dtype)

    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units

    def __call__(self, inputs, state):
        _check_inputs("GRUCell", inputs, self.input_size)
        with jax.named_scope("gru_cell"):
            gates = jnp.concatenate([inputs, state], -1) @ self.gates_kernel + self.gates_bias
            r, u = jnp.split(jax.nn.sigmoid(gates), 2, axis=-1)
            rh = jnp.concatenate([inputs, r * state], -1)
            c = self.activation(rh @ self.candidate_kernel + self.candidate_bias)
            h = u * state + (1 - u) * c
        return h, h


class BasicLSTMCell(_Cell):
    r"""TF1's basic LSTM cell (no peepholes, no clipping, no projection).

    ``i, j, f, o = split(concat(x, h) @ kernel + bias, 4)`` (TF1's gate order);
    ``c' = c * sigmoid(f + forget_bias) + sigmoid(i) * activation(j)``;
    ``h' = activation(c') * sigmoid(o)``.

    **Arguments:** ``num_units``, ``input_size``, ``key``, ``forget_bias`` (default 1.0, added at
    run time, not stored in ``bias``), ``activation`` (default ``jnp.tanh``), ``dtype``.

    **Weights:** ``kernel [input_size + u, 4u]``, ``bias [4u]`` (zeros).

    **Call:** ``cell(inputs [B, input_size], LSTMStateTuple(c [B, u], h [B, u]))
    -> (h' [B, u], LSTMStateTuple(c', h'))``.
    """

    kernel: jax.Array
    bias: jax.Array
    forget_bias: float = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        forget_bias: float = 1.0,
        activation=jnp.tanh,
        dtype=jnp.float32,
    ):
        self.num_units = u = check_num_units(num_units)
        self.input_size = n = check_num_units(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        self.forget_bias = float(forget_bias)
        self.activation = _check_activation(activation)
        self.kernel = glorot_uniform(check_key(key), (n + u, 4 * u), dtype)
        self.bias = jnp.zeros((4 * u,), dtype)

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_units

    def __call__(self, inputs, state):
        _check_inputs("BasicLSTMCell", inputs, self.input_size)
        c, h = state
        with jax.named_scope("basic_lstm_cell"):
            z = jnp.concatenate([inputs, h], -1) @ self.kernel + self.bias
            i, j, f, o = jnp.split(z, 4, axis=-1)
            new_c = c * jax.nn.sigmoid(f + self.forget_bias) + jax.nn.sigmoid(i) * self.activation(
                j
            )
            new_h = self.activation(new_c) * jax.nn.sigmoid(o)
        return new_h, LSTMStateTuple(new_c, new_h)


class LSTMCell(_Cell):
    r"""TF1's full LSTM cell: optional peepholes, cell clipping and an output projection.

    With ``i, j, f, o = split(concat(x, m) @ kernel + bias, 4)``:

    - ``c' = sigmoid(f + forget_bias + w_f_diag * c) * c + sigmoid(i + w_i_diag * c) * act(j)``
      (the ``w_*_diag`` terms only with ``use_peepholes``), then clipped to ``±cell_clip``;
    - ``m' = sigmoid(o + w_o_diag * c') * act(c')``, then ``m' @ projection_kernel`` when
      ``num_proj`` is set, clipped to ``±proj_clip``.

    **Weights:** ``kernel [input_size + p, 4u]`` where ``p = num_proj or u``, ``bias [4u]``;
    with peepholes ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` ``[u]``; with ``num_proj``
    ``projection_kernel [u, num_proj]`` (TF1: ``lstm_cell/projection/kernel``). Absent weights
    are ``None``.

    **Call:** ``cell(inputs [B, input_size], LSTMStateTuple(c [B, u], m [B, p]))
    -> (m' [B, p], LSTMStateTuple(c', m'))``.
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

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        forget_bias: float = 1.0,
        activation=jnp.tanh,
        dtype=jnp.float32,
    ):
        self.num_units = u = check_num_units(num_units)
        self.input_size = n = check_num_units(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        for name, clip in (("cell_clip", cell_clip), ("proj_clip", proj_clip)):
            if clip is not None and not float(clip) > 0:
                raise ValueError(f"{name} must be a positive number or None; got {clip}.")
        if proj_clip is not None and num_proj is None:
            raise ValueError("proj_clip needs num_proj: there is no projection to clip.")
        self.num_proj = None if num_proj is None else check_num_units(num_proj, "num_proj")
        self.use_peepholes = bool(use_peepholes)
        self.cell_clip = None if cell_clip is None else float(cell_clip)
        self.proj_clip = None if proj_clip is None else float(proj_clip)
        self.forget_bias = float(forget_bias)
        self.activation = _check_activation(activation)
        p = self.num_proj or u
        kkey, fkey, ikey, okey, pkey = jax.random.split(check_key(key), 5)
        self.kernel = glorot_uniform(kkey, (n + p, 4 * u), dtype)
        self.bias = jnp.zeros((4 * u,), dtype)
        if self.use_peepholes:
            self.w_f_diag = glorot_uniform(fkey, (u,), dtype)
            self.w_i_diag = glorot_uniform(ikey, (u,), dtype)
            self.w_o_diag = glorot_uniform(okey, (u,), dtype)
        else:
            self.w_f_diag = self.w_i_diag = self.w_o_diag = None
        self.projection_kernel = (
            glorot_uniform(pkey, (u, self.num_proj), dtype) if self.num_proj else None
        )

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_proj or self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    def __call__(self, inputs, state):
        _check_inputs("LSTMCell", inputs, self.input_size)
        c, m = state
        act = self.activation
        with jax.named_scope("lstm_cell"):
            z = jnp.concatenate([inputs, m], -1) @ self.kernel + self.bias
            i, j, f, o = jnp.split(z, 4, axis=-1)
            if self.use_peepholes:
                f = f + self.w_f_diag * c
                i = i + self.w_i_diag * c
            new_c = jax.nn.sigmoid(f + self.forget_bias) * c + jax.nn.sigmoid(i) * act(j)
            if self.cell_clip is not None:
                new_c = jnp.clip(new_c, -self.cell_clip, self.cell_clip)
            if self.use_peepholes:
                o = o + self.w_o_diag * new_c
            new_m = jax.nn.sigmoid(o) * act(new_c)
            if self.num_proj is not None:
                new_m = new_m @ self.projection_kernel
                if self.proj_clip is not None:
                    new_m = jnp.clip(new_m, -self.proj_clip, self.proj_clip)
        return new_m, LSTMStateTuple(new_c, new_m)
