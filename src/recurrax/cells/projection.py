"""Wrappers that add a projection or an embedding around a cell, as ``tf.contrib.rnn``'s.

Unlike ``DropoutWrapper`` and ``ResidualWrapper``, these wrappers own weights, and TF1 creates
them, and the wrapped cell's, inside a variable scope named after the wrapper::

    rnn/output_projection_wrapper/<the cell's names>, .../kernel, .../bias
    rnn/input_projection_wrapper/kernel, .../bias, .../<the cell's names>
    rnn/embedding_wrapper/embedding, .../<the cell's names>

Each class declares that scope and its variables, in TF1's creation order, as ``tf1_scope`` and
``tf1_variables``; the entry ``("", "cell")`` places the wrapped cell's own variables there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .base import call_cell, cell_dtype
from .checks import (
    check_activation,
    check_cell,
    check_float_dtype,
    check_key,
    check_kwargs,
    check_positive_int,
    is_size_leaf,
    is_traced,
    size_to_str,
)
from .initializers import check_initializer, glorot_uniform, init_weight
from .wrappers import _Wrapper

__all__ = ["OutputProjectionWrapper", "InputProjectionWrapper", "EmbeddingWrapper"]


def _weight_dtype(cell, dtype):
    """``dtype`` if given, else the wrapped cell's dtype, else float32."""
    if dtype is not None:
        return check_float_dtype(dtype, "dtype")
    return cell_dtype(cell) or jnp.dtype(jnp.float32)


def _unit_uniform(key, shape, dtype):
    """Uniform in ``[-sqrt(3), sqrt(3))``: unit variance (TF1's default embedding)."""
    limit = math.sqrt(3.0)
    return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)


def _optional_activation(activation):
    return None if activation is None else check_activation(activation)


class OutputProjectionWrapper(_Wrapper):
    r"""Project the cell's output: ``output' = activation(output @ kernel + bias)``, as
    ``tf.contrib.rnn.OutputProjectionWrapper``. The state is the cell's, unchanged.

    **Arguments:**

    - ``cell``: the cell to wrap; its ``output_size`` must be one int ``n``.
    - ``output_size``: ``p``, the size of the projected output.
    - ``key``: a PRNG key (keyword-only) for the Glorot-uniform kernel.
    - ``activation``: applied after the projection; default ``None`` (linear).
    - ``dtype``: the weights' dtype; default the cell's dtype (else float32).
    - ``reuse``, ``name``: TF1's arguments, accepted for ported code; they have no effect.

    **Weights:** ``kernel [n, p]`` (Glorot uniform), ``bias [p]`` (zeros). TF1 creates the
    cell's variables first, then its own: ``output_projection_wrapper/<cell's names>``,
    ``output_projection_wrapper/kernel``, ``output_projection_wrapper/bias``.

    **Call:** ``cell(inputs [B, input_size], state, *, key=None) -> (output [B, p], new_state)``;
    ``key`` goes to the wrapped cell (for its dropout).

    **Example:**

    >>> k0, k1 = jax.random.split(jax.random.key(0))
    >>> cell = recurrax.OutputProjectionWrapper(recurrax.GRUCell(8, 3, key=k0), 2, key=k1)
    >>> y, h = cell(jnp.ones((4, 3)), cell.zero_state(4))  # y [4, 2], h [4, 8]
    """

    kernel: jax.Array
    bias: jax.Array
    _output_size: int = eqx.field(static=True)
    activation: Callable | None = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "output_projection_wrapper"
    tf1_variables: ClassVar = (("", "cell"), ("kernel", "kernel"), ("bias", "bias"))

    def __init__(
        self,
        cell,
        output_size,
        *,
        key,
        activation=None,
        dtype=None,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs("OutputProjectionWrapper", kwargs, OutputProjectionWrapper.__init__)
        check_cell(cell, "cell")
        n = cell.output_size
        if not is_size_leaf(n):
            raise ValueError(
                "OutputProjectionWrapper projects one output array: cell.output_size must be "
                f"an int; got {size_to_str(n)}. Wrap each output yourself or use a cell with "
                "a single output."
            )
        self.cell = cell
        self._output_size = p = check_positive_int(output_size, "output_size")
        self.activation = _optional_activation(activation)
        dtype = _weight_dtype(cell, dtype)
        self.kernel = glorot_uniform(check_key(key), (int(n), p), dtype)
        self.bias = jnp.zeros((p,), dtype)

    @property
    def output_size(self) -> int:
        return self._output_size

    def __call__(self, inputs, state, *, key=None):
        with jax.named_scope(self.tf1_scope):
            output, new_state = call_cell(self.cell, inputs, state, key)
            projected = output @ self.kernel + self.bias
            if self.activation is not None:
                projected = self.activation(projected)
        return projected, new_state


class InputProjectionWrapper(_Wrapper):
    r"""Project the inputs before the cell: ``cell(activation(x @ kernel + bias), state)``, as
    ``tf.contrib.rnn.InputProjectionWrapper``.

    **Arguments:**

    - ``cell``: the cell to wrap; it reads ``num_proj`` features (its ``input_size``, when it
      declares one, must equal ``num_proj``).
    - ``num_proj``: ``p``, the size the inputs are projected to.
    - ``input_size``: ``n``, the feature size of the wrapper's inputs (TF1 reads it from the
      inputs; recurrax needs it to build the kernel).
    - ``key``: a PRNG key (keyword-only) for the Glorot-uniform kernel.
    - ``activation``: applied to the projection; default ``None`` (linear).
    - ``dtype``: the weights' dtype; default the cell's dtype (else float32).
    - ``reuse``, ``name``: TF1's arguments, accepted for ported code; they have no effect.

    **Weights:** ``kernel [n, p]`` (Glorot uniform), ``bias [p]`` (zeros). TF1 creates them
    before the cell's: ``input_projection_wrapper/kernel``, ``input_projection_wrapper/bias``,
    ``input_projection_wrapper/<cell's names>``.

    **Call:** ``cell(inputs [B, n], state, *, key=None) -> (output, new_state)``, the cell's
    output and state; ``key`` goes to the wrapped cell (for its dropout).

    **Example:**

    >>> k0, k1 = jax.random.split(jax.random.key(0))
    >>> cell = recurrax.InputProjectionWrapper(recurrax.BasicLSTMCell(8, 4, key=k0), 4, 3, key=k1)
    >>> h, (c, h) = cell(jnp.ones((2, 3)), cell.zero_state(2))
    """

    kernel: jax.Array
    bias: jax.Array
    num_proj: int = eqx.field(static=True)
    _input_size: int = eqx.field(static=True)
    activation: Callable | None = eqx.field(static=True)
    tf1_scope: ClassVar[str] = "input_projection_wrapper"
    tf1_variables: ClassVar = (("kernel", "kernel"), ("bias", "bias"), ("", "cell"))

    def __init__(
        self,
        cell,
        num_proj,
        input_size,
        *,
        key,
        activation=None,
        dtype=None,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs("InputProjectionWrapper", kwargs, InputProjectionWrapper.__init__)
        check_cell(cell, "cell")
        self.num_proj = p = check_positive_int(num_proj, "num_proj")
        self._input_size = n = check_positive_int(input_size, "input_size")
        inner = getattr(cell, "input_size", None)
        if inner is not None and int(inner) != p:
            raise ValueError(
                f"InputProjectionWrapper feeds the cell num_proj={p} features but "
                f"cell.input_size is {inner}. Build the cell with input_size={p}."
            )
        self.cell = cell
        self.activation = _optional_activation(activation)
        dtype = _weight_dtype(cell, dtype)
        self.kernel = glorot_uniform(check_key(key), (n, p), dtype)
        self.bias = jnp.zeros((p,), dtype)

    @property
    def input_size(self) -> int:
        return self._input_size

    def __call__(self, inputs, state, *, key=None):
        shape = np.shape(inputs)
        if len(shape) != 2 or shape[-1] != self._input_size:
            raise ValueError(
                f"InputProjectionWrapper: inputs must have shape [batch, "
                f"input_size={self._input_size}]; got {tuple(shape)}."
            )
        with jax.named_scope(self.tf1_scope):
            projected = inputs @ self.kernel + self.bias
            if self.activation is not None:
                projected = self.activation(projected)
            return call_cell(self.cell, projected, state, key)


class EmbeddingWrapper(_Wrapper):
    r"""Embed integer ids before the cell: ``cell(embedding[ids], state)``, as
    ``tf.contrib.rnn.EmbeddingWrapper``.

    **Arguments:**

    - ``cell``: the cell to wrap; it reads ``embedding_size`` features (its ``input_size``, when
      it declares one, must equal ``embedding_size``).
    - ``embedding_classes``: ``V``, how many ids there are (``0 <= id < V``).
    - ``embedding_size``: ``e``, the size of one embedded vector.
    - ``key``: a PRNG key (keyword-only) for the embedding.
    - ``initializer``: a JAX initializer ``(key, shape, dtype) -> array`` for the embedding;
      default uniform in ``[-sqrt(3), sqrt(3))`` (unit variance, TF1's default for this wrapper).
    - ``dtype``: the embedding's dtype; default the cell's dtype (else float32).
    - ``reuse``, ``name``: TF1's arguments, accepted for ported code; they have no effect.

    **Weights:** ``embedding [V, e]``; TF1 creates it before the cell's variables:
    ``embedding_wrapper/embedding``, ``embedding_wrapper/<cell's names>``.

    **Call:** ``cell(ids [B] or [B, 1] (integers), state, *, key=None) -> (output, new_state)``
    (``key`` goes to the wrapped cell). Its
    ``input_size`` is 1 and ``integer_inputs`` is ``True``: the runners take ids ``[B, T, 1]``
    (``dynamic_rnn``) or ``T`` arrays ``[B, 1]`` (``static_rnn``). An id outside ``[0, V)`` is
    an error when the ids are concrete, and embeds as NaN inside ``jax.jit``.

    **Example:**

    >>> k0, k1 = jax.random.split(jax.random.key(0))
    >>> cell = recurrax.EmbeddingWrapper(recurrax.GRUCell(8, 4, key=k0), 100, 4, key=k1)
    >>> y, h = cell(jnp.array([[3], [7]]), cell.zero_state(2))  # y [2, 8]
    """

    embedding: jax.Array
    embedding_classes: int = eqx.field(static=True)
    embedding_size: int = eqx.field(static=True)
    input_size: ClassVar[int] = 1
    integer_inputs: ClassVar[bool] = True
    tf1_scope: ClassVar[str] = "embedding_wrapper"
    tf1_variables: ClassVar = (("embedding", "embedding"), ("", "cell"))

    def __init__(
        self,
        cell,
        embedding_classes,
        embedding_size,
        *,
        key,
        initializer=None,
        dtype=None,
        reuse=None,
        name=None,
        **kwargs,
    ):
        check_kwargs("EmbeddingWrapper", kwargs, EmbeddingWrapper.__init__)
        check_cell(cell, "cell")
        self.embedding_classes = v = check_positive_int(embedding_classes, "embedding_classes")
        self.embedding_size = e = check_positive_int(embedding_size, "embedding_size")
        inner = getattr(cell, "input_size", None)
        if inner is not None and int(inner) != e:
            raise ValueError(
                f"EmbeddingWrapper feeds the cell embedding_size={e} features but "
                f"cell.input_size is {inner}. Build the cell with input_size={e}."
            )
        self.cell = cell
        dtype = _weight_dtype(cell, dtype)
        init = check_initializer(initializer, "initializer")
        self.embedding = init_weight(
            init, _unit_uniform, check_key(key), (v, e), dtype, "initializer"
        )

    def _ids(self, inputs):
        inputs = jnp.asarray(inputs)
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise TypeError(
                f"EmbeddingWrapper: inputs must be integer ids; got {inputs.dtype}. Pass ids as "
                "an int array (e.g. x.astype(jnp.int32)), not features."
            )
        if not (inputs.ndim == 1 or (inputs.ndim == 2 and inputs.shape[1] == 1)):
            raise ValueError(
                f"EmbeddingWrapper: inputs must have shape [batch] or [batch, 1]; "
                f"got {tuple(inputs.shape)}."
            )
        ids = inputs.reshape(-1)
        if not is_traced(ids):
            bad = np.asarray(ids)
            bad = bad[(bad < 0) | (bad >= self.embedding_classes)]
            if bad.size:
                raise ValueError(
                    f"EmbeddingWrapper: ids must be in [0, embedding_classes="
                    f"{self.embedding_classes}); got {bad.tolist()[:5]}."
                )
        return ids

    def __call__(self, inputs, state, *, key=None):
        ids = self._ids(inputs)
        with jax.named_scope(self.tf1_scope):
            # Negative ids would wrap around: send them out of range, where take() gives NaN.
            ids = jnp.where(ids < 0, self.embedding_classes, ids)
            embedded = jnp.take(self.embedding, ids, axis=0, mode="fill", fill_value=jnp.nan)
            return call_cell(self.cell, embedded, state, key)
