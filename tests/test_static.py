"""static_rnn: what only the unrolled runner does (its numbers are checked in test_dynamic)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import recurrax
from reference import (
    assert_tree_close,
    make_cell,
    np_step,
    reference_rnn,
    zeros_like_state,
)


class CountingCell:
    """A plain-Python cell (no Equinox) that counts the calls that compute (abstract traces for
    shapes aside) and has no ``zero_state``: the runners build zeros from ``state_size``."""

    def __init__(self, cell):
        self.cell, self.calls = cell, 0
        self.state_size, self.output_size = cell.state_size, cell.output_size

    def __call__(self, x, state):
        self.calls += not isinstance(x, jax.core.Tracer)
        return self.cell(x, state)


class PairOutputCell(eqx.Module):
    """A user cell whose output is a nest: ``(h, 2 * h)``; sizes ``(4, 4)``."""

    inner: recurrax.GRUCell
    state_size: int = eqx.field(static=True, default=4)
    output_size: tuple = eqx.field(static=True, default=(4, 4))

    def zero_state(self, batch_size, dtype):
        return jnp.zeros((batch_size, 4), dtype)

    def __call__(self, x, h):
        out, h = self.inner(x, h)
        return (out, 2 * out), h


def _steps(batch, time, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3)) for _ in range(time)]


def test_cell_is_not_called_past_the_longest_row():
    """With concrete lengths, like TF1, no step at or past max(sequence_length) is computed."""
    gru = make_cell("gru", 3)
    cell = CountingCell(gru)
    xs = _steps(3, 5)
    lengths = np.array([1, 3, 0])
    outs, state = recurrax.static_rnn(cell, xs, dtype=jnp.float64, sequence_length=lengths)
    assert cell.calls == 3
    want_out, want_state = reference_rnn(np_step(gru), np.stack(xs), np.zeros((3, 4)), lengths)
    assert len(outs) == 5 and all(o.shape == (3, 4) and o.dtype == jnp.float64 for o in outs)
    assert_tree_close(jnp.stack(outs), want_out, 1e-10, 1e-12)
    assert_tree_close(state, want_state, 1e-10, 1e-12)

    # All lengths 0: the cell never runs, outputs are zeros and the state the initial one.
    cell.calls = 0
    init = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    outs, state = recurrax.static_rnn(cell, xs, init, sequence_length=np.zeros(3, int))
    assert cell.calls == 0
    np.testing.assert_array_equal(jnp.stack(outs), np.zeros((5, 3, 4)))
    np.testing.assert_array_equal(state, init)

    # Without lengths (or with traced ones) every step runs.
    cell.calls = 0
    recurrax.static_rnn(cell, xs, dtype=jnp.float64)
    assert cell.calls == 5


def test_inputs_as_tuple_of_numpy_and_integer_arrays():
    cell = make_cell("basic_rnn", 3)
    xs = [np.arange(6).reshape(2, 3) % 4, np.ones((2, 3), np.int32)]
    outs, state = recurrax.static_rnn(cell, tuple(xs), dtype=jnp.float64)
    want_out, want_state = reference_rnn(
        np_step(cell), np.stack(xs).astype(float), np.zeros((2, 4))
    )
    assert_tree_close((jnp.stack(outs), state), (want_out, want_state), 1e-10, 1e-12)
    # The article's example: instance 1 is padding at t = 1 and lengths say so.
    x = np.array([[[0, 1, 2], [9, 8, 7]], [[3, 4, 5], [0, 0, 0]]])
    (y0, y1), h = recurrax.static_rnn(
        cell, [x[:, 0], x[:, 1]], dtype=jnp.float32, sequence_length=[2, 1]
    )
    assert y0.dtype == h.dtype == jnp.float32
    np.testing.assert_array_equal(y1[1], np.zeros(4))
    np.testing.assert_array_equal(h[1], y0[1])


def test_nested_outputs_and_missing_zero_state():
    pair = PairOutputCell(make_cell("gru", 3))
    xs = _steps(2, 3)
    lengths = np.array([3, 1])
    steps, state = recurrax.static_rnn(pair, xs, dtype=jnp.float64, sequence_length=lengths)
    out, d_state = recurrax.dynamic_rnn(
        pair, np.stack(xs), lengths, dtype=jnp.float64, time_major=True
    )
    want_out, want_state = reference_rnn(
        lambda t, x, h: (lambda y, s: ((y, 2 * y), s))(*np_step(pair.inner)(t, x, h)),
        np.stack(xs),
        np.zeros((2, 4)),
        lengths,
    )
    assert_tree_close(out, want_out, 1e-10, 1e-12)
    assert_tree_close(jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *steps), want_out)
    assert_tree_close((state, d_state), (want_state, want_state), 1e-10, 1e-12)

    # A cell without zero_state gets zeros built from state_size.
    counting = CountingCell(make_cell("lstm_full", 3))
    a = recurrax.static_rnn(counting, xs, dtype=jnp.float64)
    b = recurrax.static_rnn(make_cell("lstm_full", 3), xs, dtype=jnp.float64)
    assert_tree_close(a, b, 0, 0)
    assert isinstance(b[1], recurrax.LSTMStateTuple)


def test_program_grows_with_time_but_dynamic_does_not():
    """static_rnn puts one copy of the cell per step into the program; dynamic_rnn one loop."""
    cell = make_cell("basic_lstm", 3)

    def size(runner, time):
        x = jnp.zeros((2, time, 3), jnp.float64)
        if runner == "static":
            f = lambda x: recurrax.static_rnn(cell, list(jnp.moveaxis(x, 1, 0)), dtype=x.dtype)
        else:
            f = lambda x: recurrax.dynamic_rnn(cell, x, dtype=x.dtype)
        return len(jax.make_jaxpr(f)(x).jaxpr.eqns)

    s2, s4, s8 = (size("static", t) for t in (2, 4, 8))
    assert s4 > s2 and s8 - s4 == 2 * (s4 - s2)  # linear in T
    assert size("dynamic", 2) == size("dynamic", 8)


def test_explicit_initial_state_and_dtype():
    cell = make_cell("multi", 3)
    xs = _steps(3, 2)
    rng = np.random.default_rng(4)
    init = jax.tree_util.tree_map(
        lambda z: rng.standard_normal(z.shape), zeros_like_state(cell.state_size, 3)
    )
    outs, state = recurrax.static_rnn(cell, xs, init, dtype=jnp.float32)
    assert all(y.dtype == jnp.float32 for y in jax.tree_util.tree_leaves((outs, state)))
    want_out, want_state = reference_rnn(np_step(cell), np.stack(xs), init)
    assert_tree_close((jnp.stack(outs), state), (want_out, want_state), 1e-5, 1e-5)
    assert isinstance(state[1], recurrax.LSTMStateTuple)
