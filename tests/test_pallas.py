"""The Pallas recurrence kernels (``recurrax.engine.pallas``) against a plain ``lax.scan``.

On CPU the kernels run through Pallas's interpreter; on a GPU the compiled (Triton) test runs
too. Shapes are tiny: lengths include 0 and T, the batch is not a multiple of the block and the
hidden sizes are not powers of two, so padding and masking are exercised everywhere.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import recurrax
from recurrax.engine import pallas as P

ON_GPU = jax.default_backend() == "gpu"


@pytest.fixture(autouse=True)
def full_precision_dots(request):
    """Every kernel here runs its dots at full float32 precision, so that the tolerances hold on
    both platforms: on a CPU (interpreter) they are exact anyway; on a GPU, where the kernels
    compile, a float32 dot is TF32 by default. ``test_compiled_on_gpu`` checks that default."""
    if request.node.originalname == "test_compiled_on_gpu":
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


def scan_layer(family, w_h, xw, state0, lengths):
    """The reference: TF1's cell math and ``sequence_length`` semantics as a ``lax.scan``."""
    steps, batch, _ = xw.shape
    lens = jnp.full((batch,), steps) if lengths is None else lengths

    def step(state, inp):
        x_t, t = inp
        valid = (t < lens)[:, None]
        if family.kind == "rnn":
            new = out = jnp.tanh(x_t + state @ w_h)
        elif family.kind == "gru":
            w_gh, w_ch = w_h
            hidden = state.shape[1]
            gates = jax.nn.sigmoid(x_t[:, : 2 * hidden] + state @ w_gh)
            r, u = gates[:, :hidden], gates[:, hidden:]
            c = jnp.tanh(x_t[:, 2 * hidden :] + (r * state) @ w_ch)
            new = out = u * state + (1 - u) * c
        else:  # TF1's LSTMCell (BasicLSTMCell without its options)
            c, h = state
            w, peep, proj = w_h if isinstance(w_h, tuple) else (w_h, None, None)
            i, j, f, o = jnp.split(x_t + h @ w, 4, axis=-1)
            if peep is not None:
                i, f = i + peep[0] * c, f + peep[1] * c
            c = c * jax.nn.sigmoid(f + family.forget_bias) + jax.nn.sigmoid(i) * jnp.tanh(j)
            if family.cell_clip is not None:
                c = jnp.clip(c, -family.cell_clip, family.cell_clip)
            if peep is not None:
                o = o + peep[2] * c
            out = jnp.tanh(c) * jax.nn.sigmoid(o)
            if proj is not None:
                out = out @ proj
                if family.proj_clip is not None:
                    out = jnp.clip(out, -family.proj_clip, family.proj_clip)
            new = (c, out)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), new, state)
        return new, jnp.where(valid, out, 0.0)

    final, ys = lax.scan(step, state0, (xw, jnp.arange(steps)))
    return ys, final


def normal(key, shape):
    """float32 always (the test suite enables 64-bit types; Triton has no float64)."""
    return jax.random.normal(key, shape, jnp.float32)


def make_case(kind, steps, batch, hidden, *, seed=0, lengths=True, dtype=jnp.float32, empty=()):
    family = P.Family(kind, forget_bias=0.7)
    g = family.gates
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    xw = normal(keys[0], (steps, batch, g * hidden)).astype(dtype)
    scale = 1.0 / np.sqrt(hidden)
    if kind == "gru":
        w_h = (
            normal(keys[1], (hidden, 2 * hidden)) * scale,
            normal(keys[2], (hidden, hidden)) * scale,
        )
    else:
        w_h = normal(keys[1], (hidden, g * hidden)) * scale
    w_h = jax.tree_util.tree_map(lambda a: a.astype(dtype), w_h)
    h0 = 0.5 * normal(keys[3], (batch, hidden))
    state0 = (normal(keys[4], (batch, hidden)), h0) if kind == "lstm" else h0
    lens = None
    if lengths:
        lens = jax.random.randint(keys[5], (batch,), 0, steps + 1, dtype=jnp.int32)
        lens = lens.at[0].set(0).at[1].set(steps).at[-1].set(steps // 2)
        lens = lens.at[jnp.asarray(empty, jnp.int32)].set(0)
    return family, w_h, xw, state0, lens


def make_lstm_cell_case(steps, batch, hidden, proj, *, seed=0, **options):
    """An ``LSTMCell``-style case: ``w_h = (w [P, 4H], peepholes or None, projection or
    None)`` with ``P = proj or hidden``; ``options`` are the Family's."""
    family = P.Family("lstm", forget_bias=0.7, projection=proj is not None, **options)
    width = proj or hidden
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    w = normal(keys[0], (width, 4 * hidden)) / float(np.sqrt(width))
    peep = None
    if family.peepholes:
        peep = tuple(0.5 * normal(k, (hidden,)) for k in keys[1:4])
    projection = None if proj is None else normal(keys[4], (hidden, proj)) / float(np.sqrt(hidden))
    xw = 1.5 * normal(keys[5], (steps, batch, 4 * hidden))
    state0 = (normal(keys[6], (batch, hidden)), 0.5 * normal(keys[7], (batch, width)))
    lens = jnp.arange(batch, dtype=jnp.int32) % (steps + 1)  # 0, 1, ..., T, 0, 1, ...
    return family, (w, peep, projection), xw, state0, lens


def value_and_grads(layer, family, w_h, xw, state0, lens, **options):
    """Outputs, final state and the gradients of a loss mixing both, in one jitted call."""
    steps, batch, _ = xw.shape
    ct = jnp.cos(jnp.arange(steps * batch * 64, dtype=jnp.float32)).reshape(steps, batch, 64)

    def loss(w_h, xw, state0):
        ys, final = layer(family, w_h, xw, state0, lens, **options)
        weight = ct[:, :, : ys.shape[-1]]
        extra = sum(jnp.sum(0.3 * s) for s in jax.tree_util.tree_leaves(final))
        return jnp.sum(ys * weight) + extra, (ys, final)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(w_h, xw, state0)


def assert_close(got, want, rtol, atol):
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for a, b in zip(got_leaves, want_leaves):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), rtol=rtol, atol=atol)


def check_against_scan(case, rtol=1e-5, atol=1e-5, **options):
    family, w_h, xw, state0, lens = case
    (_, (ys, final)), grads = value_and_grads(P.pallas_layer, *case, **options)
    f32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), (w_h, xw))
    with jax.default_matmul_precision("highest"):  # also for test_compiled_on_gpu's reference
        (_, (ys_r, final_r)), grads_r = value_and_grads(scan_layer, family, *f32, state0, lens)
    assert ys.shape == xw.shape[:2] + (state0[1] if family.kind == "lstm" else state0).shape[1:]
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((ys, final, grads)))
    assert_close((ys, final), (ys_r, final_r), rtol, atol)
    assert_close(grads, grads_r, rtol, atol)
    return ys, final


@pytest.mark.parametrize(
    ("kind", "hidden", "empty"), [("lstm", 5, ()), ("gru", 24, ()), ("rnn", 24, (16, 17))]
)
def test_matches_scan_with_lengths(kind, hidden, empty):
    """Mixed lengths (0, T and between), 18 rows = one full and one padded block of 16 (for
    rnn, the second block's rows are all of length 0: that program runs no step)."""
    ys, final = check_against_scan(make_case(kind, 6, 18, hidden, empty=empty))
    assert not np.any(np.asarray(ys[:, 0])), "a row of length 0 outputs zeros"


@pytest.mark.parametrize(
    ("hidden", "proj", "options"),
    [(6, 9, {"peepholes": True, "cell_clip": 0.8, "proj_clip": 0.3})],
    ids=["clips-wider_projection"],  # a narrower one: test_dynamic_rnn_pallas_equals_fused
)
def test_lstm_cell_options_match_scan(hidden, proj, options):
    """``LSTMCell``'s peepholes, clips and projection (narrower and wider than ``H``): values
    and gradients (peepholes and projection included) against the scan, 17 rows with lengths
    0..T; the clips are active (some values sit on the bound)."""
    case = make_lstm_cell_case(6, 17, hidden, proj, seed=7, **options)
    ys, (c, _) = check_against_scan(case)
    family, ran = case[0], np.asarray(case[4]) > 0
    if family.cell_clip is not None:  # (rows of length 0 keep their initial c)
        assert np.isclose(np.abs(np.asarray(c)[ran]).max(), family.cell_clip)
    if family.proj_clip is not None:
        assert np.isclose(np.abs(np.asarray(ys)).max(), family.proj_clip)


def test_tiles_and_streamed_weights():
    """Hidden 40 (padded to 64) in 32-wide tiles, weights re-read every step."""
    check_against_scan(make_case("gru", 4, 5, 40, seed=2), chunk=32, resident=False)


def test_bfloat16_inputs_and_weights():
    """bfloat16 ``xw`` and weights, float32 state: close to float32 math on the same values."""
    family, w_h, xw, state0, lens = make_case("lstm", 5, 17, 24, seed=3, dtype=jnp.bfloat16)
    ys, final = jax.jit(P.pallas_layer, static_argnums=0)(family, w_h, xw, state0, lens)
    assert ys.dtype == jnp.float32 and xw.dtype == jnp.bfloat16
    f32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), (w_h, xw))
    ys_r, final_r = scan_layer(family, *f32, state0, lens)
    assert_close((ys, final), (ys_r, final_r), rtol=0, atol=2e-2)


@pytest.mark.parametrize(("cell_type", "lengths"), [("BasicLSTMCell", False), ("GRUCell", True)])
def test_cells_match_dynamic_rnn(cell_type, lengths):
    """Through the public cells: the same outputs, state and weight gradients as
    ``recurrax.dynamic_rnn`` (batch-major; with and without sequence_length)."""
    cell = getattr(recurrax, cell_type)(7, 3, key=jax.random.PRNGKey(4))
    x = normal(jax.random.PRNGKey(5), (3, 6, 3))
    lens = jnp.array([6, 0, 4], jnp.int32) if lengths else None

    def run(fn):
        def loss(cell):
            ys, state = fn(cell, x, lens)
            return jnp.sum(ys * jnp.sin(ys)) + jnp.sum(jax.tree_util.tree_leaves(state)[0]), (
                ys,
                state,
            )

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(cell)

    (_, got), g_got = run(P.pallas_dynamic_rnn)
    (_, want), g_want = run(lambda c, x, n: recurrax.dynamic_rnn(c, x, n, dtype=jnp.float32))
    assert_close(got, want, 1e-5, 1e-5)
    assert_close(g_got, g_want, 1e-5, 1e-5)


def test_rejects_what_it_does_not_support():
    with pytest.raises(ValueError, match="kind"):
        P.Family("lstm_peephole")
    with pytest.raises(ValueError, match="belong to kind='lstm'; got kind='gru'"):
        P.Family("gru", peepholes=True)
    with pytest.raises(ValueError, match="proj_clip needs projection=True"):
        P.Family("lstm", proj_clip=1.0)
    with pytest.raises(ValueError, match="cell_clip must be None or a number >= 0; got -1"):
        P.Family("lstm", cell_clip=-1)
    family, (w, peep, proj), xw, state0, lens = make_lstm_cell_case(3, 2, 5, 3, peepholes=True)
    with pytest.raises(ValueError, match=r"needs peephole weights in w_h"):
        P.pallas_layer(family, (w, None, proj), xw, state0, lens)
    with pytest.raises(ValueError, match=r"takes no projection weights in w_h"):
        P.pallas_layer(P.Family("lstm", peepholes=True), (w, peep, proj), xw, state0, lens)
    with pytest.raises(ValueError, match=r"the projection must be \[H, P\] = \[5, 3\]"):
        P.pallas_layer(family, (w, peep, proj[:4]), xw, state0, lens)
    with pytest.raises(ValueError, match=r"initial state must be \(c0 \[B, H\], h0 \[B, P\]\)"):
        P.pallas_layer(family, (w, peep, proj), xw, state0[::-1], lens)
    with pytest.raises(ValueError, match="MAX_TILES"):
        P.plan_for(P.Family("lstm"), 1024, jnp.float32)
    family, w_h, xw, state0, lens = make_case("rnn", 3, 2, 5)
    with pytest.raises(ValueError, match="block_batch"):
        P.pallas_layer(family, w_h, xw, state0, lens, block_batch=24)
    cell = recurrax.BasicRNNCell(4, 2, key=jax.random.PRNGKey(0), activation=jax.nn.relu)
    with pytest.raises(ValueError, match="tanh"):
        P.cell_family(cell)


def test_plan():
    # LSTMCell's projection is one more block of on-chip weights: 5 * 64 KiB does not fit.
    assert P.plan_for(P.Family("lstm", projection=True), 64, jnp.float32) == (64, 64, True, True)
    assert P.plan_for(P.Family("lstm", projection=True), 128, jnp.bfloat16)[2:] == (False, False)
    assert P.plan_for(P.Family("lstm"), 5, jnp.float32) == (16, 16, True, True)
    assert P.plan_for(P.Family("lstm"), 128, jnp.float32) == (128, 128, False, False)
    assert P.plan_for(P.Family("lstm"), 128, jnp.bfloat16) == (128, 128, True, True)
    assert P.plan_for(P.Family("gru"), 256, jnp.float32) == (256, 128, False, False)
    assert P.plan_for(P.Family("rnn"), 24, jnp.float32, chunk=16) == (32, 16, True, True)


@pytest.mark.skipif(not ON_GPU, reason="compiles the Triton kernels: needs a GPU")
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "lstm_cell"])
def test_compiled_on_gpu(kind):
    """Compiled kernels (TF32 dots) against the full-precision scan."""
    if kind == "lstm_cell":
        # Clips compiled but wide: TF32 rounding could move a value across an active bound,
        # which flips its slope (the interpreter tests check active clips exactly).
        options = {"peepholes": True, "cell_clip": 50.0, "proj_clip": 50.0}
        case = make_lstm_cell_case(50, 37, 48, 24, seed=6, **options)
    else:
        case = make_case(kind, 50, 37, 48, seed=6)
    check_against_scan(case, rtol=2e-3, atol=2e-3, interpret=False)


# ----------------------------------------------------------------------------------------------
# dynamic_rnn(..., implementation="pallas"): the same results as the fused and generic paths.

PALLAS_CELLS = {
    "rnn": lambda n, key: recurrax.BasicRNNCell(5, n, key=key),
    "gru": lambda n, key: recurrax.GRUCell(5, n, key=key),
    "lstm": lambda n, key: recurrax.BasicLSTMCell(5, n, key=key, forget_bias=0.5),
    "lstm_cell": lambda n, key: recurrax.LSTMCell(
        5, n, key=key, use_peepholes=True, cell_clip=0.4, num_proj=4, proj_clip=0.25
    ),
    "multi": lambda n, key: recurrax.MultiRNNCell(
        [recurrax.LSTMCell(7, n, key=key, num_proj=3), recurrax.GRUCell(6, 3, key=key)]
    ),
}


@pytest.mark.parametrize(
    "kind, time_major",
    [
        ("rnn", False),
        ("gru", False),
        ("lstm", False),
        ("lstm", True),
        ("lstm_cell", False),
        ("multi", False),
    ],
    ids=["rnn", "gru", "lstm", "lstm-time_major", "lstm_cell", "multi"],
)
def test_dynamic_rnn_pallas_equals_fused(kind, time_major):
    """Values and gradients (weights, inputs, initial state) of ``implementation="pallas"``
    against ``"fused"`` (which tests/test_fused.py checks against ``"generic"``), lengths 0, T
    and between, batch 3 (not a multiple of the block), hidden sizes 3 to 7, under jit and grad;
    concrete lengths, and traced ones for the stack and ``LSTMCell``."""
    cell = PALLAS_CELLS[kind](3, jax.random.PRNGKey(1))
    x = normal(jax.random.PRNGKey(2), (3, 6, 3))
    if time_major:
        x = jnp.swapaxes(x, 0, 1)
    lengths = np.array([6, 0, 2], np.int32)
    state0 = jax.tree_util.tree_map(
        lambda z: 0.3 * normal(jax.random.PRNGKey(3), z.shape), cell.zero_state(3, jnp.float32)
    )

    def loss(args, n, implementation):
        cell, x, s0 = args
        ys, state = recurrax.dynamic_rnn(
            cell, x, n, s0, time_major=time_major, implementation=implementation
        )
        total = jnp.sum(ys * jnp.cos(ys)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))
        return total, (ys, state)

    def run(implementation, n):
        grad = jax.value_and_grad(loss, has_aux=True)
        if isinstance(n, np.ndarray):  # closed over: concrete under jit
            return jax.jit(lambda args: grad(args, n, implementation))((cell, x, state0))
        return jax.jit(grad, static_argnums=2)((cell, x, state0), n, implementation)

    want = run("fused", lengths)
    assert_close(run("pallas", lengths), want, 2e-5, 2e-5)
    if kind in ("multi", "lstm_cell"):
        assert_close(run("pallas", jnp.asarray(lengths)), want, 2e-5, 2e-5)  # traced lengths


def test_vmap_pallas():
    """``jax.vmap`` over examples, each with its own batch and lengths (Pallas adds a grid axis
    for the mapped one): values and input gradients equal the fused path's."""
    cell = recurrax.LSTMCell(5, 3, key=jax.random.PRNGKey(7), use_peepholes=True, num_proj=4)
    x = normal(jax.random.PRNGKey(8), (2, 3, 5, 3))  # 2 examples of [B=3, T=5, I=3]
    lengths = jnp.array([[5, 0, 2], [1, 5, 3]], jnp.int32)

    def run(implementation):
        def one(x, n):
            ys, state = recurrax.dynamic_rnn(cell, x, n, implementation=implementation)
            return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(state.c), (ys, state)

        grad = jax.value_and_grad(one, has_aux=True)
        return jax.jit(jax.vmap(grad))(x, lengths)

    want = run("fused")
    assert_close(run("pallas"), want, 2e-5, 2e-5)


def test_forward_mode_is_refused_with_the_fix():
    """The kernels differentiate in reverse mode once: ``jax.jvp``, ``jax.jacfwd``,
    ``jax.hessian`` and a gradient of a gradient are a ``TypeError`` naming the paths that
    have them, not an error from inside Pallas; ``jax.grad`` works (the tests above)."""
    cell = recurrax.GRUCell(4, 3, key=jax.random.PRNGKey(9))
    x = normal(jax.random.PRNGKey(10), (2, 5, 3))

    def outputs(x):
        return recurrax.dynamic_rnn(cell, x, implementation="pallas")[0]

    def loss(x):
        return jnp.sum(jnp.sin(outputs(x)))

    message = (
        "implementation='pallas' differentiates in reverse mode, once (jax.grad, jax.vjp); "
        "forward mode (jax.jvp, jax.jacfwd) and derivatives of its gradient (jax.hessian, a "
        "grad of a grad) need implementation='fused' (built-in cells) or 'generic'."
    )
    for transform in (
        lambda: jax.jvp(outputs, (x,), (x,)),
        lambda: jax.jacfwd(outputs)(x),
        lambda: jax.jit(jax.hessian(loss))(x),
        lambda: jax.grad(lambda x: jnp.sum(jax.grad(loss)(x)))(x),
    ):
        with pytest.raises(TypeError, match=re.escape(message)):
            transform()


def test_bidirectional_pallas():
    cell_fw = recurrax.BasicLSTMCell(5, 3, key=jax.random.PRNGKey(4))
    cell_bw = recurrax.GRUCell(4, 3, key=jax.random.PRNGKey(5))
    x = normal(jax.random.PRNGKey(6), (2, 5, 3))
    n = np.array([5, 3], np.int32)
    got = recurrax.bidirectional_dynamic_rnn(cell_fw, cell_bw, x, n, implementation="pallas")
    want = recurrax.bidirectional_dynamic_rnn(cell_fw, cell_bw, x, n, dtype=jnp.float32)
    assert_close(got, want, 1e-5, 1e-5)


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (
            lambda k: recurrax.LayerNormBasicLSTMCell(4, 3, key=k),
            {},
            "implementation='pallas' does not support LayerNormBasicLSTMCell (it runs "
            "BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell and MultiRNNCell stacks of them); "
            "implementation='generic' runs it",
        ),
        (
            lambda k: recurrax.LSTMCell(256, 3, key=k, num_proj=64),
            {},
            "implementation='pallas' does not support num_units=256 (pallas_layer: lstm with "
            "hidden size 256 needs 20 weight tiles",
        ),
        (
            lambda k: recurrax.BasicRNNCell(4, 3, key=k, activation=jax.nn.relu),
            {},
            "implementation='pallas' does not support the activation relu (tanh only); "
            "implementation='fused' runs it",
        ),
        (
            lambda k: recurrax.GRUCell(4, 3, key=k),
            {"dtype": jnp.float64},
            "implementation='pallas' does not support dtype float64 (float32 and bfloat16 only",
        ),
        (
            lambda k: recurrax.GRUCell(4, 3, key=k),
            {"memory": "recompute"},
            "implementation='pallas' does not support memory strategies other than 'store', "
            "swap_memory or memory_budget (the kernel keeps every step's values on the device); "
            "implementation='generic' runs it",
        ),
        (
            lambda k: recurrax.BasicLSTMCell(1024, 3, key=k),
            {},
            "implementation='pallas' does not support num_units=1024 (",
        ),
        (
            lambda k: recurrax.MultiRNNCell(
                [
                    recurrax.GRUCell(4, 3, key=k),
                    recurrax.DropoutWrapper(recurrax.GRUCell(4, 4, key=k)),
                ]
            ),
            {},
            "does not support layer 1 of the MultiRNNCell: DropoutWrapper (it runs",
        ),
    ],
    ids=[
        "layer_norm",
        "projection_too_wide",
        "relu",
        "float64",
        "recompute",
        "too_wide",
        "wrapped_layer",
    ],
)
def test_pallas_refuses_what_it_cannot_run(build, kwargs, message):
    cell = build(jax.random.PRNGKey(0))
    x = normal(jax.random.PRNGKey(1), (2, 4, 3))
    with pytest.raises(ValueError, match=re.escape(message)):
        recurrax.dynamic_rnn(cell, x, implementation="pallas", **kwargs)
