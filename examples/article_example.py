"""The source article's example: the same BasicRNNCell through static_rnn and dynamic_rnn.

Run: python examples/article_example.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import recurrax

X_batch = np.array(
    [
        [[0, 1, 2], [9, 8, 7]],  # instance 0   (t = 0, t = 1)
        [[3, 4, 5], [0, 0, 0]],  # instance 1
        [[6, 7, 8], [6, 5, 4]],  # instance 2
        [[9, 0, 1], [3, 2, 1]],  # instance 3
    ]
)
cell = recurrax.BasicRNNCell(num_units=5, input_size=3, key=jax.random.key(42))

# One array [batch, time, inputs] in, one compiled loop.
outputs, states = recurrax.dynamic_rnn(cell, X_batch, dtype=jnp.float32)  # [4, 2, 5], [4, 5]

# A list of per-step [batch, inputs] arrays in, one copy of the cell per step.
(Y0, Y1), static_states = recurrax.static_rnn(
    cell, [X_batch[:, 0], X_batch[:, 1]], dtype=jnp.float32
)

print("outputs", outputs.shape, "states", states.shape)
print(np.asarray(outputs))
assert np.allclose(outputs, jnp.stack([Y0, Y1], axis=1), atol=1e-6)
assert np.allclose(states, static_states, atol=1e-6)
# For a BasicRNNCell the final state is the last output.
assert np.allclose(states, outputs[:, -1])
print("static_rnn == dynamic_rnn")
