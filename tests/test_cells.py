"""The four TF1 cells: formulas against NumPy, weight names/shapes, initialisers, transforms."""

import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax
from reference import (
    assert_tree_close,
    basic_lstm_step,
    basic_rnn_step,
    cast_weights,
    gru_step,
    lstm_step,
    np_step,
    random_cell,
)

KEY = jax.random.key(0)
LSTM_OPTIONS = [
    {},
    {"use_peepholes": True},
    {"cell_clip": 0.3},
    {"num_proj": 3},
    {"num_proj": 3, "proj_clip": 0.2},
    {"forget_bias": 0.0},
    {"use_peepholes": True, "cell_clip": 0.3, "num_proj": 2, "proj_clip": 0.25, "forget_bias": 2.5},
]


def _state(cell, batch, rng):
    """A random state shaped like ``cell.state_size`` (float64)."""
    size = cell.state_size
    if isinstance(size, int):
        return jnp.asarray(rng.standard_normal((batch, size)))
    return recurrax.LSTMStateTuple(
        jnp.asarray(rng.standard_normal((batch, size.c))),
        jnp.asarray(rng.standard_normal((batch, size.h))),
    )


def _np_state(state):
    if isinstance(state, tuple):
        return tuple(np.asarray(s) for s in state)
    return np.asarray(state)


def _one_step(cell, rng, batch=3):
    x = jnp.asarray(rng.standard_normal((batch, cell.input_size)))
    return x, _state(cell, batch, rng)


@pytest.mark.parametrize(
    "build",
    [
        lambda k: recurrax.BasicRNNCell(4, 3, key=k, dtype=jnp.float64),
        lambda k: recurrax.BasicRNNCell(4, 3, key=k, activation=jax.nn.relu, dtype=jnp.float64),
        lambda k: recurrax.GRUCell(4, 3, key=k, dtype=jnp.float64),
        lambda k: recurrax.BasicLSTMCell(4, 3, key=k, dtype=jnp.float64),
        lambda k: recurrax.BasicLSTMCell(4, 3, key=k, forget_bias=0.0, dtype=jnp.float64),
    ],
    ids=["basic_rnn", "basic_rnn_relu", "gru", "basic_lstm", "basic_lstm_fb0"],
)
def test_cell_matches_numpy_formula(build):
    cell = random_cell(lambda: build(KEY), 1)
    x, state = _one_step(cell, np.random.default_rng(0))
    out, new_state = cell(x, state)
    want_out, want_state = np_step(cell)(0, np.asarray(x), _np_state(state))
    assert_tree_close(out, want_out, rtol=1e-12, atol=1e-12)
    assert_tree_close(new_state, want_state, rtol=1e-12, atol=1e-12)
    if isinstance(cell, recurrax.BasicLSTMCell):
        assert isinstance(new_state, recurrax.LSTMStateTuple)
        np.testing.assert_array_equal(out, new_state.h)


@pytest.mark.parametrize("options", LSTM_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_lstm_cell_matches_numpy_formula(options):
    build = lambda: recurrax.LSTMCell(4, 3, key=KEY, dtype=jnp.float64, **options)
    cell = random_cell(build, 2, scale=0.9)
    x, state = _one_step(cell, np.random.default_rng(0), batch=4)
    state = recurrax.LSTMStateTuple(2.0 * state.c, state.h)  # large c so clipping engages
    out, new_state = cell(x, state)
    want_out, (want_c, want_m) = np_step(cell)(0, np.asarray(x), _np_state(state))
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_state.c, want_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_state.h, want_m, rtol=1e-12, atol=1e-12)
    assert out.shape == (4, options.get("num_proj", 4))
    # The options must each change the result (else the test could not see them ignored).
    if "cell_clip" in options:
        assert np.isclose(np.abs(want_c), options["cell_clip"]).any()
    if "proj_clip" in options:
        assert np.isclose(np.abs(want_m), options["proj_clip"]).any()
    if options.get("use_peepholes"):
        no_peep = lstm_step(
            np.asarray(cell.kernel),
            np.asarray(cell.bias),
            np.asarray(x),
            _np_state(state),
            cell_clip=cell.cell_clip,
            projection_kernel=None if cell.num_proj is None else np.asarray(cell.projection_kernel),
            proj_clip=cell.proj_clip,
            forget_bias=cell.forget_bias,
        )[0]
        assert not np.allclose(no_peep, want_out, atol=1e-6)


def test_forget_bias_is_added_at_run_time_not_stored():
    build = lambda fb: recurrax.BasicLSTMCell(4, 3, key=KEY, forget_bias=fb, dtype=jnp.float64)
    a, b = random_cell(lambda: build(1.0), 5), random_cell(lambda: build(0.0), 5)
    np.testing.assert_array_equal(a.kernel, b.kernel)
    np.testing.assert_array_equal(a.bias, b.bias)
    x, state = _one_step(a, np.random.default_rng(0))
    # forget_bias=1 equals forget_bias=0 with +1 on the f block of the bias (gate order i,j,f,o).
    b_shifted = eqx.tree_at(lambda c: c.bias, b, b.bias.at[8:12].add(1.0))
    assert_tree_close(a(x, state), b_shifted(x, state), rtol=1e-12, atol=1e-12)
    assert not np.allclose(a(x, state)[0], b(x, state)[0])


# --- TF1 weight names, shapes and initialisers ---------------------------------------------------


def _weights(cell):
    return {
        name: tuple(getattr(cell, name).shape)
        for name in type(cell).__dataclass_fields__
        if isinstance(getattr(cell, name), (jax.Array, jax.ShapeDtypeStruct))
    }


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda k: recurrax.BasicRNNCell(5, 3, key=k), {"kernel": (8, 5), "bias": (5,)}),
        (
            lambda k: recurrax.GRUCell(5, 3, key=k),
            {
                "gates_kernel": (8, 10),
                "gates_bias": (10,),
                "candidate_kernel": (8, 5),
                "candidate_bias": (5,),
            },
        ),
        (lambda k: recurrax.BasicLSTMCell(5, 3, key=k), {"kernel": (8, 20), "bias": (20,)}),
        (lambda k: recurrax.LSTMCell(5, 3, key=k), {"kernel": (8, 20), "bias": (20,)}),
        (
            lambda k: recurrax.LSTMCell(5, 3, key=k, use_peepholes=True, num_proj=2),
            {
                "kernel": (5, 20),  # concat(x [3], m [num_proj=2])
                "bias": (20,),
                "w_f_diag": (5,),
                "w_i_diag": (5,),
                "w_o_diag": (5,),
                "projection_kernel": (5, 2),
            },
        ),
    ],
    ids=["basic_rnn", "gru", "basic_lstm", "lstm", "lstm_peep_proj"],
)
def test_tf1_weight_names_and_shapes(build, expected):
    cell = eqx.filter_eval_shape(build, KEY)  # shapes and dtypes without computing
    assert _weights(cell) == expected
    assert all(getattr(cell, n).dtype == jnp.float32 for n in expected)


def test_lstm_absent_weights_are_none():
    cell = eqx.filter_eval_shape(lambda: recurrax.LSTMCell(5, 3, key=KEY))
    for name in ("w_f_diag", "w_i_diag", "w_o_diag", "projection_kernel"):
        assert getattr(cell, name) is None
    assert cell.state_size == recurrax.LSTMStateTuple(5, 5) and cell.output_size == 5
    proj = eqx.filter_eval_shape(lambda: recurrax.LSTMCell(5, 3, key=KEY, num_proj=2))
    assert proj.state_size == recurrax.LSTMStateTuple(5, 2) and proj.output_size == 2


def _assert_glorot(w, fan_in, fan_out):
    """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) (TF1's default)."""
    w = np.asarray(w, np.float64).ravel()
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(w).max() <= limit
    # Spread over the whole interval: a uniform of this size reaches near both ends, and its
    # standard deviation is limit / sqrt(3) (to a few percent at these sizes).
    assert w.max() > 0.9 * limit and w.min() < -0.9 * limit
    np.testing.assert_allclose(w.std(), limit / math.sqrt(3.0), rtol=0.08)
    assert abs(w.mean()) < 0.1 * limit


def test_default_initialisers_are_tf1s(getkey):
    n, u = 24, 32
    rnn = recurrax.BasicRNNCell(u, n, key=getkey())
    _assert_glorot(rnn.kernel, n + u, u)
    np.testing.assert_array_equal(rnn.bias, np.zeros(u))

    gru = recurrax.GRUCell(u, n, key=getkey())
    _assert_glorot(gru.gates_kernel, n + u, 2 * u)
    _assert_glorot(gru.candidate_kernel, n + u, u)
    np.testing.assert_array_equal(gru.gates_bias, np.ones(2 * u))  # TF1: constant 1.0
    np.testing.assert_array_equal(gru.candidate_bias, np.zeros(u))
    assert not np.allclose(gru.gates_kernel[:, :u], gru.candidate_kernel)  # separate draws

    basic = recurrax.BasicLSTMCell(u, n, key=getkey())
    _assert_glorot(basic.kernel, n + u, 4 * u)
    np.testing.assert_array_equal(basic.bias, np.zeros(4 * u))

    lstm = recurrax.LSTMCell(u, n, key=getkey(), use_peepholes=True, num_proj=16)
    _assert_glorot(lstm.kernel, n + 16, 4 * u)
    _assert_glorot(lstm.projection_kernel, u, 16)
    np.testing.assert_array_equal(lstm.bias, np.zeros(4 * u))
    # TF1 takes fan_in = fan_out = u for a rank-1 variable: limit sqrt(3 / u). Checked on the
    # three diagonals together (3u values) for a stable spread.
    diags = np.concatenate([lstm.w_f_diag, lstm.w_i_diag, lstm.w_o_diag])
    assert np.abs(diags).max() <= math.sqrt(3.0 / u)
    assert diags.max() > 0.8 * math.sqrt(3.0 / u)
    assert not np.array_equal(lstm.w_f_diag, lstm.w_i_diag)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_cell_dtype_and_zero_state(dtype):
    cell = random_cell(lambda: recurrax.LSTMCell(4, 3, key=KEY, num_proj=2, dtype=dtype))
    assert cell.dtype == jnp.dtype(dtype)
    assert all(w.dtype == jnp.dtype(dtype) for w in jax.tree_util.tree_leaves(cell))
    z = cell.zero_state(5, None)
    assert isinstance(z, recurrax.LSTMStateTuple)
    assert z.c.shape == (5, 4) and z.h.shape == (5, 2) and z.c.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(z.c, np.float32), 0)
    z64 = cell.zero_state(2, jnp.float64)  # an explicit dtype wins
    assert z64.c.dtype == z64.h.dtype == jnp.float64


# --- eqx.tree_at: TF1 weights drop in ----------------------------------------------------------


def test_tree_at_weight_swap_basic_rnn_literal():
    """One unit, one input: h' = tanh(0.5 * 1 + 0.25 * 0.2 + 0.1) = tanh(0.65)."""
    cell = random_cell(lambda: recurrax.BasicRNNCell(1, 1, key=KEY, dtype=jnp.float64))
    cell = eqx.tree_at(
        lambda c: (c.kernel, c.bias), cell, (jnp.array([[0.5], [0.25]]), jnp.array([0.1]))
    )
    out, h = cell(jnp.array([[1.0]]), jnp.array([[0.2]]))
    np.testing.assert_allclose(out, [[math.tanh(0.65)]], rtol=1e-14)
    np.testing.assert_array_equal(out, h)


def test_tree_at_weight_swap_basic_lstm_literal():
    """One unit: with kernel rows [x; h] and columns i, j, f, o, every gate is a known number."""
    cell = random_cell(lambda: recurrax.BasicLSTMCell(1, 1, key=KEY, dtype=jnp.float64))
    kernel = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    bias = jnp.array([0.01, 0.02, 0.03, 0.04])
    cell = eqx.tree_at(lambda c: (c.kernel, c.bias), cell, (kernel, bias))
    x, c, h = 2.0, 0.5, -1.0
    i, j, f, o = (2.0 * kernel[0] - 1.0 * kernel[1] + bias).tolist()
    sig = lambda v: 1 / (1 + math.exp(-v))
    new_c = c * sig(f + 1.0) + sig(i) * math.tanh(j)
    new_h = math.tanh(new_c) * sig(o)
    out, state = cell(jnp.array([[x]]), recurrax.LSTMStateTuple(jnp.array([[c]]), jnp.array([[h]])))
    np.testing.assert_allclose([out[0, 0], state.c[0, 0], state.h[0, 0]], [new_h, new_c, new_h])


def test_tree_at_weight_swap_gru_and_lstm_from_tf1_arrays():
    """Arrays laid out as a TF1 checkpoint holds them reproduce the TF1 formulas."""
    rng = np.random.default_rng(0)
    n, u, p = 3, 4, 2
    gk, gb = rng.normal(size=(n + u, 2 * u)), rng.normal(size=2 * u)
    ck, cb = rng.normal(size=(n + u, u)), rng.normal(size=u)
    gru = random_cell(lambda: recurrax.GRUCell(u, n, key=KEY, dtype=jnp.float64))
    gru = eqx.tree_at(
        lambda c: (c.gates_kernel, c.gates_bias, c.candidate_kernel, c.candidate_bias),
        gru,
        tuple(map(jnp.asarray, (gk, gb, ck, cb))),
    )
    x, h = rng.normal(size=(2, n)), rng.normal(size=(2, u))
    out, _ = gru(jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(out, gru_step(gk, gb, ck, cb, x, h)[0], rtol=1e-12)

    k, b = rng.normal(size=(n + p, 4 * u)), rng.normal(size=4 * u)
    wf, wi, wo = rng.normal(size=(3, u))
    pk = rng.normal(size=(u, p))
    lstm = random_cell(
        lambda: recurrax.LSTMCell(
            u, n, key=KEY, use_peepholes=True, num_proj=p, cell_clip=1.0, dtype=jnp.float64
        )
    )
    lstm = eqx.tree_at(
        lambda c: (c.kernel, c.bias, c.w_f_diag, c.w_i_diag, c.w_o_diag, c.projection_kernel),
        lstm,
        tuple(map(jnp.asarray, (k, b, wf, wi, wo, pk))),
    )
    c0, m0 = rng.normal(size=(2, u)), rng.normal(size=(2, p))
    out, state = lstm(jnp.asarray(x), recurrax.LSTMStateTuple(jnp.asarray(c0), jnp.asarray(m0)))
    want, (want_c, _) = lstm_step(
        k, b, x, (c0, m0), w_f_diag=wf, w_i_diag=wi, w_o_diag=wo, cell_clip=1.0,
        projection_kernel=pk,
    )  # fmt: skip
    np.testing.assert_allclose(out, want, rtol=1e-12)
    np.testing.assert_allclose(state.c, want_c, rtol=1e-12)

    rnn = random_cell(lambda: recurrax.BasicRNNCell(u, n, key=KEY, dtype=jnp.float64))
    rnn = eqx.tree_at(lambda c: (c.kernel, c.bias), rnn, (jnp.asarray(ck), jnp.asarray(cb)))
    np.testing.assert_allclose(rnn(x, h)[0], basic_rnn_step(ck, cb, x, h)[0], rtol=1e-12)
    blstm = random_cell(lambda: recurrax.BasicLSTMCell(u, n, key=KEY, dtype=jnp.float64))
    k4 = rng.normal(size=(n + u, 4 * u))
    blstm = eqx.tree_at(lambda c: (c.kernel, c.bias), blstm, (jnp.asarray(k4), jnp.asarray(b)))
    got = blstm(x, recurrax.LSTMStateTuple(jnp.asarray(c0), jnp.asarray(h)))[0]
    np.testing.assert_allclose(got, basic_lstm_step(k4, b, x, (c0, h))[0], rtol=1e-12)


# --- transformations -------------------------------------------------------------------------


CELLS = {
    "basic_rnn": lambda k: recurrax.BasicRNNCell(4, 3, key=k, dtype=jnp.float64),
    "gru": lambda k: recurrax.GRUCell(4, 3, key=k, dtype=jnp.float64),
    "basic_lstm": lambda k: recurrax.BasicLSTMCell(4, 3, key=k, dtype=jnp.float64),
    "lstm_full": lambda k: recurrax.LSTMCell(
        4, 3, key=k, use_peepholes=True, num_proj=3, cell_clip=0.8, dtype=jnp.float64
    ),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_under_jit_vmap_grad(name):
    cell = random_cell(lambda: CELLS[name](KEY), 3)
    x, state = _one_step(cell, np.random.default_rng(0))
    eager = cell(x, state)
    assert_tree_close(eqx.filter_jit(lambda c, x, s: c(x, s))(cell, x, state), eager, 1e-12, 1e-12)
    # vmap over an extra leading axis: each slice is an independent batch.
    xs = jnp.stack([x, 2 * x])
    states = jax.tree_util.tree_map(lambda s: jnp.stack([s, -s]), state)
    vm = jax.vmap(cell)(xs, states)
    second = cell(2 * x, jax.tree_util.tree_map(lambda s: -s, state))
    assert_tree_close(jax.tree_util.tree_map(lambda y: y[1], vm), second, 1e-12, 1e-12)

    # Gradients in float64 against finite differences, in the weights and in the inputs.
    def loss(params, x):
        c = eqx.combine(params, static)
        out, new = c(x, state)
        return jnp.sum(out**2) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree_util.tree_leaves(new))

    params, static = eqx.partition(cell, eqx.is_inexact_array)
    check_grads(loss, (params, x), order=1, modes=["rev"])
    grads = eqx.filter_grad(lambda c: loss(eqx.partition(c, eqx.is_inexact_array)[0], x))(cell)
    assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("name", list(CELLS))
def test_bfloat16_cell_close_to_float32(name):
    c32 = cast_weights(random_cell(lambda: CELLS[name](KEY), 4, scale=0.5), jnp.float32)
    c16 = cast_weights(c32, jnp.bfloat16)
    assert c16.dtype == jnp.bfloat16
    x, state = _one_step(c32, np.random.default_rng(0))
    x32, s32 = x.astype(jnp.float32), jax.tree_util.tree_map(lambda s: s.astype(jnp.float32), state)
    x16, s16 = (
        x.astype(jnp.bfloat16),
        jax.tree_util.tree_map(lambda s: s.astype(jnp.bfloat16), state),
    )
    out16, new16 = c16(x16, s16)
    out32, new32 = c32(x32, s32)
    assert out16.dtype == jnp.bfloat16
    assert all(s.dtype == jnp.bfloat16 for s in jax.tree_util.tree_leaves(new16))
    assert_tree_close(out16, out32, rtol=3e-2, atol=3e-2)
    assert_tree_close(new16, new32, rtol=3e-2, atol=3e-2)


# --- TF1's constructor arguments: initializers, reuse/name, activation=None ----------------------


INITIALISED = {
    "basic_rnn": lambda init, **kw: recurrax.BasicRNNCell(
        32, 24, key=KEY, kernel_initializer=init, **kw
    ),
    "gru": lambda init, **kw: recurrax.GRUCell(32, 24, key=KEY, kernel_initializer=init, **kw),
    "basic_lstm": lambda init, **kw: recurrax.BasicLSTMCell(
        32, 24, key=KEY, kernel_initializer=init, **kw
    ),
    "lstm": lambda init, **kw: recurrax.LSTMCell(
        32, 24, key=KEY, initializer=init, use_peepholes=True, num_proj=16, **kw
    ),
}


@pytest.mark.parametrize("name", list(INITIALISED))
def test_uniform_initializer_as_the_ptb_tutorial(name):
    """TF1's PTB model initialises every kernel with random_uniform_initializer(-s, s); the biases
    keep their own initialisers (zeros; ones for the GRU's gates), as in TF1."""
    scale = 0.05
    init = recurrax.random_uniform_initializer(-scale, scale)
    cell = INITIALISED[name](init)
    default = INITIALISED[name](None)
    drawn = []
    for attr in type(cell).__dataclass_fields__:
        w, w0 = getattr(cell, attr), getattr(default, attr)
        if not isinstance(w, jax.Array):
            continue
        assert w.dtype == jnp.float32
        if "bias" in attr:
            np.testing.assert_array_equal(w, w0)
        else:
            w = np.asarray(w, np.float64).ravel()
            assert np.abs(w).max() <= scale and w.max() > 0.9 * scale and w.min() < -0.9 * scale
            drawn.append(w)
    drawn = np.concatenate(drawn)  # uniform on [-scale, scale]: std scale / sqrt(3)
    np.testing.assert_allclose(drawn.std(), scale / math.sqrt(3.0), rtol=0.05)
    assert abs(drawn.mean()) < 0.05 * scale


def test_bias_initializer_and_default_weights_unchanged():
    one = jax.nn.initializers.constant(0.25)
    gru = recurrax.GRUCell(4, 3, key=KEY, bias_initializer=one)
    np.testing.assert_array_equal(gru.gates_bias, np.full(8, 0.25))  # both biases (TF1)
    np.testing.assert_array_equal(gru.candidate_bias, np.full(4, 0.25))
    rnn = recurrax.BasicRNNCell(4, 3, key=KEY, bias_initializer=one)
    np.testing.assert_array_equal(rnn.bias, np.full(4, 0.25))
    # Without initializers the weights are TF1's Glorot-uniform draws from the key, as before.
    from recurrax.cells.initializers import glorot_uniform

    np.testing.assert_array_equal(rnn.kernel, glorot_uniform(KEY, (7, 4), jnp.float32))
    lstm = recurrax.BasicLSTMCell(4, 3, key=KEY)
    np.testing.assert_array_equal(lstm.kernel, glorot_uniform(KEY, (7, 16), jnp.float32))
    with pytest.raises(ValueError, match=r"returned shape \(2,\) for the weight of shape \(7, 4\)"):
        recurrax.BasicRNNCell(4, 3, key=KEY, kernel_initializer=lambda k, s, d: jnp.zeros(2))


def test_reuse_name_and_activation_none_are_tf1s():
    """``reuse`` has no effect; ``activation=None`` is TF1's default, tanh; ``name`` changes
    only the cell's TF1 variable scope, not its weights or its numbers."""
    x = jnp.ones((2, 3))
    for build in (
        recurrax.BasicRNNCell,
        recurrax.GRUCell,
        recurrax.BasicLSTMCell,
        recurrax.LSTMCell,
    ):
        plain = build(4, 3, key=KEY)
        tf1 = build(4, 3, key=KEY, reuse=True, activation=None)
        assert eqx.tree_equal(plain, tf1)
        named = build(4, 3, key=KEY, name="my_cell")
        assert named.variable_scope == "my_cell" and plain.variable_scope == plain.tf1_scope
        assert eqx.tree_equal(jax.tree_util.tree_leaves(named), jax.tree_util.tree_leaves(plain))
        np.testing.assert_array_equal(
            named(x, named.zero_state(2))[0], plain(x, plain.zero_state(2))[0]
        )


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: recurrax.LSTMCell(4, 3, key=KEY, kernel_initializer=None),
            "LSTMCell does not take kernel_initializer=: LSTMCell takes TF1's initializer=",
        ),
        (
            lambda: recurrax.BasicLSTMCell(4, 3, key=KEY, initializer=None),
            "BasicLSTMCell does not take initializer=: that is LSTMCell's argument; this cell "
            "takes kernel_initializer= (and bias_initializer=).",
        ),
        (
            lambda: recurrax.GRUCell(4, 3, key=KEY, state_is_tuple=True),
            "GRUCell does not take state_is_tuple=: this cell's state is one [batch, num_units] "
            "array",
        ),
        (
            lambda: recurrax.GRUCell(4, 3, key=KEY, activaton=jnp.tanh),
            "GRUCell got an unexpected keyword argument 'activaton'; did you mean 'activation'?",
        ),
        (
            lambda: recurrax.BasicRNNCell(4, 3, key=KEY, num_unit=4),
            "BasicRNNCell got an unexpected keyword argument 'num_unit'; did you mean 'num_units'?",
        ),
        (
            lambda: recurrax.BasicLSTMCell(4, 3, key=KEY, forget_biass=0.0),
            "did you mean 'forget_bias'?",
        ),
        (
            lambda: recurrax.LSTMCell(4, 3, key=KEY, zzz=0.0),
            "LSTMCell got an unexpected keyword argument 'zzz'; it takes num_units, input_size, "
            "key, use_peepholes, cell_clip, initializer, num_proj,",
        ),
    ],
    ids=["lstm", "basic_lstm", "gru_state", "activation", "num_units", "forget_bias", "none"],
)
def test_unknown_keyword_names_the_closest_argument(build, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("build", [recurrax.BasicLSTMCell, recurrax.LSTMCell])
def test_state_is_tuple(build):
    assert eqx.tree_equal(build(4, 3, key=KEY, state_is_tuple=True), build(4, 3, key=KEY))
    with pytest.raises(ValueError, match="state_is_tuple=False is not supported"):
        build(4, 3, key=KEY, state_is_tuple=False)


def test_lstm_shards_and_clips():
    assert eqx.tree_equal(
        recurrax.LSTMCell(4, 3, key=KEY, num_unit_shards=1, num_proj_shards=None),
        recurrax.LSTMCell(4, 3, key=KEY),
    )
    with pytest.raises(ValueError, match="num_unit_shards must be None or 1; got 2"):
        recurrax.LSTMCell(4, 3, key=KEY, num_unit_shards=2)
    # proj_clip without num_proj: ignored, as in TF1.
    ignored = recurrax.LSTMCell(4, 3, key=KEY, proj_clip=0.5)
    assert ignored.proj_clip is None and eqx.tree_equal(ignored, recurrax.LSTMCell(4, 3, key=KEY))
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="cell_clip must be a number >= 0 or None"):
            recurrax.LSTMCell(4, 3, key=KEY, cell_clip=bad)
    with pytest.raises(TypeError, match="forget_bias must be a number"):
        recurrax.BasicLSTMCell(4, 3, key=KEY, forget_bias="1.0")


# --- a direct call: the state's shapes, a key ----------------------------------------------------


@pytest.mark.parametrize("name", list(CELLS))
def test_call_checks_the_state_shapes(name):
    cell = random_cell(lambda: CELLS[name](KEY), 3)
    x, state = _one_step(cell, np.random.default_rng(0))
    k = jax.random.key(1)
    assert_tree_close(cell(x, state, key=k), cell(x, state), 0, 0)  # a key is ignored
    if isinstance(state, tuple):
        assert_tree_close(cell(x, tuple(state)), cell(x, state), 0, 0)  # any 2-tuple (c, h)
    want = str(jax.tree_util.tree_map(lambda n: (3, n), cell.state_size))
    wrong = [
        jax.tree_util.tree_map(lambda s: s[:2], state),  # batch 2, not 3
        jax.tree_util.tree_map(lambda s: jnp.concatenate([s, s], 1), state),  # twice the size
        state[0] if isinstance(state, tuple) else (state, state),  # another structure
    ]
    for bad in wrong:
        with pytest.raises(ValueError, match=re.escape(f"state must have shape {want}")):
            cell(x, bad)
        with pytest.raises(ValueError, match=re.escape(f"state must have shape {want}")):
            eqx.filter_jit(lambda c, s: c(x, s))(cell, bad)


@pytest.mark.parametrize("name", list(CELLS))
def test_get_initial_state(name):
    cell = random_cell(lambda: CELLS[name](KEY), 3)
    size = cell.state_size
    x32 = jnp.ones((5, 3), jnp.float32)
    for state, batch, dtype in (
        (cell.get_initial_state(x32), 5, jnp.float32),  # batch and dtype from the inputs
        (cell.get_initial_state(jnp.ones((5, 7, 3), jnp.float32)), 5, jnp.float32),  # [B, T, I]
        (cell.get_initial_state(batch_size=2), 2, jnp.float64),  # the cell's dtype
        (cell.get_initial_state(batch_size=2, dtype=jnp.bfloat16), 2, jnp.bfloat16),
        (cell.get_initial_state(x32, batch_size=5, dtype=jnp.float32), 5, jnp.float32),
    ):
        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(
            cell.zero_state(1, None)
        )
        shapes = [s.shape for s in jax.tree_util.tree_leaves(state)]
        assert shapes == [(batch, n) for n in jax.tree_util.tree_leaves(size)]
        assert all(s.dtype == jnp.dtype(dtype) for s in jax.tree_util.tree_leaves(state))
        assert not any(np.asarray(s, np.float32).any() for s in jax.tree_util.tree_leaves(state))
    with pytest.raises(ValueError, match="needs inputs or batch_size; got neither"):
        cell.get_initial_state()
