"""The fused fast path of dynamic_rnn equals the generic path, in value and in gradient.

Every supported cell (the built-in cells, ``LSTMCell`` with peepholes, clipping and a clipped
projection, a ``MultiRNNCell`` of them) x {no lengths, mixed lengths with 0 and T} x
``time_major``, in float64; traced lengths (early exit); forward mode and ``vmap``; and the
dispatch: user cells, wrappers and subclasses keep the generic path.
"""

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax
from engine_hook import engine_rnn
from recurrax.engine import options as engine_options
from recurrax.engine.dispatch import choose_path
from recurrax.engine.fused import recurrence_of, supports_fused
from recurrax.engine.options import projects_first, resolve_options
from reference import (
    all_eqns,
    assert_tree_close,
    make_cell,
    np_step,
    randomize,
    reference_rnn,
    zeros_like_state,
)

FUSED_KINDS = ["basic_rnn", "gru", "basic_lstm", "lstm", "lstm_full", "multi"]
GENERIC_KINDS = ["residual", "user", "dropout_keep1", "dropout"]
B, T, F = 3, 5, 3
MIXED = np.array([0, T, 2])  # a row of length 0, one of length T, one in between
FAST = {"xla_backend_optimization_level": 0}  # small programs: compile them quickly
PATH = {True: "fused", False: "generic"}  # the implementation= of a fused / generic run


def cell_of(kind):
    if kind == "lstm":  # LSTMCell without options: the same kernel as BasicLSTMCell
        return randomize(
            eqx.filter_eval_shape(
                lambda: recurrax.LSTMCell(4, F, key=jax.random.key(0), dtype=jnp.float64)
            ),
            7,
        )
    return make_cell(kind, F)


def inputs(seed=0, batch=B, time=T):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, time, F)))


def loss_and_grads(cell, x, lengths, fused, **engine):
    """Outputs, final state and the gradient of a loss reading both, w.r.t. weights and x;
    through the engine's entry point with ``engine`` options when given."""

    def loss(cx):
        if engine:
            out, state = engine_rnn(cx[0], cx[1], lengths, implementation=PATH[fused], **engine)
        else:
            out, state = recurrax.dynamic_rnn(
                cx[0], cx[1], lengths, dtype=jnp.float64, implementation=PATH[fused]
            )
        total = jnp.sum(jnp.sin(out)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))
        return total, (out, state)

    (_, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)((cell, x))
    return aux, grads


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["no_lengths", "mixed_lengths"])
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_equals_reference(kind, lengths, time_major):
    """Values against the NumPy reference of the per-row contract (as test_dynamic does)."""
    cell, x = cell_of(kind), inputs()
    assert supports_fused(cell)
    x_tm = np.swapaxes(np.asarray(x), 0, 1)
    want = reference_rnn(np_step(cell), x_tm, zeros_like_state(cell.state_size, B), lengths)
    out, state = recurrax.dynamic_rnn(
        cell,
        x_tm if time_major else x,
        lengths,
        dtype=jnp.float64,
        time_major=time_major,
        implementation="fused",
    )
    assert_tree_close((out if time_major else jnp.swapaxes(out, 0, 1), state), want, 1e-12, 1e-13)
    assert jax.tree.structure(state) == jax.tree.structure(cell.zero_state(B, jnp.float64))


@pytest.mark.parametrize("lengths", [None, MIXED], ids=["no_lengths", "mixed_lengths"])
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_fused_gradients_equal_generic(kind, lengths):
    cell, x = cell_of(kind), inputs()
    want, want_grads = loss_and_grads(cell, x, lengths, False)
    got, grads = loss_and_grads(cell, x, lengths, True)
    assert_tree_close(got, want, 1e-12, 1e-13)
    assert_tree_close(grads, want_grads, 1e-11, 1e-12)
    if lengths is not None:  # TF1's contract: nothing flows from past each row's length
        np.testing.assert_array_equal(grads[1][0], 0)
        np.testing.assert_array_equal(grads[1][2, 2:], 0)
        assert np.abs(np.asarray(grads[1][1, T - 1])).max() > 0


@pytest.mark.parametrize("kind", ["basic_rnn", "gru", "lstm_full"])
def test_projection_before_the_loop(kind):
    """XW = X @ W_x for all steps before the loop (the choice on GPU, and on CPU for a large
    W_x) gives the same values and gradients; with traced lengths too; and so does the
    projection inside each step."""
    cell, x = cell_of(kind), inputs(10)
    want = loss_and_grads(cell, x, MIXED, False)
    for where in ("before_loop", "in_loop"):
        got = loss_and_grads(cell, x, MIXED, True, input_projection=where)
        assert_tree_close(got, want, 1e-11, 1e-12)
    if kind == "lstm_full":
        traced = eqx.filter_jit(
            lambda c, x, n: loss_and_grads(c, x, n, True, input_projection="before_loop")
        )
        assert_tree_close(traced(cell, x, jnp.asarray(MIXED)), want, 1e-11, 1e-12)
    with pytest.raises(ValueError, match=r"input_projection must be one of \('auto', 'before"):
        engine_rnn(cell, x, None, input_projection="sideways")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_automatic_input_projection(backend):
    """``input_projection="auto"``: before the loop off CPU; on CPU before the loop for one-gate
    cells and for a ``W_x`` over CPU_CACHE_BYTES, else inside each step."""
    cache = engine_options.CPU_CACHE_BYTES
    big = cache // 4 // 12 + 1  # rows of W_x making it just too large
    for cls, gates in (
        (recurrax.BasicRNNCell, 1),
        (recurrax.GRUCell, 3),
        (recurrax.BasicLSTMCell, 4),
    ):
        for n_in, large in ((8, False), (big, True)):

            def w_x_and_gates(cls=cls, n_in=n_in):
                cell = cls(4, n_in, key=jax.random.key(0))
                recurrence = recurrence_of(cell)
                return recurrence.params(cell)[0][0], recurrence.gates

            # Only W_x's shape and dtype matter: built abstractly, no large weights drawn.
            w_x, found = eqx.filter_eval_shape(w_x_and_gates)
            assert found == gates and w_x.shape == (n_in, 4 * gates)
            assert (w_x.size * 4 > cache) == (large and gates > 1)
            want = backend == "gpu" or gates == 1 or (large and gates > 1)
            got = projects_first(resolve_options(), w_x, gates, backend)
            assert got == want, (cls, n_in, backend)


def test_traced_lengths_early_exit():
    """Under jax.jit the trip count max(lengths) is traced: a while loop forward, skipped steps
    backward. Lengths with T, without, and all zero; against the generic path, also traced."""
    cell, x = cell_of("multi"), inputs(1)  # a GRU, then an LSTMCell with peepholes, projection
    fused = eqx.filter_jit(lambda c, x, n: loss_and_grads(c, x, n, True))
    generic = eqx.filter_jit(lambda c, x, n: loss_and_grads(c, x, n, False))
    for lengths in (MIXED, np.array([1, 3, 2]), np.array([0, 0, 0])):
        lengths = jnp.asarray(lengths)
        assert_tree_close(fused(cell, x, lengths), generic(cell, x, lengths), 1e-11, 1e-12)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_traced_lengths_run_in_chunks(time_major):
    """Traced lengths: chunks of 3 steps over T = 10 (the last one padded), stopping after the
    chunk holding the longest row, the backward pass recomputing chunk by chunk. Against the
    generic path with concrete lengths (a plain lax.scan and XLA's autodiff), for losses on
    outputs and state, on the state only (no output cotangent), with and without input
    gradients."""
    time = 10
    cell, x = cell_of("multi"), inputs(4, time=time)  # a GRU, then an LSTMCell with options
    if time_major:
        x = jnp.swapaxes(x, 0, 1)

    def loss(cell, x, lengths, fused, outputs):
        # The fused run through the engine's entry point with chunks of 3 steps.
        run = partial(engine_rnn, exit_chunk=3) if fused else partial(recurrax.dynamic_rnn)
        out, state = run(cell, x, lengths, time_major=time_major, implementation=PATH[fused])
        total = sum(jnp.sum(s * jnp.cos(s)) for s in jax.tree.leaves(state))
        return total + (jnp.sum(jnp.sin(out) * x[..., :1]) if outputs else 0.0), out

    def grads(lengths, fused, outputs, wrt_x):
        f = jax.value_and_grad(loss, argnums=(0, 1) if wrt_x else 0, has_aux=True)
        return f(cell, x, lengths, fused, outputs)

    traced = eqx.filter_jit(grads, compiler_options=FAST)
    # The reference compiled as one program too (run op by op it is the slower half of this
    # test); its lengths stay concrete: a tuple is static under filter_jit.
    concrete = eqx.filter_jit(
        lambda lengths, outputs, wrt_x: grads(np.array(lengths), False, outputs, wrt_x),
        compiler_options=FAST,
    )
    cases = [  # lengths (a row of T; n = 7 ends inside a chunk; all zero; one chunk), loss
        ((10, 0, 4), True, True),
        ((7, 2, 0), False, True),
        ((0, 0, 0), True, False),
        ((3, 1, 2), True, True),
    ]
    for lengths, outputs, wrt_x in cases:
        want = concrete(lengths, outputs, wrt_x)
        got = traced(jnp.array(lengths), True, outputs, wrt_x)
        assert_tree_close(got, want, 1e-11, 1e-12)


def test_finite_differences_forward_and_reverse_mode():
    """check_grads against finite differences, forward and reverse mode, with lengths."""
    cell = cell_of("lstm_full")
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    rng = np.random.default_rng(3)
    init = recurrax.LSTMStateTuple(
        jnp.asarray(0.3 * rng.standard_normal((B, 4))),
        jnp.asarray(0.3 * rng.standard_normal((B, 3))),
    )

    @jax.jit
    def f(params, x, init):
        cell = eqx.combine(params, static)
        out, state = recurrax.dynamic_rnn(cell, x, MIXED, init, implementation="fused")
        return jnp.sum(out**2) + jnp.sum(state.c * state.h[:, :1])

    check_grads(f, (params, inputs(2), init), order=1, modes=["fwd", "rev"], atol=1e-6)


def test_jvp_and_vmap_equal_generic():
    cell, x = cell_of("lstm_full"), inputs(4)
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    tangent = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size).reshape(a.shape)), (params, x))

    def jvp(fused):
        run = lambda p, x: recurrax.dynamic_rnn(
            eqx.combine(p, static), x, MIXED, dtype=jnp.float64, implementation=PATH[fused]
        )
        return jax.jvp(run, (params, x), tangent)

    # Eagerly: under jax.jit the lengths would be traced and the generic path has no jvp then.
    assert_tree_close(jvp(True), jvp(False), 1e-12, 1e-13)
    # vmap over a leading axis with batched lengths: per-example gradients.
    xs, lengths = jnp.stack([x, 2 * x]), jnp.array([[1, 5, 3], [4, 0, 5]])

    def per_example(fused):
        def one(x, n):
            def loss(x):
                out, _ = recurrax.dynamic_rnn(
                    cell, x, n, dtype=jnp.float64, implementation=PATH[fused]
                )
                return jnp.sum(jnp.sin(out))

            return jax.value_and_grad(loss)(x)

        return jax.jit(jax.vmap(one))(xs, lengths)

    assert_tree_close(per_example(True), per_example(False), 1e-12, 1e-13)


def test_dtypes_follow_the_generic_path():
    """float32 weights with a float64 run, and a bfloat16 run: the same promotions and casts."""
    cell = make_cell("basic_lstm", F, jnp.float32)
    x = inputs(5)
    for dtype, tol in ((jnp.float64, 1e-6), (jnp.bfloat16, 2e-2)):
        got = recurrax.dynamic_rnn(cell, x, MIXED, dtype=dtype, implementation="fused")
        want = recurrax.dynamic_rnn(cell, x, MIXED, dtype=dtype, implementation="generic")
        assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, want)
        assert all(a.dtype == dtype for a in jax.tree.leaves(got))
        assert_tree_close(got, want, tol, tol)


def test_unroll_and_batch_one_time_one():
    cell = cell_of("gru")
    for x, lengths in ((inputs(6), None), (inputs(6, 1, 1), np.array([1]))):
        want = recurrax.dynamic_rnn(cell, x, lengths, implementation="generic")
        for unroll in (1, 3):
            got = recurrax.dynamic_rnn(cell, x, lengths, unroll=unroll, implementation="fused")
            assert_tree_close(got, want, 1e-12, 1e-13)


def _scan_unrolls(fn, *args) -> list[int]:
    """``unroll`` of every scan in ``fn``'s jaxpr, nested ones included."""
    eqns = all_eqns(jax.make_jaxpr(fn)(*args))
    return [e.params["unroll"] for e in eqns if e.primitive.name == "scan"]


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_default_unroll_per_backend(backend):
    """``unroll=None`` (the default): 8 steps per iteration on the fused path on a GPU, else 1;
    the generic path keeps 1. The programs built here follow this machine's backend; values do
    not depend on unroll."""
    gpu_unroll = engine_options.GPU_UNROLL
    options = resolve_options()
    assert options.unroll_for("fused", backend) == (gpu_unroll if backend == "gpu" else 1)
    assert options.unroll_for("generic", backend) == 1
    assert resolve_options(unroll=3).unroll_for("fused", backend) == 3
    here = jax.default_backend()
    cell = cell_of("lstm")
    x = inputs(11)
    fused = _scan_unrolls(lambda x: recurrax.dynamic_rnn(cell, x)[0], x)
    generic = _scan_unrolls(lambda x: recurrax.dynamic_rnn(cell, x, implementation="generic")[0], x)
    assert fused == [gpu_unroll if here == "gpu" else 1]
    assert generic == [1]
    assert _scan_unrolls(lambda x: recurrax.dynamic_rnn(cell, x, unroll=2)[0], x) == [2]
    want = recurrax.dynamic_rnn(cell, x, MIXED, implementation="generic", unroll=1)
    assert_tree_close(recurrax.dynamic_rnn(cell, x, MIXED), want, 1e-12, 1e-13)


class MyGRU(recurrax.GRUCell):
    """A subclass: it may override __call__, so it keeps the generic path."""


@pytest.mark.parametrize("kind", GENERIC_KINDS + ["subclass", "multi_with_user"])
def test_other_cells_take_the_generic_path(kind):
    if kind == "subclass":
        cell = MyGRU(4, F, key=jax.random.key(0), dtype=jnp.float64)
    elif kind == "multi_with_user":
        cell = recurrax.MultiRNNCell([make_cell("gru", F), make_cell("user", 4)])
    else:
        cell = make_cell(kind, F if kind != "residual" else F)
    assert not supports_fused(cell)
    assert choose_path(cell, jnp.float64, resolve_options()) == "generic"
    out, _ = recurrax.dynamic_rnn(cell, inputs(7), dtype=jnp.float64)
    assert out.shape[:2] == (B, T)
    with pytest.raises(ValueError, match=r"implementation='fused' needs a BasicRNNCell, .*got "):
        recurrax.dynamic_rnn(cell, inputs(7), dtype=jnp.float64, implementation="fused")


def test_dispatch_follows_the_memory_strategy():
    cell, x = make_cell("basic_lstm", F), inputs(8)
    for options, path in (
        ({}, "fused"),
        ({"memory": recurrax.StoreAll()}, "fused"),
        ({"memory": "recompute"}, "generic"),
        ({"memory_budget": 10**6}, "generic"),
        ({"swap_memory": True}, "generic"),
        ({"implementation": "generic"}, "generic"),
        ({"implementation": "pallas"}, "pallas"),
    ):
        assert (
            choose_path(
                cell, jnp.float64 if path != "pallas" else jnp.float32, resolve_options(**options)
            )
            == path
        ), options
    # The fused path's program is a custom_jvp around its loop; the generic one has none.
    names = lambda **kw: {
        e.primitive.name
        for e in all_eqns(jax.make_jaxpr(lambda x: recurrax.dynamic_rnn(cell, x, **kw))(x))
    }
    assert "custom_jvp_call" in names()
    assert "custom_jvp_call" not in names(implementation="generic")
    with pytest.raises(ValueError, match=r"implementation='fused' stores every step's values"):
        recurrax.dynamic_rnn(cell, x, memory="recompute", implementation="fused")
    with pytest.raises(ValueError, match=r"implementation must be one of \('auto', 'generic'"):
        recurrax.dynamic_rnn(cell, x, implementation="cudnn")


def test_backward_pass_has_cudnn_structure():
    """One loop forward and one backward; the backward loop holds one matmul per step (dZ_t @
    W_h^T) and the weight gradients are matmuls outside any loop."""
    cell, x = make_cell("basic_lstm", F), inputs(9)
    grad = jax.grad(lambda c: jnp.sum(recurrax.dynamic_rnn(c, x, implementation="fused")[0]))
    jaxpr = jax.make_jaxpr(grad)(cell).jaxpr
    loops = [e for e in jaxpr.eqns if e.primitive.name in ("scan", "while")]
    assert len(loops) == 2

    def dots(j):
        return sum(e.primitive.name == "dot_general" for e in j.eqns)

    assert [dots(e.params["jaxpr"].jaxpr) for e in loops] == [1, 1]
    outside = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    shapes = {tuple(v.aval.shape) for e in outside for v in e.outvars}
    assert {(16, F), (16, 4)} <= {tuple(sorted(s, reverse=True)) for s in shapes}  # dW_x, dW_h
