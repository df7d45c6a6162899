"""The loop that ``dynamic_rnn`` compiles: one copy of the step inside one XLA loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["run_loop"]


def run_loop(step, state, xs):
    """Run ``step(state, x_t, t) -> (state, y_t)`` over the leading axis of ``xs``.

    Returns ``(final_state, ys)`` with ``ys`` stacked along a new leading time axis.
    """
    time = jax.tree_util.tree_leaves(xs)[0].shape[0]

    def body(carry, inp):
        x_t, t = inp
        return step(carry, x_t, t)

    return jax.lax.scan(body, state, (xs, jnp.arange(time, dtype=jnp.int32)))
