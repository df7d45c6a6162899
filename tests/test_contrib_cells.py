"""tf.contrib.rnn's cells: the projection and embedding wrappers and LayerNormBasicLSTMCell.

Values against the NumPy references (``reference_contrib.py``), called directly and through
both runners, with and without ``sequence_length``; gradients against finite differences;
numbers from TF1's own tests; TF1 names round trip; errors are pinned.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax
from recurrax.cells.layernorm import LayerNormBasicLSTMCell
from recurrax.cells.projection import (
    EmbeddingWrapper,
    InputProjectionWrapper,
    OutputProjectionWrapper,
)
from reference import (
    assert_tree_close,
    jax_step,
    random_cell,
    reference_rnn,
    zeros_like_state,
)
from reference_contrib import layer_norm_basic_lstm_step, np_step

KEY = jax.random.key(0)
F64 = jnp.float64
N_IN = 3  # the feature size of the float-input kinds


# TF1's float32 test numbers, checked to 1e-5: full float32 dots, also on a GPU.
pytestmark = pytest.mark.usefixtures("full_float32_dots")


def _build(kind):
    k1, k2, k3 = jax.random.split(KEY, 3)
    if kind == "output_projection":
        return OutputProjectionWrapper(recurrax.GRUCell(4, N_IN, key=k1, dtype=F64), 3, key=k2)
    if kind == "output_projection_tanh":
        inner = recurrax.BasicRNNCell(4, N_IN, key=k1, dtype=F64)
        return OutputProjectionWrapper(inner, 2, key=k2, activation=jnp.tanh)
    if kind == "input_projection":
        inner = recurrax.BasicLSTMCell(4, 5, key=k1, forget_bias=0.5, dtype=F64)
        return InputProjectionWrapper(inner, 5, N_IN, key=k2, activation=jnp.tanh)
    if kind == "ln_lstm":
        return LayerNormBasicLSTMCell(4, N_IN, key=k1, forget_bias=0.7, dtype=F64)
    if kind == "ln_lstm_plain":
        return LayerNormBasicLSTMCell(4, N_IN, key=k1, layer_norm=False, dtype=F64)
    if kind == "nested":
        ln = LayerNormBasicLSTMCell(4, 5, key=k1, dtype=F64)
        return recurrax.MultiRNNCell(
            [
                InputProjectionWrapper(ln, 5, N_IN, key=k2),
                OutputProjectionWrapper(recurrax.GRUCell(3, 4, key=k3, dtype=F64), 2, key=k1),
            ]
        )
    if kind == "embedding":
        return EmbeddingWrapper(recurrax.GRUCell(4, 3, key=k1, dtype=F64), 7, 3, key=k2)
    if kind == "embedding_stack":
        inner = InputProjectionWrapper(
            recurrax.BasicLSTMCell(3, 2, key=k1, dtype=F64), 2, 3, key=k3
        )
        return EmbeddingWrapper(inner, 5, 3, key=k2)
    raise ValueError(kind)


FLOAT_KINDS = [
    "output_projection",
    "output_projection_tanh",
    "input_projection",
    "ln_lstm",
    "ln_lstm_plain",
    "nested",
]
ID_KINDS = ["embedding", "embedding_stack"]
_CELLS = {}


def make(kind):
    """The cell of ``kind`` with NumPy-drawn float64 weights (gains and shifts included); the
    seed is fixed per kind (its place in the lists above), whatever order the tests run in."""
    if kind not in _CELLS:
        seed = (FLOAT_KINDS + ID_KINDS).index(kind) + 1
        _CELLS[kind] = random_cell(lambda: _build(kind), seed=seed)
    return _CELLS[kind]


def _inputs(kind, shape_bt, rng):
    """Float features ``[*shape_bt, N_IN]`` or integer ids ``[*shape_bt, 1]``."""
    if kind in ID_KINDS:
        classes = make(kind).embedding_classes
        return rng.integers(0, classes, (*shape_bt, 1)).astype(np.int32)
    return rng.standard_normal((*shape_bt, N_IN))


def _random_state(cell, batch, rng):
    return jax.tree_util.tree_map(
        lambda z: 0.5 * rng.standard_normal(z.shape), cell.zero_state(batch, F64)
    )


_jit_call = jax.jit(lambda cell, x, state: cell(x, state))


def _plain(state):
    return jax.tree_util.tree_map(np.asarray, state)


# --- one step, called directly -------------------------------------------------------------------


@pytest.mark.parametrize("kind", FLOAT_KINDS + ID_KINDS)
def test_direct_call_matches_reference(kind):
    cell, rng = make(kind), np.random.default_rng(0)
    x = _inputs(kind, (3,), rng)
    state = _random_state(cell, 3, rng)
    out, new = cell(jnp.asarray(x), state)
    ref_out, ref_new = np_step(cell)(0, x, _plain(state))
    assert_tree_close(out, ref_out, 1e-12, 1e-12)
    assert_tree_close(new, ref_new, 1e-12, 1e-12)


def test_sizes_and_protocol():
    out = make("output_projection")
    assert (out.input_size, out.output_size, out.state_size, out.dtype) == (N_IN, 3, 4, F64)
    inp = make("input_projection")
    assert (inp.input_size, inp.output_size) == (N_IN, 4)
    assert inp.state_size == recurrax.LSTMStateTuple(4, 4)
    emb = make("embedding")
    assert (emb.input_size, emb.integer_inputs, emb.output_size, emb.state_size) == (1, True, 4, 4)
    assert emb.embedding.shape == (7, 3) and emb.zero_state(2).shape == (2, 4)
    ln = make("ln_lstm")
    assert ln.state_size == recurrax.LSTMStateTuple(4, 4) and ln.output_size == 4
    assert ln.bias is None and ln.state_gamma.shape == (4,)
    assert ln.at_step(3) is ln  # no dropout: nothing to bind
    plain = make("ln_lstm_plain")
    assert plain.bias.shape == (16,) and plain.input_gamma is None
    z = make("nested").zero_state(2)
    assert [a.shape for a in jax.tree_util.tree_leaves(z)] == [(2, 4), (2, 4), (2, 3)]


def test_embedding_accepts_ids_of_shape_b_and_b1():
    cell = make("embedding")
    state = cell.zero_state(3)
    ids = jnp.array([4, 0, 6])
    a = cell(ids, state)
    b = cell(ids[:, None], state)
    assert_tree_close(a, b, 0, 0)
    out, _ = _jit_call(cell, ids.astype(jnp.int64), state)
    assert_tree_close(out, a[0], 1e-12, 1e-12)


def test_embedding_out_of_range_under_jit_is_nan():
    cell = make("embedding")
    out, _ = _jit_call(cell, jnp.array([[-1], [7], [2]]), cell.zero_state(3))
    out = np.asarray(out)
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()


def test_initialisers():
    k = jax.random.key(3)
    emb = EmbeddingWrapper(recurrax.GRUCell(4, 16, key=k), 500, 16, key=k)
    e = np.asarray(emb.embedding)
    assert e.dtype == np.float32 and np.abs(e).max() < np.sqrt(3.0)
    assert abs(e.var() - 1.0) < 0.05  # TF1: uniform(-sqrt(3), sqrt(3)), unit variance
    proj = OutputProjectionWrapper(recurrax.GRUCell(40, 3, key=k), 60, key=k)
    limit = np.sqrt(6.0 / (40 + 60))  # Glorot uniform, TF1's get_variable default
    assert np.abs(proj.kernel).max() <= limit and np.abs(proj.kernel).max() > 0.9 * limit
    np.testing.assert_array_equal(proj.bias, np.zeros(60))
    ln = LayerNormBasicLSTMCell(3, 2, key=k, norm_gain=0.7, norm_shift=0.2)
    np.testing.assert_array_equal(ln.forget_gamma, np.full(3, 0.7, np.float32))
    np.testing.assert_array_equal(ln.state_beta, np.full(3, 0.2, np.float32))
    plain = LayerNormBasicLSTMCell(3, 2, key=k, layer_norm=False)
    # TF1 creates this bias with get_variable's default initializer: Glorot uniform, not zeros.
    assert 0 < np.abs(plain.bias).max() <= np.sqrt(6.0 / 24)
    inner64 = recurrax.GRUCell(2, 3, key=k, dtype=F64)
    assert InputProjectionWrapper(inner64, 3, 2, key=k).kernel.dtype == F64
    assert InputProjectionWrapper(inner64, 3, 2, key=k, dtype=jnp.float32).dtype == F64


# --- numbers from TF1's own tests ----------------------------------------------------------------


def _constant(cell, value):
    """Every floating weight set to ``value``: TF1's tests run under
    ``variable_scope("root", initializer=constant_initializer(value))``."""
    return jax.tree_util.tree_map(
        lambda x: jnp.full_like(x, value) if eqx.is_inexact_array(x) else x, cell
    )


def _tf1_gru(n, i):
    # The scope initializer reaches the kernels only: GRUCell's biases have explicit initializers
    # (gates 1.0, candidate 0.0), as does _Linear's bias in the projection wrappers (0.0).
    gru = _constant(recurrax.GRUCell(n, i, key=KEY), 0.5)
    return eqx.tree_at(
        lambda c: (c.gates_bias, c.candidate_bias), gru, (jnp.ones(2 * n), jnp.zeros(n))
    )


def test_projection_and_embedding_wrappers_give_tf1_test_numbers():
    f32 = jnp.float32
    # tensorflow/contrib/rnn/python/kernel_tests/core_rnn_cell_test.py,
    # RNNCellTest.testOutputProjectionWrapper: GRUCell(3) projected to 2.
    cell = OutputProjectionWrapper(_tf1_gru(3, 3), 2, key=KEY)
    cell = eqx.tree_at(lambda c: (c.kernel, c.bias), cell, (jnp.full((3, 2), 0.5), jnp.zeros(2)))
    g, new_m = cell(jnp.ones((1, 3), f32), jnp.full((1, 3), 0.1, f32))
    np.testing.assert_allclose(g, [[0.231907, 0.231907]], rtol=1e-5)
    assert new_m.shape == (1, 3)
    # Same file, testInputProjectionWrapper: inputs [1, 2] projected to 3 for a GRUCell(3).
    cell = InputProjectionWrapper(_tf1_gru(3, 3), 3, 2, key=KEY)
    cell = eqx.tree_at(lambda c: (c.kernel, c.bias), cell, (jnp.full((2, 3), 0.5), jnp.zeros(3)))
    g, _ = cell(jnp.ones((1, 2), f32), jnp.full((1, 3), 0.1, f32))
    np.testing.assert_allclose(g, [[0.154605, 0.154605, 0.154605]], rtol=1e-5)
    # Same file, testEmbeddingWrapper: 3 classes embedded in 2 for a GRUCell(2), id 1.
    cell = EmbeddingWrapper(_tf1_gru(2, 2), 3, 2, key=KEY)
    cell = eqx.tree_at(lambda c: c.embedding, cell, jnp.full((3, 2), 0.5))
    assert cell.output_size == 2
    g, _ = cell(jnp.array([[1]], jnp.int32), jnp.full((1, 2), 0.1, f32))
    np.testing.assert_allclose(g, [[0.17139, 0.17139]], rtol=1e-4)


def _tf1_state(*pairs):
    return tuple(
        recurrax.LSTMStateTuple(jnp.asarray([c], F64), jnp.asarray([h], F64)) for c, h in pairs
    )


def test_layer_norm_basic_lstm_gives_tf1_test_numbers():
    # tensorflow/contrib/rnn/python/kernel_tests/rnn_cell_test.py,
    # LayerNormBasicLSTMCellTest.testBasicLSTMCell: two layers, kernels 0.5 (the gains and
    # shifts keep their explicit initialisers 1 and 0). A constant kernel makes every gate's
    # units equal, so layer norm zeroes them, and the new c normalises to [-1, 1] (with TF1's
    # epsilon 1e-12; 1e-5 would give 0.996).
    def ln(**kw):
        cell = LayerNormBasicLSTMCell(2, 2, key=KEY, dtype=F64, **kw)
        return eqx.tree_at(lambda c: c.kernel, cell, jnp.full((4, 8), 0.5, F64))

    x = jnp.ones((1, 2), F64)
    state = _tf1_state(([0, 0.1], [0.2, 0.3]), ([0.4, 0.5], [0.6, 0.7]))
    h, (s0, s1) = recurrax.MultiRNNCell([ln(), ln()])(x, state)
    for a in (h, s0.h, s1.h):
        np.testing.assert_allclose(a, [[-0.38079708, 0.38079708]], rtol=1e-6)
    for a in (s0.c, s1.c):
        np.testing.assert_allclose(a, [[-1.0, 1.0]], rtol=1e-6)

    # Same class, testBasicLSTMCellWithoutNorm: every weight 0.5, the bias included.
    def plain(input_size):
        return _constant(LayerNormBasicLSTMCell(2, input_size, key=KEY, layer_norm=False), 0.5)

    h, (s0, s1) = recurrax.MultiRNNCell([plain(2), plain(2)])(x.astype(jnp.float32), state)
    np.testing.assert_allclose(h, [[0.70230919, 0.72581059]], rtol=1e-5)
    np.testing.assert_allclose(s0.c, [[0.8020075, 0.89599884]], rtol=1e-5)
    np.testing.assert_allclose(s0.h, [[0.56668288, 0.60858738]], rtol=1e-5)
    np.testing.assert_allclose(s1.c, [[1.17500675, 1.26892781]], rtol=1e-5)
    # ... and its second part, input_size 3 != num_units.
    h, (c, _) = plain(3)(jnp.ones((1, 3)), state[0])
    np.testing.assert_allclose(h, [[0.64121795, 0.68166804]], rtol=1e-5)
    np.testing.assert_allclose(c, [[0.88477188, 0.98103917]], rtol=1e-5)


def test_layer_norm_basic_lstm_dropout_gives_tf1_test_values():
    # rnn_cell_test.py, LayerNormBasicLSTMCellTest.testBasicLSTMCellWithDropout: every weight 1,
    # inputs and state ones, keep 0.5: a kept unit of g is 2, a dropped one 0, so each c is
    # c_high or c_low, and h follows. TF1's test compares to 4 digits (its values were
    # computed without the bias: c_low is sigmoid(11) where the formula gives sigmoid(12)), and so
    # does this one.
    c_high, c_low, h_high, h_low = 2.9998924946, 0.999983298578, 0.995008519604, 0.761552567265
    cell = LayerNormBasicLSTMCell(
        5, 5, key=jax.random.key(7), layer_norm=False, dropout_keep_prob=0.5, dtype=F64
    )
    cell = _constant(cell, 1.0)
    ones = jnp.ones((1, 5), F64)
    dropped = []
    for t in range(20):
        h, (c, h2) = cell.at_step(t)(ones, recurrax.LSTMStateTuple(ones, ones))
        np.testing.assert_array_equal(h, h2)
        low = np.isclose(c[0], c_low, rtol=0, atol=1e-4)
        assert (low | np.isclose(c[0], c_high, rtol=0, atol=1e-4)).all()
        np.testing.assert_allclose(h[0], np.where(low, h_low, h_high), rtol=0, atol=1e-4)
        dropped.append(low)
    dropped = np.array(dropped)
    assert 0.3 < dropped.mean() < 0.7
    assert len({tuple(d) for d in dropped}) > 5  # a fresh mask per step


# --- through the runners -------------------------------------------------------------------------

LENGTHS = {"full": None, "mixed": [5, 0, 2, 1]}


def _run(runner, cell, x_bt, lengths, dtype=F64):
    if runner == "dynamic":
        out, state = recurrax.dynamic_rnn(cell, x_bt, sequence_length=lengths, dtype=dtype)
        return np.swapaxes(np.asarray(out), 0, 1), state
    xs = [x_bt[:, t] for t in range(x_bt.shape[1])]
    out, state = recurrax.static_rnn(cell, xs, sequence_length=lengths, dtype=dtype)
    return np.stack([np.asarray(o) for o in out]), state


def _check_runner(kind, runner, lengths):
    cell, rng = make(kind), np.random.default_rng(1)
    x_bt = _inputs(kind, (4, 5), rng)
    out, state = _run(runner, cell, jnp.asarray(x_bt), lengths)
    ref_out, ref_state = reference_rnn(
        np_step(cell),
        np.swapaxes(x_bt, 0, 1),
        zeros_like_state(cell.state_size, 4),
        lengths,
    )
    assert_tree_close(out, ref_out, 1e-10, 1e-12)
    assert_tree_close(state, ref_state, 1e-10, 1e-12)


@pytest.mark.parametrize("lengths", list(LENGTHS), ids=list(LENGTHS))
@pytest.mark.parametrize("runner", ["dynamic", "static"])
@pytest.mark.parametrize("kind", FLOAT_KINDS)
def test_runners_match_reference(kind, runner, lengths):
    _check_runner(kind, runner, LENGTHS[lengths])


@pytest.mark.parametrize("lengths", list(LENGTHS), ids=list(LENGTHS))
@pytest.mark.parametrize("runner", ["dynamic", "static"])
@pytest.mark.parametrize("kind", ID_KINDS)
def test_embedding_through_runners(kind, runner, lengths):
    _check_runner(kind, runner, LENGTHS[lengths])


def test_embedding_first_layer_of_a_stack_through_dynamic_rnn():
    k1, k2, k3 = jax.random.split(KEY, 3)
    stack = recurrax.MultiRNNCell(
        [
            EmbeddingWrapper(recurrax.GRUCell(4, 3, key=k1, dtype=F64), 6, 3, key=k2),
            recurrax.BasicLSTMCell(2, 4, key=k3, dtype=F64),
        ]
    )
    ids = np.random.default_rng(2).integers(0, 6, (2, 4, 1))
    out, _ = recurrax.dynamic_rnn(stack, jnp.asarray(ids), dtype=F64)
    ref, _ = reference_rnn(
        np_step(stack), np.swapaxes(ids, 0, 1), zeros_like_state(stack.state_size, 2)
    )
    assert_tree_close(np.swapaxes(np.asarray(out), 0, 1), ref, 1e-10, 1e-12)


@pytest.mark.parametrize("runner", ["dynamic", "static"])
def test_recurrent_dropout_through_runners(runner):
    # Masks come from jax.random, so the reference calls the cell bound to each step (at_step):
    # this checks the runner contract around it and that the runners draw per-step masks.
    cell = random_cell(
        lambda: LayerNormBasicLSTMCell(4, N_IN, key=KEY, dropout_keep_prob=0.6, dtype=F64), 9
    )
    rng = np.random.default_rng(3)
    x_bt = rng.standard_normal((4, 5, N_IN))
    out, state = _run(runner, cell, jnp.asarray(x_bt), [5, 3, 0, 4])
    ref_out, ref_state = reference_rnn(
        jax_step(cell), np.swapaxes(x_bt, 0, 1), zeros_like_state(cell.state_size, 4), [5, 3, 0, 4]
    )
    assert_tree_close(out, ref_out, 1e-10, 1e-12)
    assert_tree_close(state, ref_state, 1e-10, 1e-12)


def test_recurrent_dropout_mask_matches_reference_formula():
    # The dropped cell equals the reference with g scaled by the mask the cell drew.
    cell = random_cell(
        lambda: LayerNormBasicLSTMCell(6, N_IN, key=KEY, dropout_keep_prob=0.5, dtype=F64), 4
    )
    rng = np.random.default_rng(4)
    x, state = rng.standard_normal((3, N_IN)), _random_state(cell, 3, rng)
    bound = cell.at_step(2)
    mask = jax.random.bernoulli(jax.random.fold_in(bound.dropout_key, 2), 0.5, (3, 6))
    norms = {
        k: (getattr(cell, f"{k}_gamma"), getattr(cell, f"{k}_beta"))
        for k in ("input", "transform", "forget", "output", "state")
    }
    ref = layer_norm_basic_lstm_step(
        np.asarray(cell.kernel),
        None,
        jax.tree_util.tree_map(np.asarray, norms),
        x,
        _plain(state),
        cell.forget_bias,
        g_scale=np.asarray(mask) / 0.5,
    )
    assert_tree_close(bound(jnp.asarray(x), state), ref, 1e-12, 1e-12)


# --- gradients -----------------------------------------------------------------------------------


def _split(cell):
    """``(weights, rebuild)``: the cell's floating arrays, and the cell from new ones."""
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    return params, lambda p: eqx.combine(p, static)


@pytest.mark.parametrize("kind", FLOAT_KINDS + ID_KINDS)
def test_gradients_of_one_step_match_finite_differences(kind):
    cell, rng = make(kind), np.random.default_rng(5)
    params, rebuild = _split(cell)
    x = jnp.asarray(_inputs(kind, (2,), rng))
    state = _random_state(cell, 2, rng)
    if kind in ID_KINDS:  # ids are not differentiable: close over them
        check_grads(lambda p, s: rebuild(p)(x, s), (params, state), order=1, modes=("fwd", "rev"))
    else:
        check_grads(lambda p, x, s: rebuild(p)(x, s), (params, x, state), 1, ("fwd", "rev"))


@pytest.mark.parametrize("kind", ["ln_lstm", "nested"])
def test_gradients_through_dynamic_rnn_match_finite_differences(kind):
    cell, rng = make(kind), np.random.default_rng(6)
    params, rebuild = _split(cell)
    x = jnp.asarray(rng.standard_normal((3, 4, N_IN)))
    lengths = jnp.array([4, 1, 3])

    @jax.jit  # compiled once for check_grads' many calls (each call would retrace the loop)
    def run(p, x):
        return recurrax.dynamic_rnn(rebuild(p), x, sequence_length=lengths, dtype=F64)

    check_grads(run, (params, x), order=1, modes=("rev",))


def test_gradients_with_recurrent_dropout_use_the_same_mask():
    cell = random_cell(
        lambda: LayerNormBasicLSTMCell(3, 2, key=KEY, dropout_keep_prob=0.5, dtype=F64), 11
    ).at_step(1)
    params, rebuild = _split(cell)
    rng = np.random.default_rng(7)
    x, state = jnp.asarray(rng.standard_normal((2, 2))), _random_state(cell, 2, rng)
    check_grads(lambda p, x, s: rebuild(p)(x, s), (params, x, state), 1, ("fwd", "rev"))


# --- TF1 weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FLOAT_KINDS + ID_KINDS)
def test_tf1_weights_round_trip(kind):
    cell = make(kind)
    exported = recurrax.tf1_weights(cell)
    assert list(exported) == recurrax.tf1_variable_names(cell)
    fresh = jax.tree_util.tree_map(
        lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, cell
    )
    loaded = recurrax.load_tf1_weights(fresh, exported)
    assert_tree_close(
        eqx.filter(loaded, eqx.is_inexact_array), eqx.filter(cell, eqx.is_inexact_array), 0, 0
    )
    np.testing.assert_equal(recurrax.tf1_weights(loaded), exported)


def test_tf1_shapes():
    shapes = {k: v.shape for k, v in recurrax.tf1_weights(make("nested")).items()}
    assert shapes == {
        "rnn/multi_rnn_cell/cell_0/input_projection_wrapper/kernel": (N_IN, 5),
        "rnn/multi_rnn_cell/cell_0/input_projection_wrapper/bias": (5,),
        **{
            f"rnn/multi_rnn_cell/cell_0/input_projection_wrapper/layer_norm_basic_lstm_cell/{k}": s
            for k, s in [("kernel", (9, 16))]
            + [
                (f"{n}/{v}", (4,))
                for n in ("input", "transform", "forget", "output", "state")
                for v in ("gamma", "beta")
            ]
        },
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/gates/kernel": (7, 6),
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/gates/bias": (6,),
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/candidate/kernel": (7, 3),
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/gru_cell/candidate/bias": (3,),
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/kernel": (3, 2),
        "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/bias": (2,),
    }


# --- errors --------------------------------------------------------------------------------------


def test_construction_errors():
    gru = recurrax.GRUCell(4, 3, key=KEY)
    lstm = recurrax.BasicLSTMCell(4, 3, key=KEY)
    with pytest.raises(TypeError, match=r"cell must be a cell: .* got int lacking"):
        OutputProjectionWrapper(3, 2, key=KEY)
    with pytest.raises(ValueError, match=r"output_size must be a positive int; got 0"):
        OutputProjectionWrapper(gru, 0, key=KEY)
    with pytest.raises(TypeError, match=r"key is required: pass a PRNG key"):
        OutputProjectionWrapper(gru, 2, key=None)
    with pytest.raises(TypeError, match=r"activation must be callable; got 'tanh'"):
        OutputProjectionWrapper(gru, 2, key=KEY, activation="tanh")
    pair_output = recurrax.MultiRNNCell(
        [gru, recurrax.ResidualWrapper(recurrax.GRUCell(4, 4, key=KEY))]
    )
    assert pair_output.output_size == 4  # one int: fine
    with pytest.raises(
        ValueError,
        match=r"InputProjectionWrapper feeds the cell num_proj=5 "
        r"features but cell.input_size is 3. Build the cell with input_size=5",
    ):
        InputProjectionWrapper(lstm, 5, 2, key=KEY)
    with pytest.raises(TypeError, match=r"input_size must be a positive int; got float"):
        InputProjectionWrapper(lstm, 3, 2.0, key=KEY)
    with pytest.raises(ValueError, match=r"embedding_classes must be a positive int; got 0"):
        EmbeddingWrapper(gru, 0, 3, key=KEY)
    with pytest.raises(
        ValueError,
        match=r"EmbeddingWrapper feeds the cell embedding_size=2 "
        r"features but cell.input_size is 3. Build the cell with input_size=2",
    ):
        EmbeddingWrapper(gru, 10, 2, key=KEY)
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype .*; got int32"):
        EmbeddingWrapper(gru, 10, 3, key=KEY, dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"dropout_keep_prob must be in \(0, 1\].*got 0.0"):
        LayerNormBasicLSTMCell(4, 3, key=KEY, dropout_keep_prob=0.0)
    with pytest.raises(TypeError, match=r"dropout_keep_prob must be a float in \(0, 1\]"):
        LayerNormBasicLSTMCell(4, 3, key=KEY, dropout_keep_prob=jnp.array(0.5))
    with pytest.raises(ValueError, match=r"num_units must be a positive int; got -1"):
        LayerNormBasicLSTMCell(-1, 3, key=KEY)


def test_output_projection_needs_one_output():
    class TwoOutputs(eqx.Module):
        state_size = 2
        output_size = (2, 3)

        def __call__(self, x, s):
            return (s, x), s

    with pytest.raises(ValueError, match=r"cell.output_size must be an int; got \(2, 3\)"):
        OutputProjectionWrapper(TwoOutputs(), 4, key=KEY)


def test_call_errors():
    emb = make("embedding")
    state = emb.zero_state(2)
    with pytest.raises(TypeError, match=r"inputs must be integer ids; got float64"):
        emb(jnp.ones((2, 1)), state)
    with pytest.raises(
        ValueError,
        match=r"inputs must have shape \[batch\] or \[batch, 1\]; "
        r"got \(2, 3\)",
    ):
        emb(jnp.ones((2, 3), jnp.int32), state)
    with pytest.raises(
        ValueError, match=r"ids must be in \[0, embedding_classes=7\); got \[7, -2\]"
    ):
        emb(jnp.array([7, -2]), state)
    inp = make("input_projection")
    with pytest.raises(
        ValueError,
        match=r"InputProjectionWrapper: inputs must have shape "
        r"\[batch, input_size=3\]; got \(2, 4\)",
    ):
        inp(jnp.ones((2, 4)), inp.zero_state(2))
    ln = make("ln_lstm")
    with pytest.raises(
        ValueError,
        match=r"LayerNormBasicLSTMCell: inputs must have shape "
        r"\[batch, input_size=3\]; got \(2, 2\)",
    ):
        ln(jnp.ones((2, 2)), ln.zero_state(2))


def test_recurrent_dropout_keys():
    def build(key):
        return LayerNormBasicLSTMCell(6, 2, key=key, dropout_keep_prob=0.5, dtype=F64)

    cell = build(KEY)
    x, state = jnp.ones((4, 2)), cell.zero_state(4)
    with pytest.raises(
        TypeError,
        match=r"LayerNormBasicLSTMCell: recurrent dropout is active \(dropout_keep_prob=0.5\) but "
        r"this call has no key and the cell is not bound to a time step",
    ):
        cell(x, state)
    # A key per call decides the mask: the same key, the same mask; another key, another.
    a = cell(x, state, key=jax.random.key(1))
    assert_tree_close(a, cell(x, state, key=jax.random.key(1)), 0, 0)
    assert not np.allclose(a[0], cell(x, state, key=jax.random.key(2))[0])
    # Bound to a step, the cell's own key and the step decide it.
    assert_tree_close(cell.at_step(3)(x, state), cell.at_step(3)(x, state), 0, 0)
    assert not np.allclose(cell.at_step(3)(x, state)[0], cell.at_step(4)(x, state)[0])
    # In a stack, layers built with one key draw different masks (MultiRNNCell folds in k).
    stack = recurrax.MultiRNNCell(
        [build(KEY), LayerNormBasicLSTMCell(6, 6, key=KEY, dropout_keep_prob=0.5, dtype=F64)]
    )
    bound = stack.at_step(0)
    assert not np.array_equal(bound.cells[0].dropout_key, bound.cells[1].dropout_key)
    same = cell.fold_in_keys(5)
    assert not np.array_equal(
        jax.random.key_data(same.dropout_key), jax.random.key_data(cell.dropout_key)
    )
    # Without dropout there is no key to keep, and any key passed is ignored.
    plain = make("ln_lstm")
    assert plain.dropout_key is None and plain.fold_in_keys(1) is plain
    assert_tree_close(
        plain(x[:, :1].repeat(3, 1), plain.zero_state(4), key=KEY),
        plain(x[:, :1].repeat(3, 1), plain.zero_state(4)),
        0,
        0,
    )


def test_wrappers_pass_the_call_key_to_the_wrapped_cell():
    inner = LayerNormBasicLSTMCell(4, 5, key=KEY, dropout_keep_prob=0.5, dtype=F64)
    cell = OutputProjectionWrapper(InputProjectionWrapper(inner, 5, 2, key=KEY), 3, key=KEY)
    x, state = jnp.ones((2, 2)), cell.zero_state(2)
    with pytest.raises(TypeError, match=r"recurrent dropout is active"):
        cell(x, state)
    a = cell(x, state, key=jax.random.key(1))
    assert_tree_close(a, cell(x, state, key=jax.random.key(1)), 0, 0)
    assert not np.allclose(a[0], cell(x, state, key=jax.random.key(2))[0])
    assert_tree_close(cell.at_step(2)(x, state), cell.at_step(2)(x, state), 0, 0)
    emb = EmbeddingWrapper(
        LayerNormBasicLSTMCell(4, 3, key=KEY, dropout_keep_prob=0.5), 5, 3, key=KEY
    )
    ids = jnp.array([[1], [4]])
    b = emb(ids, emb.zero_state(2), key=jax.random.key(1))
    assert not np.allclose(b[0], emb(ids, emb.zero_state(2), key=jax.random.key(2))[0])


def test_tf1_keywords_and_initializer():
    gru = recurrax.GRUCell(4, 3, key=KEY)
    OutputProjectionWrapper(gru, 2, key=KEY, reuse=True, name="proj")
    InputProjectionWrapper(gru, 3, 5, key=KEY, reuse=None)
    LayerNormBasicLSTMCell(4, 3, key=KEY, reuse=True, name="ln")
    with pytest.raises(
        TypeError,
        match=r"LayerNormBasicLSTMCell does not take dropout_prob_seed=: .* pass "
        r"key=jax.random.key\(seed\)",
    ):
        LayerNormBasicLSTMCell(4, 3, key=KEY, dropout_prob_seed=1)
    with pytest.raises(
        TypeError,
        match=r"OutputProjectionWrapper got an unexpected keyword argument "
        r"'activaton'; did you mean 'activation'\?",
    ):
        OutputProjectionWrapper(gru, 2, key=KEY, activaton=jnp.tanh)
    emb = EmbeddingWrapper(gru, 6, 3, key=KEY, initializer=lambda k, s, d: jnp.full(s, 0.5, d))
    np.testing.assert_array_equal(emb.embedding, np.full((6, 3), 0.5, np.float32))
    with pytest.raises(TypeError, match=r"initializer must be callable as initializer\(key, "):
        EmbeddingWrapper(gru, 6, 3, key=KEY, initializer=0.5)
