"""TF1 weight names: hand-built TF1 variables load and give TF1's formulas; errors are pinned."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax

# TF1's numbers and float32 runs checked against float64 NumPy to 1e-5: full float32 dots,
# also on a GPU.
pytestmark = pytest.mark.usefixtures("full_float32_dots")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_basic_lstm(x, kernel, bias, forget_bias=1.0):
    """TF1 BasicLSTMCell over x [B, T, in]: gate order i, j, f, o."""
    u = bias.shape[0] // 4
    c = h = np.zeros((x.shape[0], u))
    outs = []
    for t in range(x.shape[1]):
        i, j, f, o = np.split(np.concatenate([x[:, t], h], -1) @ kernel + bias, 4, -1)
        c = c * _sigmoid(f + forget_bias) + _sigmoid(i) * np.tanh(j)
        h = np.tanh(c) * _sigmoid(o)
        outs.append(h)
    return np.stack(outs, 1), (c, h)


def _np_gru(x, w):
    """TF1 GRUCell step on x [B, in] with state h, from a dict of its four arrays."""
    x_in, h = x
    r, u = np.split(_sigmoid(np.concatenate([x_in, h], -1) @ w["gk"] + w["gb"]), 2, -1)
    c = np.tanh(np.concatenate([x_in, r * h], -1) @ w["ck"] + w["cb"])
    return u * h + (1 - u) * c


def _rand(rng, *shape):
    return rng.uniform(-0.5, 0.5, shape).astype(np.float32)


def test_names_follow_tf1_scopes(getkey):
    # Names depend on structure only: build the cells abstractly (no arrays, no compilation).
    build = eqx.filter_eval_shape

    lstm = build(recurrax.LSTMCell, 4, 3, key=getkey(), use_peepholes=True, num_proj=2)
    assert recurrax.tf1_variable_names(lstm) == [
        "rnn/lstm_cell/kernel",
        "rnn/lstm_cell/bias",
        "rnn/lstm_cell/w_f_diag",
        "rnn/lstm_cell/w_i_diag",
        "rnn/lstm_cell/w_o_diag",
        "rnn/lstm_cell/projection/kernel",
    ]
    stack = build(
        lambda k1, k2: recurrax.MultiRNNCell(
            [
                recurrax.DropoutWrapper(recurrax.BasicRNNCell(3, 2, key=k1)),
                recurrax.ResidualWrapper(recurrax.GRUCell(3, 3, key=k2)),
            ]
        ),
        getkey(),
        getkey(),
    )
    assert recurrax.tf1_variable_names(stack, scope="encoder/rnn") == [
        "encoder/rnn/multi_rnn_cell/cell_0/basic_rnn_cell/kernel",
        "encoder/rnn/multi_rnn_cell/cell_0/basic_rnn_cell/bias",
        "encoder/rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "encoder/rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "encoder/rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "encoder/rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
    ]
    pair = (build(recurrax.BasicLSTMCell, 2, 3, key=getkey()),) * 2
    assert recurrax.tf1_variable_names(pair) == [
        "bidirectional_rnn/fw/basic_lstm_cell/kernel",
        "bidirectional_rnn/fw/basic_lstm_cell/bias",
        "bidirectional_rnn/bw/basic_lstm_cell/kernel",
        "bidirectional_rnn/bw/basic_lstm_cell/bias",
    ]


def test_basic_lstm_from_tf1_variables_gives_tf1_numbers(getkey):
    rng = np.random.default_rng(0)
    kernel, bias = _rand(rng, 3 + 4, 16), _rand(rng, 16)
    variables = {  # as `{v.name: sess.run(v)}` prints them, under an outer scope
        "model/rnn/basic_lstm_cell/kernel:0": kernel,
        "model/rnn/basic_lstm_cell/bias:0": bias,
    }
    cell = recurrax.load_tf1_weights(recurrax.BasicLSTMCell(4, 3, key=getkey()), variables)
    x = _rand(rng, 2, 5, 3)
    outputs, (c, h) = recurrax.dynamic_rnn(cell, x)
    ref_out, (ref_c, ref_h) = _np_basic_lstm(x.astype(np.float64), kernel, bias)
    np.testing.assert_allclose(outputs, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-6)


def test_stacked_gru_from_tf1_variables_gives_tf1_numbers(getkey):
    rng = np.random.default_rng(1)
    layers = [
        {
            "gk": _rand(rng, 2 + 3, 6),
            "gb": _rand(rng, 6),
            "ck": _rand(rng, 5, 3),
            "cb": _rand(rng, 3),
        },
        {
            "gk": _rand(rng, 3 + 3, 6),
            "gb": _rand(rng, 6),
            "ck": _rand(rng, 6, 3),
            "cb": _rand(rng, 3),
        },
    ]
    variables = {}
    for k, w in enumerate(layers):
        scope = f"rnn/multi_rnn_cell/cell_{k}/gru_cell"
        variables[f"{scope}/gates/kernel:0"] = w["gk"]
        variables[f"{scope}/gates/bias:0"] = w["gb"]
        variables[f"{scope}/candidate/kernel:0"] = w["ck"]
        variables[f"{scope}/candidate/bias:0"] = w["cb"]
    stack = recurrax.MultiRNNCell(
        [recurrax.GRUCell(3, 2, key=getkey()), recurrax.GRUCell(3, 3, key=getkey())]
    )
    stack = recurrax.load_tf1_weights(stack, variables)
    x = _rand(rng, 2, 4, 2).astype(np.float64)
    outputs, (s0, s1) = recurrax.dynamic_rnn(stack, x, dtype=jnp.float32)
    h0 = h1 = np.zeros((2, 3))
    for t in range(4):
        h0 = _np_gru((x[:, t], h0), layers[0])
        h1 = _np_gru((h0, h1), layers[1])
        np.testing.assert_allclose(outputs[:, t], h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s0, h0, rtol=1e-5, atol=1e-6)


def test_lstm_cell_peepholes_and_projection(getkey):
    rng = np.random.default_rng(2)
    u, p, n = 4, 2, 3
    w = {
        "kernel": _rand(rng, n + p, 4 * u),
        "bias": _rand(rng, 4 * u),
        "w_f_diag": _rand(rng, u),
        "w_i_diag": _rand(rng, u),
        "w_o_diag": _rand(rng, u),
        "projection/kernel": _rand(rng, u, p),
    }
    cell = recurrax.LSTMCell(u, n, key=getkey(), use_peepholes=True, num_proj=p)
    cell = recurrax.load_tf1_weights(cell, {f"rnn/lstm_cell/{k}": v for k, v in w.items()})
    x = _rand(rng, 2, 3, n).astype(np.float64)
    outputs, _ = recurrax.dynamic_rnn(cell, x, dtype=jnp.float32)
    c, m = np.zeros((2, u)), np.zeros((2, p))
    for t in range(3):  # TF1 LSTMCell with use_peepholes and num_proj
        i, j, f, o = np.split(np.concatenate([x[:, t], m], -1) @ w["kernel"] + w["bias"], 4, -1)
        c = _sigmoid(f + 1.0 + w["w_f_diag"] * c) * c + _sigmoid(i + w["w_i_diag"] * c) * np.tanh(j)
        m = (_sigmoid(o + w["w_o_diag"] * c) * np.tanh(c)) @ w["projection/kernel"]
        np.testing.assert_allclose(outputs[:, t], m, rtol=1e-5, atol=1e-6)


def test_bidirectional_pair_and_round_trip(getkey):
    pair = (recurrax.BasicRNNCell(3, 2, key=getkey()), recurrax.BasicRNNCell(3, 2, key=getkey()))
    exported = recurrax.tf1_weights(pair)
    assert sorted(exported) == [
        "bidirectional_rnn/bw/basic_rnn_cell/bias",
        "bidirectional_rnn/bw/basic_rnn_cell/kernel",
        "bidirectional_rnn/fw/basic_rnn_cell/bias",
        "bidirectional_rnn/fw/basic_rnn_cell/kernel",
    ]
    fresh = (recurrax.BasicRNNCell(3, 2, key=getkey()), recurrax.BasicRNNCell(3, 2, key=getkey()))
    fw, bw = recurrax.load_tf1_weights(fresh, exported)
    np.testing.assert_array_equal(fw.kernel, pair[0].kernel)
    np.testing.assert_array_equal(bw.kernel, pair[1].kernel)
    assert not np.array_equal(fw.kernel, bw.kernel)


def test_float64_arrays_are_cast_to_the_cells_dtype(getkey):
    kernel = np.random.default_rng(3).uniform(size=(5, 2))
    cell = recurrax.load_tf1_weights(
        recurrax.BasicRNNCell(2, 3, key=getkey()),
        {"rnn/basic_rnn_cell/kernel": kernel, "rnn/basic_rnn_cell/bias": np.ones(2)},
    )
    assert cell.kernel.dtype == jnp.float32
    np.testing.assert_array_equal(cell.kernel, kernel.astype(np.float32))


@pytest.fixture
def lstm_vars():
    return {
        "rnn/basic_lstm_cell/kernel:0": np.zeros((7, 16), np.float32),
        "rnn/basic_lstm_cell/bias:0": np.zeros(16, np.float32),
    }


def test_missing_variable(getkey, lstm_vars):
    del lstm_vars["rnn/basic_lstm_cell/bias:0"]
    with pytest.raises(ValueError, match=r"variables lacks \['rnn/basic_lstm_cell/bias'\]"):
        recurrax.load_tf1_weights(recurrax.BasicLSTMCell(4, 3, key=getkey()), lstm_vars)
    with pytest.raises(ValueError, match=r"lacks \['rnn/lstm_cell/kernel', 'rnn/lstm_cell/bias'"):
        recurrax.load_tf1_weights(recurrax.LSTMCell(4, 3, key=getkey()), lstm_vars)


def test_extra_variable(getkey, lstm_vars):
    lstm_vars["dense/kernel:0"] = np.zeros((4, 10), np.float32)
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    with pytest.raises(ValueError, match=r"holds \['dense/kernel:0'\], which are not variables"):
        recurrax.load_tf1_weights(cell, lstm_vars)
    loaded = recurrax.load_tf1_weights(cell, lstm_vars, strict=False)
    np.testing.assert_array_equal(loaded.kernel, np.zeros((7, 16)))


def test_wrong_shape(getkey, lstm_vars):
    lstm_vars["rnn/basic_lstm_cell/kernel:0"] = np.zeros((8, 16), np.float32)
    with pytest.raises(
        ValueError,
        match=r"'rnn/basic_lstm_cell/kernel:0' has shape \[8, 16\] but the cell expects \[7, 16\]",
    ):
        recurrax.load_tf1_weights(recurrax.BasicLSTMCell(4, 3, key=getkey()), lstm_vars)


def test_ambiguous_type_and_cell_errors(getkey, lstm_vars):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    doubled = {f"{outer}/{k}": v for outer in ("enc", "dec") for k, v in lstm_vars.items()}
    with pytest.raises(ValueError, match="several candidates for rnn/basic_lstm_cell/kernel"):
        recurrax.load_tf1_weights(cell, doubled)
    doubled["dec/rnn/basic_lstm_cell/bias:0"] = np.ones(16, np.float32)
    loaded = recurrax.load_tf1_weights(cell, doubled, scope="dec/rnn", strict=False)
    np.testing.assert_array_equal(loaded.bias, np.ones(16))
    with pytest.raises(TypeError, match="variables must be a mapping"):
        recurrax.load_tf1_weights(cell, list(lstm_vars.items()))
    ints = {k: v.astype(np.int32) for k, v in lstm_vars.items()}
    with pytest.raises(TypeError, match="must hold floating values; got int32"):
        recurrax.load_tf1_weights(cell, ints)
    with pytest.raises(TypeError, match="to have TF1 variable names; got Linear"):
        recurrax.tf1_variable_names(eqx.nn.Linear(4, 2, key=getkey()))
    with pytest.raises(ValueError, match="scope must be a non-empty string"):
        recurrax.tf1_weights(cell, scope="/")


def test_tf1_weights_round_trip_through_jit(getkey):
    stack = recurrax.MultiRNNCell(
        [recurrax.BasicLSTMCell(3, 2, key=getkey()), recurrax.BasicLSTMCell(3, 3, key=getkey())]
    )
    fresh = recurrax.MultiRNNCell(
        [recurrax.BasicLSTMCell(3, 2, key=getkey()), recurrax.BasicLSTMCell(3, 3, key=getkey())]
    )
    loaded = recurrax.load_tf1_weights(fresh, recurrax.tf1_weights(stack))
    x = jax.random.normal(getkey(), (2, 4, 2), jnp.float32)
    run = jax.jit(lambda c, x: recurrax.dynamic_rnn(c, x)[0])
    np.testing.assert_array_equal(run(loaded, x), run(stack, x))


def test_contrib_cells_names_follow_tf1_scopes(getkey):
    from recurrax.cells.layernorm import LayerNormBasicLSTMCell
    from recurrax.cells.projection import (
        EmbeddingWrapper,
        InputProjectionWrapper,
        OutputProjectionWrapper,
    )

    build = eqx.filter_eval_shape
    out = build(
        lambda k: OutputProjectionWrapper(recurrax.GRUCell(3, 3, key=k), 2, key=k), getkey()
    )
    # TF1 calls the wrapped cell first, so its variables come first.
    assert recurrax.tf1_variable_names(out) == [
        "rnn/output_projection_wrapper/gru_cell/gates/kernel",
        "rnn/output_projection_wrapper/gru_cell/gates/bias",
        "rnn/output_projection_wrapper/gru_cell/candidate/kernel",
        "rnn/output_projection_wrapper/gru_cell/candidate/bias",
        "rnn/output_projection_wrapper/kernel",
        "rnn/output_projection_wrapper/bias",
    ]
    inp = build(
        lambda k: InputProjectionWrapper(recurrax.BasicLSTMCell(2, 4, key=k), 4, 3, key=k),
        getkey(),
    )
    assert recurrax.tf1_variable_names(inp, scope="encoder/rnn") == [
        "encoder/rnn/input_projection_wrapper/kernel",
        "encoder/rnn/input_projection_wrapper/bias",
        "encoder/rnn/input_projection_wrapper/basic_lstm_cell/kernel",
        "encoder/rnn/input_projection_wrapper/basic_lstm_cell/bias",
    ]
    emb = build(
        lambda k: EmbeddingWrapper(recurrax.BasicRNNCell(2, 4, key=k), 9, 4, key=k), getkey()
    )
    assert recurrax.tf1_variable_names(emb) == [
        "rnn/embedding_wrapper/embedding",
        "rnn/embedding_wrapper/basic_rnn_cell/kernel",
        "rnn/embedding_wrapper/basic_rnn_cell/bias",
    ]
    ln = build(lambda k: LayerNormBasicLSTMCell(2, 3, key=k), getkey())
    prefix = "rnn/layer_norm_basic_lstm_cell"
    assert recurrax.tf1_variable_names(ln) == [f"{prefix}/kernel"] + [
        f"{prefix}/{block}/{v}"
        for block in ("input", "transform", "forget", "output", "state")
        for v in ("gamma", "beta")
    ]
    plain = build(lambda k: LayerNormBasicLSTMCell(2, 3, key=k, layer_norm=False), getkey())
    assert recurrax.tf1_variable_names(plain) == [f"{prefix}/kernel", f"{prefix}/bias"]
    # Wrappers nest: a dropout wrapper adds no scope, a projection wrapper adds its own.
    stack = build(
        lambda k: (
            recurrax.DropoutWrapper(
                OutputProjectionWrapper(recurrax.BasicRNNCell(2, 3, key=k), 1, key=k)
            ),
            InputProjectionWrapper(recurrax.BasicRNNCell(2, 2, key=k), 2, 3, key=k),
        ),
        getkey(),
    )
    assert recurrax.tf1_variable_names(stack) == [
        "bidirectional_rnn/fw/output_projection_wrapper/basic_rnn_cell/kernel",
        "bidirectional_rnn/fw/output_projection_wrapper/basic_rnn_cell/bias",
        "bidirectional_rnn/fw/output_projection_wrapper/kernel",
        "bidirectional_rnn/fw/output_projection_wrapper/bias",
        "bidirectional_rnn/bw/input_projection_wrapper/kernel",
        "bidirectional_rnn/bw/input_projection_wrapper/bias",
        "bidirectional_rnn/bw/input_projection_wrapper/basic_rnn_cell/kernel",
        "bidirectional_rnn/bw/input_projection_wrapper/basic_rnn_cell/bias",
    ]


def test_missing_names_under_another_scope_say_which_scope(getkey):
    stack = recurrax.MultiRNNCell(
        [recurrax.GRUCell(3, 2, key=getkey()), recurrax.GRUCell(3, 3, key=getkey())]
    )
    exported = recurrax.tf1_weights(stack, scope="Model/RNN")
    variables = {f"{k}:0": v for k, v in exported.items()}
    with pytest.raises(
        ValueError,
        match=r"lacks \['rnn/multi_rnn_cell/cell_0/gru_cell/gates/kernel', .*\]"
        r".*They sit under scope 'Model/RNN': pass scope='Model/RNN'\.$",
    ):
        recurrax.load_tf1_weights(stack, variables)
    loaded = recurrax.load_tf1_weights(stack, variables, scope="Model/RNN")
    np.testing.assert_array_equal(loaded.cells[1].gates_kernel, stack.cells[1].gates_kernel)
    # Two models under two scopes: both are named.
    both = {f"{outer}/{k}": v for outer in ("enc", "dec") for k, v in exported.items()}
    with pytest.raises(
        ValueError, match=r"several scopes: pass scope='enc/Model/RNN' or scope='dec/Model/RNN'"
    ):
        recurrax.load_tf1_weights(stack, both)
    # Only some names found under another scope: how many, and what else to check.
    del variables["Model/RNN/multi_rnn_cell/cell_1/gru_cell/candidate/bias:0"]
    with pytest.raises(
        ValueError,
        match=r"7 of the 8 names sit under scope 'Model/RNN': pass scope='Model/RNN' and check "
        "the cell types",
    ):
        recurrax.load_tf1_weights(stack, variables)
    # A different cell type is not a scope problem: the old advice stays.
    lstm = {
        "Model/RNN/lstm_cell/kernel": np.zeros((7, 16)),
        "Model/RNN/lstm_cell/bias": np.zeros(16),
    }
    with pytest.raises(ValueError, match=r"Check the scope and the cell types \(BasicLSTMCell"):
        recurrax.load_tf1_weights(recurrax.BasicLSTMCell(4, 3, key=getkey()), lstm)


def test_a_cells_name_is_its_tf1_variable_scope(getkey):
    """TF1 names a cell's variables under its ``name``: the names follow it, nested in the
    runner's and ``MultiRNNCell``'s scopes, and weights round-trip under it."""
    cell = recurrax.GRUCell(3, 2, key=getkey(), name="encoder")
    assert recurrax.tf1_variable_names(cell) == [
        "rnn/encoder/gates/kernel",
        "rnn/encoder/gates/bias",
        "rnn/encoder/candidate/kernel",
        "rnn/encoder/candidate/bias",
    ]
    stack = recurrax.MultiRNNCell(
        [
            recurrax.BasicLSTMCell(3, 2, key=getkey(), name="lower"),
            recurrax.BasicRNNCell(3, 3, key=getkey()),
        ]
    )
    assert recurrax.tf1_variable_names(stack, scope="Model/RNN") == [
        "Model/RNN/multi_rnn_cell/cell_0/lower/kernel",
        "Model/RNN/multi_rnn_cell/cell_0/lower/bias",
        "Model/RNN/multi_rnn_cell/cell_1/basic_rnn_cell/kernel",
        "Model/RNN/multi_rnn_cell/cell_1/basic_rnn_cell/bias",
    ]
    other = recurrax.GRUCell(3, 2, key=getkey(), name="encoder")
    loaded = recurrax.load_tf1_weights(other, recurrax.tf1_weights(cell))
    x = jnp.ones((2, 2))
    np.testing.assert_array_equal(
        loaded(x, loaded.zero_state(2))[0], cell(x, cell.zero_state(2))[0]
    )
    # Under its default scope the same weights are not found, and the error says so.
    with pytest.raises(ValueError, match="gru_cell/gates/kernel"):
        recurrax.load_tf1_weights(recurrax.GRUCell(3, 2, key=getkey()), recurrax.tf1_weights(cell))


@pytest.mark.parametrize("name", [3, "", "/"])
def test_a_bad_cell_name_is_refused(getkey, name):
    with pytest.raises(TypeError, match=r"name must be None or a non-empty string"):
        recurrax.BasicRNNCell(3, 2, key=getkey(), name=name)
