"""Backprop memory strategies: gradients equal store-everything's, memory really shrinks, the
Revolve schedule is optimal, the budget planner keeps its promise, and bad input is refused.

Gradients are compared, in float64, with a plain ``lax.scan`` over all ``T`` steps (XLA's own
autodiff) for every strategy x {no lengths, mixed lengths with 0 and T} x {BasicLSTMCell,
MultiRNNCell, a user-written cell} x {dynamic_rnn, bidirectional_dynamic_rnn}, under jax.jit
with traced lengths (dynamic_rnn without lengths as the forward direction of the bidirectional
run without lengths, whose two cells differ). Each strategy's cell calls are counted to check
that its backward pass runs only ``max(sequence_length)`` steps, with the recomputation its
schedule predicts.
"""

import functools
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.engine.planner import plan_memory, segment_length
from recurrax.engine.revolve import (
    revolve_advances,
    revolve_split,
    revolve_split_py,
    revolve_tables,
)
from reference import MinimalRNNCell, assert_tree_close
from test_loop import (
    PATTERNS,
    Counter,
    CountingCell,
    initial_state,
    inputs,
    probe_loss,
    scan_bidirectional,
    scan_rnn,
)

B, T, F = 4, 7, 3  # batch, time, features
STRATEGIES = [
    recurrax.StoreAll(),
    recurrax.Recompute(),
    recurrax.CheckpointEvery(3),
    recurrax.Revolve(3),
]
FAST = {"xla_backend_optimization_level": 0}  # these programs are tiny: compile them quickly


def make(kind):
    keys = jax.random.split(jax.random.key(7), 3)
    f64 = jnp.float64
    if kind == "basic_lstm":
        return recurrax.BasicLSTMCell(4, F, key=keys[0], forget_bias=0.5, dtype=f64)
    if kind == "multi":
        return recurrax.MultiRNNCell(
            [
                recurrax.BasicLSTMCell(4, F, key=keys[0], dtype=f64),
                recurrax.BasicRNNCell(3, 4, key=keys[1], dtype=f64),
            ]
        )
    return MinimalRNNCell(4, F, key=keys[2], weight_dtype=f64)


def run_one(config, cells, x, s0, lengths, memory, swap=False):
    """The loss of one run: ``config`` in ``dynamic|bidirectional`` x ``none|mixed`` (traced).

    ``memory=None`` runs the lax.scan reference instead of the engine.
    """
    runner, with_lengths = config.split("-")
    cell_fw, cell_bw = cells
    n = lengths if with_lengths == "mixed" else None
    kw = dict(time_major=True, memory=memory, swap_memory=swap, implementation="generic")
    if runner == "dynamic":
        if memory is None:
            return probe_loss(*scan_rnn(cell_fw, x, s0[0], n), seed=3)
        return probe_loss(*recurrax.dynamic_rnn(cell_fw, x, n, s0[0], **kw), seed=3)
    if memory is None:
        return probe_loss(*scan_bidirectional(cell_fw, cell_bw, x, s0[0], s0[1], n), seed=4)
    run = recurrax.bidirectional_dynamic_rnn(cell_fw, cell_bw, x, n, s0[0], s0[1], **kw)
    return probe_loss(*run, seed=4)


# dynamic_rnn without lengths is the forward direction of "bidirectional-none": with distinct
# forward and backward cells, the forward cell's gradient checks it on its own.
CONFIGS = ["dynamic-mixed", "bidirectional-none", "bidirectional-mixed"]


def grads_of(memory, swap=False, configs=tuple(CONFIGS)):
    """One jitted program: each config's gradient w.r.t. (cells, x, initial states)."""

    def all_grads(args, lengths):
        return [
            jax.grad(lambda a, c=c: run_one(c, *a, lengths, memory, swap))(args) for c in configs
        ]

    return jax.jit(all_grads, compiler_options=FAST)


def args_for(kind):
    cells = (make(kind), jax.tree_util.tree_map(lambda w: 0.8 * w, make(kind)))
    x = jnp.asarray(inputs()).swapaxes(0, 1)  # (T, B, F)
    return cells, x, (initial_state(cells[0], 2), initial_state(cells[1], 3))


@functools.cache
def reference_grads(kind):
    lengths = jnp.array(PATTERNS["mixed"])
    return grads_of(None)(args_for(kind), lengths)


def _one_process(kind):
    """``kind`` as a parameter whose tests run in one process (pytest-xdist), which compiles
    ``reference_grads(kind)`` once."""
    return pytest.param(kind, marks=pytest.mark.xdist_group(f"memory_{kind}"))


@pytest.mark.parametrize("kind", [_one_process(k) for k in ("basic_lstm", "multi", "user")])
@pytest.mark.parametrize("memory", STRATEGIES, ids=str)
def test_gradients_equal_lax_scan(memory, kind):
    got = grads_of(memory)(args_for(kind), jnp.array(PATTERNS["mixed"]))
    for g, want in zip(got, reference_grads(kind)):
        assert_tree_close(g, want, 1e-10, 1e-12)
    # Not vacuous: every weight of both directions gets a gradient.
    assert all(np.abs(w).max() > 0 for w in jax.tree_util.tree_leaves(got[-1][0]))


@pytest.mark.parametrize("memory", [*STRATEGIES[1:], recurrax.Revolve(1)], ids=str)
@pytest.mark.xdist_group("memory_basic_lstm")  # with the tests of reference_grads("basic_lstm")
def test_swap_memory_same_gradients_saved_values_on_host(memory):
    """swap_memory keeps what the strategy saves in pinned host memory; gradients unchanged."""
    configs = ("bidirectional-mixed",)
    got = grads_of(memory, True, configs)(args_for("basic_lstm"), jnp.array(PATTERNS["mixed"]))
    assert_tree_close(got[0], reference_grads("basic_lstm")[-1], 1e-10, 1e-12)
    cell, x = make("basic_lstm"), jnp.asarray(inputs()).swapaxes(0, 1)

    def program(swap):
        loss = lambda c: recurrax.dynamic_rnn(
            c, x, time_major=True, memory=memory, swap_memory=swap
        )[1].h.sum()
        return str(jax.make_jaxpr(jax.grad(loss))(cell))

    assert "<host>" in program(True)
    assert "<host>" not in program(False)


def test_store_with_swap_memory():
    cells, x, s0 = args_for("user")
    loss = lambda c, swap: probe_loss(
        *recurrax.dynamic_rnn(c, x, None, s0[0], time_major=True, swap_memory=swap)
    )
    got = jax.jit(jax.grad(lambda c: loss(c, True)), compiler_options=FAST)(cells[0])
    want = jax.grad(lambda c: loss(c, False))(cells[0])
    assert_tree_close(got, want, 1e-12, 1e-13)


@pytest.mark.parametrize(
    "memory, extra",
    [
        (recurrax.StoreAll(), lambda n: 0),
        (recurrax.Recompute(), lambda n: n),
        (recurrax.CheckpointEvery(4), lambda n: n),
        (recurrax.Revolve(1), lambda n: n + n * (n - 1) // 2),
        (recurrax.Revolve(3), lambda n: n + revolve_advances(n, 3)[1]),
        (recurrax.Revolve(20), lambda n: n),
    ],
    ids=lambda v: "" if callable(v) else str(v),  # stable ids: no function addresses
)
def test_cell_calls_per_strategy(memory, extra):
    """Forward n calls, then each strategy's recomputation, for n = max(sequence_length)."""
    counter = Counter()
    cell = CountingCell(make("user"), counter)
    x = jnp.asarray(inputs(time=12)).swapaxes(0, 1)

    @functools.partial(jax.jit, static_argnums=2, compiler_options=FAST)
    def grad(cell, lengths, engine):
        if engine:
            run = lambda c: recurrax.dynamic_rnn(
                c, x, lengths, time_major=True, dtype=x.dtype, memory=memory
            )
        else:
            run = lambda c: scan_rnn(c, x, c.zero_state(B, x.dtype), lengths)
        return jax.grad(lambda c: probe_loss(*run(c)))(cell)

    for lengths in ([0, 9, 3, 1], [0, 0, 0, 0], [1, 0, 1, 1], [12, 12, 0, 5]):
        got = grad(cell, jnp.array(lengths), True)
        n = max(lengths)
        assert counter.take() == n + extra(n), lengths
        assert_tree_close(got, grad(cell, jnp.array(lengths), False), 1e-10, 1e-12)
        counter.take()


def test_recomputed_steps_draw_the_same_dropout_masks():
    """A DropoutWrapper draws its masks from (key, t): recomputed steps must reuse them."""
    cell = recurrax.DropoutWrapper(make("basic_lstm"), 0.7, 0.8, 0.6, key=jax.random.key(3))
    params, rest = eqx.partition(cell, eqx.is_inexact_array)  # the key is no weight
    x = jnp.asarray(inputs()).swapaxes(0, 1)
    lengths = jnp.array(PATTERNS["mixed"])

    def loss(params, x, memory):
        c = eqx.combine(params, rest)
        if memory is None:
            return probe_loss(*scan_rnn(c, x, c.zero_state(B, x.dtype), lengths))
        return probe_loss(*recurrax.dynamic_rnn(c, x, lengths, time_major=True, memory=memory))

    @functools.partial(jax.jit, compiler_options=FAST)
    def grads(params, x):
        memories = [None, recurrax.Recompute(), recurrax.CheckpointEvery(2), recurrax.Revolve(2)]
        return [jax.grad(loss, (0, 1))(params, x, m) for m in memories]

    want, *got = grads(params, x)
    for g in got:
        assert_tree_close(g, want, 1e-10, 1e-12)


@functools.cache
def dp_advances(steps, slots):
    """The least number of steps advanced to reverse ``steps`` with ``slots`` saved states."""
    if steps <= 1:
        return 0
    if slots == 1:
        return steps * (steps - 1) // 2
    return min(
        m + dp_advances(steps - m, slots - 1) + dp_advances(m, slots) for m in range(1, steps)
    )


def test_revolve_schedule_is_optimal():
    """Revolve's split (revolve.c's rule) reaches the dynamic-programming optimum."""
    for slots in range(1, 6):
        for steps in range(1, 45):
            descent, backward = revolve_advances(steps, slots)
            assert descent + backward == dp_advances(steps, slots), (steps, slots)
    # And the traced split agrees with the host one.
    tables = revolve_tables(5, 60)
    split = jax.jit(lambda steps, slots: revolve_split(tables, steps, slots))
    for steps in range(2, 60, 3):
        for slots in range(2, 6):
            assert int(split(steps, slots)) == revolve_split_py(tables, steps, slots)


def test_memory_shrinks_with_each_strategy():
    """Temp bytes of the compiled gradient step (no timings): T = 256, LSTM of 32 units."""
    cell = recurrax.BasicLSTMCell(32, 8, key=jax.random.key(0))
    x = jnp.ones((256, 4, 8), jnp.float32)

    def temp(memory):
        loss = lambda c: recurrax.dynamic_rnn(
            c, x, time_major=True, memory=memory, implementation="generic"
        )[1].h.sum()
        compiled = jax.jit(jax.grad(loss), compiler_options=FAST).lower(cell).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    store, recompute = temp("store"), temp("recompute")
    every, revolve = temp(recurrax.CheckpointEvery(16)), temp(recurrax.Revolve(4))
    state_bytes = 2 * 4 * 32 * 4
    assert store > 4 * recompute  # an LSTM step keeps far more than its state
    assert recompute >= 256 * state_bytes > every
    assert every > revolve
    assert revolve < 16 * state_bytes + 0.05 * store


def test_segment_length_minimises_memory():
    for time, state, step in [(1000, 16, 100), (10**6, 16384, 100352), (7, 8, 8)]:
        costs = {k: -(-time // k) * state + k * step for k in range(1, min(time, 5000) + 1)}
        assert costs[segment_length(time, state, step)] == min(costs.values())


# ----------------------------------------------------------------------------------------------
# The budget planner.


def test_plan_memory_order_and_search():
    """Fastest first; Revolve gets as many checkpoints as the budget allows."""

    def measure(strategy):  # a model of temp bytes: store 1000, every-k 100, revolve 10 + c
        if isinstance(strategy, recurrax.StoreAll):
            return 1000
        if isinstance(strategy, recurrax.CheckpointEvery):
            return 100
        return 10 + strategy.checkpoints

    assert plan_memory(2000, 50, 1, 10, measure) == recurrax.StoreAll()
    assert plan_memory(150, 50, 1, 10, measure) == recurrax.CheckpointEvery(2)
    assert plan_memory(40, 50, 1, 10, measure) == recurrax.Revolve(30)
    assert plan_memory(11, 50, 1, 10, measure) == recurrax.Revolve(1)
    with pytest.raises(ValueError, match=r"smallest, Revolve\(1\).*needs 11 bytes.*>= 11"):
        plan_memory(10, 50, 1, 10, measure)


def test_memory_budget_is_kept():
    """For each budget the chosen plan's compiled gradient step needs at most that many temp
    bytes, and a budget below the smallest plan names the least budget that works.

    The budget covers the loop: its VJP (outputs and their cotangents are the caller's), and so
    a training step whose loss reads the final state.
    """
    cell = recurrax.BasicLSTMCell(8, 4, key=jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 2, 4)), jnp.float32)
    lengths = jnp.array([64, 20])

    def temps(**kw):
        run = lambda c, x, n: recurrax.dynamic_rnn(c, x, n, time_major=True, **kw)
        cts = jax.eval_shape(run, cell, x, lengths)
        vjp = lambda c, x, n, cts: jax.vjp(lambda c, x: run(c, x, n), c, x)[1](cts)
        step = jax.grad(lambda c, x, n: run(c, x, n)[1].h.sum())
        return [
            jax.jit(f).lower(*args).compile(FAST).memory_analysis().temp_size_in_bytes
            for f, args in ((vjp, (cell, x, lengths, cts)), (step, (cell, x, lengths)))
        ]

    with pytest.raises(ValueError, match=r"too small for any plan") as info:
        temps(memory_budget=1000)
    least = int(re.search(r"needs (\d+) bytes", str(info.value)).group(1))
    used = []
    for budget in (4 * least, least):
        vjp, step = temps(memory_budget=budget)
        assert vjp <= budget and step <= budget, budget
        used.append(vjp)
    assert used[0] > used[1]  # a smaller budget, a leaner plan


# ----------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "make_bad, error, match",
    [
        (
            lambda: recurrax.CheckpointEvery(0),
            ValueError,
            r"CheckpointEvery.every must be a "
            r"positive int \(the segment length in steps\); got 0",
        ),
        (lambda: recurrax.CheckpointEvery(-4), ValueError, r"CheckpointEvery.every .*got -4"),
        (lambda: recurrax.CheckpointEvery(2.5), TypeError, r"CheckpointEvery.every .*got float"),
        (
            lambda: recurrax.Revolve(0),
            ValueError,
            r"Revolve.checkpoints must be a positive int "
            r"\(the number of saved states\); got 0",
        ),
        (lambda: recurrax.Revolve(-1), ValueError, r"Revolve.checkpoints .*got -1"),
    ],
)
def test_bad_strategy(make_bad, error, match):
    with pytest.raises(error, match=match):
        make_bad()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(memory="fast"), ValueError, r"memory must be 'store', 'recompute' or a strategy"),
        (dict(memory=3), TypeError, r"memory must be 'store', 'recompute', .*got int"),
        (dict(memory_budget=0), ValueError, r"memory_budget must be a positive int .*got 0"),
        (dict(memory_budget="1GB"), TypeError, r"memory_budget must be a positive int .*got str"),
        (
            dict(memory="recompute", memory_budget=10**6),
            ValueError,
            r"pass memory or memory_budget, not both",
        ),
        (dict(swap_memory="yes"), TypeError, r"swap_memory must be a bool; got str"),
    ],
)
def test_bad_memory_arguments(kwargs, error, match):
    cell = make("basic_lstm")
    with pytest.raises(error, match=match):
        recurrax.dynamic_rnn(cell, inputs(), **kwargs)
