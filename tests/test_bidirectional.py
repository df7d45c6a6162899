"""Bidirectional runners and reverse_sequence against the reference with per-row reversal."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from reference import (
    assert_tree_close,
    make_cell,
    reference_bidirectional,
    reference_step,
    reverse_rows,
    zeros_like_state,
)

LENGTHS = {"none": None, "mixed": [0, 4, 2, 1]}
PAIRS = [("gru", "lstm_full"), ("multi", "dropout")]


def _inputs(batch=4, time=4, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, 3))


def _swap(tree):
    return jax.tree_util.tree_map(lambda y: np.swapaxes(np.asarray(y), 0, 1), tree)


# (cells fw/bw, lengths, time_major): every layout for one pair; the wrappers with lengths.
CASES = [(PAIRS[0], n, tm) for n in LENGTHS for tm in (False, True)] + [(PAIRS[1], "mixed", False)]


@pytest.mark.parametrize(
    "pair, lengths, time_major", CASES, ids=["-".join(p) + f"-{n}-{t}" for p, n, t in CASES]
)
def test_bidirectional_dynamic_matches_reference(pair, lengths, time_major):
    kind_fw, kind_bw = pair
    fw, bw = make_cell(kind_fw, 3), make_cell(kind_bw, 3)
    x = _inputs()
    n = LENGTHS[lengths]
    x_tm = np.swapaxes(x, 0, 1)
    (want_fw, want_bw), want_states = reference_bidirectional(
        reference_step(kind_fw, fw),
        reference_step(kind_bw, bw),
        x_tm,
        zeros_like_state(fw.state_size, 4),
        zeros_like_state(bw.state_size, 4),
        n,
    )

    (out_fw, out_bw), states = recurrax.bidirectional_dynamic_rnn(
        fw, bw, x_tm if time_major else x, n, dtype=jnp.float64, time_major=time_major
    )
    outs, state_fw, state_bw = recurrax.static_bidirectional_rnn(
        fw, bw, list(x_tm), dtype=jnp.float64, sequence_length=n
    )
    if not time_major:
        out_fw, out_bw = _swap((out_fw, out_bw))
    assert_tree_close((out_fw, out_bw), (want_fw, want_bw), 1e-10, 1e-12)
    assert_tree_close(states, want_states, 1e-10, 1e-12)
    # static: outputs concatenated per step, [batch, out_fw + out_bw].
    assert len(outs) == 4 and outs[0].shape == (4, fw.output_size + bw.output_size)
    assert_tree_close(np.stack(outs), np.concatenate([want_fw, want_bw], -1), 1e-10, 1e-12)
    assert_tree_close((state_fw, state_bw), want_states, 1e-10, 1e-12)


@pytest.mark.parametrize("layout", ["time_major", "batch_major"])
def test_reverse_sequence_matches_rowwise_reversal(layout):
    x = np.arange(5 * 3 * 2).reshape(5, 3, 2)  # (T, B, F)
    n = np.array([5, 0, 3])
    want = reverse_rows(x, n)
    if layout == "time_major":
        got = recurrax.reverse_sequence(x, jnp.asarray(n))
    else:
        got = np.swapaxes(
            recurrax.reverse_sequence(np.swapaxes(x, 0, 1), jnp.asarray(n), 1, 0), 0, 1
        )
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(recurrax.reverse_sequence(x, None), x[::-1])
    # A nest of arrays is reversed leaf by leaf; reversing twice is the identity.
    tree = (x, {"y": x * 2})
    twice = recurrax.reverse_sequence(recurrax.reverse_sequence(tree, n), n)
    assert_tree_close(twice, tree, 0, 0)


def test_traced_lengths_out_of_range_under_jit():
    """Under jit a length above T acts as T and a negative one as 0, in both directions."""
    fw, bw = make_cell("gru", 3), make_cell("basic_rnn", 3)
    x = _inputs()

    @eqx.filter_jit
    def both(n):
        dyn = recurrax.bidirectional_dynamic_rnn(fw, bw, x, n, dtype=jnp.float64)
        sta = recurrax.static_bidirectional_rnn(
            fw, bw, list(np.swapaxes(x, 0, 1)), dtype=jnp.float64, sequence_length=n
        )
        return dyn, sta

    got = both(jnp.array([9, -3, 2, 4]))
    want = both(jnp.array([4, 0, 2, 4]))
    assert_tree_close(got, want, 0, 0)
    assert np.isfinite(np.asarray(got[0][0][1])).all()
