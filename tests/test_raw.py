"""raw_rnn: TF1's loop driven by loop_fn, against a Python reference loop and dynamic_rnn."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax
from recurrax.raw import raw_rnn
from reference import assert_tree_close, make_cell

tree_map = jax.tree_util.tree_map
B, T, IN = 3, 5, 2
X = jnp.asarray(np.random.default_rng(0).standard_normal((T, B, IN)))  # time-major inputs
LENGTHS = {"zeros": [0, 0, 0], "full": [T, T, T], "mixed": [0, T, 2]}
MEMORIES = ["store", "recompute", recurrax.CheckpointEvery(2), recurrax.Revolve(2)]


def _rows(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def reference(cell, loop_fn, max_steps):
    """TF1's pseudo-code for raw_rnn, literally: a Python loop that stops when all rows are
    finished (values concrete), emits padded with zeros to ``max_steps``."""
    finished, x, state, template, loop_state = loop_fn(jnp.int32(0), None, None, None)
    emits, t = [], 0
    while not bool(jnp.all(finished)):
        out, cell_state = cell(x, state)
        done, x, next_state, emit, next_loop = loop_fn(
            jnp.int32(t + 1), out, cell_state, loop_state
        )
        emits.append(tree_map(lambda e, f=finished: jnp.where(_rows(f, e), 0, e), emit))
        state = tree_map(lambda o, n, f=finished: jnp.where(_rows(f, n), o, n), state, next_state)
        loop_state = loop_state if next_loop is None else next_loop
        finished = finished | done | (t + 1 >= max_steps)
        t += 1
    if template is None:  # the cell's output, in the state's dtype
        dtype = jax.tree.leaves(state)[0].dtype
        template = tree_map(lambda n: jax.ShapeDtypeStruct((n,), dtype), cell.output_size)
    pad = tree_map(lambda s: jnp.zeros((max_steps - t, B, *s.shape), s.dtype), template)
    emit = tree_map(lambda p, *e: jnp.concatenate([jnp.stack(e), p]) if e else p, pad, *emits)
    return emit, state, loop_state, t


# --- raw_rnn re-implementing dynamic_rnn ------------------------------------------------------


def _as_dynamic(cell, inputs, lengths, memory="store"):
    def loop_fn(time, cell_output, cell_state, loop_state):
        finished = time >= lengths
        x = inputs[jnp.minimum(time, T - 1)]
        if cell_output is None:
            return finished, x, cell.zero_state(B, jnp.float64), None, None
        return finished, x, cell_state, cell_output, None

    emit, state, _ = raw_rnn(cell, loop_fn, max_steps=T, memory=memory)
    return emit, state


def _dynamic(cell, inputs, lengths, memory="store"):
    return recurrax.dynamic_rnn(
        cell, inputs, lengths, dtype=jnp.float64, time_major=True, memory=memory
    )


def _loss(run, memory):
    """``(cell, inputs, lengths) -> (loss, grads of (cell, inputs))``, compiled."""

    def loss(cell_and_inputs, lengths):
        outputs, state = run(*cell_and_inputs, lengths, memory)
        weights = jnp.arange(1, outputs.size + 1).reshape(outputs.shape) / outputs.size
        return jnp.sum(outputs * weights) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

    grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    return lambda cell, inputs, lengths: grad((cell, inputs), lengths)


@pytest.mark.parametrize("kind", ["basic_lstm", "dropout"])
def test_equals_dynamic_rnn(kind):
    cell = make_cell(kind, IN)
    run, loss = jax.jit(_as_dynamic), _loss(_as_dynamic, "store")
    dyn_loss = _loss(_dynamic, "store")
    for name, lengths in LENGTHS.items():
        lengths = jnp.asarray(lengths)
        expected = _dynamic(cell, X, lengths)
        assert_tree_close(run(cell, X, lengths), expected, atol=1e-12)
        if name == "zeros":
            assert np.all(expected[0] == 0)
        value, grads = loss(cell, X, lengths)
        ref_value, ref_grads = dyn_loss(cell, X, lengths)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        assert_tree_close(grads, ref_grads, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("memory", MEMORIES[2:], ids=str)
def test_checkpointing_strategies_give_the_same_gradients(memory):
    cell, lengths = make_cell("gru", IN), jnp.asarray(LENGTHS["mixed"])
    value, grads = _loss(_as_dynamic, memory)(cell, X, lengths)
    ref_value, ref_grads = _loss(_dynamic, "store")(cell, X, lengths)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_tree_close(grads, ref_grads, rtol=1e-9, atol=1e-12)


def test_swap_memory_gives_the_same_gradients():
    cell, lengths = make_cell("basic_rnn", IN), jnp.asarray(LENGTHS["mixed"])
    swapped = jax.jit(
        jax.grad(lambda c: jnp.sum(_swap_run(c, lengths)[0] ** 2)),
    )(cell)
    stored = jax.jit(jax.grad(lambda c: jnp.sum(_as_dynamic(c, X, lengths)[0] ** 2)))(cell)
    assert_tree_close(swapped, stored, rtol=1e-9, atol=1e-12)


def _swap_run(cell, lengths):
    def loop_fn(time, cell_output, cell_state, loop_state):
        x = X[jnp.minimum(time, T - 1)]
        state = cell.zero_state(B, jnp.float64) if cell_output is None else cell_state
        return time >= lengths, x, state, cell_output, None

    return raw_rnn(cell, loop_fn, max_steps=T, swap_memory=True, memory="recompute")


def test_check_grads_float64():
    """Finite differences against the custom VJP: weights, inputs, initial state, loop state."""
    cell = make_cell("basic_rnn", IN)
    lengths = jnp.asarray([1, 3, 2])

    def f(cell, inputs, h0, acc0):
        def loop_fn(time, cell_output, cell_state, loop_state):
            x = inputs[jnp.minimum(time, T - 1)]
            if cell_output is None:
                return time >= lengths, x, h0, None, acc0
            acc = loop_state * 0.5 + jnp.tanh(cell_output[:, :1])  # [B, 1], never masked
            return time >= lengths, x, cell_state, cell_output, acc

        emit, state, acc = raw_rnn(cell, loop_fn, max_steps=4, memory="recompute")
        return jnp.sum(emit * jnp.cos(emit)) + jnp.sum(state**3) + jnp.sum(acc * acc)

    h0 = jnp.asarray(np.random.default_rng(1).standard_normal((B, 4)))
    acc0 = jnp.ones((B, 1))
    check_grads(jax.jit(f), (cell, X, h0, acc0), order=1, modes=["rev"])


# --- decoding: feeding back the output, stopping per row -------------------------------------

V, EMB, MAX = 5, 3, 8
END = 0


def _decoder_parts():
    rng = np.random.default_rng(5)  # rows end after 1, 6 and 3 steps
    return (
        make_cell("gru", EMB),
        jnp.asarray(rng.standard_normal((V, EMB))),  # embedding
        jnp.asarray(2 * rng.standard_normal((4, V))),  # projection
    )


def _greedy_loop_fn(cell, embed, proj, calls=None):
    start = jnp.asarray([1, 2, 3])

    def loop_fn(time, cell_output, cell_state, loop_state):
        if calls is not None:
            jax.debug.callback(lambda: calls.append(1))
        if cell_output is None:
            template = (jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.float64))
            return jnp.zeros(B, bool), embed[start], cell.zero_state(B, jnp.float64), template, 0
        log_probs = jax.nn.log_softmax(cell_output @ proj)
        ids = jnp.argmax(log_probs, -1).astype(jnp.int32)
        emit = (ids, jnp.max(log_probs, -1))
        return ids == END, embed[ids], cell_state, emit, loop_state + 1

    return loop_fn


def test_greedy_decoder_matches_reference_and_stops_early():
    cell, embed, proj = _decoder_parts()
    calls = []

    @jax.jit
    def decode(cell, embed, proj):
        return raw_rnn(cell, _greedy_loop_fn(cell, embed, proj, calls), max_steps=MAX)

    (ids, log_probs), state, steps = decode(cell, embed, proj)
    jax.effects_barrier()
    ref_emit, ref_state, ref_steps, ref_t = reference(cell, _greedy_loop_fn(cell, embed, proj), MAX)
    assert_tree_close((ids, log_probs), ref_emit, atol=1e-12)
    assert_tree_close(state, ref_state, atol=1e-12)
    ids = np.asarray(ids)
    stops = [1, 6, 3]  # the steps each row emits, its END included
    assert int(steps) == ref_t == max(stops) < MAX  # the loop stopped early
    assert len(calls) == int(steps) + 1  # loop_fn ran at time 0 and after each step run
    for b, stop in enumerate(stops):  # a finished row emits nothing more
        assert np.all(ids[stop:, b] == 0) and np.all(np.asarray(log_probs)[stop:, b] == 0)
        assert np.all(ids[: stop - 1, b] != END)


def test_decoder_gradients_match_reference():
    cell, embed, proj = _decoder_parts()

    def loss(run):
        def f(cell, embed, proj):
            (_, log_probs), state, _ = run(cell, _greedy_loop_fn(cell, embed, proj), MAX)[:3]
            return jnp.sum(log_probs) + jnp.sum(jnp.sin(state))

        return f

    store, recompute = (
        jax.jit(jax.grad(loss(functools.partial(_raw, memory=m)), argnums=(0, 1, 2)))(
            cell, embed, proj
        )
        for m in ("store", "recompute")
    )
    assert_tree_close(recompute, store, rtol=1e-12, atol=1e-14)
    expected = jax.grad(loss(reference), argnums=(0, 1, 2))(cell, embed, proj)
    assert_tree_close(store, expected, rtol=1e-9, atol=1e-12)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(store))


def _raw(cell, loop_fn, max_steps, memory="store"):
    return raw_rnn(cell, loop_fn, max_steps=max_steps, memory=memory)


def _scheduled(cell, done_at, emit_fn=None):
    """A loop_fn whose elements_finished at time ``t`` is ``done_at[t]`` and whose loop state
    sums the cell outputs it is given (every row, unmasked)."""

    def loop_fn(time, cell_output, cell_state, loop_state):
        x = X[jnp.minimum(time, T - 1)]
        finished = jnp.asarray(done_at)[time]
        if cell_output is None:
            return finished, x, cell.zero_state(B, jnp.float64), None, jnp.zeros((B, 4))
        return finished, x, cell_state, cell_output, loop_state + cell_output

    return loop_fn


def test_finished_accumulates_and_loop_state_is_not_masked():
    cell = make_cell("basic_rnn", IN)
    done_at = np.zeros((MAX + 1, B), bool)
    done_at[2, 0] = True  # row 0 finishes after step 1; False afterwards must not un-finish it
    done_at[4, 1] = True
    done_at[5, :] = True  # every row: the loop stops after 5 steps
    emit, state, sums = jax.jit(_raw, static_argnums=(1, 2))(cell, _scheduled(cell, done_at), MAX)
    ref_emit, ref_state, ref_sums, ref_t = reference(cell, _scheduled(cell, done_at), MAX)
    assert ref_t == 5
    assert_tree_close((emit, state, sums), (ref_emit, ref_state, ref_sums), atol=1e-12)
    emit = np.asarray(emit)
    assert np.all(emit[2:, 0] == 0) and np.all(emit[:2, 0] != 0)
    assert np.all(emit[4:, 1] == 0) and np.all(emit[:4, 1] != 0)
    assert np.all(emit[5:] == 0) and np.all(emit[:5, 2] != 0)

    # Unmasked: the loop state adds row 0's raw outputs after it finished too. Row 0's state is
    # frozen after step 1, so the cell sees the same state at steps 2, 3, 4 (its inputs differ).
    w_x, w_h, bias = _w(cell)
    h = np.asarray(state)[0]
    outs = [np.tanh(np.asarray(X[t, 0]) @ w_x + h @ w_h + bias) for t in (2, 3, 4)]
    manual = emit[0, 0] + emit[1, 0] + sum(outs)
    np.testing.assert_allclose(np.asarray(sums)[0], manual, atol=1e-12)


def _w(cell):
    """``(W_x, W_h, bias)`` of a BasicRNNCell."""
    kernel = np.asarray(cell.kernel)
    return kernel[:IN], kernel[IN:], np.asarray(cell.bias)


@pytest.mark.parametrize("max_steps", [1, 3])
def test_max_steps_bounds_the_loop(max_steps):
    cell = make_cell("basic_rnn", IN)
    never = np.zeros((20, B), bool)
    emit, state, sums = _raw(cell, _scheduled(cell, never), max_steps)
    assert emit.shape == (max_steps, B, 4)
    ref_emit, ref_state, ref_sums, ref_t = reference(cell, _scheduled(cell, never), max_steps)
    assert ref_t == max_steps
    assert_tree_close((emit, state, sums), (ref_emit, ref_state, ref_sums), atol=1e-12)
    assert np.all(np.asarray(emit) != 0)


def test_loop_state_none_later_keeps_it():
    cell = make_cell("basic_rnn", IN)
    loop_state = {"count": jnp.int32(7), "scale": jnp.ones(2)}

    def loop_fn(time, cell_output, cell_state, state_of_loop):
        if cell_output is None:
            return jnp.zeros(B, bool), X[0], jnp.zeros((B, 4)), None, loop_state
        return jnp.full(B, time >= 2), X[1], cell_state, cell_output, None

    _, _, final = _raw(cell, loop_fn, 4)
    assert_tree_close(final, loop_state)


def test_all_finished_at_time_zero_runs_nothing():
    cell = make_cell("basic_rnn", IN)
    done_at = np.ones((MAX + 1, B), bool)
    emit, state, sums = _raw(cell, _scheduled(cell, done_at), MAX)
    assert np.all(np.asarray(emit) == 0) and np.all(np.asarray(state) == 0)
    assert np.all(np.asarray(sums) == 0)


def test_continuous_feedback_and_loop_state_none():
    """The output fed back as the next input; the emit template None is the cell's output."""
    cell = make_cell("basic_lstm", 4)
    h0 = jnp.asarray(np.random.default_rng(2).standard_normal((B, 4)))

    def loop_fn(time, cell_output, cell_state, loop_state):
        assert loop_state is None
        if cell_output is None:
            state = recurrax.LSTMStateTuple(h0, h0)
            return jnp.zeros(B, bool), h0, state, None, None
        return jnp.max(jnp.abs(cell_output), -1) < 0.2, cell_output, cell_state, cell_output, None

    emit, state, loop_state = _raw(cell, loop_fn, 6)
    assert loop_state is None and isinstance(state, recurrax.LSTMStateTuple)
    ref_emit, ref_state, _, _ = reference(cell, loop_fn, 6)
    assert_tree_close((emit, state), (ref_emit, ref_state), atol=1e-12)


# --- errors ---------------------------------------------------------------------------------

CELL = make_cell("basic_rnn", IN)
H0 = jnp.zeros((B, 4))
T0 = {"finished": jnp.zeros(B, bool), "x": X[0], "state": H0, "emit": None, "loop": None}
LATER = {"finished": jnp.ones(B, bool), "x": X[1], "state": H0, "emit": H0, "loop": None}


def _call(t0=None, later=None, returned=None, **kwargs):
    """raw_rnn on a loop_fn returning ``T0`` updated with ``t0`` at time 0 and ``LATER`` updated
    with ``later`` afterwards (or ``returned`` as it is)."""

    def loop_fn(time, cell_output, cell_state, loop_state):
        values = (T0 | (t0 or {})) if cell_output is None else (LATER | (later or {}))
        return returned or tuple(values.values())

    return raw_rnn(kwargs.pop("cell", CELL), kwargs.pop("loop_fn", loop_fn), **kwargs)


BATCH_AXIS = r"\(the time-0 template has no batch axis\); got \(3, 4\)"
ERRORS = [
    ("cell", {"cell": object()}, TypeError, "cell must be a cell"),
    ("loop_fn", {"loop_fn": 3}, TypeError, "loop_fn must be callable as loop_fn"),
    ("max_steps_0", {"max_steps": 0}, ValueError, "max_steps must be a positive int"),
    ("max_steps_float", {"max_steps": 2.0}, TypeError, "max_steps must be a positive int"),
    ("parallel", {"parallel_iterations": 0}, ValueError, "parallel_iterations must be"),
    ("memory", {"memory": "all"}, ValueError, "memory must be 'store', 'recompute'"),
    ("tuple", {"returned": (1, 2)}, TypeError, r"tuple of 5 .* \(at time 0\); got tuple of len"),
    (
        "finished_dtype",
        {"t0": {"finished": jnp.zeros(B)}},
        TypeError,
        r"elements_finished \(returned by loop_fn at time 0\) must have dtype bool; got float64",
    ),
    (
        "finished_rank",
        {"t0": {"finished": jnp.zeros((B, 1), bool)}},
        ValueError,
        r"elements_finished .* must have shape \[batch\]; got \(3, 1\)",
    ),
    (
        "finished_later",
        {"later": {"finished": jnp.zeros(2, bool)}},
        ValueError,
        r"elements_finished \(returned by loop_fn after time 0\) must have shape "
        r"\[batch\]=\(3,\); got \(2,\)",
    ),
    (
        "input_batch",
        {"t0": {"x": X[0, :2]}},
        ValueError,
        r"next_input must have a leading batch axis of 3 .*; got shape \(2, 2\)",
    ),
    ("state_none", {"t0": {"state": None}}, ValueError, "next_cell_state .* cannot be None"),
    (
        "state_structure",
        {"t0": {"state": (H0, H0)}},
        ValueError,
        r"next_cell_state \(returned by loop_fn at time 0\) must match the cell's state_size 4",
    ),
    (
        "emit_template",
        {"t0": {"emit": "f4"}},
        TypeError,
        r"emit_output \(time 0\) must be None or a nest of per-row templates",
    ),
    (
        "emit_batch",
        {"t0": {"emit": H0}},
        ValueError,
        r"emit_output .* must have shape \(3, 3, 4\) " + BATCH_AXIS,
    ),
    (
        "input_shape",
        {"later": {"x": X[1, :, :1]}},
        ValueError,
        r"next_input \(returned by loop_fn after time 0\) must have shape \(3, 2\); "
        r"got \(3, 1\)",
    ),
    (
        "input_dtype",
        {"later": {"x": jnp.ones((B, IN), int)}},
        TypeError,
        r"next_input .* must have dtype float64 \(as at time 0\); got int64",
    ),
    (
        "state_later",
        {"later": {"state": (H0,)}},
        ValueError,
        r"next_cell_state \(returned by loop_fn after time 0\) must keep the structure it had",
    ),
    ("loop_appears", {"later": {"loop": 1}}, ValueError, "next_loop_state was None at time 0"),
    (
        "loop_structure",
        {"t0": {"loop": (0, 0)}, "later": {"loop": 0}},
        ValueError,
        r"next_loop_state \(returned by loop_fn after time 0\) must keep the structure",
    ),
]


@pytest.mark.parametrize(
    "kwargs, exc, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_error_message(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        _call(**({"max_steps": 3} | kwargs))
