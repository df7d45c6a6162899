"""TF1's own RNN tests, ported: the same cells, sizes, initializers, inputs and assertions.

The sources are TF 1.15's ``tensorflow/python/kernel_tests/rnn_cell_test.py`` (classes
``RNNTest``, ``LSTMTest``, ``BidirectionalRNNTest``, ``MultiDimensionalLSTMTest``,
``NestedLSTMTest``, ``GRUTest``, ``RawRNNTest``, ``RNNCellTest``, ``DropoutWrapperTest``),
``tensorflow/python/kernel_tests/rnn_test.py`` (``RNNTest``) and their tf.contrib
predecessors ``tensorflow/contrib/rnn/python/kernel_tests/core_rnn_cell_test.py`` and
``core_rnn_test.py``, which hold the same tests (and the same hard-coded numbers) under the same
class names. Each test names its source. Hard-coded expected values are TF1's, copied from
those files; TF1's ``variable_scope("root", initializer=constant_initializer(0.5))`` becomes a
constant initializer argument (biases with their own initializers in TF1 keep them here too);
TF1's seeded random initializers become recurrax keys, and the assertions that depended on them
(static == dynamic, forward == backward, ...) are kept, with the NumPy references of
``reference.py`` where TF1 only ran the graph. TF1's ``state_is_tuple=False`` states become
``LSTMStateTuple`` states (recurrax refuses the concatenated state), with the same numbers.

Also ported elsewhere: ``LSTMTest.testCellClipping``, ``RNNTest.testCellGetInitialState``
(``rnn_test.py``), ``DropoutWrapperTest.testDropoutWrapperProperties`` in
``test_tf1_behaviour.py``; ``testOutputProjectionWrapper``, ``testInputProjectionWrapper``,
``testEmbeddingWrapper`` (``core_rnn_cell_test.py``) and ``LayerNormBasicLSTMCellTest`` in
``test_contrib_cells.py``.

Not ported (graph-mode machinery, or an API recurrax does not have):

- ``testScope``, ``testBidirectionalRNNScope``, ``testDynamicScope``, ``testRawRNNScope``,
  ``testStateSaverRNNScope``: variable scopes of a graph; what they check of the names (the
  runner's default scope) is :func:`test_variable_names_live_under_the_runners_scope`.
- ``testSharingWeightsWithDifferentNamescope``: name scopes; a cell object is its weights.
- ``testNoProjNoSharding{Simple,Tuple,NestedTuple}StateSaver``, ``StateSaverRNNTest``:
  ``static_state_saving_rnn`` and state savers (queue-backed graph state) are not in recurrax.
- ``testProjSharding``, ``testShardNoShardEquivalentOutput``: ``num_unit_shards`` and
  ``num_proj_shards`` other than 1 are refused by design (one array per weight;
  ``test_cells.py`` pins the error); the unsharded halves are ported.
- ``_testStateTupleWithProjAndSequenceLength``: compares ``state_is_tuple=False`` with
  ``True``; recurrax refuses ``False`` (``test_tf1_behaviour.py`` pins the error).
- ``testDynamicRNNAllowsUnknownTimeDimension``: placeholders with an unknown time axis; JAX
  shapes are concrete (each ``T`` is its own trace).
- ``testBasicRNNCellNotTrainable``: custom variable getters and trainable collections.
- ``testLinear`` (``core_rnn_cell_test.py``): the private ``_Linear`` helper; ``SlimRNNCellTest``:
  the private ``_SlimRNNCell``; ``testLSTMCellLayerNorm``: contrib's ``LayerNormLSTMCell``, which
  recurrax does not have (it has ``LayerNormBasicLSTMCell``).
- ``testDeviceWrapper*``, ``TensorArrayOnCorrectDeviceTest``: device placement.
- ``testDeviceWrapperSerialization``, ``testResidualWrapperSerialization``,
  ``testDropoutWrapperSerialization``: Keras ``get_config`` / ``from_config``.
- ``testEagerMemory``, ``testTensorArrayStateIsAccepted`` (``rnn_test.py``): TensorArray states.
- ``testRNNWithKeras*Cell``, ``testStaticRNNWithKerasSimpleRNNCell``,
  ``testKerasAndTFRNNLayerOutputComparison``, ``testRNNCellSerialization``,
  ``testRNNCellActsLikeKerasRNNCellInProperScope`` (``rnn_test.py``): Keras layers and models;
  ``testSimpleRNNCellAndBasicRNNCellComparison`` is ported with Keras's formula in NumPy.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from reference import (
    assert_tree_close,
    basic_lstm_step,
    jax_step,
    np_step,
    reference_rnn,
    zeros_like_state,
)
from reference_contrib import np_step as contrib_np_step

KEY = jax.random.key(0)
F32, F64 = jnp.float32, jnp.float64
RUNNERS = ["static", "dynamic"]


# TF1's float32 numbers, checked to TF1's own 1e-6: full float32 dots, also on a GPU.
pytestmark = pytest.mark.usefixtures("full_float32_dots")


def constant(value):
    """TF1's ``init_ops.constant_initializer(value)`` as a recurrax initializer."""

    def init(key, shape, dtype=F32):
        return jnp.full(shape, value, dtype)

    return init


def run(runner, cell, x_tbi, **kwargs):
    """``static_rnn`` on the steps of ``x_tbi [T, B, ...]`` or ``dynamic_rnn`` time-major on it:
    ``(outputs [T, B, out], final_state)`` either way."""
    if runner == "static":
        outputs, state = recurrax.static_rnn(cell, list(x_tbi), **kwargs)
        return jnp.stack(outputs), state
    return recurrax.dynamic_rnn(cell, jnp.asarray(x_tbi), time_major=True, **kwargs)


@eqx.filter_jit
def run_compiled(runner, cell, x_tbi, kwargs):
    """:func:`run` compiled as one program (TF1 runs a graph); ``kwargs`` is a dict of runner
    arguments (arrays in it are traced, lengths included)."""
    return run(runner, cell, x_tbi, **kwargs)


def uniform_cell(build, low, high, seed=23489):
    """The cell ``build()`` returns (one without PRNG keys), built abstractly and given weights
    drawn uniformly from ``[low, high)`` by NumPy: TF1's seeded
    ``random_uniform_initializer(low, high)``, without compiling a random-number kernel per
    weight shape."""

    rng = np.random.default_rng(seed)

    def draw(x):
        if isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(rng.uniform(low, high, x.shape).astype(x.dtype))
        return x

    return jax.tree_util.tree_map(draw, eqx.filter_eval_shape(build))


def assert_close(actual, expected, rtol=1e-6, atol=1e-6):
    """TF's ``assertAllClose`` (its defaults: ``rtol = atol = 1e-6``) on nests; a list of
    numbers is one array, as for TF."""
    if isinstance(expected, list):
        expected = np.asarray(expected)
    assert_tree_close(actual, expected, rtol, atol)


def lstm_state(c, h, dtype=F32):
    return recurrax.LSTMStateTuple(jnp.asarray(c, dtype), jnp.asarray(h, dtype))


class Plus1RNNCell(eqx.Module):
    """TF1's test cell: ``(output, new_state) = (input + 1, state + 1)``."""

    state_size: int = eqx.field(default=5, static=True)
    output_size: int = eqx.field(default=5, static=True)

    def __call__(self, inputs, state):
        return inputs + 1, state + 1


# --- rnn_cell_test.py, RNNTest -------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_invalid_sequence_length_shape(runner):
    """``rnn_cell_test.py``, ``RNNTest.testInvalidSequenceLengthShape`` (``static_rnn``, a
    scalar length) and ``rnn_test.py``, ``RNNTest.testInvalidSequenceLengthShape``
    (``dynamic_rnn``, lengths ``[[4]]``): lengths must be a vector (TF1: "must be a vector")."""
    inputs = [jnp.ones((3, 4), F32)]
    with pytest.raises(ValueError, match=r"sequence_length must have shape \[batch\]"):
        if runner == "static":
            recurrax.static_rnn(Plus1RNNCell(), inputs, dtype=F32, sequence_length=4)
        else:
            recurrax.dynamic_rnn(
                Plus1RNNCell(), jnp.stack(inputs), dtype=F32, sequence_length=[[4]]
            )


@pytest.mark.parametrize("runner", RUNNERS)
def test_rnn(runner):
    """``rnn_cell_test.py``, ``RNNTest.testRNN`` (``static_rnn``; ``dynamic_rnn`` alike): the
    same input at each of 8 steps, outputs ``input + 1``, final state 8."""
    batch_size, input_size, max_length = 2, 5, 8
    input_value = np.random.default_rng(0).standard_normal((batch_size, input_size))
    x = jnp.asarray(np.stack(max_length * [input_value]), F32)
    outputs, state = run(runner, Plus1RNNCell(), x, dtype=F32)
    assert outputs.shape == x.shape and outputs.dtype == x.dtype
    for v in outputs:
        assert_close(v, input_value + 1.0)
    assert_close(state, max_length * np.ones((batch_size, input_size)))


def test_dropout():
    """``rnn_cell_test.py``, ``RNNTest.testDropout``: ``input_keep_prob=1e-6`` drops every input,
    so the outputs are ``0 + 1``; without the wrapper they are ``input + 1``."""
    cell = Plus1RNNCell()
    full_dropout_cell = recurrax.DropoutWrapper(cell, input_keep_prob=1e-6, key=KEY)
    assert full_dropout_cell.wrapped_cell is cell  # TF1: the checkpoint dependency "cell"
    input_value = np.random.default_rng(1).standard_normal((2, 5))
    inputs = 8 * [jnp.asarray(input_value, F32)]
    outputs, _ = recurrax.static_rnn(cell, inputs, dtype=F32)
    dropped_outputs, _ = recurrax.static_rnn(full_dropout_cell, inputs, dtype=F32)
    for out, inp in zip(outputs, inputs):
        assert out.shape == inp.shape and out.dtype == inp.dtype
    for v in outputs:
        assert_close(v, input_value + 1.0)
    for d_v in dropped_outputs:
        assert_close(d_v, np.ones_like(input_value))


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_calculation(runner):
    """``rnn_cell_test.py``, ``RNNTest.testDynamicCalculation`` (``static_rnn`` with lengths
    ``[2, 3]``; ``dynamic_rnn`` alike): outputs are zero past each row's length and the final
    state is each row's state at its last step."""
    input_size = 5
    input_value = np.random.default_rng(2).standard_normal((2, input_size))
    x = jnp.asarray(np.stack(8 * [input_value]), F32)
    values, state = run(runner, Plus1RNNCell(), x, dtype=F32, sequence_length=np.int64([2, 3]))
    for v in values[:2]:
        assert_close(v, input_value + 1.0)
    assert_close(values[2], np.vstack((np.zeros(input_size), 1.0 + input_value[1, :])))
    for v in values[3:]:
        np.testing.assert_array_equal(v, np.zeros_like(input_value))
    np.testing.assert_array_equal(
        state, np.vstack((2.0 * np.ones(input_size), 3.0 * np.ones(input_size)))
    )


def test_variable_names_live_under_the_runners_scope():
    """What ``testScope`` (``RNNTest``), ``testBidirectionalRNNScope``,
    ``testBidirectionalDynamicRNNScope``, ``GRUTest.testDynamicScope`` and
    ``RawRNNTest.testRawRNNScope`` (``rnn_cell_test.py``) check of the names: every variable
    lives under the scope passed (``"prefix"``), else under the runner's default, ``rnn`` for
    one cell and ``bidirectional_rnn`` for a pair."""
    lstm = eqx.filter_eval_shape(recurrax.LSTMCell, 3, 5, key=KEY)  # names need no arrays
    gru = eqx.filter_eval_shape(recurrax.GRUCell, 3, 5, key=KEY)
    for cell, default in [(lstm, "rnn"), (gru, "rnn"), ((lstm, lstm), "bidirectional_rnn")]:
        for scope, prefix in [("prefix", "prefix"), (None, default)]:
            names = recurrax.tf1_variable_names(cell, scope=scope)
            assert names and all(name.startswith(prefix + "/") for name in names)


# --- rnn_cell_test.py, LSTMTest ------------------------------------------------------------------

SMALL = dict(num_units=3, input_size=5, batch_size=2, max_length=8)


def _small_inputs(seed, dtype=F32):
    """TF1's ``max_length * [placeholder]`` fed with one ``randn(batch_size, input_size)``."""
    value = np.random.default_rng(seed).standard_normal((SMALL["batch_size"], SMALL["input_size"]))
    return [jnp.asarray(value, dtype)] * SMALL["max_length"]


def test_dtype():
    """``rnn_cell_test.py``, ``LSTMTest.testDType``: the bias is float32 by default and takes the
    ``dtype`` passed."""
    build = eqx.filter_eval_shape  # the dtypes, without drawing the weights
    assert build(recurrax.LSTMCell, 10, 50, key=KEY).bias.dtype == F32
    for dtype in [jnp.float16, F32, F64]:
        assert build(recurrax.LSTMCell, 10, 50, key=KEY, dtype=dtype).bias.dtype == dtype


@pytest.mark.parametrize(
    "options",
    [{}, dict(use_peepholes=True, num_proj=4)],
    ids=["testNoProjNoSharding", "testProjNoSharding"],
)
def test_no_sharding(options):
    """``rnn_cell_test.py``, ``LSTMTest.testNoProjNoSharding`` and ``testProjNoSharding``:
    ``static_rnn`` of an ``LSTMCell`` (initializer uniform in ``±0.01``) gives one
    ``[batch, num_proj or num_units]`` output per step (TF1 ran them; here they also equal the
    reference)."""
    cell = uniform_cell(lambda: recurrax.LSTMCell(3, 5, key=KEY, **options), -0.01, 0.01)
    inputs = _small_inputs(3)
    outputs, state = recurrax.static_rnn(cell, inputs, dtype=F32)
    assert len(outputs) == len(inputs)
    for out in outputs:
        assert out.shape == (2, options.get("num_proj", 3))
    ref_out, ref_state = reference_rnn(
        np_step(cell), np.stack(inputs), zeros_like_state(cell.state_size, 2)
    )
    assert_close(jnp.stack(outputs), ref_out, 1e-5, 1e-7)
    assert_close(state, ref_state, 1e-5, 1e-7)


def test_double_input():
    """``rnn_cell_test.py``, ``LSTMTest.testDoubleInput``: float64 inputs and a float64 initial
    state give float64 outputs (uniform initializer in ``±1``, peepholes, ``num_proj=4``)."""
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(3, 5, key=KEY, use_peepholes=True, num_proj=4), -1, 1
    )
    inputs = _small_inputs(4, F64)
    outputs, _ = recurrax.static_rnn(cell, inputs, initial_state=cell.zero_state(2, F64))
    assert len(outputs) == len(inputs)
    assert outputs[0].dtype == inputs[0].dtype == F64
    ref_out, _ = reference_rnn(
        np_step(cell), np.stack(inputs), zeros_like_state(cell.state_size, 2)
    )
    assert_close(jnp.stack(outputs), ref_out, 1e-5, 1e-6)


def test_double_input_with_dropout_and_dynamic_calculation():
    """``rnn_cell_test.py``, ``LSTMTest.testDoubleInputWithDropoutAndDynamicCalculation``:
    float64 inputs through ``DropoutWrapper(cell, 0.5)`` with lengths ``[2, 3]`` keep float64
    (and follow the per-row contract, masks included)."""
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(3, 5, key=KEY, use_peepholes=True, num_proj=4), -0.01, 0.01
    )
    dropout_cell = recurrax.DropoutWrapper(cell, 0.5, key=jax.random.key(1))
    inputs = _small_inputs(5, F64)
    lengths = np.int64([2, 3])
    outputs, state = recurrax.static_rnn(
        dropout_cell, inputs, sequence_length=lengths, initial_state=cell.zero_state(2, F64)
    )
    assert len(outputs) == len(inputs)
    assert outputs[0].dtype == F64 and state.c.dtype == state.h.dtype == F64
    ref_out, ref_state = reference_rnn(
        jax_step(dropout_cell), np.stack(inputs), zeros_like_state(cell.state_size, 2), lengths
    )
    assert_close(jnp.stack(outputs), ref_out, 1e-5, 1e-6)
    assert_close(state, ref_state, 1e-5, 1e-6)


def test_sharing_weights_with_reuse():
    """``rnn_cell_test.py``, ``LSTMTest.testSharingWeightsWithReuse``: the same weights give the
    same outputs; other weights (another initializer seed) give other outputs."""

    def make(seed):
        def build():
            return recurrax.LSTMCell(3, 5, key=KEY, use_peepholes=True, num_proj=4)

        return uniform_cell(build, -1, 1, seed)

    cell, cell_d = make(23489), make(23490)
    inputs = _small_inputs(6)
    outputs0, _ = recurrax.static_rnn(cell, inputs, dtype=F32)
    outputs1, _ = recurrax.static_rnn(cell, inputs, dtype=F32)
    outputs2, _ = recurrax.static_rnn(cell_d, inputs, dtype=F32)
    assert len(outputs0) == len(outputs1) == len(outputs2)
    for o1, o2, o3 in zip(outputs0, outputs1, outputs2):
        np.testing.assert_array_equal(o1, o2)
        assert np.linalg.norm(o1 - o3) > 1e-6


def _static_and_dynamic(cell, seed):
    """TF1's static-vs-dynamic setup: 8 steps of one input, lengths ``[4, 6]``, time-major."""
    x = jnp.stack(_small_inputs(seed))
    kwargs = dict(dtype=F32, sequence_length=(4, 6))
    return [run_compiled(runner, cell, x, kwargs) for runner in RUNNERS]


def test_dynamic_rnn_with_tuple_states():
    """``rnn_cell_test.py``, ``LSTMTest.testDynamicRNNWithTupleStates``: both runners return an
    ``LSTMStateTuple`` (``state[0] is state.c``) and agree (TF1 compares with
    ``assertAllClose`` where XLA compiles the loop, as here)."""
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(3, 5, key=KEY, use_peepholes=True, num_proj=4), -0.01, 0.01
    )
    (outputs_static, state_static), (outputs_dynamic, state_dynamic) = _static_and_dynamic(cell, 7)
    for state in (state_static, state_dynamic):
        assert isinstance(state, recurrax.LSTMStateTuple)
        assert state[0] is state.c and state[1] is state.h
    assert_close(outputs_static, outputs_dynamic)
    assert_close(np.hstack(state_static), np.hstack(state_dynamic))


@pytest.mark.slow  # four unrolled LSTM layers
def test_dynamic_rnn_with_nested_tuple_states():
    """``rnn_cell_test.py``, ``LSTMTest.testDynamicRNNWithNestedTupleStates``: a
    ``MultiRNNCell`` of four ``LSTMCell(3 + i, num_proj=4 + i)``: four state pairs, zero state
    shapes, static == dynamic."""

    def _cell(i):  # input size: 5, then the previous layer's num_proj
        n_in = 5 if i == 0 else 4 + i - 1
        return recurrax.LSTMCell(3 + i, n_in, key=KEY, use_peepholes=True, num_proj=4 + i)

    cell = uniform_cell(lambda: recurrax.MultiRNNCell([_cell(i) for i in range(4)]), -0.01, 0.01)
    assert len(cell.state_size) == 4
    for i in range(4):
        assert len(cell.state_size[i]) == 2
    test_zero = cell.zero_state(1, F32)
    assert len(test_zero) == 4
    for i in range(4):
        assert test_zero[i][0].shape[1] == cell.state_size[i][0]
        assert test_zero[i][1].shape[1] == cell.state_size[i][1]
    (outputs_static, state_static), (outputs_dynamic, state_dynamic) = _static_and_dynamic(cell, 8)
    assert_close(outputs_static, outputs_dynamic)
    flat = jax.tree_util.tree_leaves
    assert_close(np.hstack(flat(state_static)), np.hstack(flat(state_dynamic)))


@pytest.mark.slow  # an unrolled LSTM's gradient program compiles slowly
@pytest.mark.parametrize("use_sequence_length", [False, True])
def test_dynamic_equivalent_to_static_rnn(use_sequence_length):
    """``rnn_cell_test.py``, ``LSTMTest.testDynamicEquivalentToStaticRNN`` and
    ``...WithSequenceLength``: same outputs and state, and the same gradients with respect to
    the inputs (of all outputs and the state together, and of the first output, the last
    output and the state one by one) and with respect to every weight."""
    time_steps, batch_size, input_size = 8, 2, 5
    rng = np.random.default_rng(23489)
    input_values = jnp.asarray(rng.standard_normal((time_steps, batch_size, input_size)), F32)
    sequence_length = rng.integers(0, time_steps, batch_size) if use_sequence_length else None
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(3, input_size, key=KEY, use_peepholes=True, num_proj=4),
        -0.01,
        0.01,
    )
    params, static_part = eqx.partition(cell, eqx.is_inexact_array)

    def values_and_gradients(kind):
        """``(outputs, state)`` and the gradients of each pick, in one compiled program: one
        forward pass and one backward pass per cotangent (TF1's ``gradients(ys, xs)`` is the
        gradient of the sum of every ``y``)."""

        def f(p, x):
            return run(
                kind, eqx.combine(p, static_part), x, dtype=F32, sequence_length=sequence_length
            )

        def all_of_it(p, x):
            (out, state), vjp = jax.vjp(f, p, x)
            ones = jax.tree_util.tree_map(jnp.ones_like, (out, state))
            zeros = jax.tree_util.tree_map(jnp.zeros_like, (out, state))
            cotangents = [
                ones,  # all outputs and the state
                (zeros[0].at[0].set(1.0), zeros[1]),  # the first output
                (zeros[0].at[-1].set(1.0), zeros[1]),  # the last output
                (zeros[0], ones[1]),  # the state
            ]
            stacked = jax.tree_util.tree_map(lambda *c: jnp.stack(c), *cotangents)
            return (out, state), jax.vmap(vjp)(stacked)

        return jax.jit(all_of_it)(params, input_values)

    static, dynamic = values_and_gradients("static"), values_and_gradients("dynamic")
    assert_close(static, dynamic)
    # Every weight and the inputs reach the outputs: no gradient of the sum is all zeros.
    for g in jax.tree_util.tree_leaves(static[1]):  # [4, ...]: one row per pick, "all" first
        assert np.abs(np.asarray(g)[0]).max() > 0


# --- rnn_cell_test.py, BidirectionalRNNTest ------------------------------------------------------


@pytest.mark.parametrize("lengths", [[2, 3], None], ids=["lengths", "no_lengths"])
def test_static_bidirectional_rnn(lengths):
    """``rnn_cell_test.py``, ``BidirectionalRNNTest.testBidirectionalRNN`` and
    ``testBidirectionalRNNWithoutSequenceLength``: forward and backward cells with the same
    weights read the same input at every step, so the backward output is the forward one
    reversed in time within each row's length, and the final states are equal."""
    # TF1 draws both cells' weights with one seeded initializer: the same weights.
    cell_fw = uniform_cell(lambda: recurrax.LSTMCell(3, 5, key=KEY), -0.01, 0.01)
    cell_bw = uniform_cell(lambda: recurrax.LSTMCell(3, 5, key=KEY), -0.01, 0.01)
    inputs = _small_inputs(9)
    outputs, state_fw, state_bw = recurrax.static_bidirectional_rnn(
        cell_fw, cell_bw, inputs, dtype=F32, sequence_length=lengths
    )
    assert len(outputs) == len(inputs)
    for out in outputs:
        assert out.shape == (2, 6)
    out = np.stack(outputs)
    for b, n in enumerate(lengths or [8, 8]):
        for t in range(n):
            assert_close(out[t, b, 0:3], out[n - 1 - t, b, 3:6])
    assert_close(state_fw, state_bw)


@pytest.mark.parametrize("use_sequence_length", [True, False])
@pytest.mark.parametrize("use_time_major", [True, False])
def test_bidirectional_dynamic_rnn(use_time_major, use_sequence_length):
    """``rnn_cell_test.py``, ``BidirectionalRNNTest.testBidirectionalDynamicRNN``: as above for
    ``bidirectional_dynamic_rnn``, time-major or not, with or without lengths; TF1 asserts the
    mirrored outputs are *equal*. (Its ``use_shape`` and ``use_state_tuple`` options are
    placeholders' static shapes and the refused concatenated state.)"""
    cell_fw = uniform_cell(lambda: recurrax.LSTMCell(3, 5, key=KEY), -0.01, 0.01)
    cell_bw = uniform_cell(lambda: recurrax.LSTMCell(3, 5, key=KEY), -0.01, 0.01)
    inputs_c = jnp.stack(_small_inputs(10))  # [time, batch, depth]
    if not use_time_major:
        inputs_c = jnp.transpose(inputs_c, (1, 0, 2))
    lengths = np.int64([2, 3]) if use_sequence_length else None
    outputs, (state_fw, state_bw) = recurrax.bidirectional_dynamic_rnn(
        cell_fw, cell_bw, inputs_c, lengths, dtype=F32, time_major=use_time_major
    )
    out = np.asarray(jnp.concatenate(outputs, 2))
    assert out.shape == ((8, 2, 6) if use_time_major else (2, 8, 6))
    if not use_time_major:
        out = np.swapaxes(out, 0, 1)
    for b, n in enumerate([2, 3] if use_sequence_length else [8, 8]):
        for t in range(n):
            np.testing.assert_array_equal(out[t, b, 0:3], out[n - 1 - t, b, 3:6])
    assert_close(state_fw, state_bw)


# --- rnn_cell_test.py, MultiDimensionalLSTMTest and NestedLSTMTest -------------------------------


class DummyMultiDimensionalLSTM(eqx.Module):
    """TF1's test cell: inputs and states of any shape after ``[batch]`` (``TensorShape``
    sizes); ``(input + 1, (h + 1, c + 1))``."""

    dims: tuple = eqx.field(static=True)

    @property
    def output_size(self):
        return recurrax.TensorShape(self.dims)

    @property
    def state_size(self):
        return (recurrax.TensorShape(self.dims), recurrax.TensorShape(self.dims))

    def __call__(self, inputs, state):
        h, c = state
        return inputs + 1, (h + 1, c + 1)


class NestedRNNCell(eqx.Module):
    """TF1's test cell: inputs, outputs and states are pairs; each element plus one."""

    output_size: tuple = eqx.field(default=(5, 5), static=True)
    state_size: tuple = eqx.field(default=(6, 6), static=True)

    def __call__(self, inputs, state):
        (h, c), (x, y) = state, inputs
        return (x + 1, y + 1), (h + 1, c + 1)


def test_multi_dimensional_lstm_all_rnn_containers():
    """``rnn_cell_test.py``, ``MultiDimensionalLSTMTest.testMultiDimensionalLSTMAllRNNContainers``:
    steps of shape ``[batch, 3, 4, 5]`` through ``static_rnn``, ``dynamic_rnn`` and
    ``static_bidirectional_rnn`` (TF1's fourth container, ``static_state_saving_rnn``, is not
    in recurrax) with lengths ``[4, 6]``: equal outputs and states."""
    feature_dims = (3, 4, 5)
    cell = DummyMultiDimensionalLSTM(feature_dims)
    input_value = np.random.default_rng(11).standard_normal((2, *feature_dims))
    inputs = 8 * [jnp.asarray(input_value, F32)]
    lengths = [4, 6]
    outputs_static, state_static = recurrax.static_rnn(
        cell, inputs, dtype=F32, sequence_length=lengths
    )
    outputs_dynamic, state_dynamic = recurrax.dynamic_rnn(
        cell, jnp.stack(inputs), dtype=F32, time_major=True, sequence_length=lengths
    )
    outputs_bid, state_fw, state_bw = recurrax.static_bidirectional_rnn(
        cell, cell, inputs, dtype=F32, sequence_length=lengths
    )
    assert outputs_dynamic.shape == (8, 2, *feature_dims)
    for out, bid in zip(outputs_static, outputs_bid):
        assert out.shape == (2, *feature_dims)
        assert bid.shape == (2, 2 * feature_dims[0], *feature_dims[1:])  # TF1: concat on axis 1
    np.testing.assert_array_equal(np.stack(outputs_static), outputs_dynamic)
    double = np.concatenate((np.stack(outputs_static),) * 2, axis=2)
    np.testing.assert_array_equal(double, np.stack(outputs_bid))
    for state in (state_dynamic, state_fw, state_bw):
        np.testing.assert_array_equal(np.hstack(state_static), np.hstack(state))


def test_nested_io_lstm_all_rnn_containers():
    """``rnn_cell_test.py``, ``NestedLSTMTest.testNestedIOLSTMAllRNNContainers``: pairs of
    inputs, outputs and states through ``dynamic_rnn``, ``static_rnn`` and
    ``static_bidirectional_rnn`` with lengths ``[4, 6]``: equal outputs and states."""
    cell = NestedRNNCell()
    rng = np.random.default_rng(12)
    single_input = tuple(jnp.asarray(rng.standard_normal((2, 5)), F32) for _ in range(2))
    inputs = 8 * [single_input]
    inputs_c = tuple(jnp.stack([step[k] for step in inputs]) for k in range(2))
    lengths = [4, 6]
    outputs_dynamic, state_dynamic = recurrax.dynamic_rnn(
        cell, inputs_c, dtype=F32, time_major=True, sequence_length=lengths
    )
    outputs_static, state_static = recurrax.static_rnn(
        cell, inputs, dtype=F32, sequence_length=lengths
    )
    outputs_bid, state_fw, state_bw = recurrax.static_bidirectional_rnn(
        cell, cell, inputs, dtype=F32, sequence_length=lengths
    )
    static = np.asarray([np.stack(pair) for pair in outputs_static])  # [T, 2, B, 5]
    np.testing.assert_array_equal(static, np.transpose(np.asarray(outputs_dynamic), (1, 0, 2, 3)))
    bid = np.asarray([np.stack(pair) for pair in outputs_bid])
    np.testing.assert_array_equal(np.concatenate((static, static), axis=3), bid)
    for state in (state_dynamic, state_fw, state_bw):
        np.testing.assert_array_equal(np.hstack(state_static), np.hstack(state))


# --- rnn_cell_test.py, GRUTest and RawRNNTest ----------------------------------------------------


def test_gru_dynamic():
    """``rnn_cell_test.py``, ``GRUTest.testDynamic``: a ``GRUCell(3)`` through ``dynamic_rnn``,
    time-major, random lengths in ``[0, 8)`` (TF1 ran it; here it equals the reference)."""
    time_steps, batch_size, input_size = 8, 2, 5
    rng = np.random.default_rng(23489)
    input_values = rng.standard_normal((time_steps, batch_size, input_size))
    sequence_length = rng.integers(0, time_steps, batch_size)
    cell = uniform_cell(lambda: recurrax.GRUCell(3, input_size, key=KEY), -0.6, 0.6)
    outputs, state = recurrax.dynamic_rnn(
        cell, input_values, sequence_length=sequence_length, time_major=True, dtype=F32
    )
    ref_out, ref_state = reference_rnn(
        np_step(cell), input_values, zeros_like_state(3, batch_size), sequence_length
    )
    assert_close(outputs, ref_out, 1e-5, 1e-6)
    assert_close(state, ref_state, 1e-5, 1e-6)


RAW = dict(batch_size=16, input_depth=4, num_units=3)


def _raw_loop_fn(cell, inputs, sequence_length):
    """TF1's ``loop_fn`` of ``RawRNNTest._testRawRNN``: zero state at time 0, then the cell's
    state; rows finish at their length; the inputs read at ``time`` (zeros once all finished)."""
    max_time, batch_size, input_depth = inputs.shape

    def loop_fn(time, cell_output, cell_state, unused_loop_state):
        emit_output = cell_output  # None at time 0: the cell's output_size
        next_state = cell.zero_state(batch_size, F32) if cell_output is None else cell_state
        elements_finished = time >= sequence_length
        finished = jnp.all(elements_finished)
        read = inputs[jnp.minimum(time, max(max_time - 1, 0))] if max_time else 0.0
        next_input = jnp.where(finished, jnp.zeros((batch_size, input_depth), F32), read)
        return elements_finished, next_input, next_state, emit_output, None

    return loop_fn


@pytest.mark.parametrize(
    "max_time",
    [pytest.param(10, marks=pytest.mark.slow), 0],  # slow: two loops' gradient programs
    ids=["testRawRNN", "testRawRNNZeroLength"],
)
def test_raw_rnn(max_time):
    """``rnn_cell_test.py``, ``RawRNNTest.testRawRNN`` and ``testRawRNNZeroLength``: ``raw_rnn``
    with TF1's reading ``loop_fn`` equals ``dynamic_rnn`` (time-major, the same lengths, the
    first row of full length), in outputs, final state and gradients with respect to the
    inputs and the weights. ``raw_rnn`` takes ``max_steps >= 1`` (its emitted arrays have that
    length); for 0 steps every row is finished at time 0 and nothing runs, as in TF1."""
    batch_size, input_depth = RAW["batch_size"], RAW["input_depth"]
    rng = np.random.default_rng(23489)
    rand_input = jnp.asarray(rng.standard_normal((max_time, batch_size, input_depth)), F32)
    rand_seq_len = (
        np.zeros(batch_size, np.int32) if max_time == 0 else rng.integers(0, max_time, batch_size)
    )
    rand_seq_len[0] = max_time
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(RAW["num_units"], input_depth, key=KEY), -0.5, 0.5
    )
    params, static_part = eqx.partition(cell, eqx.is_inexact_array)

    def raw(p, x):
        c = eqx.combine(p, static_part)
        outputs, final_state, _ = recurrax.raw_rnn(
            c, _raw_loop_fn(c, x, jnp.asarray(rand_seq_len)), max_steps=max(max_time, 1)
        )
        return outputs[:max_time], final_state

    def dynamic(p, x):
        c = eqx.combine(p, static_part)
        return recurrax.dynamic_rnn(c, x, time_major=True, dtype=F32, sequence_length=rand_seq_len)

    def value_and_gradients(f):  # TF1: gradients([outputs, final_state], [inputs] + variables)
        def loss(p, x):
            y = f(p, x)
            return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(y)), y

        if max_time == 0:  # TF1 skips the gradients: there is no step to differentiate
            return loss(params, rand_input)[1], None
        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, rand_input)
        return y, grads

    (outputs, final_state), grads = jax.jit(lambda: value_and_gradients(raw))()
    (outputs_dynamic, final_state_dynamic), grads_dynamic = value_and_gradients(dynamic)
    assert outputs.shape == outputs_dynamic.shape == (max_time, batch_size, RAW["num_units"])
    assert_close(outputs_dynamic, outputs)
    assert_close(final_state_dynamic, final_state)
    if max_time == 0:
        assert_close(final_state, cell.zero_state(batch_size, F32), 0, 0)
        return
    # The two loops sum the same float32 terms in other orders: relative 1e-5.
    assert_close(grads[1], grads_dynamic[1], 1e-5, 1e-6)  # inputs
    assert_close(grads[0], grads_dynamic[0], 1e-5, 1e-6)  # weights
    assert np.abs(np.asarray(grads[1])).max() > 0


def _constant_input_loop(cell, max_time, loop_state_fn):
    """TF1's ``loop_fn`` of ``testLoopState``: every row finishes at ``max_time``; the loop
    state is ``loop_state_fn(time, loop_state)``."""
    batch_size, input_depth = RAW["batch_size"], RAW["input_depth"]
    inputs = jnp.asarray(
        np.random.default_rng(5).standard_normal((max_time, batch_size, input_depth)), F32
    )

    def loop_fn(time, cell_output, cell_state, loop_state):
        next_state = cell.zero_state(batch_size, F32) if cell_output is None else cell_state
        loop_state = loop_state_fn(time, cell_output is None, loop_state)
        elements_finished = jnp.tile(jnp.asarray([time >= max_time]), [batch_size])
        next_input = jnp.where(
            jnp.all(elements_finished),
            jnp.zeros((batch_size, input_depth), F32),
            inputs[jnp.minimum(time, max_time - 1)],
        )
        return elements_finished, next_input, next_state, cell_output, loop_state

    return loop_fn


def test_raw_rnn_loop_state():
    """``rnn_cell_test.py``, ``RawRNNTest.testLoopState``: a loop state ``[0]`` counted up by
    ``loop_fn`` after each of 10 steps ends at ``[10]``."""
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(RAW["num_units"], RAW["input_depth"], key=KEY), -0.5, 0.5
    )

    def count(time, first, loop_state):
        return jnp.asarray([0], jnp.int32) if first else jnp.stack([jnp.squeeze(loop_state) + 1])

    _, _, loop_state = recurrax.raw_rnn(cell, _constant_input_loop(cell, 10, count), max_steps=10)
    np.testing.assert_array_equal(loop_state, [10])


def test_raw_rnn_loop_state_with_an_array():
    """``rnn_cell_test.py``, ``RawRNNTest.testLoopStateWithTensorArray``: the loop state is
    written at every time, ``state[time] = state[time - 1] + time`` from ``state[0] = 1``: ``[1,
    2, 2 + 2, 4 + 3, 7 + 4]`` after 4 steps (TF1's TensorArray; here an array of the 5 times)."""
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(RAW["num_units"], RAW["input_depth"], key=KEY), -0.5, 0.5
    )

    def write(time, first, loop_state):
        if first:
            return jnp.zeros(5, jnp.int32).at[0].set(1)
        return loop_state.at[time].set(loop_state[time - 1] + time)

    _, _, loop_state = recurrax.raw_rnn(cell, _constant_input_loop(cell, 4, write), max_steps=4)
    np.testing.assert_array_equal(loop_state, [1, 2, 2 + 2, 4 + 3, 7 + 4])


def test_raw_rnn_emit_different_structure_than_cell_output():
    """``rnn_cell_test.py``, ``RawRNNTest.testEmitDifferentStructureThanCellOutput``: the emit
    template is a pair of int32 ``[2, 3]`` and int64 ``[1]`` per row; each of the 10 steps emits
    ones: ``[10, 16, 2, 3]`` int32 and ``[10, 16, 1]`` int64 ones."""
    max_time, batch_size = 10, RAW["batch_size"]
    cell = uniform_cell(
        lambda: recurrax.LSTMCell(RAW["num_units"], RAW["input_depth"], key=KEY), -0.5, 0.5
    )
    plain = _constant_input_loop(cell, max_time, lambda time, first, state: None)

    def loop_fn(time, cell_output, cell_state, loop_state):
        finished, next_input, next_state, _, _ = plain(time, cell_output, cell_state, loop_state)
        if cell_output is None:
            emit_output = (jnp.zeros([2, 3], jnp.int32), jnp.zeros([1], jnp.int64))
        else:
            emit_output = (
                jnp.ones([batch_size, 2, 3], jnp.int32),
                jnp.ones([batch_size, 1], jnp.int64),
            )
        return finished, next_input, next_state, emit_output, None

    output, _, _ = recurrax.raw_rnn(cell, loop_fn, max_steps=max_time)
    assert len(output) == 2
    assert [o.dtype for o in output] == [jnp.int32, jnp.int64]
    np.testing.assert_array_equal(output[0], np.ones((max_time, batch_size, 2, 3), np.int32))
    np.testing.assert_array_equal(output[1], np.ones((max_time, batch_size, 1), np.int64))


# --- rnn_cell_test.py / core_rnn_cell_test.py, RNNCellTest ----------------------------------------

X11 = jnp.asarray([[1.0, 1.0]], F32)  # TF1's feed x: np.array([[1., 1.]])


def test_basic_rnn_cell():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testBasicRNNCell``:
    under scope ``root`` (constant initializer 0.5) the variables are
    ``root/basic_rnn_cell/kernel`` and ``.../bias``; the output is ``[1, 2]``. TF1 checks only
    the shape; with its formula (the bias has its own zeros initializer) the value is
    ``tanh(0.5 * (1 + 1 + 0.1 + 0.1))``."""
    cell = recurrax.BasicRNNCell(2, 2, key=KEY, kernel_initializer=constant(0.5))
    assert recurrax.tf1_variable_names(cell, scope="root") == [
        "root/basic_rnn_cell/kernel",
        "root/basic_rnn_cell/bias",
    ]
    g, _ = cell(X11, jnp.asarray([[0.1, 0.1]], F32))
    assert g.shape == (1, 2)
    assert_close(g, [[0.80049896, 0.80049896]])


def _tf1_gru(num_units, input_size, dtype=F32):
    # TF1's GRUCell gives its biases their own initializers (gates 1.0, candidate 0.0), so the
    # scope's constant initializer reaches the kernels only; recurrax's defaults are the same.
    return recurrax.GRUCell(
        num_units, input_size, key=KEY, kernel_initializer=constant(0.5), dtype=dtype
    )


def test_gru_cell():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testGRUCell``."""
    g, _ = _tf1_gru(2, 2)(X11, jnp.asarray([[0.1, 0.1]], F32))
    assert_close(g, [[0.175991, 0.175991]])
    # GRUCell with input_size != num_units.
    g, _ = _tf1_gru(2, 3)(jnp.asarray([[1.0, 1.0, 1.0]], F32), jnp.asarray([[0.1, 0.1]], F32))
    assert_close(g, [[0.156736, 0.156736]])


def _tf1_basic_lstm(num_units, input_size, dtype=F32):
    # TF1's BasicLSTMCell gives its bias a zeros initializer: the constant reaches the kernel.
    return recurrax.BasicLSTMCell(
        num_units, input_size, key=KEY, kernel_initializer=constant(0.5), dtype=dtype
    )


@pytest.mark.parametrize("dtype", [jnp.float16, F32], ids=["float16", "float32"])
def test_basic_lstm_cell(dtype):
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testBasicLSTMCell``:
    two ``BasicLSTMCell(2)`` stacked, state 0.1 everywhere (TF1's ``[1, 8]`` concatenation is
    ``(c0, h0, c1, h1)``), in float16 and float32; TF1's variable names; output and memory to
    ``rtol=1e-2``. Then ``BasicLSTMCell(2)`` on 3 inputs (TF1 ran it; here against the
    reference)."""
    cell = recurrax.MultiRNNCell([_tf1_basic_lstm(2, 2, dtype) for _ in range(2)])
    assert cell.dtype == dtype
    assert recurrax.tf1_variable_names(cell, scope="root") == [
        "root/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "root/multi_rnn_cell/cell_0/basic_lstm_cell/bias",
        "root/multi_rnn_cell/cell_1/basic_lstm_cell/kernel",
        "root/multi_rnn_cell/cell_1/basic_lstm_cell/bias",
    ]
    m = tuple(lstm_state(0.1 * np.ones([1, 2]), 0.1 * np.ones([1, 2]), dtype) for _ in range(2))
    g, out_m = cell(X11.astype(dtype), m)
    assert g.dtype == dtype
    np.testing.assert_allclose(g, np.array([[0.240, 0.240]], dtype), rtol=1e-2)
    expected_mem = np.array([[0.689, 0.689, 0.448, 0.448, 0.398, 0.398, 0.240, 0.240]], dtype)
    np.testing.assert_allclose(np.hstack(jax.tree_util.tree_leaves(out_m)), expected_mem, 1e-2)
    # BasicLSTMCell with input_size != num_units.
    other = _tf1_basic_lstm(2, 3, dtype)
    x, m = np.array([[1.0, 1.0, 1.0]]), (0.1 * np.ones([1, 2]), 0.1 * np.ones([1, 2]))
    g, out_m = other(jnp.asarray(x, dtype), lstm_state(*m, dtype))
    ref_g, ref_m = basic_lstm_step(np.full((5, 8), 0.5), np.zeros(8), x, m)
    tol = 1e-2 if dtype == jnp.float16 else 1e-6
    assert_close((g, out_m), (ref_g, ref_m), tol, tol)


def test_basic_lstm_cell_state_shape_errors():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest``'s
    ``testBasicLSTMCellDimension0Error`` (the state's batch is not the input's) and
    ``testBasicLSTMCellStateSizeError`` (the state's size is not ``num_units``): ValueError."""
    num_units, batch_size, input_size = 2, 3, 4
    cell = _tf1_basic_lstm(num_units, input_size)
    x = jnp.ones([batch_size, input_size], F32)
    for batch, size in [(batch_size - 1, num_units), (batch_size, num_units + 1)]:
        m = lstm_state(*(0.1 * np.ones([batch, size]),) * 2)
        with pytest.raises(ValueError, match=r"BasicLSTMCell: state must have shape"):
            cell(x, m)


def test_basic_lstm_cell_state_tuple_type():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``RNNCellTest.testBasicLSTMCellStateTupleType``: the stack's ``state_size`` is a tuple of
    ``LSTMStateTuple``; plain tuples in, ``LSTMStateTuple`` out; the zero state likewise."""
    cell = recurrax.MultiRNNCell([_tf1_basic_lstm(2, 2) for _ in range(2)])
    assert isinstance(cell.state_size, tuple)
    assert all(isinstance(s, recurrax.LSTMStateTuple) for s in cell.state_size)
    x = jnp.zeros([1, 2], F32)
    m0 = m1 = (jnp.zeros([1, 2], F32),) * 2
    _, (out_m0, out_m1) = cell(x, (m0, m1))
    assert isinstance(out_m0, recurrax.LSTMStateTuple)
    assert isinstance(out_m1, recurrax.LSTMStateTuple)
    zero_state = cell.zero_state(1, F32)
    assert isinstance(zero_state, tuple)
    assert all(isinstance(s, recurrax.LSTMStateTuple) for s in zero_state)
    _, (out_m0, out_m1) = cell(x, zero_state)
    assert isinstance(out_m0, recurrax.LSTMStateTuple)
    assert isinstance(out_m1, recurrax.LSTMStateTuple)


def test_basic_lstm_cell_with_state_tuple():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``RNNCellTest.testBasicLSTMCellWithStateTuple``: TF1's numbers to its default tolerance."""
    cell = recurrax.MultiRNNCell([_tf1_basic_lstm(2, 2) for _ in range(2)])
    m0 = m1 = lstm_state(0.1 * np.ones([1, 2]), 0.1 * np.ones([1, 2]))
    g, (out_m0, out_m1) = cell(X11, (m0, m1))
    assert_close(g, [[0.24024698, 0.24024698]])
    assert_close(np.hstack(out_m0), [[0.68967271, 0.68967271, 0.44848421, 0.44848421]])
    assert_close(np.hstack(out_m1), [[0.39897051, 0.39897051, 0.24024698, 0.24024698]])


def _tf1_lstm_with_projection():
    # TF1's LSTMCell: the initializer reaches the kernel and the projection; the bias is zeros.
    return recurrax.LSTMCell(8, 2, key=KEY, num_proj=6, forget_bias=1.0, initializer=constant(0.5))


def test_lstm_cell():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testLSTMCell``:
    ``num_units=8``, ``num_proj=6``, inputs ``[[1, 1], [2, 2], [3, 3]]``, state 0.1: output
    ``[3, 6]``, state ``[3, 8 + 6]``, rows differ (TF1's checks), and the reference's values."""
    batch_size, num_units, num_proj = 3, 8, 6
    cell = _tf1_lstm_with_projection()
    x = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    m = (0.1 * np.ones((batch_size, num_units)), 0.1 * np.ones((batch_size, num_proj)))
    output, state = cell(jnp.asarray(x, F32), lstm_state(*m))
    state = np.hstack(state)
    assert output.shape == (batch_size, num_proj)
    assert state.shape == (batch_size, num_units + num_proj)
    for i in range(1, batch_size):
        assert float(np.linalg.norm(output[0, :] - output[i, :])) > 1e-6
        assert float(np.linalg.norm(state[0, :] - state[i, :])) > 1e-6
    ref_output, ref_state = np_step(cell)(0, x, m)
    assert_close(output, ref_output, 1e-5, 1e-6)
    assert_close(state, np.hstack(ref_state), 1e-5, 1e-6)


def test_lstm_cell_variables():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testLSTMCellVariables``:
    ``root/lstm_cell/kernel``, ``.../bias``, ``.../projection/kernel``, in that order."""
    assert recurrax.tf1_variable_names(_tf1_lstm_with_projection(), scope="root") == [
        "root/lstm_cell/kernel",
        "root/lstm_cell/bias",
        "root/lstm_cell/projection/kernel",
    ]


@pytest.mark.parametrize("wrapper_type", ["DropoutWrapper", "ResidualWrapper", "MultiRNNCell"])
def test_wrapper_checkpointing(wrapper_type, tmp_path):
    """``rnn_cell_test.py``, ``RNNCellTest.testWrapperCheckpointing``: a wrapper's checkpoint
    holds the wrapped cell's variables: a bias of 40 saved, set to 0, restored, is 40 again
    (TF1's object checkpoint; here :func:`recurrax.save_weights` / ``load_weights``)."""
    wrap = {
        "DropoutWrapper": recurrax.DropoutWrapper,
        "ResidualWrapper": recurrax.ResidualWrapper,
        "MultiRNNCell": lambda cell: recurrax.MultiRNNCell([cell]),
    }[wrapper_type]

    def with_bias(value):
        cell = recurrax.BasicRNNCell(1, 1, key=KEY, kernel_initializer=constant(0.5))
        return wrap(eqx.tree_at(lambda c: c.bias, cell, jnp.asarray([value], F32)))

    wrapper = with_bias(40.0)
    wrapper(jnp.ones([1, 1], F32), wrapper.zero_state(1, F32))
    path = recurrax.save_weights(tmp_path / "ckpt.safetensors", wrapper)
    restored = recurrax.load_weights(path, with_bias(0.0))
    inner = restored.cells[0] if wrapper_type == "MultiRNNCell" else restored.wrapped_cell
    np.testing.assert_array_equal(inner.bias, [40.0])


def _tf1_residual_gru():
    # rnn_cell_test.py passes kernel_initializer and bias_initializer 0.5 to the GRUCell.
    return recurrax.GRUCell(
        3, 3, key=KEY, kernel_initializer=constant(0.5), bias_initializer=constant(0.5)
    )


def test_residual_wrapper():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testResidualWrapper``:
    the wrapped output is the cell's plus the inputs; the states are left untouched."""
    x = jnp.asarray([[1.0, 1.0, 1.0]], F32)
    m = jnp.asarray([[0.1, 0.1, 0.1]], F32)
    base_cell = _tf1_residual_gru()
    g, m_new = base_cell(x, m)
    wrapper_object = recurrax.ResidualWrapper(base_cell)
    assert wrapper_object.wrapped_cell is base_cell  # TF1: the checkpoint dependency "cell"
    g_res, m_new_res = wrapper_object(x, m)
    assert_close(g_res, g + np.array([1.0, 1.0, 1.0]))
    assert_close(m_new, m_new_res)
    assert np.abs(np.asarray(g)).min() > 0.1  # the cell's output is not zero


def test_residual_wrapper_with_slice():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``RNNCellTest.testResidualWrapperWithSlice``: 5 inputs, a ``residual_fn`` adding their first
    3 to the cell's 3 outputs."""
    x = jnp.asarray([[1.0, 1.0, 1.0, 1.0, 1.0]], F32)
    m = jnp.asarray([[0.1, 0.1, 0.1]], F32)
    base_cell = recurrax.GRUCell(
        3, 5, key=KEY, kernel_initializer=constant(0.5), bias_initializer=constant(0.5)
    )
    g, m_new = base_cell(x, m)

    def residual_with_slice_fn(inp, out):
        return inp[:, :3] + out

    g_res, m_new_res = recurrax.ResidualWrapper(base_cell, residual_with_slice_fn)(x, m)
    assert_close(g_res, g + np.array([1.0, 1.0, 1.0]))
    assert_close(m_new, m_new_res)


def test_multi_rnn_cell():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``, ``RNNCellTest.testMultiRNNCell``:
    two ``GRUCell(2)``, state 0.1 (TF1's ``[1, 4]`` concatenation is ``(h0, h1)``): TF1's
    numbers; 2 * 4 weights, all float32."""
    multi_rnn_cell = recurrax.MultiRNNCell([_tf1_gru(2, 2) for _ in range(2)])
    m = (jnp.asarray([[0.1, 0.1]], F32),) * 2
    _, ml = multi_rnn_cell(X11, m)
    assert_close(np.hstack(ml), [[0.175991, 0.175991, 0.13248, 0.13248]])
    weights = recurrax.tf1_weights(multi_rnn_cell)
    assert len(weights) == 2 * 4
    assert all(w.dtype == np.float32 for w in weights.values())


def test_multi_rnn_cell_with_state_tuple():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``RNNCellTest.testMultiRNNCellWithStateTuple``: a state that is not a tuple is a ValueError
    (TF1: "Expected state .* a tuple"); a tuple gives ``testMultiRNNCell``'s numbers."""
    cell = recurrax.MultiRNNCell([_tf1_gru(2, 2) for _ in range(2)])
    m_bad = jnp.zeros([1, 4], F32)
    with pytest.raises(ValueError, match=r"MultiRNNCell: state must be a tuple of 2 layer states"):
        cell(X11, m_bad)
    m_good = (jnp.asarray([[0.1, 0.1]], F32), jnp.asarray([[0.1, 0.1]], F32))
    _, ml = cell(X11, m_good)
    assert_close(ml[0], [[0.175991, 0.175991]])
    assert_close(ml[1], [[0.13248, 0.13248]])


# --- rnn_cell_test.py / core_rnn_cell_test.py, DropoutWrapperTest ---------------------------------

TRUE_FULL_OUTPUT = np.array(
    [[[0.751109, 0.751109, 0.751109]], [[0.895509, 0.895509, 0.895509]]], np.float32
)
TRUE_FULL_FINAL_C = np.array([[1.949385, 1.949385, 1.949385]], np.float32)


def _dropout_run(batch_size=None, time_steps=None, key=None, **kwargs):
    """TF1's ``DropoutWrapperTest._testDropoutWrapper``: ``DropoutWrapper(LSTMCell(3,
    initializer=constant 0.5))`` through ``dynamic_rnn``, time-major, initial state 0.1; two steps
    of inputs 2 and 1 for one row, or random inputs of ``[time_steps, batch_size, 3]``. TF1's
    keep probabilities may be tensors; recurrax's are Python floats (static configuration)."""
    if batch_size is None and time_steps is None:
        batch_size, time_steps = 1, 2
        x = jnp.asarray([[[2.0, 2.0, 2.0]], [[1.0, 1.0, 1.0]]], F32)
    else:
        rng = np.random.default_rng(23487)
        x = jnp.asarray(rng.standard_normal((time_steps, batch_size, 3)), F32)
    m = lstm_state(*[[[0.1, 0.1, 0.1]] * batch_size] * 2)
    lstm = recurrax.LSTMCell(3, 3, key=KEY, initializer=constant(0.5))
    key = jax.random.key(1) if key is None else key
    cell = recurrax.DropoutWrapper(lstm, dtype=x.dtype, key=key, **kwargs)
    outputs, final_state = run_compiled("dynamic", cell, x, dict(initial_state=m))
    assert outputs.shape == (time_steps, batch_size, 3)
    assert final_state.c.shape == final_state.h.shape == (batch_size, 3)
    return outputs, final_state


def test_dropout_wrapper_zero_state():
    """``rnn_cell_test.py``, ``DropoutWrapperTest.testDropoutWrapperZeroState``: the wrapper's
    zero state is the wrapped cell's own ``zero_state``."""

    class _Cell(recurrax.BasicRNNCell):
        def zero_state(self, batch_size=None, dtype=None):
            return "wrapped_cell_zero_state"

    wrapper = recurrax.DropoutWrapper(eqx.filter_eval_shape(_Cell, 10, 3, key=KEY))
    assert wrapper.zero_state(10, F32) == "wrapped_cell_zero_state"


def test_dropout_wrapper_keep_all():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperKeepAllConstantInput`` and
    ``testDropoutWrapperKeepAll``: keep probabilities of 1 give TF1's full numbers."""
    outputs, state = _dropout_run(input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0)
    assert_close(outputs, TRUE_FULL_OUTPUT, 1e-5, 1e-5)
    assert_close(state.h, TRUE_FULL_OUTPUT[1], 1e-5, 1e-5)
    assert_close(state.c, TRUE_FULL_FINAL_C, 1e-5, 1e-5)


def test_dropout_wrapper_with_seed():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperWithSeed``: keep 0.5 everywhere; the same seed (here
    the same key) gives the same results."""
    keep_some = dict(input_keep_prob=0.5, output_keep_prob=0.5, state_keep_prob=0.5)
    res_standard_1 = _dropout_run(key=jax.random.key(10), **keep_some)
    res_standard_2 = _dropout_run(key=jax.random.key(10), **keep_some)
    assert_close(res_standard_1, res_standard_2)
    assert np.linalg.norm(res_standard_1[0] - TRUE_FULL_OUTPUT) > 1e-4  # something dropped


def test_dropout_wrapper_keep_no_output():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperKeepNoOutput``: output keep ``1e-6`` zeroes the
    outputs; the state is the full one."""
    outputs, state = _dropout_run(input_keep_prob=1.0, output_keep_prob=1e-6, state_keep_prob=1.0)
    assert_close(outputs, np.zeros(outputs.shape), 1e-5, 1e-5)
    assert_close(state.h, TRUE_FULL_OUTPUT[1], 1e-5, 1e-5)
    assert_close(state.c, TRUE_FULL_FINAL_C, 1e-5, 1e-5)


def test_dropout_wrapper_keep_no_state_except_lstm_cell_memory():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperKeepNoStateExceptLSTMCellMemory``: state keep
    ``1e-6`` zeroes ``h`` but never the memory ``c`` of an ``LSTMStateTuple``."""
    outputs, state = _dropout_run(input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1e-6)
    true_c_state = np.array([[1.713925, 1.713925, 1.713925]], np.float32)
    assert_close(outputs[0], TRUE_FULL_OUTPUT[0], 1e-5, 1e-5)
    # The second output is modified by the zeroed h of the first step.
    assert np.linalg.norm(TRUE_FULL_OUTPUT[1] - outputs[1]) > 1e-4
    assert_close(state.h, np.zeros(state.h.shape), 1e-5, 1e-5)
    assert_close(state.c, true_c_state, 1e-5, 1e-5)


def test_dropout_wrapper_keep_no_input():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperKeepNoInput``: input keep ``1e-6`` zeroes the
    inputs, so outputs, ``h`` and ``c`` all differ from the full ones."""
    outputs, state = _dropout_run(input_keep_prob=1e-6, output_keep_prob=1.0, state_keep_prob=1.0)
    assert np.linalg.norm(outputs - TRUE_FULL_OUTPUT) > 1e-4
    assert np.linalg.norm(state.h - TRUE_FULL_OUTPUT[1]) > 1e-4
    assert np.linalg.norm(state.c - TRUE_FULL_FINAL_C) > 1e-4


def test_dropout_wrapper_recurrent_output():
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperRecurrentOutput``: variational output keep 0.8 over
    7 steps of 5 rows: the same output mask at every step."""
    outputs, _ = _dropout_run(
        input_keep_prob=1.0,
        output_keep_prob=0.8,
        state_keep_prob=1.0,
        variational_recurrent=True,
        input_size=3,
        batch_size=5,
        time_steps=7,
        key=jax.random.key(2),
    )
    output_mask = np.abs(outputs) > 1e-6
    for m in output_mask[1:]:
        np.testing.assert_array_equal(output_mask[0], m)
    assert not output_mask.all()  # keep 0.8 of 3 units: with this key one is dropped


@pytest.mark.parametrize("seeded", [False, True], ids=["", "WithSeed"])
def test_dropout_wrapper_recurrent_state_input_and_output(seeded):
    """``rnn_cell_test.py`` and ``core_rnn_cell_test.py``,
    ``DropoutWrapperTest.testDropoutWrapperRecurrentStateInputAndOutput`` and
    ``...WithSeed``: variational keep 0.9 everywhere: one output mask for every step and every
    row, one state mask for every row; with the same seed (key), the same results."""
    kwargs = dict(
        input_keep_prob=0.9,
        output_keep_prob=0.9,
        state_keep_prob=0.9,
        variational_recurrent=True,
        input_size=3,
        batch_size=5,
        time_steps=7,
        key=jax.random.key(2347),
    )
    res0 = _dropout_run(**kwargs)
    output_mask = np.abs(res0[0]) > 1e-6
    for time_step in output_mask:
        np.testing.assert_array_equal(output_mask[0], time_step)
        for batch_entry in time_step:
            np.testing.assert_array_equal(batch_entry, time_step[0])
    for state in (res0[1].c, res0[1].h):
        state_mask = np.abs(state) > 1e-6
        for batch_entry in state_mask:
            np.testing.assert_array_equal(batch_entry, state_mask[0])
    if seeded:
        res1 = _dropout_run(**kwargs)
        assert_close(res0, res1)


# --- core_rnn_cell_test.py -----------------------------------------------------------------------


def test_embedding_wrapper_with_dynamic_rnn():
    """``core_rnn_cell_test.py``, ``RNNCellTest.testEmbeddingWrapperWithDynamicRnn``: int64 ids
    and int64 lengths through ``dynamic_rnn`` with ``dtype=float32``: the outputs are float32
    (TF1: "this will fail if output's dtype is inferred from input's") and the reference's."""
    inputs = jnp.asarray([[[0], [0]]], jnp.int64)
    input_lengths = jnp.asarray([2], jnp.int64)
    embedding_cell = uniform_cell(
        lambda: recurrax.EmbeddingWrapper(
            recurrax.BasicLSTMCell(1, 2, key=KEY), embedding_classes=1, embedding_size=2, key=KEY
        ),
        -1,
        1,
    )
    outputs, state = recurrax.dynamic_rnn(
        embedding_cell, inputs, sequence_length=input_lengths, dtype=F32
    )
    assert outputs.dtype == state.c.dtype == F32 and outputs.shape == (1, 2, 1)
    ref_out, ref_state = reference_rnn(
        contrib_np_step(embedding_cell),
        np.swapaxes(np.asarray(inputs), 0, 1),
        zeros_like_state(embedding_cell.state_size, 1),
    )
    assert_close(np.swapaxes(np.asarray(outputs), 0, 1), ref_out, 1e-5, 1e-7)
    assert_close(state, ref_state, 1e-5, 1e-7)


# --- rnn_test.py, RNNTest ------------------------------------------------------------------------


def test_invalid_dtype():
    """``rnn_test.py``, ``RNNTest.testInvalidDtype``: the four cells refuse an integer
    ``dtype`` (TF1: ValueError "RNN cell only supports floating"; recurrax's errors for a bad
    dtype are TypeErrors, as for any bad type), and so does ``dynamic_rnn``."""
    inputs = np.zeros((3, 4, 5), np.int32)
    for cell_cls in [
        recurrax.BasicRNNCell,
        recurrax.GRUCell,
        recurrax.BasicLSTMCell,
        recurrax.LSTMCell,
    ]:
        with pytest.raises(TypeError, match=r"dtype must be a floating dtype"):
            cell_cls(2, 5, key=KEY, dtype=jnp.int32)
        cell = cell_cls(2, 5, key=KEY, **CONSTANT_KERNEL[cell_cls])
        with pytest.raises(TypeError, match=r"dtype must be a floating dtype"):
            recurrax.dynamic_rnn(cell, inputs, dtype=jnp.int32)


def test_batch_size_from_input():
    """``rnn_test.py``, ``RNNTest.testBatchSizeFromInput``: the batch comes from the inputs,
    with and without an initial state."""
    cell = Plus1RNNCell()
    inputs = np.zeros((3, 4, 5), np.float32)
    initial_state = np.zeros((3, 5), np.float32)
    outputs, state = recurrax.dynamic_rnn(cell, inputs, dtype=F32)
    assert outputs.shape[0] == 3 and state.shape[0] == 3
    np.testing.assert_array_equal(state, 4 * np.ones((3, 5)))
    outputs, state = recurrax.dynamic_rnn(cell, inputs, initial_state=initial_state)
    assert outputs.shape[0] == 3 and state.shape[0] == 3
    np.testing.assert_array_equal(outputs, np.ones((3, 4, 5)))


class ScalarStateRNNCell(eqx.Module):
    """TF1's test cell: ``(output, new_state) = (input, state + 1)`` with one int32 scalar as the
    state (``state_size = TensorShape([])``; ``zero_state`` a scalar 0, without a batch axis)."""

    output_size: int = eqx.field(default=1, static=True)
    state_size: recurrax.TensorShape = eqx.field(default=recurrax.TensorShape([]), static=True)

    def zero_state(self, batch_size, dtype):
        return jnp.zeros([], jnp.int32)

    def __call__(self, inputs, state):
        return inputs, state + 1


class UnbalancedOutputRNNCell(ScalarStateRNNCell):
    """TF1's test cell: outputs ``(input, concat(input, input))``, sizes ``(1, 2)``."""

    output_size: tuple = eqx.field(default=(1, 2), static=True)

    def __call__(self, inputs, state):
        return (inputs, jnp.concatenate((inputs, inputs), axis=-1)), state + 1


def test_scalar_state_is_accepted():
    """``rnn_test.py``, ``RNNTest.testScalarStateIsAccepted``: a scalar int32 state counts the
    4 steps; the outputs are the inputs."""
    inputs = np.array([[[1], [2], [3], [4]]], np.float32)
    outputs, state = recurrax.dynamic_rnn(
        ScalarStateRNNCell(), inputs, dtype=F32, sequence_length=[4]
    )
    np.testing.assert_array_equal(outputs, [[[1], [2], [3], [4]]])
    np.testing.assert_array_equal(state, 4)


def test_unbalanced_output_is_accepted():
    """``rnn_test.py``, ``RNNTest.testUnbalancedOutputIsAccepted``: outputs of sizes ``(1,
    2)`` come back as a tuple; the scalar int32 state counts the 4 steps."""
    inputs = np.array([[[1], [2], [3], [4]]], np.float32)
    outputs, state = recurrax.dynamic_rnn(
        UnbalancedOutputRNNCell(), inputs, dtype=F32, sequence_length=[4]
    )
    assert isinstance(outputs, tuple)
    np.testing.assert_array_equal(outputs[0], [[[1], [2], [3], [4]]])
    np.testing.assert_array_equal(outputs[1], [[[1, 1], [2, 2], [3, 3], [4, 4]]])
    np.testing.assert_array_equal(state, 4)


def test_cell_get_initial_state_needs_inputs_or_batch_size():
    """``rnn_test.py``, ``RNNTest.testCellGetInitialState``, its first check (the others are in
    ``test_tf1_behaviour.py``): neither inputs nor a batch size is a ValueError (TF1:
    "batch_size and dtype cannot be None"); a batch and a dtype from the inputs."""
    cell = eqx.filter_eval_shape(recurrax.BasicRNNCell, 5, 1, key=KEY)  # no weights needed
    with pytest.raises(ValueError, match=r"get_initial_state needs inputs or batch_size"):
        cell.get_initial_state(None, None, None)
    inputs = jnp.zeros((7, 4, 1), F32)
    initial_state = cell.get_initial_state(inputs=inputs, batch_size=None, dtype=None)
    assert initial_state.shape == (7, 5) and initial_state.dtype == inputs.dtype
    np.testing.assert_array_equal(initial_state, 0)
    initial_state = cell.get_initial_state(None, inputs.shape[0], inputs.dtype)
    assert initial_state.shape == (7, 5) and initial_state.dtype == inputs.dtype


#: Every kernel 0.5 (the default biases stay): cells built without drawing random numbers.
CONSTANT_KERNEL = {
    recurrax.BasicRNNCell: dict(kernel_initializer=constant(0.5)),
    recurrax.GRUCell: dict(kernel_initializer=constant(0.5)),
    recurrax.BasicLSTMCell: dict(kernel_initializer=constant(0.5)),
    recurrax.LSTMCell: dict(initializer=constant(0.5)),
}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_cells_build(dtype):
    """``rnn_test.py``, ``RNNTest.testCellsBuild``: each cell of ``out_size=3`` built for 7
    inputs in float32 and float64 maps zeros ``[5, 7]`` and its initial state to ``[5, 3]``
    outputs: zeros, since every bias that reaches the output is zero (TF1's initializers)."""
    batch_size, in_size, out_size = 5, 7, 3
    for cell_class in [
        recurrax.BasicRNNCell,
        recurrax.BasicLSTMCell,
        recurrax.GRUCell,
        recurrax.LSTMCell,
    ]:
        cell = cell_class(out_size, in_size, key=KEY, dtype=dtype, **CONSTANT_KERNEL[cell_class])
        state_output = cell.get_initial_state(inputs=None, batch_size=batch_size, dtype=dtype)
        cell_output, _ = cell(jnp.zeros((batch_size, in_size), dtype), state_output)
        assert cell_output.shape == (batch_size, out_size) and cell_output.dtype == dtype
        np.testing.assert_array_equal(cell_output, 0)


def test_simple_rnn_cell_and_basic_rnn_cell_comparison():
    """``rnn_test.py``, ``RNNTest.testSimpleRNNCellAndBasicRNNCellComparison``: Keras's
    ``SimpleRNNCell`` (``h' = tanh(x @ kernel + h @ recurrent_kernel + bias)``, here in NumPy)
    and a ``BasicRNNCell`` whose kernel is ``concat(kernel, recurrent_kernel)`` agree through
    ``dynamic_rnn`` (20 rows, 4 steps, 10 inputs, 5 units) to ``atol=1e-5``."""
    input_shape, output_shape, timestep, batch = 10, 5, 4, 20
    rng = np.random.default_rng(3)
    x_train = rng.standard_normal((batch, timestep, input_shape)).astype(np.float32)
    kernel = rng.uniform(-0.5, 0.5, (input_shape, output_shape)).astype(np.float32)
    recurrent_kernel = np.linalg.qr(rng.standard_normal((output_shape, output_shape)))[0]
    bias = rng.uniform(-0.1, 0.1, output_shape).astype(np.float32)
    k_state = np.zeros((batch, output_shape))
    k_out = []
    for t in range(timestep):
        k_state = np.tanh(x_train[:, t] @ kernel + k_state @ recurrent_kernel + bias)
        k_out.append(k_state)
    cell = eqx.filter_eval_shape(recurrax.BasicRNNCell, output_shape, input_shape, key=KEY)
    tf_weights = (np.concatenate((kernel, recurrent_kernel)), bias)
    cell = eqx.tree_at(
        lambda c: (c.kernel, c.bias), cell, tuple(jnp.asarray(w, F32) for w in tf_weights)
    )
    tf_out, tf_state = recurrax.dynamic_rnn(cell, x_train, dtype=F32)
    np.testing.assert_allclose(tf_out, np.stack(k_out, 1), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(tf_state, k_state, rtol=1e-6, atol=1e-5)


def test_basic_lstm_cell_interchange_with_lstm_cell():
    """``rnn_test.py``, ``RNNTest.testBasicLSTMCellInterchangeWithLSTMCell``: a BasicLSTMCell's
    variables (bias set to 10) restore into ``LSTMCell(1, name="basic_lstm_cell")``, which then
    computes what the BasicLSTMCell computes."""
    basic_cell = recurrax.BasicLSTMCell(1, 1, key=KEY, kernel_initializer=constant(0.5))
    basic_cell = eqx.tree_at(lambda c: c.bias, basic_cell, jnp.full(4, 10.0, F32))
    saved = recurrax.tf1_weights(basic_cell)
    lstm_cell = recurrax.LSTMCell(1, 1, key=KEY, initializer=constant(0.1), name="basic_lstm_cell")
    lstm_cell = recurrax.load_tf1_weights(lstm_cell, saved)
    np.testing.assert_array_equal(lstm_cell.bias, [10.0] * 4)
    x = jnp.ones([1, 1], F32)
    assert_close(lstm_cell(x, lstm_cell.zero_state(1)), basic_cell(x, basic_cell.zero_state(1)))
