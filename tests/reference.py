"""Plain NumPy references: TF1's cell formulas and the per-row runner contract.

Everything here is float64 NumPy and Python loops, written from TF1's
``rnn_cell_impl.py`` and DESIGN.md, not from recurrax's code, so the tests that compare against
it can fail. The runner reference implements, per batch row ``b`` and step ``t``::

    (output, state)(b, t) = (t >= sequence_length[b])
          ? (zeros(output_size), state(b, sequence_length[b] - 1))   # state(b, -1) = initial
          : cell(input(b, t), state(b, t - 1))

Other test files import :func:`np_step`, :func:`reference_rnn`,
:func:`reference_bidirectional` and :class:`MinimalRNNCell` from here.
"""

from __future__ import annotations

import functools
import zlib

import equinox as eqx
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

import recurrax


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np(x):
    return None if x is None else np.asarray(x, np.float64)


def _np_activation(act):
    if act is jnp.tanh:
        return np.tanh
    return lambda x: np.asarray(act(jnp.asarray(x)), np.float64)


# --- TF1 cell formulas (batch-wide, inputs [B, in], states [B, n]) -----------------------------


def basic_rnn_step(kernel, bias, x, h, act=np.tanh):
    """TF1 BasicRNNCell: ``h' = act(concat(x, h) @ kernel + bias)``; output is ``h'``."""
    h = act(np.concatenate([x, h], 1) @ kernel + bias)
    return h, h


def gru_step(gates_kernel, gates_bias, candidate_kernel, candidate_bias, x, h, act=np.tanh):
    """TF1 GRUCell: reset ``r`` and update ``u`` gates, then ``h' = u*h + (1-u)*c``."""
    value = sigmoid(np.concatenate([x, h], 1) @ gates_kernel + gates_bias)
    n = h.shape[1]
    r, u = value[:, :n], value[:, n:]
    c = act(np.concatenate([x, r * h], 1) @ candidate_kernel + candidate_bias)
    new_h = u * h + (1 - u) * c
    return new_h, new_h


def basic_lstm_step(kernel, bias, x, state, forget_bias=1.0, act=np.tanh):
    """TF1 BasicLSTMCell, gate order ``i, j, f, o``, ``forget_bias`` added at run time."""
    c, h = state
    z = np.concatenate([x, h], 1) @ kernel + bias
    i, j, f, o = np.split(z, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * act(j)
    new_h = act(new_c) * sigmoid(o)
    return new_h, (new_c, new_h)


def lstm_step(
    kernel,
    bias,
    x,
    state,
    *,
    w_f_diag=None,
    w_i_diag=None,
    w_o_diag=None,
    cell_clip=None,
    projection_kernel=None,
    proj_clip=None,
    forget_bias=1.0,
    act=np.tanh,
):
    """TF1 LSTMCell: peepholes (when the ``w_*_diag`` are given), cell clip, projection."""
    c_prev, m_prev = state
    z = np.concatenate([x, m_prev], 1) @ kernel + bias
    i, j, f, o = np.split(z, 4, axis=1)
    if w_f_diag is not None:
        c = sigmoid(f + forget_bias + w_f_diag * c_prev) * c_prev + sigmoid(
            i + w_i_diag * c_prev
        ) * act(j)
    else:
        c = sigmoid(f + forget_bias) * c_prev + sigmoid(i) * act(j)
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    o_peep = 0.0 if w_o_diag is None else w_o_diag * c  # TF1 peeks at the *new* c here
    m = sigmoid(o + o_peep) * act(c)
    if projection_kernel is not None:
        m = m @ projection_kernel
        if proj_clip is not None:
            m = np.clip(m, -proj_clip, proj_clip)
    return m, (c, m)


class MinimalRNNCell(eqx.Module):
    """``h' = tanh(x @ W + h @ U)``: a cell as a user writes it (no input_size, no dtype)."""

    W: jax.Array
    U: jax.Array
    state_size: int = eqx.field(static=True)
    output_size: int = eqx.field(static=True)

    def __init__(self, n, m, *, key, weight_dtype=jnp.float32):
        k1, k2 = jax.random.split(key)
        self.W = jax.random.normal(k1, (m, n), weight_dtype) / m**0.5
        self.U = jax.random.normal(k2, (n, n), weight_dtype) / n**0.5
        self.state_size = self.output_size = n

    def zero_state(self, batch_size, dtype):
        return jnp.zeros((batch_size, self.state_size), dtype)

    def __call__(self, x, h):
        h = jnp.tanh(x @ self.W + h @ self.U)
        return h, h


def stacked_step(steps):
    """The NumPy step of a ``MultiRNNCell`` whose layers' steps are ``steps``: each layer's
    output is the next one's input; the state is the tuple of the layers' states."""

    def multi(t, x, state):
        new = []
        for step, s in zip(steps, state):
            x, s = step(t, x, s)
            new.append(s)
        return x, tuple(new)

    return multi


def np_step(cell):
    """A NumPy function ``(t, x [B, in], state) -> (output, state)`` with ``cell``'s formula.

    States are plain nests (tuples) of float64 arrays. Supported: the four TF1 cells,
    :class:`MinimalRNNCell`, ``MultiRNNCell`` and ``ResidualWrapper`` of those, and a
    ``DropoutWrapper`` whose keep probabilities are all 1 (it is then the identity).
    """
    if isinstance(cell, recurrax.BasicRNNCell):
        k, b, act = _np(cell.kernel), _np(cell.bias), _np_activation(cell.activation)
        return lambda t, x, s: basic_rnn_step(k, b, x, s, act)
    if isinstance(cell, recurrax.GRUCell):
        w = [_np(cell.gates_kernel), _np(cell.gates_bias)]
        w += [_np(cell.candidate_kernel), _np(cell.candidate_bias)]
        act = _np_activation(cell.activation)
        return lambda t, x, s: gru_step(*w, x, s, act)
    if isinstance(cell, recurrax.BasicLSTMCell):
        k, b, act = _np(cell.kernel), _np(cell.bias), _np_activation(cell.activation)
        return lambda t, x, s: basic_lstm_step(k, b, x, s, cell.forget_bias, act)
    if isinstance(cell, recurrax.LSTMCell):
        k, b = _np(cell.kernel), _np(cell.bias)
        opts = dict(
            w_f_diag=_np(cell.w_f_diag),
            w_i_diag=_np(cell.w_i_diag),
            w_o_diag=_np(cell.w_o_diag),
            cell_clip=cell.cell_clip,
            projection_kernel=_np(cell.projection_kernel),
            proj_clip=cell.proj_clip,
            forget_bias=cell.forget_bias,
            act=_np_activation(cell.activation),
        )
        return lambda t, x, s: lstm_step(k, b, x, s, **opts)
    if isinstance(cell, MinimalRNNCell):
        w, u = _np(cell.W), _np(cell.U)

        def minimal(t, x, h):
            h = np.tanh(x @ w + h @ u)
            return h, h

        return minimal
    if isinstance(cell, recurrax.MultiRNNCell):
        return stacked_step([np_step(c) for c in cell.cells])
    if isinstance(cell, recurrax.ResidualWrapper):
        assert cell.residual_fn is None
        inner = np_step(cell.cell)

        def residual(t, x, s):
            out, s = inner(t, x, s)
            return x + out, s

        return residual
    if isinstance(cell, recurrax.DropoutWrapper):
        assert min(cell.input_keep_prob, cell.output_keep_prob, cell.state_keep_prob) == 1.0
        return np_step(cell.cell)
    raise TypeError(f"no NumPy formula for {type(cell).__name__}")


def jax_step(cell):
    """``(t, x, state) -> (output, state)`` calling the cell itself at step ``t`` (float64 out).

    For cells without a NumPy formula (a DropoutWrapper that drops): the runner contract around
    the call is still checked by the reference loop. The cell is bound to step ``t`` through the
    public ``at_step`` protocol, so per-step dropout masks line up with the runners'.
    """

    def step(t, x, state):
        c = cell.at_step(t) if hasattr(cell, "at_step") else cell
        out, new = c(jnp.asarray(x, cell.dtype), _to_jax(state, cell.dtype))
        return _to_np(out), _to_np(new)

    return step


def _to_np(tree):
    return jax.tree_util.tree_map(_np, _plain(tree))


def _to_jax(tree, dtype):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)


def _plain(tree):
    """Nests of namedtuples/lists as plain tuples (so references compare structure-free)."""
    if isinstance(tree, (tuple, list)):
        return tuple(_plain(x) for x in tree)
    return tree


# --- runner references -------------------------------------------------------------------------


def reference_rnn(step, inputs, initial_state, sequence_length=None):
    """The per-row contract with Python loops.

    **Arguments:** ``step(t, x [B, in], state) -> (output, state)`` (see :func:`np_step`);
    ``inputs`` ``[T, B, in]`` (time-major); ``initial_state`` a nest of ``[B, n]`` arrays;
    ``sequence_length`` ``[B]`` ints or ``None`` (all ``T``).

    **Returns:** ``(outputs [T, B, out] (a nest when the output is), final_state)`` as float64
    NumPy, states as plain tuples.
    """
    x = np.asarray(inputs, np.float64)
    T, B = x.shape[:2]
    lengths = np.full(B, T) if sequence_length is None else np.asarray(sequence_length)
    state = _to_np(initial_state)
    state_leaves, state_def = jax.tree_util.tree_flatten(state)
    state_leaves = [s.copy() for s in state_leaves]
    outputs = None
    for t in range(T):
        # The cell is called on the whole batch (the protocol), then each row follows the rule.
        out, new = step(t, x[t], jax.tree_util.tree_unflatten(state_def, state_leaves))
        out_leaves, out_def = jax.tree_util.tree_flatten(out)
        new_leaves = jax.tree_util.tree_leaves(new)
        if outputs is None:
            outputs = [np.zeros((T,) + o.shape) for o in out_leaves]
        for b in range(B):
            if t < lengths[b]:
                for k, o in enumerate(out_leaves):
                    outputs[k][t, b] = o[b]
                for s, n in zip(state_leaves, new_leaves):
                    s[b] = n[b]
            # else: the output stays zero and the state of row b is carried through unchanged
    return (
        jax.tree_util.tree_unflatten(out_def, outputs),
        jax.tree_util.tree_unflatten(state_def, state_leaves),
    )


def reverse_rows(x, sequence_length):
    """``x [T, B, ...]`` with each row ``b`` reversed within its first ``sequence_length[b]``
    steps (the rest left in place); the whole time axis when ``sequence_length`` is None."""
    x = np.asarray(x)
    T, B = x.shape[:2]
    lengths = np.full(B, T) if sequence_length is None else np.asarray(sequence_length)
    out = x.copy()
    for b in range(B):
        n = int(lengths[b])
        for t in range(n):
            out[t, b] = x[n - 1 - t, b]
    return out


def reference_bidirectional(step_fw, step_bw, inputs, init_fw, init_bw, sequence_length=None):
    """Forward reference, and backward reference on per-row reversed inputs, reversed back.

    **Returns:** ``((out_fw [T, B, o_fw], out_bw [T, B, o_bw]), (state_fw, state_bw))``.
    """
    out_fw, state_fw = reference_rnn(step_fw, inputs, init_fw, sequence_length)
    rev_out, state_bw = reference_rnn(
        step_bw, reverse_rows(inputs, sequence_length), init_bw, sequence_length
    )
    return (out_fw, reverse_rows(rev_out, sequence_length)), (state_fw, state_bw)


def zeros_like_state(state_size, batch):
    """Float64 NumPy zeros for ``state_size`` (an int or a nest of ints)."""
    if isinstance(state_size, (tuple, list)):
        return tuple(zeros_like_state(s, batch) for s in state_size)
    return np.zeros((batch, int(state_size)))


def assert_tree_close(actual, expected, rtol=1e-5, atol=1e-6):
    """Leaf-by-leaf ``assert_allclose`` after turning namedtuples/lists into tuples."""
    a_leaves, a_def = jax.tree_util.tree_flatten(_plain(actual))
    e_leaves, e_def = jax.tree_util.tree_flatten(_plain(expected))
    assert a_def == e_def, f"structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol
        )


# --- the cells every runner test is parametrised over ------------------------------------------

CELL_KINDS = [
    "basic_rnn",
    "gru",
    "basic_lstm",
    "lstm_full",
    "multi",
    "residual",
    "user",
    "dropout_keep1",
    "dropout",
    "dropout_variational",
]
#: Kinds whose reference must call the cell itself (their masks come from jax.random).
DROPPING = {"dropout", "dropout_variational"}


def _is_float_leaf(x) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(
        x.dtype, jnp.floating
    )


def randomize(cell, seed, scale=0.6):
    """Every floating weight of ``cell`` replaced by ``scale * normal`` (biases included, so a
    test notices a bias that is ignored or misplaced). NumPy draws them: nothing is compiled.
    ``cell`` may be abstract (``jax.ShapeDtypeStruct`` leaves, from ``eqx.filter_eval_shape``);
    an abstract PRNG key becomes ``jax.random.key(seed)``."""
    rng = np.random.default_rng(seed)

    def draw(x):
        if _is_float_leaf(x):
            return jnp.asarray((scale * rng.standard_normal(x.shape)).astype(x.dtype))
        if isinstance(x, jax.ShapeDtypeStruct):  # a PRNG key
            return jax.random.key(seed)
        return x

    return jax.tree_util.tree_map(draw, cell)


def random_cell(build, seed=0, scale=0.6):
    """The cell ``build()`` returns, built abstractly (``eqx.filter_eval_shape``: nothing is
    compiled) and given NumPy-drawn weights by :func:`randomize`."""
    return randomize(eqx.filter_eval_shape(build), seed, scale)


def cast_weights(cell, dtype):
    """``cell`` with every floating weight cast to ``dtype`` (through NumPy: no compilation)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(np.asarray(x).astype(dtype)) if _is_float_leaf(x) else x, cell
    )


@functools.cache
def make_cell(kind: str, input_size: int, dtype=jnp.float64):
    """A cell of ``kind`` (see :data:`CELL_KINDS`) reading ``input_size`` features, with random
    weights of ``dtype`` (the user cell keeps no dtype attribute: pass ``dtype`` to runners).

    The cell is built abstractly and its weights drawn by NumPy: tests compile only what they
    run (compilation, not running, is what makes a test suite like this one slow)."""
    return random_cell(lambda: _build(kind, input_size, dtype), zlib.crc32(kind.encode()))


def _build(kind, n, dtype):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    if kind == "basic_rnn":
        cell = recurrax.BasicRNNCell(4, n, key=k1, dtype=dtype)
    elif kind == "gru":
        cell = recurrax.GRUCell(4, n, key=k1, dtype=dtype)
    elif kind == "basic_lstm":
        cell = recurrax.BasicLSTMCell(4, n, key=k1, forget_bias=0.5, dtype=dtype)
    elif kind == "lstm_full":
        cell = recurrax.LSTMCell(
            4,
            n,
            key=k1,
            use_peepholes=True,
            cell_clip=0.5,
            num_proj=3,
            proj_clip=0.4,
            forget_bias=0.7,
            dtype=dtype,
        )
    elif kind == "multi":
        cell = recurrax.MultiRNNCell(
            [
                recurrax.GRUCell(4, n, key=k1, dtype=dtype),
                recurrax.LSTMCell(3, 4, key=k2, use_peepholes=True, num_proj=2, dtype=dtype),
            ]
        )
    elif kind == "residual":
        cell = recurrax.ResidualWrapper(recurrax.BasicLSTMCell(n, n, key=k1, dtype=dtype))
    elif kind == "user":
        cell = MinimalRNNCell(4, n, key=k1, weight_dtype=dtype)
    elif kind == "dropout_keep1":
        cell = recurrax.DropoutWrapper(recurrax.GRUCell(4, n, key=k1, dtype=dtype))
    elif kind in DROPPING:
        cell = recurrax.DropoutWrapper(
            recurrax.BasicLSTMCell(4, n, key=k1, dtype=dtype),
            input_keep_prob=0.7,
            output_keep_prob=0.8,
            state_keep_prob=0.6,
            variational_recurrent=kind == "dropout_variational",
            key=k3,
        )
    else:
        raise ValueError(kind)
    return cell


def reference_step(kind: str, cell):
    """The reference step for a cell built by :func:`make_cell`."""
    return jax_step(cell) if kind in DROPPING else np_step(cell)


def all_eqns(jaxpr):
    """Every equation of ``jaxpr`` (``Jaxpr`` or ``ClosedJaxpr``) and of the programs nested in
    its equations' parameters (loop bodies, ``jit``, ``custom_jvp`` / ``custom_vjp`` primals)."""
    if isinstance(jaxpr, jex.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jex.jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)
