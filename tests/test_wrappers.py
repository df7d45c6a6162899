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
    out, state = cell(x, jnp.zeros_like(x), key=getkey())
    _assert_dropped(out, x, 0.6)
    if which == "input":  # the cell saw the dropped inputs: its state equals them
        np.testing.assert_array_equal(state, out)
    else:  # the state is not touched by output dropout
        np.testing.assert_array_equal(state, x)


def test_dropout_never_drops_lstm_c(getkey):
    cell = recurrax.DropoutWrapper(EchoCell(16, True), state_keep_prob=0.5, key=getkey())
    x = _x()
    out, state = cell(x, cell.zero_state(64, jnp.float64), key=getkey())
    np.testing.assert_array_equal(out, x)  # output_keep_prob = 1
    np.testing.assert_array_equal(state.c, x)  # c is never dropped
    _assert_dropped(state.h, x, 0.5)
    # Inside a MultiRNNCell the filter still finds each layer's LSTMStateTuple.
    multi = recurrax.DropoutWrapper(
        recurrax.MultiRNNCell([EchoCell(16, True), EchoCell(16, False)]),
        state_keep_prob=0.5,
        key=getkey(),
    )
    _, (s0, s1) = multi.at_step(0)(x, multi.zero_state(64, jnp.float64))
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
    n = 256 if variational else 8  # a variational mask is one row: more units, steadier rate
    x = jnp.ones((32, 5, n), jnp.float64)
    cell = recurrax.DropoutWrapper(
        EchoCell(n, False),
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
    rows_same = (kept == kept[:1]).all()  # TF1's variational masks are [1, size]
    assert rows_same if variational else not rows_same

    nested = recurrax.ResidualWrapper(recurrax.MultiRNNCell([EchoCell(n, False), cell]))
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
    assert not np.array_equal(a.at_step(0)(x, x)[0], b.at_step(0)(x, x)[0])
    np.testing.assert_array_equal(a.at_step(0)(x, x)[0], a2.at_step(0)(x, x)[0])
    # A step-bound wrapper draws from the step; two steps differ.
    assert not np.array_equal(a.at_step(0)(x, x)[0], a.at_step(1)(x, x)[0])


# --- DropoutWrapper outside the runners: keys per call, steps, layers ---------------------------


def test_variational_masks_are_one_row_for_the_whole_batch(getkey):
    """TF1 draws each variational mask with shape [1, size]: every row and every step of a run
    drops the same units, on the inputs, the outputs and the state."""
    cell = recurrax.DropoutWrapper(
        EchoCell(64, True),
        input_keep_prob=0.8,
        output_keep_prob=0.5,
        state_keep_prob=0.5,
        variational_recurrent=True,
        key=getkey(),
    )
    x = jnp.ones((16, 64), jnp.float64)
    steps = [cell.at_step(t)(x, cell.zero_state(16, jnp.float64)) for t in range(3)]
    for out, state in steps:
        for y in (out, state.c, state.h):
            kept = np.asarray(y) != 0
            assert (kept == kept[:1]).all() and 0 < kept.mean() < 1
        # c is the (dropped) input, h is c dropped again: h's units are a subset of c's.
        c_kept, h_kept = np.asarray(state.c) != 0, np.asarray(state.h) != 0
        assert (c_kept | ~h_kept).all() and (c_kept & ~h_kept).any()
    for out, state in steps[1:]:  # the same masks at every step
        assert_tree_close((out, state), steps[0], 0, 0)
    # A key per call: one key for every step of a sequence keeps the masks; another key changes
    # them, still one row for the whole batch.
    k1, k2 = getkey(), getkey()
    a, b = cell(x, x, key=k1)[0], cell(x, x, key=k2)[0]
    np.testing.assert_array_equal(a, cell(x, x, key=k1)[0])
    assert not np.array_equal(a, b)
    assert (np.asarray(b) == np.asarray(b)[:1]).all()


@pytest.mark.parametrize("variational", [False, True])
def test_dropout_key_per_call(variational, getkey):
    cell = recurrax.DropoutWrapper(
        EchoCell(16, False), output_keep_prob=0.5, variational_recurrent=variational, key=getkey()
    )
    x = _x()
    k1, k2 = getkey(), getkey()
    a = cell(x, x, key=k1)[0]
    if variational:  # one [1, 16] mask: every row the same (too few units for a rate check)
        assert (np.asarray(a != 0) == np.asarray(a[:1] != 0)).all()
    else:
        _assert_dropped(a, x, 0.5)
    np.testing.assert_array_equal(a, cell(x, x, key=k1)[0])  # the key decides the masks
    assert not np.array_equal(a, cell(x, x, key=k2)[0])
    # Never silently one mask for every call: without a key or a step the call is refused.
    with pytest.raises(TypeError, match="or bind the step with cell.at_step"):
        cell(x, x)
    # A hand-written loop with a fresh key per step draws a fresh mask per step.
    keys = jax.random.split(getkey(), 4)
    masks = [np.asarray(cell(x, x, key=k)[0]) != 0 for k in keys]
    assert not any(np.array_equal(masks[0], m) for m in masks[1:])
    # Under jit, the key is an ordinary argument.
    jitted = eqx.filter_jit(lambda c, x, k: c(x, x, key=k)[0])
    np.testing.assert_array_equal(jitted(cell, x, k1), a)


def test_key_passes_through_wrappers_and_is_ignored_by_deterministic_cells(getkey):
    gru = random_cell(lambda: recurrax.GRUCell(4, 4, key=KEY, dtype=jnp.float64))
    x, h = _x((3, 4)), jnp.zeros((3, 4))
    k = getkey()
    for cell in (gru, recurrax.ResidualWrapper(gru), recurrax.MultiRNNCell([gru, gru])):
        state = cell.zero_state(3, None)
        assert_tree_close(cell(x, state, key=k), cell(x, state), 0, 0)
    # Inside a ResidualWrapper, a DropoutWrapper gets the call's key.
    drop = recurrax.DropoutWrapper(EchoCell(4, False), output_keep_prob=0.5, key=getkey())
    res = recurrax.ResidualWrapper(drop)
    np.testing.assert_array_equal(res(x, h, key=k)[0], x + drop(x, h, key=k)[0])
    with pytest.raises(TypeError, match="dropout is active"):
        res(x, h)
    # A user cell whose call takes no key is called without one.
    multi = recurrax.MultiRNNCell([EchoCell(4, False), drop])
    out, _ = multi(x, multi.zero_state(3, jnp.float64), key=k)
    assert ((np.asarray(out) == 0) | np.isclose(out, 2 * x)).all()


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("how", ["runner", "call_key"])
def test_multi_rnn_cell_layers_draw_different_masks(how, variational, getkey):
    """Two layers wrapped with one key still drop different units: MultiRNNCell folds the layer
    index into the keys (bound by the runners) and into a call's key."""
    key = getkey()
    layer = recurrax.DropoutWrapper(
        EchoCell(64, False), input_keep_prob=0.5, variational_recurrent=variational, key=key
    )
    multi = recurrax.MultiRNNCell([layer, layer])
    x = jnp.ones((8, 64), jnp.float64)
    zero = multi.zero_state(8, jnp.float64)
    if how == "runner":
        _, (s0, s1) = recurrax.dynamic_rnn(multi, x[:, None], initial_state=zero)
    else:
        _, (s0, s1) = multi(x, zero, key=getkey())
    # Each layer's state is the input it saw, after its own input dropout: layer 1 sees layer 0's
    # output, so its kept units are a subset of layer 0's; a different mask makes it a strict one.
    kept0, kept1 = np.asarray(s0) != 0, np.asarray(s1) != 0
    assert (kept0 | ~kept1).all()
    assert (kept0 & ~kept1).any() and kept1.any()
    np.testing.assert_allclose(np.asarray(s1)[kept1], 4.0)  # scaled by 1/0.5 twice


def test_fresh_masks_per_batch_and_an_optax_step_with_a_key_inside(getkey):
    """The two ways docs/custom-cells.md gives for fresh masks per batch, and a key kept inside
    a model next to optax: eqx.filter(model, eqx.is_inexact_array) leaves the key out."""
    optax = pytest.importorskip("optax")
    inner = random_cell(lambda: recurrax.BasicLSTMCell(8, 4, key=KEY, dtype=jnp.float64))
    model = recurrax.DropoutWrapper(inner, output_keep_prob=0.5, key=getkey())
    x = _x((5, 6, 4))

    def loss(model, x):
        out, _ = recurrax.dynamic_rnn(model, x)
        return jnp.sum(out**2)

    params = eqx.filter(model, eqx.is_inexact_array)
    assert all(jnp.issubdtype(p.dtype, jnp.inexact) for p in jax.tree_util.tree_leaves(params))
    assert params.key is None and model.key is not None
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    grads = eqx.filter_grad(loss)(model, x)
    updates, opt_state = opt.update(grads, opt_state, params)
    new = eqx.apply_updates(model, updates)
    assert new.key is model.key and not np.allclose(new.cell.kernel, model.cell.kernel)

    # Fresh masks per batch: replace the wrapper's key, or wrap the cell per batch.
    k1, k2 = getkey(), getkey()
    a = recurrax.dynamic_rnn(eqx.tree_at(lambda m: m.key, model, k1), x)[0]
    b = recurrax.dynamic_rnn(eqx.tree_at(lambda m: m.key, model, k2), x)[0]
    assert not np.array_equal(np.asarray(a) == 0, np.asarray(b) == 0)
    per_batch = recurrax.DropoutWrapper(inner, output_keep_prob=0.5, key=k1)
    np.testing.assert_array_equal(recurrax.dynamic_rnn(per_batch, x)[0], a)


# --- TF1's properties and get_initial_state ------------------------------------------------------


def test_wrapped_cell_and_get_initial_state(getkey):
    lstm = random_cell(lambda: recurrax.BasicLSTMCell(4, 3, key=KEY, dtype=jnp.float64))
    drop = recurrax.DropoutWrapper(lstm, output_keep_prob=0.5, key=getkey())
    res = recurrax.ResidualWrapper(random_cell(lambda: recurrax.GRUCell(3, 3, key=KEY)))
    assert drop.wrapped_cell is lstm and res.wrapped_cell is res.cell
    multi = recurrax.MultiRNNCell([drop, recurrax.GRUCell(2, 4, key=KEY)])
    x32 = np.ones((5, 3), np.float32)
    for cell in (drop, res, multi):
        state = cell.get_initial_state(x32)
        assert_tree_close(state, cell.zero_state(5, jnp.float32), 0, 0)
        assert all(s.dtype == jnp.float32 for s in jax.tree_util.tree_leaves(state))
        assert all(s.shape[0] == 5 for s in jax.tree_util.tree_leaves(state))
    sizes = [s.shape for s in jax.tree_util.tree_leaves(multi.get_initial_state(batch_size=2))]
    assert sizes == [(2, 4), (2, 4), (2, 2)]
    # Without a dtype, each layer keeps its own (float64, then float32).
    dtypes = [s.dtype for s in jax.tree_util.tree_leaves(multi.get_initial_state(batch_size=2))]
    assert dtypes == [jnp.float64, jnp.float64, jnp.float32]
    with pytest.raises(ValueError, match=r"batch_size=4 disagrees with the inputs' batch 5"):
        multi.get_initial_state(x32, batch_size=4)


@pytest.mark.parametrize(
    "build",
    [
        lambda c: recurrax.DropoutWrapper(c, 0.5, key=KEY, seed=3),
        lambda c: recurrax.DropoutWrapper(c, 0.5, key=KEY, dropout_state_filter_visitor=None),
        lambda c: recurrax.ResidualWrapper(c, residual_function=None),
        lambda c: recurrax.MultiRNNCell([c], state_is_tupl=True),
    ],
    ids=["seed", "filter", "residual_fn", "state_is_tuple"],
)
def test_wrapper_unknown_keywords_name_the_fix(build):
    with pytest.raises(TypeError, match=r"(did you mean '\w+'\?|does not take \w+=)"):
        build(random_cell(lambda: recurrax.GRUCell(3, 3, key=KEY)))


def test_wrapper_tf1_arguments(getkey):
    gru = random_cell(lambda: recurrax.GRUCell(3, 3, key=KEY))
    # TF1's input_size and dtype are accepted (recurrax reads both from the data).
    recurrax.DropoutWrapper(gru, 0.5, 1.0, 1.0, True, 3, jnp.float32, key=getkey())
    with pytest.raises(ValueError, match="input_size=4 disagrees with the cell's input_size 3"):
        recurrax.DropoutWrapper(gru, 0.5, variational_recurrent=True, input_size=4, key=KEY)
    with pytest.raises(ValueError, match="MultiRNNCell: state_is_tuple=False is not supported"):
        recurrax.MultiRNNCell([gru], state_is_tuple=False)
