"""A user-written cell: any object with the cell protocol works with both runners.

Run: python examples/custom_cell.py
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import recurrax


class MinimalRNNCell(eqx.Module):
    """h' = tanh(x @ W + h @ U)."""

    W: jax.Array
    U: jax.Array
    state_size: int = eqx.field(static=True)
    output_size: int = eqx.field(static=True)

    def __init__(self, num_units, input_size, *, key):
        k1, k2 = jax.random.split(key)
        self.W = jax.random.normal(k1, (input_size, num_units)) / input_size**0.5
        self.U = jax.random.normal(k2, (num_units, num_units)) / num_units**0.5
        self.state_size = self.output_size = num_units

    def zero_state(self, batch_size, dtype):
        return jnp.zeros((batch_size, self.state_size), dtype)

    def __call__(self, x, h):
        h = jnp.tanh(x @ self.W + h @ self.U)
        return h, h


cell = MinimalRNNCell(8, 3, key=jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (4, 10, 3))
lengths = jnp.array([10, 7, 0, 3])

outputs, h = recurrax.dynamic_rnn(cell, x, sequence_length=lengths, dtype=jnp.float32)
steps, h_static = recurrax.static_rnn(
    cell, list(jnp.moveaxis(x, 1, 0)), sequence_length=lengths, dtype=jnp.float32
)
assert np.allclose(outputs, jnp.stack(steps, axis=1), atol=1e-6)
assert np.allclose(h, h_static, atol=1e-6)
assert np.all(outputs[2] == 0) and np.all(h[2] == 0)  # a length of 0: zero outputs, initial state
print("user cell: static_rnn == dynamic_rnn, lengths honoured")

# Stacked with built-in cells and wrapped like any other cell.
stack = recurrax.MultiRNNCell([cell, recurrax.GRUCell(16, 8, key=jax.random.key(2))])
outputs, (h1, h2) = recurrax.dynamic_rnn(stack, x, sequence_length=lengths, dtype=jnp.float32)
print("MultiRNNCell(user cell, GRUCell) outputs", outputs.shape)
