"""TF1's own cell and wrapper tests (``rnn_test.py``, ``rnn_cell_test.py``), ported: the same
cells, sizes and assertions, with recurrax's keys in place of TF1's seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.cells.initializers import random_uniform_initializer

KEY = jax.random.key(0)


@pytest.mark.parametrize("runner", ["static", "dynamic"])
def test_cell_clipping_to_zero(runner):
    """TF1's ``LSTMTest.testCellClipping``: with ``cell_clip=0.0`` the memory is clipped to 0,
    so ``m = o * tanh(0) = 0``: every output is exactly zero."""
    num_units, input_size, batch_size, max_length = 3, 5, 2, 8
    cell = recurrax.LSTMCell(
        num_units,
        input_size,
        key=KEY,
        use_peepholes=True,
        cell_clip=0.0,
        initializer=random_uniform_initializer(-0.01, 0.01),
        state_is_tuple=True,
    )
    input_value = np.random.default_rng(0).standard_normal((batch_size, input_size))
    inputs = max_length * [jnp.asarray(input_value, jnp.float32)]
    if runner == "static":
        outputs, state = recurrax.static_rnn(cell, inputs, dtype=jnp.float32)
    else:
        out, state = recurrax.dynamic_rnn(cell, jnp.stack(inputs, 1), dtype=jnp.float32)
        outputs = list(jnp.moveaxis(out, 1, 0))
    assert len(outputs) == len(inputs)
    for value in outputs:
        assert value.shape == (batch_size, num_units)
        np.testing.assert_array_equal(value, np.zeros((batch_size, num_units)))
    np.testing.assert_array_equal(state.c, 0)


def test_proj_clip_without_num_proj_is_ignored():
    """TF1 applies ``proj_clip`` only to a projection: without ``num_proj`` it changes nothing."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3)), jnp.float32)
    plain = recurrax.LSTMCell(4, 3, key=KEY)
    clipped = recurrax.LSTMCell(4, 3, key=KEY, proj_clip=1e-3)
    state = plain.zero_state(2)
    np.testing.assert_array_equal(clipped(x, state)[0], plain(x, state)[0])
    assert np.abs(np.asarray(plain(x, state)[0])).max() > 1e-3  # a clip would have shown


def test_get_initial_state():
    """TF1's ``RNNCellTest`` checks of ``get_initial_state``: batch and dtype from the inputs,
    a disagreeing ``batch_size`` or ``dtype`` is a ValueError."""
    cell = recurrax.BasicRNNCell(5, 3, key=KEY)
    x = jnp.zeros((2, 3), jnp.float32)
    state = cell.get_initial_state(inputs=x)
    assert state.shape == (2, 5) and state.dtype == jnp.float32
    state = recurrax.BasicLSTMCell(5, 3, key=KEY).get_initial_state(batch_size=4, dtype=jnp.float64)
    assert isinstance(state, recurrax.LSTMStateTuple)
    assert state.c.shape == state.h.shape == (4, 5) and state.h.dtype == jnp.float64
    with pytest.raises(ValueError, match="batch_size=3 disagrees with the inputs' batch 2"):
        cell.get_initial_state(inputs=x, batch_size=3)
    with pytest.raises(ValueError, match="dtype=float16 disagrees with the inputs' dtype float32"):
        cell.get_initial_state(inputs=x, dtype=jnp.float16)


def test_dropout_wrapper_properties():
    """TF1's ``testDropoutWrapperProperties``: the wrapper's sizes are the cell's and
    ``wrapped_cell`` is the cell."""
    cell = recurrax.BasicRNNCell(10, 3, key=KEY)
    wrapper = recurrax.DropoutWrapper(cell)
    assert wrapper.wrapped_cell is cell
    assert wrapper.state_size == 10 and wrapper.output_size == 10
    residual = recurrax.ResidualWrapper(recurrax.BasicRNNCell(3, 3, key=KEY))
    assert residual.wrapped_cell is residual.cell


@pytest.mark.parametrize("build", ["basic_lstm", "lstm", "multi"])
def test_state_is_tuple_false_is_refused(build):
    """TF1 deprecated the concatenated LSTM state; recurrax refuses it with the fix."""
    make = {
        "basic_lstm": lambda s: recurrax.BasicLSTMCell(4, 3, key=KEY, state_is_tuple=s),
        "lstm": lambda s: recurrax.LSTMCell(4, 3, key=KEY, state_is_tuple=s),
        "multi": lambda s: recurrax.MultiRNNCell(
            [recurrax.BasicLSTMCell(4, 3, key=KEY)], state_is_tuple=s
        ),
    }[build]
    assert make(True).state_size is not None
    with pytest.raises(ValueError, match=r"state_is_tuple=False is not supported.*LSTMStateTuple"):
        make(False)


def test_variational_dropout_masks_are_shared_by_the_batch_and_the_steps():
    """TF1's variational ``DropoutWrapper`` draws each mask once, shaped ``[1, size]``: with
    inputs of ones every row at every step drops the same units."""
    batch, steps, size = 4, 6, 32
    cell = recurrax.DropoutWrapper(
        recurrax.BasicRNNCell(size, size, key=KEY, dtype=jnp.float64),
        input_keep_prob=0.5,
        output_keep_prob=0.5,
        state_keep_prob=0.5,
        variational_recurrent=True,
        key=jax.random.key(1),
    )
    outputs, _ = recurrax.dynamic_rnn(cell, jnp.ones((batch, steps, size), jnp.float64))
    dropped = np.asarray(outputs) == 0
    assert (dropped == dropped[:1, :1]).all()
    assert 0 < dropped.mean() < 1
