"""The model ``recurrax train`` fits: a recurrent encoder and a dense readout, and its loss.

The encoder is one of the built-in cells (:data:`recurrax.cells.registry.BUILTIN`), or a
``MultiRNNCell`` of several, run by :func:`~recurrax.static_rnn` or :func:`~recurrax.dynamic_rnn`;
the readout reads its last output (classification) or every output (forecasting).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from recurrax import DropoutWrapper, MultiRNNCell, dynamic_rnn, static_rnn
from recurrax.cells.initializers import glorot_uniform
from recurrax.cells.registry import BUILTIN

__all__ = ["RecurrentModel", "make_cell", "loss_and_metric"]


def make_cell(kind: str, num_units: int, input_size: int, *, key, num_layers: int = 1):
    """A cell of :data:`~recurrax.cells.registry.BUILTIN` (``"rnn"``, ``"gru"``, ``"lstm"``), or
    a ``MultiRNNCell`` of ``num_layers`` of them; the first reads ``input_size`` features."""
    keys = jax.random.split(key, num_layers)
    sizes = [input_size] + [num_units] * (num_layers - 1)
    cells = [BUILTIN[kind](num_units, n, key=k) for n, k in zip(sizes, keys)]
    return cells[0] if num_layers == 1 else MultiRNNCell(cells)


class RecurrentModel(eqx.Module):
    """A recurrent encoder and a dense readout, as an Equinox module.

    **Arguments:** ``cell`` (the encoder), ``num_outputs`` (classes, or 1 for forecasting),
    ``key``; static ``mode`` (``"static"``/``"dynamic"``), ``per_step`` (readout at every step
    rather than the last), ``keep_prob`` (output dropout during training).

    **Call:** ``model(x [B, T, F], lengths [B] or None, *, key=None)`` returns ``[B, num_outputs]``
    or, with ``per_step``, ``[B, T, num_outputs]``; dropout applies only when ``key`` is given.
    """

    cell: Any
    readout_kernel: jax.Array  # [num_units, num_outputs], TF1's dense/kernel layout
    readout_bias: jax.Array  # [num_outputs]
    mode: str = eqx.field(static=True)
    per_step: bool = eqx.field(static=True)
    keep_prob: float = eqx.field(static=True)

    def __init__(self, cell, num_outputs, *, key, mode="dynamic", per_step=False, keep_prob=1.0):
        self.cell = cell
        units = cell.output_size
        self.readout_kernel = glorot_uniform(key, (units, num_outputs), cell.dtype)
        self.readout_bias = jnp.zeros((num_outputs,), cell.dtype)
        self.mode, self.per_step, self.keep_prob = mode, per_step, keep_prob

    def __call__(self, x, lengths=None, *, key=None):
        cell = self.cell
        if key is not None and self.keep_prob < 1.0:
            cell = DropoutWrapper(cell, output_keep_prob=self.keep_prob, key=key)
        if self.mode == "static":
            steps = [x[:, t] for t in range(x.shape[1])]
            outs, _ = static_rnn(cell, steps, dtype=x.dtype, sequence_length=lengths)
            outputs = jnp.stack(outs, axis=1)  # (B, T, U)
        else:
            outputs, _ = dynamic_rnn(cell, x, sequence_length=lengths, dtype=x.dtype)
        features = outputs if self.per_step else outputs[:, -1]  # (B, T, U) or (B, U)
        return features @ self.readout_kernel + self.readout_bias


def loss_and_metric(model, batch, key):
    """``(loss, metric)`` of ``model`` on ``batch = (x [B, T, F], y, lengths [B] or None)``:
    cross-entropy and accuracy (labels ``y [B]``), or masked MSE twice (targets
    ``y [B, T, 1]``); means over the whole (global) batch. ``key``: dropout, or ``None``."""
    x, y, lengths = batch
    pred = model(x, lengths, key=key)
    if not model.per_step:
        logp = jax.nn.log_softmax(pred.astype(jnp.float32), axis=-1)
        xent = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        return xent, jnp.mean((jnp.argmax(pred, -1) == y).astype(jnp.float32))
    valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
    err = jnp.where(valid, (pred - y) ** 2, 0.0)
    mse = jnp.sum(err) / jnp.sum(valid)  # over the global batch: matches one device
    return mse, mse
