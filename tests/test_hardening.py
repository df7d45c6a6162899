"""The edges of the runners' contract: padding that holds NaN or inf, lengths of any integer
dtype, T = 0, a batch of 0, integer inputs for embedding cells, and the arguments refused."""

import re
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from engine_hook import engine_rnn
from reference import (
    assert_tree_close,
    make_cell,
    np_step,
    reference_rnn,
    reverse_rows,
    zeros_like_state,
)

B, T, F = 3, 5, 3
LENGTHS = np.array([0, T, 2])  # a row of length 0, one of length T, one in between
MEMORIES = ["store", "recompute", recurrax.CheckpointEvery(2), recurrax.Revolve(2)]
# (implementation, memory): the generic path with every strategy, and the fused path.
RUNS = [("generic", m) for m in MEMORIES] + [("fused", "store")]


def _inputs(batch=B, time=T, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, F))


def _padded(x, lengths, fill, time_axis=1):
    """``x`` (batch-major) with every step at or past its row's length set to ``fill``; laid
    out with time along ``time_axis``. NaN alternates with inf and -inf when ``fill`` is NaN."""
    x = np.array(x)
    for b, n in enumerate(lengths):
        x[b, n:] = fill
        if np.isnan(fill) and n + 1 < x.shape[1]:
            x[b, n + 1] = np.inf
            x[b, n + 1, 0] = -np.inf
    return x if time_axis == 1 else np.swapaxes(x, 0, 1)


def _value_and_grads(run, cell, x):
    """Outputs, final state, and the gradient of a loss reading both w.r.t. weights and x."""

    def loss(cx):
        out, state = run(*cx)
        total = sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(out))
        return total + sum(jnp.sum(s**2) for s in jax.tree.leaves(state)), (out, state)

    (_, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)((cell, jnp.asarray(x)))
    return aux, grads


def _assert_clean_and_equal(run, cell, lengths, time_axis=1):
    """``run`` on NaN/inf padding gives finite values and gradients, equal to those on zero
    padding; the inputs' gradient is zero in the padding."""
    x = _inputs()
    got = _value_and_grads(run, cell, _padded(x, lengths, np.nan, time_axis))
    want = _value_and_grads(run, cell, _padded(x, lengths, 0.0, time_axis))
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(leaf))
    assert_tree_close(got, want, 1e-12, 1e-12)
    dx = np.asarray(got[1][1]) if time_axis == 1 else np.swapaxes(got[1][1], 0, 1)
    for b, n in enumerate(lengths):
        assert not dx[b, n:].any()


# -- 1. padding may hold anything -----------------------------------------------------------


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
@pytest.mark.parametrize("implementation, memory", RUNS, ids=[f"{i}-{m}" for i, m in RUNS])
def test_nan_padding_reaches_no_value_and_no_gradient(implementation, memory, traced, time_major):
    cell = make_cell("basic_lstm", F)
    lengths = jnp.asarray(LENGTHS) if traced else LENGTHS

    def run(cell, x):
        return recurrax.dynamic_rnn(
            cell,
            x,
            lengths,
            dtype=jnp.float64,
            time_major=time_major,
            memory=memory,
            implementation=implementation,
        )

    run = jax.jit(run) if traced else run
    _assert_clean_and_equal(run, cell, LENGTHS, 0 if time_major else 1)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("implementation", ["generic", "fused"])
def test_nan_padding_in_chunks(implementation, time_major):
    """Traced lengths over more than one chunk (chunks of 2 steps here): every chunk's padding
    is cleared, in the forward pass and in the recomputing backward pass; a MultiRNNCell."""
    cell = make_cell("multi", F)

    @jax.jit
    def run(cell, x, lengths):
        return engine_rnn(
            cell,
            x,
            lengths,
            exit_chunk=2,
            time_major=time_major,
            implementation=implementation,
        )

    _assert_clean_and_equal(
        lambda c, x: run(c, x, jnp.asarray(LENGTHS)), cell, LENGTHS, 0 if time_major else 1
    )


@pytest.mark.parametrize("input_projection", ["before_loop", "in_loop"])
def test_nan_padding_on_the_fused_path_either_projection(input_projection):
    cell = make_cell("gru", F)

    def run(cell, x):
        return engine_rnn(
            cell, x, LENGTHS, implementation="fused", input_projection=input_projection
        )

    _assert_clean_and_equal(run, cell, LENGTHS)


@pytest.mark.slow
def test_nan_padding_on_the_pallas_path():
    """The Pallas kernel (Pallas's interpreter on a CPU) reads inputs cleared the same way."""
    cell = make_cell("basic_rnn", F, jnp.float32)

    def run(cell, x):
        return recurrax.dynamic_rnn(cell, x, LENGTHS, implementation="pallas")

    x = _inputs().astype(np.float32)
    got = _value_and_grads(run, cell, _padded(x, LENGTHS, np.nan))
    want = _value_and_grads(run, cell, _padded(x, LENGTHS, 0.0))
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(leaf))
    assert_tree_close(got, want, 1e-6, 1e-6)


@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
def test_nan_padding_static_rnn(traced):
    cell = make_cell("gru", F)
    lengths = jnp.asarray(LENGTHS) if traced else LENGTHS

    def run(cell, x):
        steps = [x[:, t] for t in range(x.shape[1])]
        return recurrax.static_rnn(cell, steps, dtype=jnp.float64, sequence_length=lengths)

    _assert_clean_and_equal(jax.jit(run) if traced else run, cell, LENGTHS)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("implementation", ["generic", "fused"])
def test_nan_padding_bidirectional(implementation, time_major):
    fw, bw = make_cell("basic_lstm", F), make_cell("basic_rnn", F)

    def run(cells, x):
        return recurrax.bidirectional_dynamic_rnn(
            *cells,
            x,
            jnp.asarray(LENGTHS),
            dtype=jnp.float64,
            time_major=time_major,
            implementation=implementation,
        )

    _assert_clean_and_equal(jax.jit(run), (fw, bw), LENGTHS, 0 if time_major else 1)


def test_nan_padding_static_bidirectional():
    fw, bw = make_cell("basic_rnn", F), make_cell("gru", F)

    def run(cells, x):
        steps = [x[:, t] for t in range(x.shape[1])]
        out, s_fw, s_bw = recurrax.static_bidirectional_rnn(
            *cells, steps, dtype=jnp.float64, sequence_length=LENGTHS
        )
        return out, (s_fw, s_bw)

    _assert_clean_and_equal(run, (fw, bw), LENGTHS)


# -- 2. lengths of any integer dtype; inputs refused; a batch of 0 --------------------------


@pytest.mark.parametrize(
    "dtype, value, acts_as",
    [
        (jnp.uint32, 2**32 - 1, T),
        (jnp.int64, 2**31 + 3, T),
        (jnp.int64, -(2**40), 0),
        (jnp.uint8, 255, T),
        (jnp.int8, -128, 0),
        (jnp.uint16, 3, 3),
    ],
)
@pytest.mark.parametrize("implementation", ["generic", "fused"])
def test_traced_lengths_of_any_integer_dtype(implementation, dtype, value, acts_as):
    cell = make_cell("basic_rnn", F)
    x = _inputs()
    lengths = jnp.array([value, 1, T], dtype)

    @jax.jit
    def run(x, lengths):
        return recurrax.dynamic_rnn(cell, x, lengths, implementation=implementation)

    want = recurrax.dynamic_rnn(cell, x, np.array([acts_as, 1, T]))
    assert_tree_close(run(x, lengths), want, 1e-12, 1e-12)
    flipped = jax.jit(lambda x, n: recurrax.reverse_sequence(x, n, 1, 0))(x, lengths)
    np.testing.assert_array_equal(flipped[0, :acts_as], x[0, :acts_as][::-1])
    np.testing.assert_array_equal(flipped[0, acts_as:], x[0, acts_as:])


def test_concrete_lengths_of_small_integer_dtypes():
    cell = make_cell("gru", F)
    x = _inputs()
    want = recurrax.dynamic_rnn(cell, x, LENGTHS)
    for dtype in (np.uint8, np.int16, np.uint64):
        assert_tree_close(recurrax.dynamic_rnn(cell, x, LENGTHS.astype(dtype)), want, 0, 0)
    with pytest.raises(ValueError, match=re.escape("got sequence_length[0]=65535.")):
        recurrax.dynamic_rnn(cell, x, np.array([2**16 - 1, 1, 1], np.uint16))


@pytest.mark.parametrize(
    "call, where, dtype",
    [
        (lambda c, x: recurrax.dynamic_rnn(c, x.astype(np.complex64)), "inputs", "complex64"),
        (lambda c, x: recurrax.bidirectional_dynamic_rnn(c, c, x + 0j), "inputs", "complex128"),
        (lambda c, x: recurrax.static_rnn(c, [x[:, 0], x[:, 1] + 1j]), "inputs[1]", "complex128"),
        (
            lambda c, x: recurrax.static_bidirectional_rnn(c, c, [x[:, 0] * 1j]),
            "inputs[0]",
            "complex128",
        ),
    ],
)
def test_complex_inputs_are_refused(call, where, dtype):
    message = (
        f"{where} must be real (a floating or integer dtype, cast to dtype); got {dtype}. Pass "
        "jnp.real(x), or the real and imaginary parts as separate features."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        call(make_cell("basic_rnn", F), _inputs())


@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
@pytest.mark.parametrize("input_projection", ["before_loop", "in_loop"])
@pytest.mark.parametrize("implementation", ["generic", "fused"])
def test_batch_of_zero(implementation, input_projection, traced):
    cell = make_cell("basic_lstm", F)
    x = np.zeros((0, T, F))
    init = jax.tree.map(lambda s: s[:0], cell.zero_state(1, jnp.float64))
    lengths = np.zeros(0, np.int32)

    def loss(cell, x, lengths):
        out, state = engine_rnn(
            cell,
            x,
            lengths,
            init,
            implementation=implementation,
            input_projection=input_projection,
            exit_chunk=2,
        )
        return jnp.sum(out) + jnp.sum(state.h), (out, state)

    run = jax.value_and_grad(loss, has_aux=True)
    (_, (out, state)), grads = (jax.jit(run) if traced else run)(cell, x, jnp.asarray(lengths))
    assert out.shape == (0, T, 4) and state.c.shape == (0, 4)
    for g in jax.tree.leaves(grads):
        np.testing.assert_array_equal(g, 0)


REVERSE_ERRORS = [
    ({"time_axis": 1.0}, TypeError, "time_axis must be an int (an axis of xs); got float."),
    ({"batch_axis": True}, TypeError, "batch_axis must be an int (an axis of xs); got bool."),
    (
        {"time_axis": 3},
        ValueError,
        "time_axis=3 is out of range for xs of shape (5, 3, 2) (rank 3).",
    ),
    (
        {"batch_axis": -4},
        ValueError,
        "batch_axis=-4 is out of range for xs of shape (5, 3, 2) (rank 3).",
    ),
    (
        {"time_axis": 1},
        ValueError,
        "time_axis and batch_axis must be different axes of xs (rank 3); got time_axis=1 and "
        "batch_axis=1.",
    ),
    (
        {"time_axis": -2},
        ValueError,
        "time_axis and batch_axis must be different axes of xs (rank 3); got time_axis=-2",
    ),
    (
        {"sequence_length": np.array([1.0, 2.0, 3.0])},
        TypeError,
        "sequence_length must have an integer dtype (int32 or int64); got float64.",
    ),
    (
        {"sequence_length": np.array([1, 2])},
        ValueError,
        "sequence_length must have shape [batch]=(3,); got (2,).",
    ),
    (
        {"xs": {"a": np.zeros((5, 3)), "b": 7}},
        TypeError,
        "xs['b'] must be an array; got int.",
    ),
    (
        {"xs": [np.zeros((5, 3)), np.zeros((5,))]},
        ValueError,
        "batch_axis=1 is out of range for xs[1] of shape (5,) (rank 1).",
    ),
]


@pytest.mark.parametrize("change, exc, message", REVERSE_ERRORS)
def test_reverse_sequence_checks_its_arguments(change, exc, message):
    args = {"xs": np.zeros((5, 3, 2)), "sequence_length": np.array([1, 2, 3])}
    args.update(change)
    with pytest.raises(exc, match=re.escape(message)):
        recurrax.reverse_sequence(**args)


def test_reverse_sequence_negative_axes_and_nests():
    x = _inputs()  # (B, T, F)
    got = recurrax.reverse_sequence({"x": x, "y": [x[..., :1]]}, LENGTHS, -2, 0)
    want = np.swapaxes(reverse_rows(np.swapaxes(x, 0, 1), LENGTHS), 0, 1)
    np.testing.assert_array_equal(got["x"], want)
    np.testing.assert_array_equal(got["y"][0], want[..., :1])


# -- 3. T = 0 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("implementation", ["auto", "generic", "fused", "pallas"])
def test_zero_time_steps(implementation, time_major):
    cell = make_cell("basic_lstm", F, jnp.float32)  # the Pallas path runs float32
    x = np.zeros((0, B, F)) if time_major else np.zeros((B, 0, F))
    c, h = zeros_like_state(cell.state_size, B)
    init = recurrax.LSTMStateTuple(jnp.float32(c + 0.5), jnp.float32(h - 0.25))
    empty = (0, B, 4) if time_major else (B, 0, 4)
    for lengths in (None, np.zeros(B, np.int64), jnp.array([0, 7, -1])):
        out, state = jax.jit(
            lambda x, s, n: recurrax.dynamic_rnn(
                cell, x, n, s, time_major=time_major, implementation=implementation
            )
        )(x, init, lengths)
        assert out.shape == empty and out.dtype == jnp.float32
        assert_tree_close(state, init, 0, 0)
    out, state = recurrax.dynamic_rnn(
        cell, x, np.zeros(B, int), init, time_major=time_major, implementation=implementation
    )
    assert out.shape == empty
    assert_tree_close(state, init, 0, 0)
    (out_fw, out_bw), (s_fw, s_bw) = recurrax.bidirectional_dynamic_rnn(
        cell, cell, x, initial_state_fw=init, time_major=time_major, implementation=implementation
    )
    assert out_fw.shape == out_bw.shape == empty
    assert_tree_close((s_fw, s_bw), (init, cell.zero_state(B)), 0, 0)

    def final_h(s):
        return jnp.sum(recurrax.dynamic_rnn(cell, x, None, s, time_major=time_major)[1].h)

    np.testing.assert_array_equal(jax.grad(final_h)(init).h, 1)


def test_zero_time_steps_concrete_lengths_are_checked():
    with pytest.raises(ValueError, match=re.escape("must lie in [0, 0] (the number of time")):
        recurrax.dynamic_rnn(make_cell("gru", F), np.zeros((B, 0, F)), np.array([0, 1, 0]))


def test_static_rnn_with_no_steps_stays_an_error():
    """TF1's static_rnn raises on an empty list ("inputs must not be empty"); so does ours."""
    with pytest.raises(ValueError, match="inputs must hold at least one time step"):
        recurrax.static_rnn(make_cell("gru", F), [], dtype=jnp.float64)
    with pytest.raises(ValueError, match="inputs must hold at least one time step"):
        recurrax.static_bidirectional_rnn(make_cell("gru", F), make_cell("gru", F), [])


# -- 4. integer inputs ------------------------------------------------------------------------


class EmbeddingRNNCell(eqx.Module):
    """Looks ids ``[B, 1]`` up in a table, then a tanh RNN step; ids outside the table give
    NaN (as a padded id past the table would)."""

    table: jax.Array  # (V, H)
    recurrent: jax.Array  # (H, H)
    integer_inputs: ClassVar[bool] = True
    input_size: ClassVar[int] = 1
    state_size: ClassVar[int] = 4
    output_size: ClassVar[int] = 4

    def __call__(self, ids, h):
        assert jnp.issubdtype(ids.dtype, jnp.integer), ids.dtype
        e = jnp.take(self.table, ids[:, 0], axis=0, mode="fill", fill_value=jnp.nan)
        h = jnp.tanh(e + h @ self.recurrent)
        return h, h


def _embedding_cell():
    rng = np.random.default_rng(3)
    return EmbeddingRNNCell(
        jnp.asarray(rng.standard_normal((7, 4))), jnp.asarray(rng.standard_normal((4, 4)) * 0.5)
    )


def _ids(time=T, seed=1):
    ids = np.random.default_rng(seed).integers(0, 7, (B, time, 1)).astype(np.int32)
    padded = ids.copy()
    for b, n in enumerate(LENGTHS):
        padded[b, n:] = 10**6  # past the table: NaN if the cell ever read it
    return ids, padded


def _embedding_reference(cell, ids):
    """Time-major outputs and final state of the hand loop over ``ids [B, T, 1]``."""

    def step(t, x, h):
        e = np.asarray(cell.table)[x[:, 0].astype(int)]
        h = np.tanh(e + h @ np.asarray(cell.recurrent))
        return h, h

    safe = np.where(ids < 7, ids, 0)
    return reference_rnn(step, np.swapaxes(safe, 0, 1), np.zeros((B, 4)), LENGTHS)


@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_integer_inputs_pass_through(memory, traced):
    cell = _embedding_cell()
    ids, padded = _ids()
    lengths = jnp.asarray(LENGTHS) if traced else LENGTHS

    def run(cell, x):
        return recurrax.dynamic_rnn(cell, x, lengths, dtype=jnp.float64, memory=memory)

    run = jax.jit(run) if traced else run
    out, state = run(cell, padded)
    want_out, want_state = _embedding_reference(cell, ids)
    assert_tree_close((np.swapaxes(out, 0, 1), state), (want_out, want_state), 1e-12, 1e-12)
    grads = jax.grad(lambda c: jnp.sum(jnp.sin(run(c, padded)[0])))(cell)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert_tree_close(grads, jax.grad(lambda c: jnp.sum(jnp.sin(run(c, ids)[0])))(cell))


def test_integer_inputs_static_bidirectional_and_stacked():
    cell = _embedding_cell()
    ids, padded = _ids()
    want_out, want_state = _embedding_reference(cell, ids)
    steps = [padded[:, t] for t in range(T)]
    out, state = recurrax.static_rnn(cell, steps, dtype=jnp.float64, sequence_length=LENGTHS)
    assert_tree_close((np.stack(out), state), (want_out, want_state), 1e-12, 1e-12)
    (out_fw, _), (state_fw, _) = recurrax.bidirectional_dynamic_rnn(
        cell, make_cell("basic_rnn", 1), padded, LENGTHS, dtype=jnp.float64
    )
    assert_tree_close((np.swapaxes(out_fw, 0, 1), state_fw), (want_out, want_state), 1e-12)
    top = make_cell("gru", 4)
    stacked = recurrax.MultiRNNCell([cell, top])
    out, (h0, h1) = recurrax.dynamic_rnn(stacked, padded, LENGTHS, dtype=jnp.float64)
    want_top = reference_rnn(np_step(top), want_out, np.zeros((B, 4)), LENGTHS)
    assert_tree_close((np.swapaxes(out, 0, 1), h0, h1), (want_top[0], want_state, want_top[1]))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda c, x: recurrax.dynamic_rnn(c, x.astype(np.float32), dtype=jnp.float64),
            "cell (EmbeddingRNNCell) takes integer inputs (ids: its integer_inputs is True), so "
            "inputs must have an integer dtype; got float32. Pass the ids as an int array, e.g. "
            "x.astype(jnp.int32).",
        ),
        (
            lambda c, x: recurrax.static_rnn(c, [x[:, 0], x[:, 1] > 0], dtype=jnp.float64),
            "cell (EmbeddingRNNCell) takes integer inputs (ids: its integer_inputs is True), so "
            "inputs[1] must have an integer dtype; got bool.",
        ),
        (
            lambda c, x: recurrax.bidirectional_dynamic_rnn(
                make_cell("gru", 1), c, x * 1.0, dtype=jnp.float64
            ),
            "cell_bw (EmbeddingRNNCell) takes integer inputs",
        ),
    ],
)
def test_integer_cells_refuse_float_inputs(call, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        call(_embedding_cell(), _ids()[0])


# -- 5. the fused path names the layer that blocks it -----------------------------------------


def test_fused_refusal_names_the_blocking_layer():
    inner = recurrax.DropoutWrapper(make_cell("gru", 4), 0.5, key=jax.random.key(0))
    stacked = recurrax.MultiRNNCell([make_cell("basic_lstm", F), inner])
    message = (
        "implementation='fused' needs a BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell or a "
        "MultiRNNCell of them (built-in types, unwrapped); got MultiRNNCell: layer 1 of the "
        "MultiRNNCell is a DropoutWrapper. implementation='generic' runs it ('auto' picks the "
        "path)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        recurrax.dynamic_rnn(stacked, _inputs(), implementation="fused")
    nested = recurrax.MultiRNNCell([recurrax.MultiRNNCell([make_cell("gru", F), inner])])
    with pytest.raises(ValueError, match=re.escape("got MultiRNNCell: layer 0 of the Multi")):
        recurrax.dynamic_rnn(nested, _inputs(), implementation="fused")
