"""``LayerNormBasicLSTMCell``: ``tf.contrib.rnn``'s LSTM with layer normalisation and recurrent
dropout (``layer_norm_basic_lstm_cell``).

It takes the engine's generic loop: it defines no ``recurrence()`` for the fused path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .base import Cell, LSTMStateTuple
from .checks import (
    check_activation,
    check_float_dtype,
    check_key,
    check_kwargs,
    check_positive_int,
    check_scope_name,
    check_step,
)
from .initializers import glorot_uniform
from .wrappers import check_keep_prob, dropout

__all__ = ["LayerNormBasicLSTMCell"]

_NOTES = {
    "dropout_prob_seed": "recurrax draws the dropout masks from a PRNG key: pass "
    "key=jax.random.key(seed).",
}

#: The normalised blocks, in TF1's creation order: the gates ``i, j, f, o``, then the new ``c``.
_NORMS = ("input", "transform", "forget", "output", "state")


def layer_norm(x, gamma, beta):
    """TF1's ``tf.contrib.layers.layer_norm`` over the last axis: ``(x - mean) /
    sqrt(var + eps) * gamma + beta`` with ``eps = 1e-12`` (``1e-3`` for float16)."""
    eps = 1e-3 if x.dtype == jnp.float16 else 1e-12
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype)) * gamma + beta


class LayerNormBasicLSTMCell(Cell):
    r"""TF1's ``tf.contrib.rnn.LayerNormBasicLSTMCell``: a basic LSTM whose four gates and new
    memory are each layer-normalised, with recurrent dropout on the candidate.

    With ``LN_k(z) = layer_norm(z) * gamma_k + beta_k`` over the units (``eps = 1e-12``):

    - ``i, j, f, o = split(concat(x, h) @ kernel, 4)`` (plus ``bias`` without layer norm);
    - ``i, j, f, o = LN_input(i), LN_transform(j), LN_forget(f), LN_output(o)``;
    - ``g = dropout(activation(j), dropout_keep_prob)`` (Semeniuta et al. 2016);
    - ``c' = LN_state(c * sigmoid(f + forget_bias) + sigmoid(i) * g)``;
    - ``h' = activation(c') * sigmoid(o)``.

    **Arguments:**

    - ``num_units``: ``u``, the size of ``c`` and ``h``.
    - ``input_size``: the feature size of one step's inputs.
    - ``key``: a PRNG key (keyword-only) for the weights and, when ``dropout_keep_prob < 1``,
      the dropout masks.
    - ``forget_bias``: added to ``f`` at run time (default 1.0).
    - ``layer_norm``: normalise (default ``True``); ``False`` gives a basic LSTM with ``bias``
      and recurrent dropout.
    - ``norm_gain``, ``norm_shift``: the initial values of every ``gamma`` and ``beta``.
    - ``dropout_keep_prob``: the probability in ``(0, 1]`` of keeping a unit of ``g`` (kept
      units are scaled by ``1 / dropout_keep_prob``); 1.0 disables dropout. To evaluate,
      rebuild the cell with 1.0 (the probability is static configuration).
    - ``activation``: default ``jnp.tanh``; ``dtype``: the weights' dtype (default float32).
    - ``name``: as in TF1, the variable scope of the weights' TF1 names (default
      ``layer_norm_basic_lstm_cell``); ``reuse``: accepted for ported code, no effect.
      TF1's ``dropout_prob_seed`` is ``key`` here.

    **Where the masks come from**, as for :class:`~recurrax.DropoutWrapper`: in a call
    ``cell(inputs, state, key=k)`` from ``k``; otherwise from the cell's own key folded with the
    time step bound by :meth:`at_step` (``dynamic_rnn`` and ``static_rnn`` bind every step, so
    each step draws a fresh mask, as TF1 does). A call with neither, while
    ``dropout_keep_prob < 1``, is a ``TypeError``: it would repeat one mask on every call.

    **Weights:** ``kernel [input_size + u, 4u]`` (Glorot uniform); with ``layer_norm``
    ``<k>_gamma``, ``<k>_beta [u]`` for ``k`` in ``input, transform, forget, output, state``
    and no bias; without, ``bias [4u]`` (Glorot uniform, as TF1's ``get_variable`` default) and
    no gains. TF1: ``layer_norm_basic_lstm_cell/kernel``, ``.../bias``, ``.../input/gamma``,
    ``.../input/beta``, ... ``.../state/beta``. Absent weights are ``None``.

    **Call:** ``cell(inputs [B, input_size], LSTMStateTuple(c [B, u], h [B, u]), *, key=None)
    -> (h' [B, u], LSTMStateTuple(c', h'))``.

    **Example:**

    >>> cell = recurrax.LayerNormBasicLSTMCell(8, 3, key=jax.random.key(0))
    >>> h, (c, h) = cell(jnp.ones((4, 3)), cell.zero_state(4))
    """

    kernel: jax.Array
    bias: jax.Array | None
    input_gamma: jax.Array | None
    input_beta: jax.Array | None
    transform_gamma: jax.Array | None
    transform_beta: jax.Array | None
    forget_gamma: jax.Array | None
    forget_beta: jax.Array | None
    output_gamma: jax.Array | None
    output_beta: jax.Array | None
    state_gamma: jax.Array | None
    state_beta: jax.Array | None
    dropout_key: jax.Array | None
    step: jax.Array | None
    forget_bias: float = eqx.field(static=True)
    layer_norm: bool = eqx.field(static=True)
    dropout_keep_prob: float = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "layer_norm_basic_lstm_cell"
    tf1_variables: ClassVar = (
        ("kernel", "kernel"),
        ("bias", "bias"),
        *((f"{k}/{v}", f"{k}_{v}") for k in _NORMS for v in ("gamma", "beta")),
    )

    def __init__(
        self,
        num_units,
        input_size,
        *,
        key,
        forget_bias: float = 1.0,
        layer_norm: bool = True,
        norm_gain: float = 1.0,
        norm_shift: float = 0.0,
        dropout_keep_prob: float = 1.0,
        activation=jnp.tanh,
        dtype=jnp.float32,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs("LayerNormBasicLSTMCell", kwargs, LayerNormBasicLSTMCell.__init__, _NOTES)
        self.name = check_scope_name(name, "LayerNormBasicLSTMCell")
        self.num_units = u = check_positive_int(num_units, "num_units")
        self.input_size = n = check_positive_int(input_size, "input_size")
        dtype = check_float_dtype(dtype, "dtype")
        self.forget_bias = float(forget_bias)
        self.layer_norm = bool(layer_norm)
        self.dropout_keep_prob = check_keep_prob("dropout_keep_prob", dropout_keep_prob)
        self.activation = check_activation(activation)
        kernel_key, bias_key, dropout_key = jax.random.split(check_key(key), 3)
        self.kernel = glorot_uniform(kernel_key, (n + u, 4 * u), dtype)
        self.bias = None if self.layer_norm else glorot_uniform(bias_key, (4 * u,), dtype)
        for k in _NORMS:
            gain = jnp.full((u,), norm_gain, dtype) if self.layer_norm else None
            shift = jnp.full((u,), norm_shift, dtype) if self.layer_norm else None
            setattr(self, f"{k}_gamma", gain)
            setattr(self, f"{k}_beta", shift)
        self.dropout_key = dropout_key if self.dropout_keep_prob < 1.0 else None
        self.step = None

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self) -> int:
        return self.num_units

    def at_step(self, t) -> LayerNormBasicLSTMCell:
        """This cell bound to time step ``t``: its dropout mask is drawn afresh for each step."""
        if self.dropout_key is None:
            return self
        step = jnp.asarray(t, jnp.int32)
        return eqx.tree_at(lambda c: c.step, self, step, is_leaf=lambda x: x is None)

    def fold_in_keys(self, data) -> LayerNormBasicLSTMCell:
        """This cell with ``data`` folded into its dropout key (``MultiRNNCell`` folds in the
        layer index, so that layers built with one key draw different masks)."""
        if self.dropout_key is None:
            return self
        key = jax.random.fold_in(self.dropout_key, data)
        return eqx.tree_at(lambda c: c.dropout_key, self, key)

    def _dropout_key(self, key):
        if key is not None:
            return key
        if self.step is None:
            raise TypeError(
                f"LayerNormBasicLSTMCell: recurrent dropout is active (dropout_keep_prob="
                f"{self.dropout_keep_prob}) but this call has no key and the cell is not bound to "
                "a time step, so every call would draw the same mask. Pass a fresh key per call, "
                "cell(inputs, state, key=k), or bind the step with cell.at_step(t); dynamic_rnn "
                "and static_rnn bind every step."
            )
        return jax.random.fold_in(self.dropout_key, self.step)

    def _norm(self, z, name: str):
        if not self.layer_norm:
            return z
        return layer_norm(z, getattr(self, f"{name}_gamma"), getattr(self, f"{name}_beta"))

    def __call__(self, inputs, state, *, key=None):
        check_step(type(self).__name__, inputs, self.input_size, self.state_size, state)
        c, h = state
        sigmoid = jax.nn.sigmoid
        with jax.named_scope(self.variable_scope):
            z = jnp.concatenate([inputs, h], axis=-1) @ self.kernel  # (B, 4u)
            if self.bias is not None:
                z = z + self.bias
            i, j, f, o = (self._norm(b, k) for b, k in zip(jnp.split(z, 4, axis=-1), _NORMS))
            g = self.activation(j)
            if self.dropout_keep_prob < 1.0:
                g = dropout(g, self.dropout_keep_prob, self._dropout_key(key))
            new_c = self._norm(c * sigmoid(f + self.forget_bias) + sigmoid(i) * g, "state")
            new_h = self.activation(new_c) * sigmoid(o)
        return new_h, LSTMStateTuple(new_c, new_h)
