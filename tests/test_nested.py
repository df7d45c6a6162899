"""Nested inputs and scalar state leaves: TF1's ``nest.flatten(inputs)`` and
``_copy_one_through`` in every runner.

The runners take a nest (tuple, namedtuple, dict) of input arrays for a cell that reads one,
and a state leaf of rank 0 (an unbatched counter, int32) is carried unmasked. Each test compares
with a plain Python loop over the steps, in value and gradient.
"""

from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from reference import reverse_rows

F64 = jnp.float64
B, T, IA, IB, H = 3, 5, 2, 3, 4
LENGTHS = np.array([5, 2, 0])
tree_map = jax.tree_util.tree_map


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


class NestCell(eqx.Module):
    """``h' = tanh(a @ w_a + b @ w_b + h @ u + 0.1 n)``, ``n' = n + 1``; output ``h'``.

    ``a`` and ``b`` are the two leaves of the input nest, in order; ``n`` is an int32 scalar
    (no batch axis) when ``counter``, else the state is ``h`` alone."""

    w_a: jax.Array
    w_b: jax.Array
    u: jax.Array
    counter: bool = eqx.field(static=True, default=False)
    output_size: int = eqx.field(static=True, default=H)

    @property
    def state_size(self):
        return (H, recurrax.TensorShape(())) if self.counter else H

    def zero_state(self, batch_size, dtype):
        h = jnp.zeros((batch_size, H), dtype)
        return (h, jnp.zeros((), jnp.int32)) if self.counter else h

    def __call__(self, inputs, state):
        a, b = jax.tree_util.tree_leaves(inputs)
        h, n = state if self.counter else (state, None)
        z = a @ self.w_a + b @ self.w_b + h @ self.u
        if self.counter:
            z = z + 0.1 * n.astype(z.dtype)
        h = jnp.tanh(z)
        return h, ((h, n + 1) if self.counter else h)


def make_cell(counter=False, seed=0):
    rng = np.random.default_rng(seed)
    w = [jnp.asarray(rng.uniform(-0.6, 0.6, shape), F64) for shape in ((IA, H), (IB, H), (H, H))]
    return NestCell(*w, counter=counter)


def make_inputs(kind, seed=1, time_major=True, nan_padding=False):
    """A nest of ``[T, B, IA]`` and ``[T, B, IB]`` (batch-major without ``time_major``)."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((T, B, n)) for n in (IA, IB))
    if nan_padding:
        pad = np.arange(T)[:, None] >= LENGTHS[None, :]
        a[pad], b[pad] = np.nan, np.inf
    a, b = (jnp.asarray(x if time_major else np.swapaxes(x, 0, 1), F64) for x in (a, b))
    return {"tuple": (a, b), "namedtuple": Pair(a, b), "dict": {"a": a, "b": b}}[kind]


def at(xs, t):
    """Step ``t`` of every leaf of time-major ``xs``."""
    return tree_map(lambda x: x[t], xs)


def _clear(valid, x):
    return jnp.where(valid, x, 0.0)


def _copy_one_through(valid, new, old):
    return new if old.ndim == 0 else jnp.where(valid, new, old)


def reference(cell, xs, lengths=None, state=None):
    """The TF1 contract as a Python loop over time-major ``xs``: inputs past a row's length
    read as zeros, outputs zero there, state carried; a rank-0 state leaf advances at every
    step ``t < max(lengths)``."""
    steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    lengths = np.full(B, steps) if lengths is None else np.asarray(lengths)
    state = cell.zero_state(B, F64) if state is None else state
    outputs = []
    for t in range(steps):
        if t >= lengths.max():
            outputs.append(jnp.zeros((B, H), F64))
            continue
        valid = jnp.asarray(t < lengths)[:, None]
        out, new = cell(tree_map(partial(_clear, valid), at(xs, t)), state)
        outputs.append(jnp.where(valid, out, 0.0))
        state = tree_map(partial(_copy_one_through, valid), new, state)
    return jnp.stack(outputs), state


def loss(outputs, state):
    """A loss that reads every output and state value (float leaves)."""
    floats = [s for s in jax.tree_util.tree_leaves(state) if jnp.issubdtype(s.dtype, jnp.inexact)]
    return jnp.sum(jnp.sin(outputs) ** 2) + sum(jnp.sum(jnp.cos(s)) for s in floats)


def assert_close(actual, expected, atol=1e-10):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        assert jnp.result_type(a) == jnp.result_type(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-9, atol=atol)


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tuple", "namedtuple", "dict"])
@pytest.mark.parametrize("time_major", [True, False], ids=["time_major", "batch_major"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_dynamic_rnn_nested_inputs(kind, time_major, lengths):
    """``dynamic_rnn`` over a nest of inputs equals the reference loop; the outputs keep the
    layout of the inputs."""
    cell = make_cell()
    xs = make_inputs(kind, time_major=time_major)
    outputs, state = recurrax.dynamic_rnn(
        cell, xs, sequence_length=lengths, time_major=time_major, dtype=F64
    )
    want_out, want_state = reference(cell, make_inputs(kind), lengths)
    assert_close(outputs, want_out if time_major else jnp.swapaxes(want_out, 0, 1))
    assert_close(state, want_state)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
def test_static_rnn_nested_steps(kind, traced):
    """``static_rnn`` over a list of nests (one per step), with concrete or traced lengths,
    equals the reference loop, and so do its gradients w.r.t. every input leaf."""
    cell = make_cell()
    xs = make_inputs(kind)

    def run(cell, xs, lengths):
        steps = [at(xs, t) for t in range(T)]
        outputs, state = recurrax.static_rnn(cell, steps, sequence_length=lengths, dtype=F64)
        return loss(jnp.stack(outputs), state)

    def ref(cell, xs, lengths):
        return loss(*reference(cell, xs, LENGTHS))

    run = jax.jit(run) if traced else run
    lengths = jnp.asarray(LENGTHS) if traced else LENGTHS
    got = jax.value_and_grad(run, argnums=(0, 1))(cell, xs, lengths)
    assert_close(got, jax.value_and_grad(ref, argnums=(0, 1))(cell, xs, None))


def test_nan_padding_with_traced_lengths():
    """NaN and inf past each row's length, lengths traced under ``jax.jit``: outputs, states and
    gradients w.r.t. both input leaves and the weights equal the reference on clean inputs
    (zero gradient in the padding)."""
    cell = make_cell()
    dirty = make_inputs("dict", time_major=False, nan_padding=True)
    clean = tree_map(
        lambda x: jnp.where(jnp.isfinite(x), x, 0.0), make_inputs("dict", nan_padding=True)
    )

    @jax.jit
    def run(cell, xs, lengths):
        return loss(*recurrax.dynamic_rnn(cell, xs, sequence_length=lengths, dtype=F64))

    got = jax.value_and_grad(run, argnums=(0, 1))(cell, dirty, jnp.asarray(LENGTHS))
    want = jax.value_and_grad(lambda c, x: loss(*reference(c, x, LENGTHS)), argnums=(0, 1))(
        cell, clean
    )
    assert np.isfinite(got[0])
    assert_close(got[0], want[0])
    assert_close(got[1][0], want[1][0])
    assert_close(tree_map(lambda x: jnp.swapaxes(x, 0, 1), got[1][1]), want[1][1])


# --- gradients, every memory strategy ----------------------------------------------------------

STRATEGIES = [
    dict(memory="store"),
    dict(memory="store", swap_memory=True),
    dict(memory="recompute"),
    dict(memory=recurrax.CheckpointEvery(2)),
    dict(memory=recurrax.Revolve(2)),
]
STRATEGY_IDS = ["store", "swap", "recompute", "checkpoint2", "revolve2"]


@pytest.mark.parametrize("options", STRATEGIES, ids=STRATEGY_IDS)
def test_nested_gradients_every_strategy(options):
    """Gradients w.r.t. each input leaf and the weights equal the reference loop's, for every
    memory strategy of the generic loop, with NaN padding past the (concrete) lengths, and with
    an int32 scalar counter in the state (no gradient of its own)."""
    cell = make_cell(counter=True)
    dirty = make_inputs("namedtuple", time_major=True, nan_padding=True)
    clean = tree_map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), dirty)

    def run(cell, xs):
        outputs, state = recurrax.dynamic_rnn(
            cell, xs, sequence_length=LENGTHS, time_major=True, dtype=F64, **options
        )
        return loss(outputs, state), state[1]

    (value, count), grads = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(cell, dirty)
    want = jax.value_and_grad(lambda c, x: loss(*reference(c, x, LENGTHS)), argnums=(0, 1))(
        cell, clean
    )
    assert count.dtype == jnp.int32 and count.shape == () and int(count) == LENGTHS.max()
    assert_close(value, want[0])
    assert_close(grads, want[1])


# --- both directions ---------------------------------------------------------------------------


def test_bidirectional_runners_nested():
    """``static_bidirectional_rnn`` and ``bidirectional_dynamic_rnn`` over a nest: the
    backward cell reads every leaf reversed within each row's length (``reverse_sequence`` per
    leaf), as the reference does."""
    cell_fw, cell_bw = make_cell(seed=0), make_cell(seed=2)
    xs = make_inputs("tuple")
    reversed_xs = tree_map(lambda x: jnp.asarray(reverse_rows(x, LENGTHS)), xs)
    out_fw, state_fw = reference(cell_fw, xs, LENGTHS)
    out_bw, state_bw = reference(cell_bw, reversed_xs, LENGTHS)
    out_bw = reverse_rows(out_bw, LENGTHS)

    (dyn_fw, dyn_bw), (dyn_state_fw, dyn_state_bw) = recurrax.bidirectional_dynamic_rnn(
        cell_fw, cell_bw, xs, sequence_length=LENGTHS, time_major=True, dtype=F64
    )
    assert_close((dyn_fw, dyn_bw, dyn_state_fw, dyn_state_bw), (out_fw, out_bw, state_fw, state_bw))

    steps = [at(xs, t) for t in range(T)]
    outputs, st_fw, st_bw = recurrax.static_bidirectional_rnn(
        cell_fw, cell_bw, steps, sequence_length=LENGTHS, dtype=F64
    )
    assert_close(
        (jnp.stack(outputs), st_fw, st_bw),
        (jnp.concatenate([out_fw, out_bw], -1), state_fw, state_bw),
    )


# --- scalar (unbatched) state leaves -----------------------------------------------------------


@pytest.mark.parametrize("runner", ["static", "dynamic"])
@pytest.mark.parametrize("lengths", ["none", "concrete", "traced"])
def test_scalar_int_state(runner, lengths):
    """TF1's ``_copy_one_through``: an int32 scalar state leaf is not masked; it counts the
    steps run (``T``, or ``max(sequence_length)``: no step runs past the longest row), keeps
    its dtype and shape, and the batched leaves follow the contract."""
    cell = make_cell(counter=True)
    xs = make_inputs("tuple")
    initial = (jnp.zeros((B, H), F64), jnp.int32(3))  # an initial state may hold the scalar

    def run(xs, sequence_length):
        if runner == "static":
            steps = [at(xs, t) for t in range(T)]
            outputs, state = recurrax.static_rnn(
                cell, steps, initial_state=initial, sequence_length=sequence_length
            )
            return jnp.stack(outputs), state
        return recurrax.dynamic_rnn(
            cell, xs, sequence_length, initial_state=initial, time_major=True
        )

    if lengths == "traced":
        outputs, state = jax.jit(run)(xs, jnp.asarray(LENGTHS))
    else:
        outputs, state = run(xs, None if lengths == "none" else LENGTHS)
    want_out, want_state = reference(cell, xs, None if lengths == "none" else LENGTHS, initial)
    steps_run = T if lengths == "none" else LENGTHS.max()
    assert state[1].dtype == jnp.int32 and state[1].shape == ()
    assert int(state[1]) == 3 + steps_run and int(want_state[1]) == 3 + steps_run
    assert_close((outputs, state), (want_out, want_state))


def test_static_rnn_scalar_state_stops_at_the_longest_row():
    """``static_rnn`` with traced lengths calls the cell at every step, but a scalar leaf
    stays put past ``max(sequence_length)`` (TF1 runs no step there)."""
    cell = make_cell(counter=True)
    steps = [at(make_inputs("tuple"), t) for t in range(T)]
    lengths = np.array([2, 1, 0])

    @jax.jit
    def count(lengths):
        return recurrax.static_rnn(cell, steps, sequence_length=lengths, dtype=F64)[1][1]

    assert int(count(jnp.asarray(lengths))) == 2


class ScalarOutputCell(eqx.Module):
    """Outputs ``(x + h, 2 n)`` with ``n`` an int32 counter of rank 0 (no batch axis)."""

    output_size: tuple = eqx.field(static=True, default=(IA, recurrax.TensorShape(())))
    state_size: tuple = eqx.field(static=True, default=(IA, recurrax.TensorShape(())))

    def zero_state(self, batch_size, dtype):
        return (jnp.zeros((batch_size, IA), dtype), jnp.zeros((), jnp.int32))

    def __call__(self, x, state):
        h, n = state
        return (x + h, 2 * n), (x + h, n + 1)


@pytest.mark.parametrize("time_major", [True, False], ids=["time_major", "batch_major"])
def test_scalar_output_is_not_masked(time_major):
    """An output leaf of rank 0 passes through unmasked and keeps its dtype: its steps come
    back as ``[T]`` in either layout (no batch axis to move); the batched leaf is masked."""
    x = make_inputs("tuple", time_major=time_major)[0]
    (out, doubled), (h, n) = recurrax.dynamic_rnn(
        ScalarOutputCell(), x, LENGTHS, time_major=time_major, dtype=F64
    )
    assert doubled.dtype == jnp.int32 and int(n) == LENGTHS.max()
    np.testing.assert_array_equal(doubled, [0, 2, 4, 6, 8])
    x_tm = np.asarray(x if time_major else jnp.swapaxes(x, 0, 1))
    valid = (np.arange(T)[:, None] < LENGTHS)[:, :, None]
    want = np.cumsum(np.where(valid, x_tm, 0.0), axis=0) * valid
    np.testing.assert_allclose(out if time_major else jnp.swapaxes(out, 0, 1), want, atol=1e-12)


# --- errors ------------------------------------------------------------------------------------


class SizedNestCell(NestCell):
    """:class:`NestCell` that declares its nest of input sizes."""

    input_size: tuple = eqx.field(static=True, default=(IA, IB))


def _error_cases():
    cell = make_cell()
    xs = make_inputs("tuple")
    a, b = xs
    lstm = recurrax.BasicLSTMCell(H, IA, key=jax.random.key(0))
    steps = [(a[t], b[t]) for t in range(T)]
    weights = (cell.w_a, cell.w_b, cell.u)
    sized = SizedNestCell(*weights)
    return [
        (
            "batch_differs",
            lambda: recurrax.dynamic_rnn(cell, (a, b[:, :2]), time_major=True, dtype=F64),
            ValueError,
            "every array of inputs must have the same batch axis (axis 1, [time, batch, "
            "*input_shape]): inputs[0] has batch 3 but inputs[1] has 2 (shape (5, 2, 3)).",
        ),
        (
            "time_differs",
            lambda: recurrax.dynamic_rnn(cell, {"a": a, "b": b[:4]}, time_major=True, dtype=F64),
            ValueError,
            "every array of inputs must have the same time axis (axis 0, [time, batch, "
            "*input_shape]): inputs['a'] has time 5 but inputs['b'] has 4",
        ),
        (
            "leaf_rank",
            lambda: recurrax.dynamic_rnn(cell, (a, b[0]), dtype=F64),
            ValueError,
            "inputs[1] must have rank 3 or more, [batch, time, *input_shape]",
        ),
        (
            "static_batch_differs",
            lambda: recurrax.static_rnn(cell, [(a[0], b[0, :2])], dtype=F64),
            ValueError,
            "every array of inputs[0] must have the same batch axis (axis 0): inputs[0][0] has "
            "batch 3 but inputs[0][1] has 2 (shape (2, 3)).",
        ),
        (
            "static_nest_changes",
            lambda: recurrax.static_rnn(cell, [steps[0], {"a": a[1], "b": b[1]}], dtype=F64),
            ValueError,
            "every step of inputs must be the same nest of arrays; inputs[0] is",
        ),
        (
            "builtin_cell_dynamic",
            lambda: recurrax.dynamic_rnn(lstm, (a, b), time_major=True, dtype=F64),
            TypeError,
            "inputs must be one array of shape [time, batch, input_size]; got a tuple of 2 "
            "items (2 arrays): cell (BasicLSTMCell) reads one array (its input_size is 2).",
        ),
        (
            "builtin_cell_static",
            lambda: recurrax.static_rnn(lstm, steps, dtype=F64),
            TypeError,
            "inputs[0] must be one array of shape [batch, input_size]; got a tuple of 2 items "
            "(2 arrays): cell (BasicLSTMCell) reads one array",
        ),
        (
            "builtin_cell_bw",
            lambda: recurrax.bidirectional_dynamic_rnn(cell, lstm, xs, time_major=True, dtype=F64),
            TypeError,
            "cell_bw (BasicLSTMCell) reads one array (its input_size is 2)",
        ),
        (
            "declared_sizes",
            lambda: recurrax.dynamic_rnn(sized, (b, a), time_major=True, dtype=F64),
            ValueError,
            "inputs[0] has feature shape (3,) but cell.input_size[0] is 2",
        ),
        (
            "fused_nest",
            lambda: recurrax.dynamic_rnn(
                cell, xs, time_major=True, dtype=F64, implementation="fused"
            ),
            ValueError,
            "implementation='fused' runs built-in cells on one array of inputs; got a nest",
        ),
        (
            "state_dtype_changes",
            lambda: recurrax.dynamic_rnn(FloatCounter(*weights), xs, time_major=True, dtype=F64),
            TypeError,
            "the cell's new_state[1] has dtype float64 but that state leaf is int32 (integer)",
        ),
        (
            "state_shape_changes",
            lambda: recurrax.static_rnn(GrowingCell(*weights), steps, dtype=F64),
            ValueError,
            "the cell's new_state has shape (3, 8) but that state leaf has shape (3, 4)",
        ),
    ]


class FloatCounter(NestCell):
    """A cell whose int32 counter comes back as a float."""

    counter: bool = eqx.field(static=True, default=True)

    def __call__(self, inputs, state):
        out, (h, n) = super().__call__(inputs, state)
        return out, (h, n + 0.5)


class GrowingCell(NestCell):
    """A cell whose state doubles in width."""

    def __call__(self, inputs, state):
        out, h = super().__call__(inputs, state)
        return out, jnp.concatenate([h, h], -1)


ERROR_CASES = _error_cases()


@pytest.mark.parametrize(
    "call, kind, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors(call, kind, message):
    """Bad nests and cells that change a state leaf: the error names the leaf, what was
    expected and what arrived."""
    with pytest.raises(kind) as info:
        call()
    assert message in str(info.value)


def test_dropout_wrapper_drops_each_input_leaf():
    """TF1's DropoutWrapper maps its input dropout over the nest: each leaf gets its own mask
    (kept units scaled by 1 / keep_prob), and the wrapped cell reads the dropped nest."""
    cell = make_cell()
    wrapper = recurrax.DropoutWrapper(cell, input_keep_prob=0.5, key=jax.random.key(3))
    xs = make_inputs("dict")
    step = at(xs, 0)
    state = cell.zero_state(B, F64)
    out, _ = wrapper(step, state, key=jax.random.key(4))
    # Recover the masks the wrapper drew: the same split of the same key.
    seen = {}

    def spy(inputs, state):
        seen["inputs"] = inputs
        return cell(inputs, state)

    class Spy(NestCell):
        def __call__(self, inputs, state):
            return spy(inputs, state)

    spied = recurrax.DropoutWrapper(
        Spy(cell.w_a, cell.w_b, cell.u), input_keep_prob=0.5, key=jax.random.key(3)
    )
    out_spied, _ = spied(step, state, key=jax.random.key(4))
    np.testing.assert_array_equal(out, out_spied)
    dropped = seen["inputs"]
    for name in ("a", "b"):
        x, d = np.asarray(step[name]), np.asarray(dropped[name])
        kept = d != 0
        np.testing.assert_allclose(d[kept], 2 * x[kept])  # scaled by 1 / keep_prob
        assert 0 < kept.mean() < 1
    np.testing.assert_allclose(out, cell(dropped, state)[0])
    # Through dynamic_rnn: the run reads the nest, and it is not the undropped run.
    dropped_run, _ = recurrax.dynamic_rnn(wrapper, xs, time_major=True, dtype=F64)
    plain_run, _ = recurrax.dynamic_rnn(cell, xs, time_major=True, dtype=F64)
    assert dropped_run.shape == plain_run.shape and not np.allclose(dropped_run, plain_run)
