"""MultiRNNCell, ResidualWrapper and DropoutWrapper: formulas and TF1's dropout semantics."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from reference import assert_tree_close, np_step, random_cell

KEY = jax.random.key(0)


class EchoCell(eqx.Module):
    """Output ``x``; new state ``x`` (or ``LSTMStateTuple(x, x)``): dropout shows up as is."""

    input_size: int = eqx.field(static=True)
    lstm_state: bool = eqx.field(static=True)

    @property
    def state_size(self):
        n = self.input_size
        return recurrax.LSTMStateTuple(n, n) if self.lstm_state else n

    @property
    def output_size(self):
        return self.input_size

    def zero_state(self, batch_size, dtype):
        return jax.tree_util.tree_map(lambda n: jnp.zeros((batch_size, n), dtype), self.state_size)

    def __call__(self, x, state):
        return x, (recurrax.LSTMStateTuple(x, x) if self.lstm_state else x)


def _x(shape=(64, 16)):
    return jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, shape))  # never 0


def _assert_dropped(y, x, keep_prob):
    """Every unit is either 0 or ``x / keep_prob``, and about ``keep_prob`` of them are kept."""
    y, x = np.asarray(y), np.asarray(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / keep_prob, rtol=1e-12)
    assert abs(kept.mean() - keep_prob) < 0.06, kept.mean()
    return kept


# --- MultiRNNCell and ResidualWrapper ------------------------------------------------------------


def test_multi_rnn_cell_chains_layers():
    layers = lambda: [
        recurrax.GRUCell(4, 3, key=KEY, dtype=jnp.float64),
        recurrax.LSTMCell(5, 4, key=KEY, num_proj=2, use_peepholes=True, dtype=jnp.float64),
        recurrax.BasicRNNCell(3, 2, key=KEY, dtype=jnp.float64),
    ]
    cell = random_cell(lambda: recurrax.MultiRNNCell(layers()))
    assert cell.state_size == (4, recurrax.LSTMStateTuple(5, 2), 3)
    assert cell.output_size == 3 and cell.input_size == 3 and cell.dtype == jnp.float64
    zero = cell.zero_state(2, None)
    assert isinstance(zero, tuple) and isinstance(zero[1], recurrax.LSTMStateTuple)
    assert [z.shape for z in jax.tree_util.tree_leaves(zero)] == [(2, 4), (2, 5), (2, 2), (2, 3)]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3))
    state = jax.tree_util.tree_map(lambda z: jnp.asarray(rng.standard_normal(z.shape)), zero)
    out, new = cell(jnp.asarray(x), state)
    # By hand: layer k reads layer k-1's output at the same step.
    y0, s0 = np_step(cell.cells[0])(0, x, np.asarray(state[0]))
    y1, s1 = np_step(cell.cells[1])(0, y0, tuple(np.asarray(s) for s in state[1]))
    y2, s2 = np_step(cell.cells[2])(0, y1, np.asarray(state[2]))
    assert_tree_close(out, y2, 1e-12, 1e-12)
    assert_tree_close(new, (s0, s1, s2), 1e-12, 1e-12)
    assert isinstance(new, tuple) and isinstance(new[1], recurrax.LSTMStateTuple)


def test_residual_wrapper_adds_inputs():
    inner = random_cell(lambda: recurrax.BasicLSTMCell(3, 3, key=KEY, dtype=jnp.float64))
    cell = recurrax.ResidualWrapper(inner)
    assert cell.state_size == inner.state_size and cell.output_size == 3
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3)))
    state = inner.zero_state(2, None)
    out, new = cell(x, state)
    inner_out, inner_new = inner(x, state)
    np.testing.assert_allclose(out, x + inner_out, rtol=1e-14)
    assert_tree_close(new, inner_new, 0, 0)
    custom = recurrax.ResidualWrapper(inner, residual_fn=lambda i, o: 2 * i - o)
    np.testing.assert_allclose(custom(x, state)[0], 2 * x - inner_out, rtol=1e-14)


# --- DropoutWrapper ----------------------------------------------------------------------------


def test_dropout_keep_prob_one_is_the_identity(getkey):
    inner = random_cell(lambda: recurrax.GRUCell(4, 3, key=KEY, dtype=jnp.float64))
    x = _x((5, 3))
    state = inner.zero_state(5, None)
    for cell in (
        recurrax.DropoutWrapper(inner),
        recurrax.DropoutWrapper(inner, 1.0, 1.0, 1.0, variational_recurrent=True, key=getkey()),
        recurrax.DropoutWrapper(inner, np.float32(1.0), np.float64(1.0), 1),  # NumPy numbers
    ):
        assert_tree_close(cell(x, state), inner(x, state), 0, 0)


@pytest.mark.parametrize("which", ["input", "output"])
def test_dropout_scales_kept_units(which, getkey):
    cell = recurrax.DropoutWrapper(EchoCell(16, False), **{f"{which}_keep_prob": 0.6}, key=getkey())
    x = _x()
    out, state = cell(x, jnp.zeros_like(x))
    _assert_dropped(out, x, 0.6)
    if which == "input":  # the cell saw the dropped inputs: its state equals them
        np.testing.assert_array_equal(state, out)
    else:  # the state is not touched by output dropout
        np.testing.assert_array_equal(state, x)


def test_dropout_never_drops_lstm_c(getkey):
    cell = recurrax.DropoutWrapper(EchoCell(16, True), state_keep_prob=0.5, key=getkey())
    x = _x()
    out, state = cell(x, cell.zero_state(64, jnp.float64))
    np.testing.assert_array_equal(out, x)  # output_keep_prob = 1
    np.testing.assert_array_equal(state.c, x)  # c is never dropped
    _assert_dropped(state.h, x, 0.5)
    # Inside a MultiRNNCell the filter still finds each layer's LSTMStateTuple.
    multi = recurrax.DropoutWrapper(
        recurrax.MultiRNNCell([EchoCell(16, True), EchoCell(16, False)]),
        state_keep_prob=0.5,
        key=getkey(),
    )
    _, (s0, s1) = multi(x, multi.zero_state(64, jnp.float64))
    np.testing.assert_array_equal(s0.c, x)
    h_kept = _assert_dropped(s0.h, x, 0.5)
    s1_kept = _assert_dropped(s1, x, 0.5)
    assert (h_kept != s1_kept).any()  # independent masks per state array


def _dropout_run(cell, runner, x):
    if runner == "dynamic":
        return recurrax.dynamic_rnn(cell, x, dtype=jnp.float64)[0]
    return jnp.stack(
        recurrax.static_rnn(cell, list(jnp.moveaxis(x, 1, 0)), dtype=jnp.float64)[0], 1
    )


def _assert_same_masks(a, b, dropped):
    """The same units dropped (exactly) and the same values kept (the 1 / keep_prob scaling may
    round differently by an ulp where a backend fuses the two runners' programs differently)."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(a == dropped, b == dropped)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("variational", [False, True])
def test_dropout_masks_across_steps(variational, getkey):
    """Variational: one mask for every step; otherwise a new mask per step. Static and dynamic
    runners draw the same masks, also through MultiRNNCell and ResidualWrapper."""
    x = jnp.ones((32, 5, 8), jnp.float64)
    cell = recurrax.DropoutWrapper(
        EchoCell(8, False),
        input_keep_prob=0.7,
        output_keep_prob=0.8,
        variational_recurrent=variational,
        key=getkey(),
    )
    out = _dropout_run(cell, "dynamic", x)
    _assert_same_masks(out, _dropout_run(cell, "static", x), dropped=0.0)
    kept = np.asarray(out) != 0
    np.testing.assert_allclose(np.asarray(out)[kept], 1 / (0.7 * 0.8), rtol=1e-12)
    assert abs(kept.mean() - 0.56) < 0.06
    same = [np.array_equal(kept[:, 0], kept[:, t]) for t in range(1, 5)]
    assert all(same) if variational else not any(same)

    nested = recurrax.ResidualWrapper(recurrax.MultiRNNCell([EchoCell(8, False), cell]))
    out = _dropout_run(nested, "dynamic", x)
    _assert_same_masks(out, _dropout_run(nested, "static", x), dropped=1.0)
    kept = np.asarray(out) != 1.0  # the residual adds 1 to every unit
    same = [np.array_equal(kept[:, 0], kept[:, t]) for t in range(1, 5)]
    assert all(same) if variational else not any(same)


def test_dropout_different_keys_draw_different_masks(getkey):
    x = _x()
    a = recurrax.DropoutWrapper(EchoCell(16, False), 0.5, key=jax.random.key(1))
    b = recurrax.DropoutWrapper(EchoCell(16, False), 0.5, key=jax.random.key(2))
    a2 = recurrax.DropoutWrapper(EchoCell(16, False), 0.5, key=jax.random.key(1))
    assert not np.array_equal(a(x, x)[0], b(x, x)[0])
    np.testing.assert_array_equal(a(x, x)[0], a2(x, x)[0])
    # A step-bound wrapper draws from the step; two steps differ.
    assert not np.array_equal(a.at_step(0)(x, x)[0], a.at_step(1)(x, x)[0])
