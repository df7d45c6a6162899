"""Plain NumPy references of ``tf.contrib.rnn``'s projection and embedding wrappers and of its
``LayerNormBasicLSTMCell``, written from TF1's ``core_rnn_cell.py`` and ``rnn_cell.py`` (r1.15),
not from recurrax's code.

:func:`np_step` extends ``reference.np_step`` to these cells (and to ``MultiRNNCell`` stacks
holding them); the runner references of ``reference.py`` take the steps it returns.
"""

from __future__ import annotations

import numpy as np

import recurrax
from recurrax.cells.layernorm import LayerNormBasicLSTMCell
from recurrax.cells.projection import (
    EmbeddingWrapper,
    InputProjectionWrapper,
    OutputProjectionWrapper,
)
from reference import _np, _np_activation, sigmoid, stacked_step
from reference import np_step as core_np_step

NORMS = ("input", "transform", "forget", "output", "state")


def layer_norm(x, gamma, beta, eps=1e-12):
    """``tf.contrib.layers.layer_norm`` over the last axis: moments of each row, then
    ``batch_normalization`` with ``variance_epsilon = 1e-12``."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def layer_norm_basic_lstm_step(
    kernel, bias, norms, x, state, forget_bias=1.0, g_scale=None, act=np.tanh
):
    """TF1 LayerNormBasicLSTMCell. ``norms`` maps ``input, transform, forget, output, state`` to
    ``(gamma, beta)``, or is ``None`` without layer norm (then ``bias`` is added); ``g_scale``
    multiplies ``g`` (a dropout mask already divided by the keep probability) when given."""
    c, h = state
    z = np.concatenate([x, h], 1) @ kernel
    if norms is None:
        z = z + bias
    i, j, f, o = np.split(z, 4, axis=1)
    if norms is not None:
        i, j, f, o = (layer_norm(b, *norms[k]) for b, k in zip((i, j, f, o), NORMS))
    g = act(j)
    if g_scale is not None:
        g = g * g_scale
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * g
    if norms is not None:
        new_c = layer_norm(new_c, *norms["state"])
    new_h = act(new_c) * sigmoid(o)
    return new_h, (new_c, new_h)


def _identity(x):
    return x


def np_step(cell):
    """A NumPy ``(t, x [B, in], state) -> (output, state)`` with ``cell``'s formula; this file's
    cells, ``MultiRNNCell`` stacks of any supported cells, else ``reference.np_step``."""
    if isinstance(cell, LayerNormBasicLSTMCell):
        assert cell.dropout_keep_prob == 1.0, "dropout masks come from jax.random: use jax_step"
        kernel, bias = _np(cell.kernel), _np(cell.bias)
        norms = None
        if cell.layer_norm:
            norms = {
                k: (_np(getattr(cell, f"{k}_gamma")), _np(getattr(cell, f"{k}_beta")))
                for k in NORMS
            }
        act = _np_activation(cell.activation)
        return lambda t, x, s: layer_norm_basic_lstm_step(
            kernel, bias, norms, x, s, cell.forget_bias, act=act
        )
    if isinstance(cell, OutputProjectionWrapper):
        inner, kernel, bias = np_step(cell.cell), _np(cell.kernel), _np(cell.bias)
        act = _identity if cell.activation is None else _np_activation(cell.activation)

        def output_projection(t, x, s):
            out, s = inner(t, x, s)
            return act(out @ kernel + bias), s

        return output_projection
    if isinstance(cell, InputProjectionWrapper):
        inner, kernel, bias = np_step(cell.cell), _np(cell.kernel), _np(cell.bias)
        act = _identity if cell.activation is None else _np_activation(cell.activation)
        return lambda t, x, s: inner(t, act(x @ kernel + bias), s)
    if isinstance(cell, EmbeddingWrapper):
        inner, embedding = np_step(cell.cell), _np(cell.embedding)
        # TF1: embedding_lookup(embedding, reshape(ids, [-1])).
        return lambda t, x, s: inner(t, embedding[np.asarray(x).reshape(-1).astype(int)], s)
    if isinstance(cell, recurrax.MultiRNNCell):
        return stacked_step([np_step(c) for c in cell.cells])
    return core_np_step(cell)
