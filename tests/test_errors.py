"""Every detectable mistake gets a ValueError/TypeError naming the argument, what was expected
and what arrived. The messages are pinned here (the README's "Errors" section quotes two)."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from reference import random_cell

KEY = jax.random.key(0)
# Valid cells, built abstractly with NumPy weights (nothing compiled for a suite of errors).
RNN = random_cell(lambda: recurrax.BasicRNNCell(4, 3, key=KEY))
LSTM = random_cell(lambda: recurrax.BasicLSTMCell(4, 3, key=KEY))
RNN_4_4 = random_cell(lambda: recurrax.BasicRNNCell(4, 4, key=KEY))
GRU_4_5 = random_cell(lambda: recurrax.GRUCell(4, 5, key=KEY))  # 5 inputs
GRU_5_3 = random_cell(lambda: recurrax.GRUCell(5, 3, key=KEY))
X = np.ones((2, 5, 3), np.float32)  # (B, T, I)
STEPS = [np.ones((2, 3), np.float32)] * 2


class NoDtypeCell:
    """A user cell with neither ``dtype`` nor ``zero_state``."""

    state_size = output_size = 4

    def __call__(self, x, h):
        return h, h


def _cases():
    """(id, call, exception type, literal message fragment)."""
    return [
        # inputs of the wrong rank / layout / size
        (
            "dynamic_rank2",
            lambda: recurrax.dynamic_rnn(RNN, np.ones((2, 3))),
            ValueError,
            "inputs must have rank 3, [batch, time, input_size]; got shape (2, 3).",
        ),
        (
            "dynamic_rank4_time_major",
            lambda: recurrax.dynamic_rnn(RNN, np.ones((5, 2, 3, 1)), time_major=True),
            ValueError,
            "inputs must have rank 3, [time, batch, input_size]; got shape (5, 2, 3, 1).",
        ),
        (
            "dynamic_list",
            lambda: recurrax.dynamic_rnn(RNN, STEPS),
            TypeError,
            "inputs must be one array of shape [batch, time, input_size]; got a list of 2 items",
        ),
        (
            "static_array",
            lambda: recurrax.static_rnn(RNN, X),
            TypeError,
            "inputs must be a list of [batch, input_size] arrays, one per time step; got an "
            "array of shape (2, 5, 3). For a [batch, time, input_size] array use dynamic_rnn",
        ),
        (
            "static_empty",
            lambda: recurrax.static_rnn(RNN, []),
            ValueError,
            "inputs must hold at least one time step; got an empty list.",
        ),
        (
            "static_rank1",
            lambda: recurrax.static_rnn(RNN, [np.ones(3)]),
            ValueError,
            "inputs[0] must have shape [batch, input_size] (rank 2); got shape (3,).",
        ),
        (
            "static_batch_differs",
            lambda: recurrax.static_rnn(RNN, [np.ones((2, 3)), np.ones((3, 3))]),
            ValueError,
            "every step of inputs must have the same shape [batch, input_size]; inputs[0] has "
            "(2, 3) but inputs[1] has (3, 3).",
        ),
        (
            "static_features_differ",
            lambda: recurrax.static_rnn(RNN, [np.ones((2, 3))] * 2 + [np.ones((2, 4))]),
            ValueError,
            "inputs[0] has (2, 3) but inputs[2] has (2, 4).",
        ),
        (
            "dynamic_feature_size",
            lambda: recurrax.dynamic_rnn(RNN, np.ones((2, 5, 4))),
            ValueError,
            "inputs has feature size 4 but cell.input_size is 3: the inputs' last axis must "
            "equal the cell's input_size.",
        ),
        (
            "static_feature_size",
            lambda: recurrax.static_rnn(RNN, [np.ones((2, 4))]),
            ValueError,
            "inputs has feature size 4 but cell.input_size is 3",
        ),
        (
            "multi_feature_size",
            lambda: recurrax.dynamic_rnn(recurrax.MultiRNNCell([RNN]), np.ones((2, 5, 2))),
            ValueError,
            "inputs has feature size 2 but cell.input_size is 3",
        ),
        (
            "static_bidirectional_feature_size",
            lambda: recurrax.static_bidirectional_rnn(RNN, GRU_4_5, STEPS),
            ValueError,
            "inputs has feature size 3 but cell_bw.input_size is 5",
        ),
        (
            "dynamic_bidirectional_feature_size",
            lambda: recurrax.bidirectional_dynamic_rnn(RNN, GRU_4_5, X),
            ValueError,
            "inputs has feature size 3 but cell_bw.input_size is 5",
        ),
        (
            "dynamic_bidirectional_initial_state",
            lambda: recurrax.bidirectional_dynamic_rnn(
                RNN, RNN, X, initial_state_bw=np.zeros((2, 5))
            ),
            ValueError,
            "initial_state_bw must have shapes",
        ),
        (
            "cell_called_with_wrong_inputs",
            lambda: RNN(np.ones((2, 4)), np.zeros((2, 4))),
            ValueError,
            "BasicRNNCell: inputs must have shape [batch, input_size=3]; got (2, 4).",
        ),
        # sequence_length
        (
            "lengths_shape",
            lambda: recurrax.dynamic_rnn(RNN, X, np.array([1, 2, 3])),
            ValueError,
            "sequence_length must have shape [batch]=(2,); got (3,).",
        ),
        (
            "lengths_rank",
            lambda: recurrax.static_rnn(RNN, STEPS, sequence_length=np.array([[1, 2]])),
            ValueError,
            "sequence_length must have shape [batch]=(2,); got (1, 2).",
        ),
        (
            "lengths_float",
            lambda: recurrax.dynamic_rnn(RNN, X, np.array([1.0, 2.0])),
            TypeError,
            "sequence_length must have an integer dtype (int32 or int64); got float64. Lengths "
            "count time steps: cast them with .astype(int).",
        ),
        (
            "lengths_bool",
            lambda: recurrax.bidirectional_dynamic_rnn(RNN, RNN, X, np.array([True, False])),
            TypeError,
            "sequence_length must have an integer dtype (int32 or int64); got bool.",
        ),
        (
            "lengths_negative",
            lambda: recurrax.dynamic_rnn(RNN, X, [1, -1]),
            ValueError,
            "sequence_length must lie in [0, 5] (the number of time steps); "
            "got sequence_length[1]=-1.",
        ),
        (
            "lengths_above_T",
            lambda: recurrax.dynamic_rnn(RNN, X, np.array([6, 1])),
            ValueError,
            "sequence_length must lie in [0, 5] (the number of time steps); "
            "got sequence_length[0]=6.",
        ),
        (
            "lengths_above_T_static",
            lambda: recurrax.static_rnn(RNN, STEPS, sequence_length=[1, 3]),
            ValueError,
            "sequence_length must lie in [0, 2] (the number of time steps); "
            "got sequence_length[1]=3.",
        ),
        (
            "lengths_above_T_static_bidirectional",
            lambda: recurrax.static_bidirectional_rnn(RNN, RNN, STEPS, sequence_length=[3, 1]),
            ValueError,
            "got sequence_length[0]=3.",
        ),
        # initial_state
        (
            "initial_state_structure",
            lambda: recurrax.dynamic_rnn(LSTM, X, initial_state=np.zeros((2, 4))),
            ValueError,
            "initial_state must match the cell's state_size LSTMStateTuple(c=4, h=4) in "
            "structure; got PyTreeDef(*) with 1 arrays. Build it with "
            "cell.zero_state(batch_size, dtype)",
        ),
        (
            "initial_state_shape",
            lambda: recurrax.dynamic_rnn(
                LSTM, X, initial_state=(np.zeros((2, 4)), np.zeros((2, 5)))
            ),
            ValueError,
            "initial_state must have shapes [(2, 4), (2, 4)] (batch, state size) in order; "
            "array 1 has shape (2, 5), expected (2, 4).",
        ),
        (
            "initial_state_batch",
            lambda: recurrax.static_rnn(RNN, STEPS, initial_state=np.zeros((3, 4))),
            ValueError,
            "array 0 has shape (3, 4), expected (2, 4).",
        ),
        (
            "initial_state_multi_layers",
            lambda: recurrax.dynamic_rnn(
                recurrax.MultiRNNCell([RNN, RNN_4_4]),
                X,
                initial_state=(np.zeros((2, 4)),),
            ),
            ValueError,
            "initial_state must match the cell's state_size (4, 4) in structure",
        ),
        (
            "initial_state_integer",
            lambda: recurrax.dynamic_rnn(RNN, X, initial_state=np.zeros((2, 4), np.int32)),
            TypeError,
            "initial_state dtype must be a floating dtype (float16, bfloat16, float32, "
            "float64); got int32.",
        ),
        (
            "initial_state_bw_named",
            lambda: recurrax.static_bidirectional_rnn(
                RNN, LSTM, STEPS, initial_state_bw=np.zeros((2, 4))
            ),
            ValueError,
            "initial_state_bw must match the cell's state_size LSTMStateTuple(c=4, h=4)",
        ),
        # dtype
        (
            "no_dtype_dynamic",
            lambda: recurrax.dynamic_rnn(NoDtypeCell(), X),
            ValueError,
            "dtype is required when initial_state is not given and the cell declares no dtype: "
            "pass dtype=jnp.float32 (or an initial_state).",
        ),
        (
            "no_dtype_static",
            lambda: recurrax.static_rnn(NoDtypeCell(), STEPS),
            ValueError,
            "dtype is required when initial_state is not given",
        ),
        (
            "integer_dtype_runner",
            lambda: recurrax.dynamic_rnn(RNN, X, dtype=jnp.int32),
            TypeError,
            "dtype must be a floating dtype (float16, bfloat16, float32, float64); got int32.",
        ),
        (
            "integer_dtype_cell",
            lambda: recurrax.GRUCell(4, 3, key=KEY, dtype=np.int64),
            TypeError,
            "dtype must be a floating dtype (float16, bfloat16, float32, float64); got int64.",
        ),
        (
            "unknown_dtype",
            lambda: recurrax.static_rnn(RNN, STEPS, dtype="no-such-type"),
            TypeError,
            "dtype must be a floating dtype; got 'no-such-type'.",
        ),
        (
            "zero_state_integer_dtype",
            lambda: LSTM.zero_state(2, jnp.int8),
            TypeError,
            "dtype must be a floating dtype (float16, bfloat16, float32, float64); got int8.",
        ),
        (
            "zero_state_batch",
            lambda: RNN.zero_state(0, None),
            ValueError,
            "batch_size must be >= 1; got 0.",
        ),
        # DropoutWrapper keep probabilities and key
        (
            "keep_prob_zero",
            lambda: recurrax.DropoutWrapper(RNN, input_keep_prob=0.0, key=KEY),
            ValueError,
            "input_keep_prob must be in (0, 1], the probability of keeping a unit; got 0.0. "
            "Use 1.0 for no dropout.",
        ),
        (
            "keep_prob_above_one",
            lambda: recurrax.DropoutWrapper(RNN, output_keep_prob=1.5, key=KEY),
            ValueError,
            "output_keep_prob must be in (0, 1], the probability of keeping a unit; got 1.5.",
        ),
        (
            "keep_prob_negative",
            lambda: recurrax.DropoutWrapper(RNN, state_keep_prob=-0.5, key=KEY),
            ValueError,
            "state_keep_prob must be in (0, 1], the probability of keeping a unit; got -0.5.",
        ),
        (
            "keep_prob_type",
            lambda: recurrax.DropoutWrapper(RNN, state_keep_prob="0.5", key=KEY),
            TypeError,
            "state_keep_prob must be a float in (0, 1] (static, not an array); got str.",
        ),
        (
            "keep_prob_array",
            lambda: recurrax.DropoutWrapper(RNN, input_keep_prob=jnp.array(0.5), key=KEY),
            TypeError,
            "input_keep_prob must be a float in (0, 1] (static, not an array); got ArrayImpl.",
        ),
        (
            "dropout_without_key",
            lambda: recurrax.DropoutWrapper(RNN, 0.5),
            TypeError,
            "key is required: pass a PRNG key such as jax.random.key(0) to draw the dropout "
            "masks (a keep probability is < 1); got None.",
        ),
        # MultiRNNCell, ResidualWrapper
        (
            "multi_layers_do_not_chain",
            lambda: recurrax.MultiRNNCell([RNN, GRU_4_5]),
            ValueError,
            "MultiRNNCell layers do not chain: cells[0].output_size=4 but "
            "cells[1].input_size=5. Build layer 1 with input_size=4.",
        ),
        (
            "multi_empty",
            lambda: recurrax.MultiRNNCell([]),
            ValueError,
            "cells must hold at least one cell; got an empty sequence.",
        ),
        (
            "multi_not_a_cell",
            lambda: recurrax.MultiRNNCell([RNN, 3]),
            TypeError,
            "cells[1] must be a cell: callable as cell(inputs, state) -> (output, new_state), "
            "with state_size and output_size; got int lacking ['state_size', 'output_size'].",
        ),
        (
            "multi_not_a_list",
            lambda: recurrax.MultiRNNCell(RNN),
            TypeError,
            "cells must be a list or tuple of cells; got BasicRNNCell.",
        ),
        (
            "residual_sizes",
            lambda: recurrax.ResidualWrapper(GRU_5_3),
            ValueError,
            "ResidualWrapper needs output_size == input_size to add inputs to outputs; got "
            "input_size=3, output_size=5. Pass residual_fn or project the inputs first.",
        ),
        # cell construction
        (
            "num_units_zero",
            lambda: recurrax.GRUCell(0, 3, key=KEY),
            ValueError,
            "num_units must be a positive int; got 0.",
        ),
        (
            "num_units_negative",
            lambda: recurrax.LSTMCell(-2, 3, key=KEY),
            ValueError,
            "num_units must be a positive int; got -2.",
        ),
        (
            "num_units_float",
            lambda: recurrax.BasicLSTMCell(4.0, 3, key=KEY),
            TypeError,
            "num_units must be a positive int; got float.",
        ),
        (
            "input_size_zero",
            lambda: recurrax.BasicRNNCell(4, 0, key=KEY),
            ValueError,
            "input_size must be a positive int; got 0.",
        ),
        (
            "num_proj_zero",
            lambda: recurrax.LSTMCell(4, 3, key=KEY, num_proj=0),
            ValueError,
            "num_proj must be a positive int; got 0.",
        ),
        (
            "cell_clip_negative",
            lambda: recurrax.LSTMCell(4, 3, key=KEY, cell_clip=-1.0),
            ValueError,
            "cell_clip must be a number >= 0 or None (0.0 clips to zero, as in TF1); got -1.0.",
        ),
        (
            "proj_clip_nan",
            lambda: recurrax.LSTMCell(4, 3, key=KEY, num_proj=2, proj_clip=float("nan")),
            ValueError,
            "proj_clip must be a number >= 0 or None (0.0 clips to zero, as in TF1); got nan.",
        ),
        (
            "cell_without_key",
            lambda: recurrax.BasicRNNCell(4, 3, key=None),
            TypeError,
            "key is required: pass a PRNG key such as jax.random.key(0) to initialise weights; "
            "got None.",
        ),
        (
            "activation_not_callable",
            lambda: recurrax.GRUCell(4, 3, key=KEY, activation="tanh"),
            TypeError,
            "activation must be callable; got 'tanh'.",
        ),
        # runner arguments
        (
            "not_a_cell",
            lambda: recurrax.dynamic_rnn(lambda x, h: (x, h), X),
            TypeError,
            "cell must be a cell: callable as cell(inputs, state) -> (output, new_state), with "
            "state_size and output_size; got function lacking ['state_size', 'output_size'].",
        ),
        (
            "bidirectional_not_a_cell",
            lambda: recurrax.bidirectional_dynamic_rnn(RNN, object(), X),
            TypeError,
            "cell_bw must be a cell",
        ),
        (
            "parallel_iterations",
            lambda: recurrax.dynamic_rnn(RNN, X, parallel_iterations=0),
            ValueError,
            "parallel_iterations must be a positive int or None; got 0.",
        ),
        # cells and wrappers: TF1's arguments, the state of a direct call, dropout keys
        (
            "cell_called_with_wrong_state_batch",
            lambda: RNN(np.ones((2, 3)), np.zeros((3, 4))),
            ValueError,
            "BasicRNNCell: state must have shape (2, 4) ([batch, state size], batch 2 from the "
            "inputs); got (3, 4). Build it with cell.zero_state(batch_size, dtype).",
        ),
        (
            "cell_called_with_wrong_state_size",
            lambda: LSTM(np.ones((2, 3)), (np.zeros((2, 4)), np.zeros((2, 5)))),
            ValueError,
            "BasicLSTMCell: state must have shape LSTMStateTuple(c=(2, 4), h=(2, 4)) ([batch, "
            "state size], batch 2 from the inputs); got ((2, 4), (2, 5)).",
        ),
        (
            "forget_bias_nan",
            lambda: recurrax.BasicLSTMCell(4, 3, key=KEY, forget_bias=float("nan")),
            ValueError,
            "forget_bias must be a number (added to the forget gate); got nan.",
        ),
        (
            "state_is_tuple_false",
            lambda: recurrax.LSTMCell(4, 3, key=KEY, state_is_tuple=False),
            ValueError,
            "LSTMCell: state_is_tuple=False is not supported: TF1 deprecated the concatenated "
            "[batch, c + h] state",
        ),
        (
            "unknown_keyword_suggests",
            lambda: recurrax.LSTMCell(4, 3, key=KEY, use_peephole=True),
            TypeError,
            "LSTMCell got an unexpected keyword argument 'use_peephole'; did you mean "
            "'use_peepholes'?",
        ),
        (
            "dropout_seed",
            lambda: recurrax.DropoutWrapper(RNN, 0.5, seed=1, key=KEY),
            TypeError,
            "DropoutWrapper does not take seed=: recurrax draws the masks from a PRNG key: pass "
            "key=jax.random.key(seed).",
        ),
        (
            "dropout_called_without_key",
            lambda: recurrax.DropoutWrapper(RNN, 0.5, key=KEY)(np.ones((2, 3)), np.zeros((2, 4))),
            TypeError,
            "DropoutWrapper: dropout is active (input_keep_prob=0.5) but this call has no key and "
            "the wrapper is not bound to a time step, so every call would draw the same masks. "
            "Pass a fresh key per call, cell(inputs, state, key=k)",
        ),
        (
            "initial_state_batch_disagrees",
            lambda: RNN.get_initial_state(np.ones((2, 3)), batch_size=3),
            ValueError,
            "BasicRNNCell.get_initial_state: batch_size=3 disagrees with the inputs' batch 2 "
            "(inputs.shape[0] of shape (2, 3)); pass one or the other.",
        ),
        (
            "initial_state_dtype_disagrees",
            lambda: LSTM.get_initial_state(np.ones((2, 3), np.float32), dtype=jnp.float64),
            ValueError,
            "BasicLSTMCell.get_initial_state: dtype=float64 disagrees with the inputs' dtype "
            "float32; pass one or the other.",
        ),
        (
            "initializer_not_callable",
            lambda: recurrax.GRUCell(4, 3, key=KEY, kernel_initializer=0.1),
            TypeError,
            "kernel_initializer must be callable as kernel_initializer(key, shape, dtype) -> array",
        ),
        # inputs that must be real; reverse_sequence's arguments; the fused path's blocker
        (
            "complex_inputs",
            lambda: recurrax.dynamic_rnn(RNN, X.astype(np.complex64)),
            TypeError,
            "inputs must be real (a floating or integer dtype, cast to dtype); got complex64. "
            "Pass jnp.real(x), or the real and imaginary parts as separate features.",
        ),
        (
            "reverse_sequence_same_axes",
            lambda: recurrax.reverse_sequence(X, np.array([1, 2]), 1, 1),
            ValueError,
            "time_axis and batch_axis must be different axes of xs (rank 3); got time_axis=1 "
            "and batch_axis=1.",
        ),
        (
            "reverse_sequence_axis_range",
            lambda: recurrax.reverse_sequence(X, np.array([1, 2]), 3, 0),
            ValueError,
            "time_axis=3 is out of range for xs of shape (2, 5, 3) (rank 3).",
        ),
        (
            "reverse_sequence_lengths_float",
            lambda: recurrax.reverse_sequence(X, np.array([1.0, 2.0]), 1, 0),
            TypeError,
            "sequence_length must have an integer dtype (int32 or int64); got float64.",
        ),
        (
            "fused_names_the_blocking_layer",
            lambda: recurrax.dynamic_rnn(
                recurrax.MultiRNNCell([RNN, recurrax.DropoutWrapper(RNN_4_4)]),
                X,
                implementation="fused",
            ),
            ValueError,
            "got MultiRNNCell: layer 1 of the MultiRNNCell is a DropoutWrapper. "
            "implementation='generic' runs it ('auto' picks the path).",
        ),
    ]


CASES = _cases()


@pytest.mark.parametrize("call, exc, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_message(call, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        call()


def test_shape_checks_hold_under_jit():
    """Shapes and dtypes are static under jit, so they are still checked there."""
    with pytest.raises(ValueError, match=re.escape("sequence_length must have shape [batch]")):
        jax.jit(lambda x, n: recurrax.dynamic_rnn(RNN, x, n))(X, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match=re.escape("integer dtype (int32 or int64); got float")):
        jax.jit(lambda n: recurrax.static_rnn(RNN, STEPS, sequence_length=n))(jnp.ones(2))
    with pytest.raises(ValueError, match=re.escape("array 1 has shape (2, 5), expected (2, 4)")):
        eqx.filter_jit(lambda s: recurrax.dynamic_rnn(LSTM, X, initial_state=s))(
            (jnp.zeros((2, 4)), jnp.zeros((2, 5)))
        )


@pytest.mark.parametrize(
    "page, heading", [("README.md", "### Errors"), ("docs/contract.md", "## Errors")]
)
def test_docs_quote_the_current_messages(page, heading):
    """The "Errors" sections of the README and the manual show two messages; they must be the
    ones raised."""
    text = (__import__("pathlib").Path(__file__).parents[1] / page).read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    quoted = [line for line in section.splitlines() if line.startswith("ValueError: ")]
    assert len(quoted) >= 2
    raised = []
    for call in (
        lambda: recurrax.dynamic_rnn(RNN, np.ones((2, 5, 4))),
        lambda: recurrax.dynamic_rnn(RNN, np.ones((4, 2, 3)), np.array([0, 3, 1, 2])),
    ):
        with pytest.raises(ValueError) as info:
            call()
        raised.append(f"ValueError: {info.value}")
    assert quoted[:2] == raised
