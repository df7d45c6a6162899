"""dynamic_rnn (and static_rnn beside it) against the per-row NumPy reference, every cell."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax
from reference import (
    CELL_KINDS,
    DROPPING,
    assert_tree_close,
    cast_weights,
    make_cell,
    np_step,
    random_cell,
    reference_rnn,
    reference_step,
    zeros_like_state,
)

# (batch, time, mixed lengths): the mixed lengths hold 0 and T where the batch allows.
SHAPES = {"base": (3, 4, [0, 4, 2]), "batch1": (1, 4, [2]), "t1": (3, 1, [0, 1, 1])}
# (shape, with lengths, time_major): both layouts, with and without lengths, batch 1, T = 1.
LAYOUTS = [
    ("base", False, False),
    ("base", True, True),
    ("base", True, False),
    ("batch1", True, True),
    ("t1", True, False),
]
CASES = [(kind, layout) for kind in CELL_KINDS for layout in LAYOUTS]
# The dropping wrappers compile a PRNG per run: fewer layouts keep the suite fast.
CASES = [c for c in CASES if c[0] not in DROPPING or c[1] in (LAYOUTS[1], LAYOUTS[3], LAYOUTS[4])]


def _inputs(batch, time, features=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features))


def _time_major(tree):
    return jax.tree_util.tree_map(lambda y: np.swapaxes(np.asarray(y), 0, 1), tree)


@pytest.mark.parametrize(
    "kind, layout", CASES, ids=[f"{k}-{'-'.join(map(str, p))}" for k, p in CASES]
)
def test_static_equals_dynamic_equals_reference(kind, layout):
    shape, with_lengths, time_major = layout
    batch, time, mixed = SHAPES[shape]
    lengths = np.array(mixed) if with_lengths else None
    cell = make_cell(kind, 3)
    x = _inputs(batch, time)  # (B, T, I)
    x_tm = np.swapaxes(x, 0, 1)  # (T, B, I)
    want_out, want_state = reference_rnn(
        reference_step(kind, cell), x_tm, zeros_like_state(cell.state_size, batch), lengths
    )

    # Op by op, not jitted: the cases share most shapes, so most ops compile once for all of
    # them, where one jitted program per case would compile more (jit: see further down).
    out, state = recurrax.dynamic_rnn(
        cell, x_tm if time_major else x, lengths, dtype=jnp.float64, time_major=time_major
    )
    steps, s_state = recurrax.static_rnn(
        cell, list(x_tm), dtype=jnp.float64, sequence_length=lengths
    )
    assert out.dtype == jnp.float64
    assert_tree_close(out if time_major else _time_major(out), want_out, 1e-10, 1e-12)
    assert_tree_close(state, want_state, 1e-10, 1e-12)
    assert isinstance(steps, list) and len(steps) == time
    assert_tree_close(np.stack(steps), want_out, 1e-10, 1e-12)
    assert_tree_close(s_state, want_state, 1e-10, 1e-12)
    # The two runners agree to rounding, state structure (namedtuples) included.
    assert jax.tree_util.tree_structure(s_state) == jax.tree_util.tree_structure(state)
    assert_tree_close(np.stack(steps, 1 - time_major), out, 1e-12, 1e-12)


@pytest.mark.parametrize("kind", ["multi"])
def test_gradients_of_static_and_dynamic_are_equal(kind):
    cell = make_cell(kind, 3)
    x = jnp.asarray(_inputs(3, 3))
    lengths = jnp.array([0, 3, 2])

    def loss_dynamic(cell, x):
        out, state = recurrax.dynamic_rnn(cell, x, lengths, dtype=jnp.float64)
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(s**2) for s in jax.tree_util.tree_leaves(state))

    def loss_static(cell, x):
        steps = list(jnp.moveaxis(x, 1, 0))
        out, state = recurrax.static_rnn(cell, steps, dtype=jnp.float64, sequence_length=lengths)
        out = jnp.stack(out, 1)
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(s**2) for s in jax.tree_util.tree_leaves(state))

    # jit around each gradient: one compilation instead of hundreds of eager ones.
    g_dyn, gx_dyn = eqx.filter_jit(eqx.filter_grad(lambda cx: loss_dynamic(*cx)))((cell, x))
    g_sta, gx_sta = eqx.filter_jit(eqx.filter_grad(lambda cx: loss_static(*cx)))((cell, x))
    assert_tree_close(g_dyn, g_sta, 1e-10, 1e-12)
    np.testing.assert_allclose(gx_dyn, gx_sta, rtol=1e-10, atol=1e-12)
    assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(g_dyn))
    # Row 0 has length 0: its inputs never reach the loss; row 1 uses every step.
    np.testing.assert_array_equal(gx_dyn[0], 0)
    assert np.abs(np.asarray(gx_dyn[1, -1])).max() > 0
    np.testing.assert_array_equal(gx_dyn[2, 2:], 0)


@pytest.mark.parametrize("runner", ["dynamic", "static"])
def test_check_grads_float64(runner):
    """Reverse-mode gradients against finite differences, in weights, inputs and initial state."""
    cell = make_cell("lstm_full", 3)  # peepholes, cell_clip, num_proj=3, proj_clip
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 3, 3)))
    init = recurrax.LSTMStateTuple(
        jnp.asarray(rng.standard_normal((2, 4))), jnp.asarray(rng.standard_normal((2, 3)))
    )
    lengths = jnp.array([3, 1])

    def f(params, x, init):
        c = eqx.combine(params, static)
        if runner == "dynamic":
            out, state = recurrax.dynamic_rnn(c, x, lengths, initial_state=init)
        else:
            out, state = recurrax.static_rnn(
                c, list(jnp.moveaxis(x, 1, 0)), init, sequence_length=lengths
            )
            out = jnp.stack(out, 1)
        return jnp.sum(out**2) + jnp.sum(jnp.tanh(state.c)) + jnp.sum(state.h)

    check_grads(jax.jit(f), (params, x, init), order=1, modes=["rev"])


def test_jit_and_traced_lengths():
    """Under jit lengths are traced: values in range match the eager run; a length above T acts
    as T and a negative one as 0 (the documented behaviour, since they cannot be checked)."""
    cell = make_cell("gru", 3)
    x = jnp.asarray(_inputs(4, 3))
    run = eqx.filter_jit(lambda c, x, n: recurrax.dynamic_rnn(c, x, n, dtype=jnp.float64))
    run_static = eqx.filter_jit(
        lambda c, x, n: recurrax.static_rnn(
            c, list(jnp.moveaxis(x, 1, 0)), dtype=jnp.float64, sequence_length=n
        )
    )
    eager = recurrax.dynamic_rnn(cell, x, jnp.array([0, 3, 1, 2]), dtype=jnp.float64)
    assert_tree_close(run(cell, x, jnp.array([0, 3, 1, 2])), eager, 1e-12, 1e-12)
    clipped = run(cell, x, jnp.array([-2, 7, 1, 2]))
    assert_tree_close(clipped, eager, 1e-12, 1e-12)
    s_out, s_state = run_static(cell, x, jnp.array([-2, 7, 1, 2]))
    assert_tree_close((jnp.stack(s_out, 1), s_state), eager, 1e-12, 1e-12)


def _index(tree, v):
    return jax.tree_util.tree_map(lambda y: y[v] if eqx.is_array(y) else y, tree)


def test_vmap_over_a_leading_axis():
    cell = make_cell("basic_lstm", 3)
    xs = np.random.default_rng(0).standard_normal((2, 3, 4, 3))  # (V, B, T, I)
    lengths = np.array([[1, 4, 0], [4, 2, 3]])

    @jax.jit
    def batched(xs, lengths):
        dyn = jax.vmap(lambda x, n: recurrax.dynamic_rnn(cell, x, n, dtype=jnp.float64))
        sta = jax.vmap(
            lambda x, n: recurrax.static_rnn(
                cell, list(jnp.moveaxis(x, 1, 0)), dtype=jnp.float64, sequence_length=n
            )
        )
        return dyn(xs, lengths), sta(xs, lengths)

    (out, state), (steps, s_state) = batched(xs, lengths)
    assert_tree_close((jnp.stack(steps, 2), s_state), (out, state), 1e-12, 1e-12)
    for v in range(2):
        want_out, want_state = reference_rnn(
            np_step(cell), np.swapaxes(xs[v], 0, 1), zeros_like_state((4, 4), 3), lengths[v]
        )
        assert_tree_close(_index((out, state), v), (_time_major(want_out), want_state))
    # vmap over the cell's weights: a stack of two cells, each run on the same inputs.
    build = lambda k: recurrax.BasicLSTMCell(4, 3, key=k, dtype=jnp.float64)
    keys = jax.random.split(jax.random.key(0), 2)
    cells = random_cell(lambda: eqx.filter_vmap(build)(keys))  # weights [2, ...]
    outs = eqx.filter_jit(
        eqx.filter_vmap(lambda c: recurrax.dynamic_rnn(c, xs[0], dtype=jnp.float64)[0])
    )(cells)
    for v in range(2):
        one = np_step(_index(cells, v))
        want_out, _ = reference_rnn(one, np.swapaxes(xs[0], 0, 1), zeros_like_state((4, 4), 3))
        np.testing.assert_allclose(outs[v], _time_major(want_out), rtol=1e-10, atol=1e-12)
    assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize("kind", ["gru", "lstm_full", "multi"])
def test_initial_state_is_used_and_tuple_accepted(kind):
    cell = make_cell(kind, 3)
    batch, time, mixed = SHAPES["base"]
    x = _inputs(batch, time)
    rng = np.random.default_rng(7)
    init = jax.tree_util.tree_map(
        lambda z: rng.standard_normal(z.shape), zeros_like_state(cell.state_size, batch)
    )
    want = reference_rnn(reference_step(kind, cell), np.swapaxes(x, 0, 1), init, mixed)
    want = (_time_major(want[0]), want[1])
    # init is a nest of plain tuples: accepted in place of LSTMStateTuple, returned as the cell's.
    out, state = recurrax.dynamic_rnn(cell, x, mixed, initial_state=init)
    assert_tree_close((out, state), want, 1e-10, 1e-12)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(
        cell.zero_state(batch, None)
    )
    steps, s_state = recurrax.static_rnn(
        cell, list(np.swapaxes(x, 0, 1)), init, sequence_length=mixed
    )
    assert_tree_close((jnp.stack(steps, 1), s_state), want, 1e-10, 1e-12)
    # Row 0 has length 0: the final state is the initial state, exactly.
    assert_tree_close(
        jax.tree_util.tree_map(lambda s: s[0], state),
        jax.tree_util.tree_map(lambda s: s[0], init),
        0,
        0,
    )


def test_dtype_resolution():
    """No dtype: the initial_state's, else the cell's; an explicit dtype wins over both."""
    cell = make_cell("basic_lstm", 3, jnp.float32)
    x = np.arange(18).reshape(2, 3, 3) % 5  # integer inputs (the article's): cast to dtype
    steps = list(np.swapaxes(x, 0, 1))
    want = reference_rnn(
        np_step(cell), np.swapaxes(x, 0, 1).astype(float), zeros_like_state(cell.state_size, 2)
    )
    want = (_time_major(want[0]), want[1])
    # The cell's float32, checked to 1e-5: at full precision (a GPU's default float32 dot is
    # TF32, whose 10-bit mantissa misses this tolerance by about 3e-3 relative).
    with jax.default_matmul_precision("highest"):
        out, state = recurrax.dynamic_rnn(cell, x)
    assert out.dtype == state.c.dtype == jnp.float32
    assert_tree_close((out, state), want, 1e-5, 1e-6)
    # The initial_state's float64: computed in float64 (the float32 weights are exact in it).
    outs, state = recurrax.static_rnn(cell, steps, cell.zero_state(2, jnp.float64))
    assert outs[0].dtype == state.h.dtype == jnp.float64
    assert_tree_close((jnp.stack(outs, 1), state), want, 1e-12, 1e-12)
    # dtype wins over a float32 initial_state and the float32 cell.
    outs, state = recurrax.static_rnn(cell, steps, cell.zero_state(2, None), jnp.float64)
    assert outs[0].dtype == state.c.dtype == jnp.float64
    assert_tree_close((jnp.stack(outs, 1), state), want, 1e-12, 1e-12)
    out, state = recurrax.dynamic_rnn(
        cell, x, initial_state=cell.zero_state(2, jnp.float64), dtype=jnp.bfloat16
    )
    assert all(y.dtype == jnp.bfloat16 for y in jax.tree_util.tree_leaves((out, state)))
    assert_tree_close((out, state), want, 5e-2, 5e-2)


@pytest.mark.parametrize("kind", ["multi", "user"])
def test_bfloat16_close_to_float32(kind):
    cell32 = make_cell(kind, 3, jnp.float32)
    cell16 = cast_weights(cell32, jnp.bfloat16)
    x = _inputs(3, 4) * 0.5
    lengths = np.array([0, 4, 2])
    out32, st32 = recurrax.dynamic_rnn(cell32, x, lengths, dtype=jnp.float32)
    out16, st16 = recurrax.dynamic_rnn(cell16, x, lengths, dtype=jnp.bfloat16)
    assert all(y.dtype == jnp.bfloat16 for y in jax.tree_util.tree_leaves((out16, st16)))
    assert_tree_close((out16, st16), (out32, st32), rtol=5e-2, atol=5e-2)
    steps16, sst16 = eqx.filter_jit(recurrax.static_rnn)(
        cell16, list(np.swapaxes(x, 0, 1)), dtype=jnp.bfloat16, sequence_length=lengths
    )
    assert_tree_close((jnp.stack(steps16, 1), sst16), (out32, st32), rtol=5e-2, atol=5e-2)


def test_compat_arguments_change_nothing():
    cell = make_cell("gru", 3)
    x = _inputs(2, 3)
    base = recurrax.dynamic_rnn(cell, x, dtype=jnp.float64)
    same = recurrax.dynamic_rnn(cell, x, dtype=jnp.float64, parallel_iterations=32, scope="rnn")
    assert_tree_close(same, base, 0, 0)
