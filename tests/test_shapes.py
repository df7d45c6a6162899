"""States and outputs of any shape: ``TensorShape`` leaves of ``state_size`` / ``output_size``.

A user-written 2-D convolutional LSTM (TF1's ``tf.contrib.rnn.ConvLSTMCell`` layout: NHWC,
state ``LSTMStateTuple([B, H, W, C], [B, H, W, C])``) runs through both runners, every memory
strategy, the wrappers, the bidirectional runners and ``raw_rnn``; each result is compared with
a plain Python loop over the cell, in value and in gradient. One step of the cell is checked
against a NumPy convolution written out element by element.
"""

import functools
import pathlib
import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.cells.checks import check_step
from reference import (
    _to_np,
    assert_tree_close,
    random_cell,
    reference_bidirectional,
    reference_rnn,
)

B, T = 3, 4  # batch, time
H, W, C_IN, C = 3, 3, 2, 3  # frame height, width, input and state channels
F64 = jnp.float64
LENGTHS = np.array([4, 0, 2], np.int32)  # T, 0 and mixed


def _docs_example(name: str):
    """``name`` as the first Python block of "States of any shape" in docs/custom-cells.md
    defines it: the page's convolutional LSTM is this file's fixture."""
    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "custom-cells.md"
    section = page.read_text().split("## States of any shape", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"__name__": "custom_cells_example"}
    exec(compile(code, str(page), "exec"), namespace)
    return namespace[name]


#: A 2-D convolutional LSTM (TF1's ``ConvLSTMCell(conv_ndims=2)``), NHWC:
#: ``z = conv2d(concat([x, h], -1), kernel, SAME) + biases``, gates ``i, j, f, o`` split on the
#: channel axis, ``c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(j)``,
#: ``h' = tanh(c') * sigmoid(o)``; state ``LSTMStateTuple([B, H, W, C], [B, H, W, C])``.
ConvLSTMCell = _docs_example("ConvLSTMCell")


def conv_cell(seed=0, input_shape=(H, W, C_IN), channels=C):
    """A ConvLSTMCell with NumPy-drawn weights (biases too): nothing is compiled."""
    return random_cell(
        lambda: ConvLSTMCell(input_shape, channels, key=jax.random.key(0)), seed, scale=0.3
    )


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def frames(seed=1, shape=(B, T, H, W, C_IN)):
    return normal(seed, shape)


def random_state(seed, channels=C):
    shape = (B, H, W, channels)
    return recurrax.LSTMStateTuple(normal(seed, shape), normal(seed + 100, shape))


def jax_reference_step(cell):
    """The cell (compiled once) as :func:`reference.reference_rnn` calls it: NumPy in and out."""
    call = jax.jit(lambda x, s: cell(x, s))

    def step(t, x, state):
        return _to_np(call(jnp.asarray(x), jax.tree_util.tree_map(jnp.asarray, state)))

    return step


def loop_rnn(cell, xs, state, lengths):
    """A plain differentiable loop over the cell (batch-major ``xs``), the runners' contract."""
    outputs = []
    for t in range(xs.shape[1]):
        out, new = cell(xs[:, t], state)
        valid = jnp.asarray(t < lengths).reshape(-1, 1, 1, 1)
        outputs.append(jnp.where(valid, out, 0.0))
        state = jax.tree_util.tree_map(functools.partial(jnp.where, valid), new, state)
    return jnp.stack(outputs, axis=1), state


# --- TensorShape ----------------------------------------------------------------------------------


def test_tensor_shape_is_a_hashable_iterable_leaf():
    shape = recurrax.TensorShape((4, 5, 8))
    assert repr(shape) == "TensorShape((4, 5, 8))"
    assert (2, *shape) == (2, 4, 5, 8)
    assert (len(shape), shape.rank, shape[0], shape.num_elements()) == (3, 3, 4, 160)
    assert shape[1:] == recurrax.TensorShape((5, 8)) and shape.as_list() == [4, 5, 8]
    assert (
        shape == recurrax.TensorShape([4, 5, 8]) == recurrax.TensorShape(np.zeros((4, 5, 8)).shape)
    )
    assert hash(shape) == hash(recurrax.TensorShape((4, 5, 8)))
    assert shape != (4, 5, 8)  # a tuple of ints is a nest of sizes, never a shape
    assert recurrax.TensorShape(7) == recurrax.TensorShape((7,))
    assert pickle.loads(pickle.dumps(shape)) == shape
    assert jax.tree_util.tree_leaves(recurrax.LSTMStateTuple(shape, 3)) == [shape, 3]
    with pytest.raises(AttributeError, match="TensorShape is immutable"):
        shape.dims = (1,)


@pytest.mark.parametrize(
    "dims, error, message",
    [
        ((4, -1), ValueError, "TensorShape dimensions must be >= 0; got -1 at index 1 of (4, -1)."),
        ((4, 2.0), TypeError, "TensorShape dimensions must be ints; got float 2.0 at index 1"),
        ((None, 3), TypeError, "TensorShape dimensions must be known ints; got None at index 0"),
        ((True,), TypeError, "TensorShape dimensions must be ints; got bool True at index 0"),
        ("HWC", TypeError, "TensorShape takes an iterable of ints such as (H, W, C), or one int"),
        (None, TypeError, "TensorShape takes an iterable of ints such as (H, W, C), or one int"),
    ],
)
def test_bad_tensor_shape_is_refused(dims, error, message):
    with pytest.raises(error) as info:
        recurrax.TensorShape(dims)
    assert message in str(info.value)


def test_zero_state_has_the_shapes():
    cell = conv_cell()
    c, h = cell.zero_state(B, F64)
    assert c.shape == h.shape == (B, H, W, C) and c.dtype == F64
    assert not np.any(np.asarray(c)) and not np.any(np.asarray(h))
    c2, _ = cell.get_initial_state(inputs=frames()[:, 0])
    assert c2.shape == (B, H, W, C) and c2.dtype == F64
    wrapped = recurrax.MultiRNNCell([cell, conv_cell(2, (H, W, C))])
    assert jax.tree_util.tree_map(jnp.shape, wrapped.zero_state(2, F64)) == (
        ((2, H, W, C), (2, H, W, C)),
        ((2, H, W, C), (2, H, W, C)),
    )


def test_a_list_of_ints_is_a_nest_of_sizes_as_in_tf1():
    # TF1's nest.map_structure treats a list [H, W, C] as three int sizes, not as a shape.
    class ListCell(recurrax.RNNCell):
        state_size = property(lambda self: [2, 3])
        output_size = 2

    zeros = ListCell().zero_state(4, F64)
    assert isinstance(zeros, list) and [z.shape for z in zeros] == [(4, 2), (4, 3)]


# --- One step of the cell against NumPy -----------------------------------------------------------


def test_conv_cell_step_matches_numpy():
    cell = conv_cell()
    x = np.asarray(frames()[:, 0])
    c, h = (np.asarray(a) for a in random_state(3))
    kernel, biases = np.asarray(cell.kernel), np.asarray(cell.biases)
    xh = np.concatenate([x, h], -1)
    padded = np.pad(xh, ((0, 0), (1, 1), (1, 1), (0, 0)))  # SAME for a 3x3 kernel
    z = np.zeros((B, H, W, 4 * C))
    for r in range(H):
        for s in range(W):
            patch = padded[:, r : r + 3, s : s + 3, :]  # [B, 3, 3, C_in + C]
            z[:, r, s] = np.einsum("bijk,ijkl->bl", patch, kernel)
    i, j, f, o = np.split(z + biases, 4, -1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    new_c = sig(f + 1.0) * c + sig(i) * np.tanh(j)
    new_h = np.tanh(new_c) * sig(o)
    out, (c1, h1) = cell(jnp.asarray(x), recurrax.LSTMStateTuple(c, h))
    assert_tree_close((out, c1, h1), (new_h, new_c, new_h), rtol=1e-12, atol=1e-12)


# --- The runners against a plain loop -------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths",
    [None, LENGTHS, np.array([2, 0, 1]), np.zeros(B, int)],
    ids=["full", "mixed", "short", "empty"],  # short, empty: steps past the longest row skipped
)
def test_static_rnn_matches_the_reference_loop(lengths):
    cell, xs, init = conv_cell(), frames(), random_state(3)
    outputs, state = jax.jit(
        lambda xs, init: recurrax.static_rnn(
            cell, [xs[:, t] for t in range(T)], initial_state=init, sequence_length=lengths
        )
    )(xs, init)
    ref_out, ref_state = reference_rnn(
        jax_reference_step(cell), np.moveaxis(np.asarray(xs), 1, 0), init, lengths
    )
    assert_tree_close((jnp.stack(outputs), state), (ref_out, ref_state), rtol=1e-12, atol=1e-12)
    if lengths is not None:  # zero past each row's length; the state frozen at its last step
        assert not np.any(np.asarray(jnp.stack(outputs))[2:, 2])
        assert_tree_close(jax.tree_util.tree_map(lambda a: a[1], state), (init.c[1], init.h[1]))


@pytest.mark.parametrize("time_major", [False, True])
def test_dynamic_rnn_matches_the_reference_loop(time_major):
    cell, xs = conv_cell(), frames()
    xs_nan = xs.at[2, 3:].set(jnp.nan)  # padding may hold anything
    run_xs = jnp.swapaxes(xs_nan, 0, 1) if time_major else xs_nan
    outputs, state = recurrax.dynamic_rnn(
        cell, run_xs, sequence_length=LENGTHS, dtype=F64, time_major=time_major
    )
    ref_out, ref_state = reference_rnn(
        jax_reference_step(cell),
        np.moveaxis(np.asarray(xs), 1, 0),
        cell.zero_state(B, F64),
        LENGTHS,
    )
    outputs = outputs if time_major else jnp.swapaxes(outputs, 0, 1)
    assert outputs.shape == (T, B, H, W, C)
    assert_tree_close((outputs, state), (ref_out, ref_state), rtol=1e-12, atol=1e-12)
    # The same under jax.jit with traced lengths (the engine's own loop and buffers).
    jitted = jax.jit(lambda x, n: recurrax.dynamic_rnn(cell, x, sequence_length=n, dtype=F64))
    out_j, state_j = jitted(xs_nan, jnp.asarray(LENGTHS))
    assert_tree_close((jnp.swapaxes(out_j, 0, 1), state_j), (ref_out, ref_state), 1e-12, 1e-12)


def test_dynamic_rnn_over_zero_steps():
    cell, init = conv_cell(), random_state(3)
    outputs, state = recurrax.dynamic_rnn(
        cell, frames(shape=(B, 0, H, W, C_IN)), initial_state=init
    )
    assert outputs.shape == (B, 0, H, W, C)
    assert_tree_close(state, init, rtol=0, atol=0)


def probe_loss(run, cell, xs, init, lengths):
    """A loss that reads every output and both parts of the final state."""
    outputs, (c, h) = run(cell, xs, init, lengths)
    return jnp.sum(outputs * normal(9, (B, T, H, W, C))) + jnp.sum(jnp.sin(c)) + jnp.sum(h**2)


@functools.cache
def loop_gradients():
    """The plain loop's gradients with respect to the cell, the inputs and the initial state."""
    grad = jax.jit(jax.grad(functools.partial(probe_loss, loop_rnn), argnums=(0, 1, 2)))
    return grad(conv_cell(), frames(), random_state(3), LENGTHS)


@pytest.mark.parametrize(
    "options, traced",
    [
        (dict(memory="store"), False),  # lax.scan and XLA's autodiff
        (dict(memory="store"), True),  # the engine's stored residuals
        (dict(memory="store", swap_memory=True), True),
        (dict(memory="recompute"), False),
        (dict(memory=recurrax.CheckpointEvery(2)), True),
        (dict(memory=recurrax.Revolve(2)), False),
        (dict(memory=None, memory_budget=10**9), False),
    ],
    ids=[
        "store",
        "store_traced",
        "swap_traced",
        "recompute",
        "every2_traced",
        "revolve2",
        "budget",
    ],
)
@pytest.mark.xdist_group("shapes_loop_gradients")  # one process compiles loop_gradients once
def test_gradients_match_the_plain_loop(options, traced):
    def engine(cell, xs, init, lengths):
        return recurrax.dynamic_rnn(cell, xs, lengths, initial_state=init, **options)

    grad = jax.grad(functools.partial(probe_loss, engine), argnums=(0, 1, 2))
    args = (conv_cell(), frames(), random_state(3))
    if traced:
        got = jax.jit(grad)(*args, jnp.asarray(LENGTHS))
    else:  # NumPy lengths stay concrete under jax.jit
        got = jax.jit(lambda *a: grad(*a, LENGTHS))(*args)
    assert_tree_close(got, loop_gradients(), rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(got[0].kernel) != 0)  # every weight gets a gradient
    assert not np.any(np.asarray(got[1])[1]) and not np.any(np.asarray(got[1])[2, 2:])


# --- Paths, wrappers, stacks, directions ----------------------------------------------------------


def test_a_shaped_cell_runs_on_the_generic_path_and_fast_paths_refuse_it():
    cell, xs = conv_cell(), frames()
    auto = recurrax.dynamic_rnn(cell, xs, dtype=F64)
    generic = recurrax.dynamic_rnn(cell, xs, dtype=F64, implementation="generic")
    assert_tree_close(auto, generic, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"implementation='fused' needs .*; got ConvLSTMCell\."):
        recurrax.dynamic_rnn(cell, xs, dtype=F64, implementation="fused")
    with pytest.raises(ValueError, match=r"implementation='pallas' does not support ConvLSTMCell"):
        recurrax.dynamic_rnn(cell, xs, dtype=jnp.float32, implementation="pallas")
    stack = recurrax.MultiRNNCell([cell, conv_cell(2, (H, W, C))])
    with pytest.raises(ValueError, match="layer 0 of the MultiRNNCell is a ConvLSTMCell"):
        recurrax.dynamic_rnn(stack, xs, dtype=F64, implementation="fused")


def test_multi_rnn_cell_of_two_conv_cells():
    first, second = conv_cell(0), conv_cell(2, (H, W, C), channels=2)  # 2 output channels
    stack = recurrax.MultiRNNCell([first, second])
    xs = frames()

    @jax.jit
    def two_layers(x, state):
        y1, s1 = first(x, state[0])
        y2, s2 = second(y1, state[1])
        return y2, (s1, s2)

    def step(t, x, state):
        return _to_np(two_layers(jnp.asarray(x), jax.tree_util.tree_map(jnp.asarray, state)))

    run = jax.jit(lambda x: recurrax.dynamic_rnn(stack, x, sequence_length=LENGTHS, dtype=F64))
    outputs, state = run(xs)
    assert outputs.shape == (B, T, H, W, 2)
    ref_out, ref_state = reference_rnn(
        step, np.moveaxis(np.asarray(xs), 1, 0), stack.zero_state(B, F64), LENGTHS
    )
    assert_tree_close((jnp.swapaxes(outputs, 0, 1), state), (ref_out, ref_state), 1e-12, 1e-12)
    with pytest.raises(ValueError) as info:
        recurrax.MultiRNNCell([first, conv_cell(2, (H, W, 2))])
    assert str(info.value) == (
        "MultiRNNCell layers do not chain: cells[0].output_size=TensorShape((3, 3, 3)) but "
        "cells[1].input_size=TensorShape((3, 3, 2)). Build layer 1 with "
        "input_size=TensorShape((3, 3, 3))."
    )


def test_residual_wrapper_adds_shaped_inputs():
    cell = recurrax.ResidualWrapper(conv_cell(0, (H, W, C)))
    xs = frames(shape=(B, T, H, W, C))
    outputs, _ = recurrax.dynamic_rnn(cell, xs, sequence_length=LENGTHS, dtype=F64)
    inner, _ = recurrax.dynamic_rnn(cell.cell, xs, sequence_length=LENGTHS, dtype=F64)
    valid = (np.arange(T)[None, :] < LENGTHS[:, None])[..., None, None, None]
    assert_tree_close(outputs, np.where(valid, inner + xs, 0.0), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="ResidualWrapper needs output_size == input_size"):
        recurrax.ResidualWrapper(conv_cell())


def test_variational_dropout_masks_have_shape_one_by_state_shape():
    # TF1: a variational mask is [1, *shape]: one mask for every row and every step, drawn
    # over the whole [H, W, C] shape (not broadcast over H and W).
    cell = conv_cell()
    wrapped = recurrax.DropoutWrapper(
        cell,
        output_keep_prob=0.5,
        state_keep_prob=0.5,
        variational_recurrent=True,
        key=jax.random.key(5),
    )
    xs, init = frames(), random_state(3)

    @jax.jit
    def one_step(x, state):
        _, k_state, k_out = jax.random.split(wrapped.key, 3)
        masks = [
            jax.random.bernoulli(jax.random.split(k, 1)[0], 0.5, (1, H, W, C))
            for k in (k_out, k_state)
        ]
        return wrapped.at_step(2)(x, state), cell(x, state), masks

    (out, state), (inner_out, inner_state), (out_mask, h_mask) = one_step(xs[:, 0], init)
    assert 0 < np.mean(out_mask) < 1 and np.any(out_mask[0, 0] != out_mask[0, 1])
    assert_tree_close(out, jnp.where(out_mask, inner_out * 2, 0.0), rtol=1e-12, atol=0)
    assert_tree_close(state.h, jnp.where(h_mask, inner_state.h * 2, 0.0), rtol=1e-12, atol=0)
    assert_tree_close(state.c, inner_state.c, rtol=0, atol=0)  # c is never dropped
    # Through dynamic_rnn: the same mask at every step of every row.
    outputs, _ = jax.jit(lambda x: recurrax.dynamic_rnn(wrapped, x, dtype=F64))(xs)
    dropped = np.asarray(outputs) == 0.0
    assert np.array_equal(dropped, np.broadcast_to(~np.asarray(out_mask)[:, None], dropped.shape))


def test_bidirectional_runners_match_the_reference():
    fw, bw = conv_cell(0), conv_cell(4)
    xs = frames()
    (out_fw, out_bw), (s_fw, s_bw) = recurrax.bidirectional_dynamic_rnn(
        fw, bw, xs, sequence_length=LENGTHS, dtype=F64
    )
    (ref_fw, ref_bw), (ref_sfw, ref_sbw) = reference_bidirectional(
        jax_reference_step(fw),
        jax_reference_step(bw),
        np.moveaxis(np.asarray(xs), 1, 0),
        fw.zero_state(B, F64),
        bw.zero_state(B, F64),
        LENGTHS,
    )
    got = (jnp.swapaxes(out_fw, 0, 1), jnp.swapaxes(out_bw, 0, 1), s_fw, s_bw)
    assert_tree_close(got, (ref_fw, ref_bw, ref_sfw, ref_sbw), rtol=1e-12, atol=1e-12)
    # static_bidirectional_rnn concatenates each step along axis 1, as TF1 does.
    steps, st_fw, st_bw = recurrax.static_bidirectional_rnn(
        fw, bw, [xs[:, t] for t in range(T)], dtype=F64, sequence_length=LENGTHS
    )
    assert steps[0].shape == (B, 2 * H, W, C)
    want = np.concatenate([ref_fw, ref_bw], axis=2)  # [T, B, 2H, W, C]
    assert_tree_close((jnp.stack(steps), st_fw, st_bw), (want, ref_sfw, ref_sbw), 1e-12, 1e-12)


def test_raw_rnn_with_a_shaped_state():
    cell, xs = conv_cell(), frames()
    lengths = jnp.asarray(LENGTHS)

    def loop_fn(time, cell_output, cell_state, loop_state):
        finished = time >= lengths
        x = xs[:, jnp.minimum(time, T - 1)]
        if cell_output is None:  # time 0: the emit template is the cell's output_size
            return finished, x, cell.zero_state(B, F64), None, None
        return finished, x, cell_state, cell_output, None

    emit, state, _ = recurrax.raw_rnn(cell, loop_fn, max_steps=T)
    assert emit.shape == (T, B, H, W, C)
    ref_out, ref_state = reference_rnn(
        jax_reference_step(cell),
        np.moveaxis(np.asarray(xs), 1, 0),
        cell.zero_state(B, F64),
        LENGTHS,
    )
    assert_tree_close((emit, state), (ref_out, ref_state), rtol=1e-12, atol=1e-12)


# --- int and TensorShape((n,)) are the same size --------------------------------------------------


class DenseCell(recurrax.RNNCell):
    """``h' = tanh(x @ W + h @ U)`` with its sizes given as ``size`` (an int or a shape)."""

    W: jax.Array
    U: jax.Array
    size: object = eqx.field(static=True)

    state_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size)

    def __call__(self, x, h, *, key=None):
        h = jnp.tanh(x @ self.W + h @ self.U)
        return h, h


def test_an_int_and_a_one_dimensional_shape_give_the_same_results():
    W, U = normal(0, (2, 4)), normal(1, (4, 4))
    as_int, as_shape = DenseCell(W, U, 4), DenseCell(W, U, recurrax.TensorShape((4,)))
    xs = normal(2, (B, T, 2))

    def run(cell):
        dropped = recurrax.DropoutWrapper(
            cell, output_keep_prob=0.5, variational_recurrent=True, key=jax.random.key(3)
        )
        return (
            cell.zero_state(B, F64),
            recurrax.dynamic_rnn(cell, xs, sequence_length=LENGTHS, dtype=F64),
            recurrax.static_rnn(cell, list(jnp.swapaxes(xs, 0, 1)), dtype=F64),
            recurrax.dynamic_rnn(dropped, xs, dtype=F64),
        )

    a, b = jax.jit(run)(as_int), jax.jit(run)(as_shape)
    assert_tree_close(a, b, rtol=0, atol=0)
    assert a[0].shape == (B, 4) and np.any(np.asarray(a[1][0]))


# --- Errors ---------------------------------------------------------------------------------------


def test_initial_state_of_a_wrong_shape_names_both_shapes():
    cell, xs = conv_cell(), frames()
    bad = recurrax.LSTMStateTuple(jnp.zeros((B, H, W, C)), jnp.zeros((B, H, W + 1, C)))
    with pytest.raises(ValueError) as info:
        recurrax.dynamic_rnn(cell, xs, initial_state=bad)
    assert str(info.value) == (
        "initial_state must have shapes [(3, 3, 3, 3), (3, 3, 3, 3)] (batch, *state shape) in "
        "order; array 1 has shape (3, 3, 4, 3), expected (3, 3, 3, 3)."
    )
    with pytest.raises(ValueError, match=r"initial_state must have shapes \[\(3, 3, 3, 3\)"):
        recurrax.static_rnn(cell, [xs[:, 0]], initial_state=(jnp.zeros((B, H * W * C)),) * 2)


def test_shaped_inputs_are_checked_against_the_input_shape():
    cell = conv_cell()
    with pytest.raises(ValueError) as info:
        recurrax.dynamic_rnn(cell, frames(shape=(B, T, H, W + 1, C_IN)), dtype=F64)
    assert str(info.value) == (
        "inputs has feature shape (3, 4, 2) but cell.input_size is TensorShape((3, 3, 2)): the "
        "inputs' axes after the batch (and time) axes must equal the cell's input_size."
    )
    with pytest.raises(ValueError, match=r"inputs must have rank 3 or more, \[batch, time, "):
        recurrax.dynamic_rnn(cell, jnp.zeros((B, T)), dtype=F64)
    with pytest.raises(ValueError, match=r"inputs has feature shape \(3, 3, 2\) but cell_bw"):
        recurrax.bidirectional_dynamic_rnn(cell, conv_cell(0, (H, W, 1)), frames(), dtype=F64)
    # A cell with an int input_size keeps the rank-3 rule.
    rnn = random_cell(lambda: recurrax.BasicRNNCell(3, 2, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"inputs must have rank 3, \[batch, time, input_size\]"):
        recurrax.dynamic_rnn(rnn, jnp.zeros((B, T, 2, 1)))


def test_step_check_reads_shaped_state_sizes():
    size = conv_cell().state_size
    x, good = frames()[:, 0], random_state(3)
    check_step("ConvLSTMCell", x, recurrax.TensorShape((H, W, C_IN)), size, good)
    with pytest.raises(ValueError) as info:
        check_step("ConvLSTMCell", x, recurrax.TensorShape((H, W, C_IN)), size, (good.c, x))
    assert str(info.value).startswith(
        "ConvLSTMCell: state must have shape LSTMStateTuple(c=(3, 3, 3, 3), h=(3, 3, 3, 3))"
    )
    with pytest.raises(ValueError, match=r"inputs must have shape \[batch, 3, 3, 1\]"):
        check_step("ConvLSTMCell", x, recurrax.TensorShape((H, W, 1)), size, good)
