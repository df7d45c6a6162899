"""``recurrax demo``: the source article's example through both runners."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._cells import BasicRNNCell
from ._dynamic import dynamic_rnn
from ._static import static_rnn

__all__ = ["ARTICLE_BATCH", "run_article_example"]

# 4 instances x 2 time steps x 3 inputs, exactly as in the article.
ARTICLE_BATCH = np.array(
    [
        [[0, 1, 2], [9, 8, 7]],  # instance 0   (t = 0, t = 1)
        [[3, 4, 5], [0, 0, 0]],  # instance 1
        [[6, 7, 8], [6, 5, 4]],  # instance 2
        [[9, 0, 1], [3, 2, 1]],  # instance 3
    ]
)


def run_article_example(seed: int = 42, echo=print) -> bool:
    """Run the article's example with ``static_rnn`` and ``dynamic_rnn``; return whether equal."""
    x = ARTICLE_BATCH
    cell = BasicRNNCell(num_units=5, input_size=3, key=jax.random.key(seed))
    outputs, states = dynamic_rnn(cell, x, dtype=jnp.float32)  # [4, 2, 5], [4, 5]
    (y0, y1), static_states = static_rnn(cell, [x[:, 0], x[:, 1]], dtype=jnp.float32)
    static_outputs = jnp.stack([y0, y1], axis=1)  # [4, 2, 5]

    np.set_printoptions(precision=6, suppress=True, linewidth=100)
    echo(f"X_batch {x.shape}: 4 instances x 2 time steps x 3 inputs; BasicRNNCell(num_units=5)\n")
    echo(f"dynamic_rnn outputs {tuple(outputs.shape)}:\n{np.asarray(outputs)}\n")
    echo(
        f"static_rnn outputs {tuple(static_outputs.shape)} (Y0, Y1 stacked):\n"
        f"{np.asarray(static_outputs)}\n"
    )
    echo(f"dynamic_rnn final state {tuple(states.shape)}:\n{np.asarray(states)}\n")
    echo(f"static_rnn final state {tuple(static_states.shape)}:\n{np.asarray(static_states)}\n")
    diff = max(
        float(jnp.max(jnp.abs(outputs - static_outputs))),
        float(jnp.max(jnp.abs(states - static_states))),
    )
    equal = bool(np.allclose(outputs, static_outputs, rtol=1e-6, atol=1e-6)) and bool(
        np.allclose(states, static_states, rtol=1e-6, atol=1e-6)
    )
    echo(f"static_rnn and dynamic_rnn agree: {'yes' if equal else 'NO'} (max |diff| = {diff:.2e})")
    echo(
        "the final state equals the last output for BasicRNNCell: "
        f"{'yes' if np.allclose(states, outputs[:, -1]) else 'NO'}"
    )
    return equal
