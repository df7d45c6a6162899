"""Greedy decoding with raw_rnn: each step feeds back the embedding of its own argmax, and each
row stops at its end token; the loop stops when every row has.

Run: python examples/greedy_decoder.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import recurrax

VOCAB, EMBED, UNITS, BATCH, END, MAX_STEPS = 6, 4, 16, 4, 0, 10
k_cell, k_embed, k_proj = jax.random.split(jax.random.key(30), 3)
cell = recurrax.GRUCell(UNITS, EMBED, key=k_cell)
params = {
    "embed": jax.random.normal(k_embed, (VOCAB, EMBED), jnp.float32),  # token -> input
    "proj": 2 * jax.random.normal(k_proj, (UNITS, VOCAB), jnp.float32),  # output -> logits
}
start = jnp.array([1, 2, 3, 4])  # one start token per row


def decode(cell, params):
    """``(ids [MAX_STEPS, BATCH], log_probs [MAX_STEPS, BATCH], steps run)``."""

    def loop_fn(time, cell_output, cell_state, loop_state):
        if cell_output is None:  # time 0: first input, initial state, emit template, loop state
            emit = (jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.float32))
            finished = jnp.zeros(BATCH, bool)
            state = cell.zero_state(BATCH, jnp.float32)
            return finished, params["embed"][start], state, emit, jnp.int32(0)
        log_probs = jax.nn.log_softmax(cell_output @ params["proj"])
        ids = jnp.argmax(log_probs, -1).astype(jnp.int32)
        emit = (ids, jnp.max(log_probs, -1))
        # The loop state counts the steps run: it is never masked per row.
        return ids == END, params["embed"][ids], cell_state, emit, loop_state + 1

    (ids, log_probs), _, steps = recurrax.raw_rnn(cell, loop_fn, max_steps=MAX_STEPS)
    return ids, log_probs, steps


ids, log_probs, steps = jax.jit(decode)(cell, params)
print("tokens (one row per sequence, END = 0):")
print(np.asarray(ids).T)
lengths = np.sum(np.cumsum(np.asarray(ids).T == END, axis=1) == 0, axis=1) + 1
print("tokens per row, END included:", lengths, "| steps run:", int(steps), "of", MAX_STEPS)


def reference(cell, params):
    """The same decoder as a Python loop over all MAX_STEPS steps, masking finished rows."""
    x, h = params["embed"][start], cell.zero_state(BATCH, jnp.float32)
    finished = jnp.zeros(BATCH, bool)
    all_ids, all_log_probs = [], []
    for _ in range(MAX_STEPS):
        out, new_h = cell(x, h)
        lp = jax.nn.log_softmax(out @ params["proj"])
        step_ids = jnp.argmax(lp, -1).astype(jnp.int32)
        all_ids.append(jnp.where(finished, 0, step_ids))
        all_log_probs.append(jnp.where(finished, 0.0, jnp.max(lp, -1)))
        h = jnp.where(finished[:, None], h, new_h)
        finished = finished | (step_ids == END)
        x = params["embed"][step_ids]
    return jnp.stack(all_ids), jnp.stack(all_log_probs)


ref_ids, ref_log_probs = reference(cell, params)
assert np.array_equal(ids, ref_ids) and np.allclose(log_probs, ref_log_probs, atol=1e-6)
assert int(steps) == lengths.max() < MAX_STEPS  # every row ended: the loop stopped early
assert np.all(np.asarray(ids)[lengths - 1, np.arange(BATCH)] == END)


# The log-likelihood of the greedy sequences is differentiable: raw_rnn carries a custom VJP.
def nll(params, decode_fn):
    return -jnp.sum(decode_fn(cell, params)[1])


grads = jax.jit(jax.grad(nll), static_argnums=1)(params, decode)
ref_grads = jax.grad(nll)(params, reference)
assert all(np.allclose(grads[k], ref_grads[k], atol=1e-5) for k in params)
print("raw_rnn == the reference loop, in tokens, log-probabilities and gradients")
