"""Property-based checks: random shapes, lengths and layouts against the NumPy references."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import recurrax
from reference import (
    assert_tree_close,
    np_step,
    randomize,
    reference_bidirectional,
    reference_rnn,
    reverse_rows,
    zeros_like_state,
)

# Each example compiles a new program (new shapes): a few examples, no deadline.
FEW = settings(max_examples=5, deadline=None)


def _cell(kind, units, features, seed):
    """Built abstractly (nothing compiled), weights drawn by NumPy."""

    def build():
        key = jax.random.key(0)
        if kind == "gru":
            return recurrax.GRUCell(units, features, key=key, dtype=jnp.float64)
        if kind == "basic_lstm":
            return recurrax.BasicLSTMCell(units, features, key=key, dtype=jnp.float64)
        return recurrax.LSTMCell(
            units, features, key=key, use_peepholes=True, num_proj=2, cell_clip=1.0,
            dtype=jnp.float64,
        )  # fmt: skip

    return randomize(eqx.filter_eval_shape(build), seed)


@st.composite
def problems(draw):
    """(cell kind, units, batch, time, features, lengths or None, seed)."""
    batch = draw(st.integers(1, 3))
    time = draw(st.integers(1, 4))
    lengths = draw(
        st.none() | st.lists(st.integers(0, time), min_size=batch, max_size=batch).map(np.array)
    )
    return (
        draw(st.sampled_from(["gru", "basic_lstm", "lstm"])),
        draw(st.integers(1, 3)),
        batch,
        time,
        draw(st.integers(1, 3)),
        lengths,
        draw(st.integers(0, 2**16)),
    )


@FEW
@given(problems(), st.booleans())
def test_runners_match_reference(problem, time_major):
    kind, units, batch, time, features, lengths, seed = problem
    cell = _cell(kind, units, features, seed)
    x_tm = np.random.default_rng(seed).standard_normal((time, batch, features))
    want = reference_rnn(np_step(cell), x_tm, zeros_like_state(cell.state_size, batch), lengths)

    out, state = recurrax.dynamic_rnn(
        cell,
        x_tm if time_major else np.swapaxes(x_tm, 0, 1),
        lengths,
        dtype=jnp.float64,
        time_major=time_major,
    )
    steps, s_state = recurrax.static_rnn(
        cell, list(x_tm), dtype=jnp.float64, sequence_length=lengths
    )
    out = out if time_major else np.swapaxes(out, 0, 1)
    assert_tree_close((out, state), want, 1e-10, 1e-12)
    assert_tree_close((np.stack(steps), s_state), want, 1e-10, 1e-12)


@FEW
@given(problems())
def test_bidirectional_matches_reference(problem):
    kind, units, batch, time, features, lengths, seed = problem
    fw, bw = _cell(kind, units, features, seed), _cell("gru", 2, features, seed + 1)
    x_tm = np.random.default_rng(seed).standard_normal((time, batch, features))
    want = reference_bidirectional(
        np_step(fw),
        np_step(bw),
        x_tm,
        zeros_like_state(fw.state_size, batch),
        zeros_like_state(bw.state_size, batch),
        lengths,
    )
    got = recurrax.bidirectional_dynamic_rnn(
        fw, bw, x_tm, lengths, dtype=jnp.float64, time_major=True
    )
    assert_tree_close(got, want, 1e-10, 1e-12)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.data())
def test_reverse_sequence_is_rowwise_reversal(batch, time, data):
    lengths = np.array(data.draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch)))
    x = np.arange(time * batch * 2).reshape(time, batch, 2)
    got = recurrax.reverse_sequence(x, jnp.asarray(lengths))
    np.testing.assert_array_equal(got, reverse_rows(x, lengths))
    np.testing.assert_array_equal(recurrax.reverse_sequence(got, jnp.asarray(lengths)), x)
