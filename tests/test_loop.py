"""The dynamic_rnn loop: early exit (forward and backward), partial unrolling, the trip count.

Values are checked against the NumPy reference of TF1's contract, gradients against a plain
``lax.scan`` over all ``T`` steps (XLA's own autodiff, no early exit), in float64. That the loop
really stops at ``max(sequence_length)`` is checked by counting the cell's calls with a host
callback, so a loop that ran all ``T`` steps and masked them would fail. With traced lengths
the loop reads and writes batch-major arrays in place: checked by values and gradients in both
layouts and by the absence of sequence-sized transposes in the traced programs.
"""

import functools
import threading
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from engine_hook import engine_bidirectional, engine_rnn
from recurrax.engine.loop import run_loop, trip_count
from reference import (
    all_eqns,
    assert_tree_close,
    make_cell,
    reference_rnn,
    reference_step,
    zeros_like_state,
)

B, T, F = 4, 7, 3  # batch, time, features
FAST = {"xla_backend_optimization_level": 0}  # tiny programs: compile them quickly
# Length patterns: each holds a row of length 0 or T where it can; "short" stops well before T.
PATTERNS = {"mixed": [0, 7, 2, 5], "short": [3, 1, 0, 2], "zeros": [0, 0, 0, 0], "full": [7] * 4}
KINDS = ["basic_lstm", "multi", "user"]


def inputs(batch=B, time=T, features=F, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features))


# ----------------------------------------------------------------------------------------------
# A plain lax.scan over all T steps, with TF1's masking: the gradient reference.


def scan_rnn(cell, x_tm, state, lengths):
    """``(outputs [T, B, out], final_state)`` by ``lax.scan`` over every step, masked per row."""
    time, batch = x_tm.shape[:2]
    lengths = jnp.full((batch,), time) if lengths is None else jnp.asarray(lengths)

    def body(s, inp):
        x, t = inp
        c = cell.at_step(t) if hasattr(cell, "at_step") else cell
        out, new = c(x, s)
        valid = (t < lengths)[:, None]
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(valid, n, o), new, s)
        return new, jnp.where(valid, out, 0.0)

    final, outs = jax.lax.scan(body, state, (x_tm, jnp.arange(time)))
    return outs, final


def reverse_rows(x_tm, lengths):
    """Reverse each row of ``x [T, B, ...]`` within its length (the whole axis without)."""
    time, batch = x_tm.shape[:2]
    lengths = jnp.full((batch,), time) if lengths is None else jnp.asarray(lengths)
    t = jnp.arange(time)[:, None]
    src = jnp.where(t < lengths[None], lengths[None] - 1 - t, t)  # (T, B)
    return jnp.take_along_axis(x_tm, src[..., None], axis=0)


def scan_bidirectional(cell_fw, cell_bw, x_tm, s_fw, s_bw, lengths):
    out_fw, st_fw = scan_rnn(cell_fw, x_tm, s_fw, lengths)
    out_bw, st_bw = scan_rnn(cell_bw, reverse_rows(x_tm, lengths), s_bw, lengths)
    return (out_fw, reverse_rows(out_bw, lengths)), (st_fw, st_bw)


def probe_loss(outputs, state, seed=1):
    """A loss that weighs every output and state entry differently (so no gradient cancels)."""
    leaves = jax.tree_util.tree_leaves((outputs, state))
    rng = np.random.default_rng(seed)
    return sum(jnp.sum(jnp.sin(a) * rng.standard_normal(a.shape)) for a in leaves)


def initial_state(cell, seed=2):
    state = cell.zero_state(B, jnp.float64)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape)), state)


# ----------------------------------------------------------------------------------------------
# Counting the cell's calls.


class CountingCell(eqx.Module):
    """Wraps a cell and ticks a host counter each time it is called (once per step)."""

    cell: Any
    counter: Any = eqx.field(static=True)

    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)
    input_size = property(lambda self: getattr(self.cell, "input_size", None))

    def zero_state(self, batch_size, dtype):
        return self.cell.zero_state(batch_size, dtype)

    def __call__(self, x, s):
        jax.debug.callback(self.counter.tick)
        return self.cell(x, s)


class Counter:
    def __init__(self):
        self.n, self._lock = 0, threading.Lock()

    def tick(self):
        with self._lock:
            self.n += 1

    def take(self) -> int:
        jax.effects_barrier()
        n, self.n = self.n, 0
        return n


# ----------------------------------------------------------------------------------------------


def test_trip_count():
    assert trip_count(None, 7) == 7
    assert trip_count(np.array([0, 5, 2]), 7) == 5
    assert trip_count(np.array([0, 0]), 7) == 0
    traced = jax.jit(lambda n: trip_count(n, 7))
    assert int(traced(jnp.array([0, 5, 2]))) == 5
    assert int(traced(jnp.array([3, 9, 2]))) == 7  # above T acts as T
    assert int(traced(jnp.array([-3, -1, -2]))) == 0  # negative acts as 0


@pytest.mark.parametrize("kind", KINDS)
def test_early_exit_values_under_jit(kind):
    """Traced lengths (a traced trip count): outputs and final states equal the reference."""
    cell = make_cell(kind, F)
    x = inputs()

    @functools.partial(jax.jit, compiler_options=FAST)
    def run(cell, x, lengths):
        return recurrax.dynamic_rnn(
            cell, x, lengths, dtype=jnp.float64, unroll=2, implementation="generic"
        )

    for name, lengths in PATTERNS.items():
        out, state = run(cell, x, jnp.array(lengths))
        want_out, want_state = reference_rnn(
            reference_step(kind, cell),
            np.swapaxes(x, 0, 1),
            zeros_like_state(cell.state_size, B),
            np.array(lengths),
        )
        assert_tree_close(jnp.swapaxes(out, 0, 1), want_out, 1e-10, 1e-12)
        assert_tree_close(state, want_state, 1e-10, 1e-12)
        # The contract's zeros are exact zeros, not small numbers.
        np.testing.assert_array_equal(np.asarray(out)[:, max(lengths) :], 0.0, err_msg=name)


@pytest.mark.parametrize("unroll", [3, 9])
def test_unroll_same_results(unroll):
    """``unroll`` does not change a value: static and traced trip counts, time-major or not."""
    cell = make_cell("basic_lstm", F)
    x = jnp.asarray(inputs())
    lengths = np.array(PATTERNS["short"])

    @functools.partial(jax.jit, compiler_options=FAST)
    def run(cell, x, traced_lengths):
        static = recurrax.dynamic_rnn(
            cell, x, lengths, dtype=jnp.float64, unroll=unroll, implementation="generic"
        )
        out, state = recurrax.dynamic_rnn(
            cell,
            jnp.swapaxes(x, 0, 1),
            traced_lengths,
            unroll=unroll,
            time_major=True,
            implementation="generic",
        )
        return static, (jnp.swapaxes(out, 0, 1), state)

    base = recurrax.dynamic_rnn(cell, x, lengths, dtype=jnp.float64, implementation="generic")
    static, traced = run(cell, x, jnp.asarray(lengths))
    assert_tree_close(static, base, 1e-12, 1e-13)
    assert_tree_close(traced, base, 1e-12, 1e-13)


def test_unroll_puts_copies_of_the_step_in_the_program():
    """With a traced trip count, unroll=3 runs 3 steps per iteration plus a remainder loop."""
    cell = make_cell("user", F)
    x = jnp.asarray(inputs())

    def n_tanh(unroll):
        f = lambda n: recurrax.dynamic_rnn(cell, x, n, dtype=jnp.float64, unroll=unroll)
        return str(jax.make_jaxpr(f)(jnp.array(PATTERNS["mixed"]))).count(" tanh ")

    assert n_tanh(1) == 1
    assert n_tanh(3) == 4


@pytest.mark.parametrize("bidirectional", [False, True], ids=["dynamic", "bidirectional"])
def test_early_exit_gradients_equal_full_scan(bidirectional):
    """Gradients through the early-exit loop (its custom VJP) equal lax.scan's over all T.

    Traced lengths store the steps' values one segment at a time: segments of 3 steps here.
    (test_memory.py runs this for every strategy and cell; here: more length patterns.)
    """
    cell = make_cell("user", F)
    x = jnp.asarray(inputs()).swapaxes(0, 1)  # (T, B, F)
    s0 = initial_state(cell)
    chunks = dict(time_major=True, unroll=2, exit_chunk=3)

    def loss(cell, x, s0, lengths, engine):
        if bidirectional and engine:
            outs, states = engine_bidirectional(cell, cell, x, lengths, s0, s0, **chunks)
        elif engine:
            outs, states = engine_rnn(cell, x, lengths, s0, **chunks)
        elif bidirectional:
            outs, states = scan_bidirectional(cell, cell, x, s0, s0, lengths)
        else:
            outs, states = scan_rnn(cell, x, s0, lengths)
        return probe_loss(outs, states)

    grad = jax.jit(jax.grad(lambda a, n: loss(*a, n, True)), compiler_options=FAST)
    reference = jax.jit(jax.grad(lambda a, n: loss(*a, n, False)), compiler_options=FAST)
    for name in ["mixed", "short", "zeros"]:
        lengths = PATTERNS[name]
        want = reference((cell, x, s0), jnp.array(lengths))
        got = grad((cell, x, s0), jnp.array(lengths))
        assert_tree_close(got, want, 1e-10, 1e-12)
        # Inputs past each row's length get exactly zero gradient.
        for b, n in enumerate(lengths):
            np.testing.assert_array_equal(np.asarray(got[1])[n:, b], 0.0)
        if name == "mixed":
            assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(got[0]))


@pytest.mark.parametrize("unroll", [3])
def test_cell_runs_only_up_to_the_longest_row(unroll):
    """The trip count is max(sequence_length): counted cell calls, forward and backward."""
    counter = Counter()
    cell = CountingCell(make_cell("user", F), counter)
    x = jnp.asarray(inputs(time=12))
    run = jax.jit(lambda c, x, n: recurrax.dynamic_rnn(c, x, n, dtype=jnp.float64, unroll=unroll))
    grad = eqx.filter_jit(
        eqx.filter_grad(
            lambda c, x, n: jnp.sum(recurrax.dynamic_rnn(c, x, n, dtype=x.dtype, unroll=unroll)[1])
        )
    )
    for lengths in ([0, 5, 3, 1], [12, 0, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2]):
        n = jnp.array(lengths)
        jax.block_until_ready(run(cell, x, n))
        assert counter.take() == max(lengths)
        # T <= EXIT_CHUNK: every step's values are stored, the backward pass calls no cell.
        jax.block_until_ready(grad(cell, x.astype(jnp.float64), n))
        assert counter.take() == max(lengths)
    bidir = jax.jit(lambda c, x, n: recurrax.bidirectional_dynamic_rnn(c, c, x, n, dtype=x.dtype))
    jax.block_until_ready(bidir(cell, x, jnp.array([0, 5, 3, 1])))
    assert counter.take() == 2 * 5


def test_segments_past_one_chunk_are_recomputed_once():
    """T > EXIT_CHUNK with traced lengths: values are stored one segment at a time and each
    segment is recomputed once, so the cell runs exactly max(lengths) steps forward and as many
    again in the backward pass, whatever the padded T."""
    counter = Counter()
    cell = CountingCell(make_cell("user", F), counter)
    x = jnp.asarray(inputs(time=12))
    grad = eqx.filter_jit(
        eqx.filter_grad(lambda c, n: jnp.sum(engine_rnn(c, x, n, dtype=x.dtype, exit_chunk=4)[0]))
    )
    for lengths in ([0, 5, 3, 1], [12, 0, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2]):
        jax.block_until_ready(grad(cell, jnp.array(lengths)))
        assert counter.take() == 2 * max(lengths)


def test_concrete_lengths_stop_early_without_jit():
    counter = Counter()
    cell = CountingCell(make_cell("gru", F), counter)  # not a built-in: the generic engine
    out, _ = recurrax.dynamic_rnn(cell, inputs(time=12), np.array([4, 0, 2, 1]), dtype=jnp.float64)
    assert counter.take() == 4
    np.testing.assert_array_equal(np.asarray(out)[:, 4:], 0.0)


def test_concrete_lengths_under_jit_give_a_static_trip_count():
    """NumPy lengths stay concrete under jax.jit: the loop is a lax.scan over max(lengths)
    steps (XLA's own autodiff, every value stored), not the early-exit loop of traced ones."""
    cell = make_cell("user", F)
    x = jnp.asarray(inputs(time=12))

    def loss(c, lengths):
        return jnp.sum(recurrax.dynamic_rnn(c, x, lengths, dtype=x.dtype)[0])

    lengths = np.array([0, 5, 3, 1])
    concrete = str(jax.make_jaxpr(jax.grad(lambda c: loss(c, lengths)))(cell))
    assert "length=5" in concrete and "while" not in concrete
    traced = str(jax.make_jaxpr(jax.grad(loss))(cell, lengths))  # an argument: traced
    assert "while" in traced


class PlainCell:
    """A user cell that is no pytree: a Python object holding (possibly traced) arrays."""

    def __init__(self, W, U):
        self.W, self.U = W, U
        self.state_size = self.output_size = U.shape[0]

    def __call__(self, x, h):
        h = jnp.tanh(x @ self.W + h @ self.U)
        return h, h


@pytest.mark.parametrize("memory", ["store", recurrax.Revolve(2)])
def test_plain_python_cell_closed_over_traced_weights(memory):
    """Weights traced by jax.grad reach the custom VJP through closure conversion."""
    rng = np.random.default_rng(5)
    W, U = jnp.asarray(rng.standard_normal((F, 4))), jnp.asarray(rng.standard_normal((4, 4)) / 2)
    x = jnp.asarray(inputs()).swapaxes(0, 1)
    h0 = jnp.asarray(rng.standard_normal((B, 4)))
    lengths = jnp.array(PATTERNS["mixed"])

    def loss(W, U, x, engine):
        cell = PlainCell(W, U)
        if engine:
            outs, h = recurrax.dynamic_rnn(
                cell, x, lengths, h0, time_major=True, memory=memory, unroll=2
            )
        else:
            outs, h = scan_rnn(cell, x, h0, lengths)
        return probe_loss(outs, h)

    got = jax.jit(jax.grad(lambda W, U, x: loss(W, U, x, True), (0, 1, 2)), compiler_options=FAST)(
        W, U, x
    )
    want = jax.grad(lambda W, U, x: loss(W, U, x, False), (0, 1, 2))(W, U, x)
    assert_tree_close(got, want, 1e-10, 1e-12)


def test_run_loop_reference_loop():
    """run_loop's docstring loop, with a step that closes over a traced value."""
    xs = jnp.asarray(inputs(batch=2, time=6, features=2).swapaxes(0, 1))

    def python_loop(a, n):
        state, ys = jnp.ones((2, 2)), []
        for t in range(6):
            y = jnp.sin(state * a + xs[t]) if t < n else jnp.zeros((2, 2))
            ys.append(y)
            state = state + y
        return state, jnp.stack(ys)

    def loop(a, n):
        step = lambda s, x, t: (s + jnp.sin(s * a + x), jnp.sin(s * a + x))
        return run_loop(step, jnp.ones((2, 2)), xs, length=n, memory="recompute", unroll=4)

    grad = jax.jit(jax.grad(lambda a, n: jnp.sum(loop(a, n)[0] ** 2)), compiler_options=FAST)
    engine = jax.jit(loop, compiler_options=FAST)
    for n in (0, 3, 6):
        assert_tree_close(engine(0.7, jnp.int32(n)), python_loop(0.7, n), 1e-12, 1e-13)
        want = jax.grad(lambda a, n=n: jnp.sum(python_loop(a, n)[0] ** 2))(0.7)
        np.testing.assert_allclose(grad(0.7, jnp.int32(n)), want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# The caller's layout: with a traced trip count the loops read and write batch-major arrays in
# place (no transposes of the whole padded sequence), forward and backward.

MEMORIES = ["store", "recompute", recurrax.CheckpointEvery(3), recurrax.Revolve(2)]


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("memory", MEMORIES, ids=str)
def test_layouts_with_traced_lengths_equal_full_scan(memory, time_major):
    """Values and gradients (weights, initial state, inputs) in either layout, every strategy,
    equal the plain ``lax.scan``'s; inputs past each row's length get exactly zero gradient."""
    cell = make_cell("user", F)
    x = jnp.asarray(inputs() if not time_major else inputs().swapaxes(0, 1))
    s0 = initial_state(cell)
    to_tm = (lambda a: a) if time_major else (lambda a: jnp.swapaxes(a, 0, 1))

    def run(cell, x, s0, lengths, engine):
        if engine:  # "store": segments of 4 and 3 steps
            return engine_rnn(
                cell, x, lengths, s0, time_major=time_major, memory=memory, unroll=2, exit_chunk=4
            )
        outs, state = scan_rnn(cell, to_tm(x), s0, lengths)
        return to_tm(outs), state  # back to the caller's layout

    def values_and_grads(args, lengths, engine):
        grads = jax.grad(lambda a: probe_loss(*run(*a, lengths, engine)))(args)
        return run(*args, lengths, engine), grads

    got_fn = jax.jit(lambda a, n: values_and_grads(a, n, True), compiler_options=FAST)
    want_fn = jax.jit(lambda a, n: values_and_grads(a, n, False), compiler_options=FAST)
    for name in ["mixed", "short", "full"]:
        lengths = jnp.array(PATTERNS[name])
        (out, state), grads = got_fn((cell, x, s0), lengths)
        (want_out, want_state), want_grads = want_fn((cell, x, s0), lengths)
        assert out.shape == x.shape[:2] + (4,)
        assert_tree_close((out, state), (want_out, want_state), 1e-10, 1e-12)
        assert_tree_close(grads, want_grads, 1e-10, 1e-12)
        dx = np.asarray(to_tm(grads[1]))  # (T, B, F)
        for b, n in enumerate(PATTERNS[name]):
            np.testing.assert_array_equal(dx[n:, b], 0.0)
            assert n == 0 or np.abs(dx[:n, b]).min() > 0, (name, b)
        assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads))


def test_run_loop_batch_major_pytrees():
    """Every leaf of batch-major inputs and outputs is read and written along its time axis:
    values and gradients of a step over two input leaves with two outputs, against a Python
    loop, with a traced trip count."""
    rng = np.random.default_rng(3)
    xs = {"a": jnp.asarray(rng.standard_normal((2, 6, 3))), "b": jnp.asarray(rng.random((2, 6)))}
    s0 = jnp.asarray(rng.standard_normal((2, 3)))

    def step(s, x, t):
        h = jnp.tanh(s * 0.8 + x["a"] * x["b"][:, None] + 0.1 * t)
        return h, (h, jnp.sum(h, axis=1) * x["b"])

    def python_loop(s0, xs, n):
        s, ys = s0, ([], [])
        for t in range(6):
            x = {"a": xs["a"][:, t], "b": xs["b"][:, t]}
            new, y = step(s, x, t)
            zero = t >= n
            s = s if zero else new
            for buf, leaf in zip(ys, y):
                buf.append(jnp.zeros_like(leaf) if zero else leaf)
        return s, tuple(jnp.stack(buf, axis=1) for buf in ys)  # batch-major

    def loss(run, s0, xs, n):
        final, (y1, y2) = run(s0, xs, n)
        return probe_loss((y1, y2), final)

    for memory in ["recompute", recurrax.Revolve(2)]:

        def engine(s0, xs, n, memory=memory):
            return run_loop(step, s0, xs, length=n, memory=memory, unroll=4, time_major=False)

        grad = jax.value_and_grad(lambda s, x, n: loss(engine, s, x, n), (0, 1))
        got = jax.jit(grad, compiler_options=FAST)
        values = jax.jit(engine, compiler_options=FAST)
        for n in (0, 4, 6):
            final, ys = values(s0, xs, jnp.int32(n))
            assert ys[0].shape == (2, 6, 3) and ys[1].shape == (2, 6)
            assert_tree_close((final, ys), python_loop(s0, xs, n), 1e-12, 1e-13)
            want = jax.value_and_grad(lambda s, x, n=n: loss(python_loop, s, x, n), (0, 1))
            assert_tree_close(got(s0, xs, jnp.int32(n)), want(s0, xs), 1e-10, 1e-12)


def _transposed_shapes(jaxpr):
    """Operand shapes of every ``transpose`` in ``jaxpr`` and the programs nested in it."""
    return [e.invars[0].aval.shape for e in all_eqns(jaxpr) if e.primitive.name == "transpose"]


@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_batch_major_traced_lengths_transpose_nothing_sequence_sized(memory):
    """With traced lengths, neither the forward nor the gradient program transposes an array
    of the whole sequence ([B, T, ...] or [T, B, ...]); with concrete lengths and the default
    strategy (a lax.scan over time-major arrays) the inputs are transposed, which this check
    finds."""
    cell = make_cell("user", F)
    x = jnp.asarray(inputs())  # (B, T, F)

    def forward(cell, x, lengths, memory=memory):
        return recurrax.dynamic_rnn(cell, x, lengths, dtype=jnp.float64, memory=memory)

    def gradient(cell, x, lengths):
        return jax.grad(lambda c, x: probe_loss(*forward(c, x, lengths)), (0, 1))(cell, x)

    def sequence_sized(fn, lengths):
        shapes = _transposed_shapes(jax.make_jaxpr(fn)(cell, x, lengths).jaxpr)
        return [s for s in shapes if len(s) == 3 and s[:2] in ((B, T), (T, B))]

    traced = jnp.array(PATTERNS["mixed"])
    assert sequence_sized(forward, traced) == []
    assert sequence_sized(gradient, traced) == []
    scan = lambda c, x, _: forward(c, x, np.array(PATTERNS["mixed"]), memory="store")
    assert (B, T, F) in sequence_sized(scan, traced)


@pytest.mark.parametrize(
    "unroll, error, match",
    [
        (0, ValueError, r"unroll must be a positive int \(steps per loop iteration\); got 0"),
        (-2, ValueError, r"unroll must be a positive int .*got -2"),
        (1.5, TypeError, r"unroll must be a positive int .*got float"),
        (True, TypeError, r"unroll must be a positive int .*got bool"),
    ],
)
def test_bad_unroll(unroll, error, match):
    cell = make_cell("gru", F)
    with pytest.raises(error, match=match):
        recurrax.dynamic_rnn(cell, inputs(), dtype=jnp.float64, unroll=unroll)
