"""Bucketing: padding keeps every real row's results, and one compilation serves a bucket."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax


def _rnn_reference(cell, x, lengths):
    """NumPy loop of BasicRNNCell under TF1's contract: (outputs [B, T, u], state [B, u])."""
    k, b = np.asarray(cell.kernel, np.float64), np.asarray(cell.bias, np.float64)
    batch, time, _ = x.shape
    h = np.zeros((batch, k.shape[1]))
    outputs = np.zeros((batch, time, k.shape[1]))
    for t in range(time):
        new = np.tanh(np.concatenate([x[:, t], h], -1) @ k + b)
        valid = (t < lengths)[:, None]
        outputs[:, t] = np.where(valid, new, 0.0)
        h = np.where(valid, new, h)
    return outputs, h


def test_pad_to_bucket_values():
    x = np.arange(3 * 5 * 2, dtype=np.float64).reshape(3, 5, 2) + 1.0
    padded, lengths = recurrax.pad_to_bucket(x, [5, 2, 0], edges=(4, 8, 16), batch_edges=(2, 4))
    assert isinstance(padded, np.ndarray) and padded.shape == (4, 8, 2)
    np.testing.assert_array_equal(padded[:3, :5], x)
    assert not padded[3:].any() and not padded[:, 5:].any()
    np.testing.assert_array_equal(lengths, [5, 2, 0, 0])
    assert lengths.dtype == np.int32
    # No lengths: every row is T long; no batch edges: the batch is kept.
    padded, lengths = recurrax.pad_to_bucket(x, edges=(5,))
    np.testing.assert_array_equal(padded, x)
    np.testing.assert_array_equal(lengths, [5, 5, 5])
    # Time-major and JAX arrays: the same padding on the other axes, a JAX array back.
    xt = jnp.asarray(np.swapaxes(x, 0, 1))
    padded, lengths = recurrax.pad_to_bucket(xt, edges=(6,), batch_edges=(4,), time_major=True)
    assert isinstance(padded, jax.Array) and padded.shape == (6, 4, 2)
    np.testing.assert_array_equal(np.asarray(padded)[:5, :3], np.swapaxes(x, 0, 1))
    np.testing.assert_array_equal(lengths, [5, 5, 5, 0])


def test_padding_gives_identical_results(getkey):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey(), dtype=jnp.float64)
    x = np.asarray(jax.random.normal(getkey(), (3, 7, 3), jnp.float64))
    lengths = np.array([7, 3, 0])
    out, (c, h) = recurrax.dynamic_rnn(cell, x, sequence_length=lengths)
    padded, plengths = recurrax.pad_to_bucket(x, lengths, edges=(4, 16), batch_edges=(8,))
    pout, (pc, ph) = recurrax.dynamic_rnn(cell, padded, sequence_length=plengths)
    assert pout.shape == (8, 16, 4)
    np.testing.assert_allclose(pout[:3, :7], out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pc[:3], c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ph[:3], h, rtol=1e-12, atol=1e-12)
    assert not np.asarray(pout[:, 7:]).any() and not np.asarray(pout[3:]).any()
    assert not np.asarray(pc[3:]).any()  # length-0 rows keep the (zero) initial state


def test_twenty_random_batches_compile_at_most_once_per_bucket(getkey):
    cell = recurrax.BasicRNNCell(4, 2, key=getkey(), dtype=jnp.float64)
    traces = []

    @recurrax.bucketed(edges=(8, 16, 32), batch_edges=(2, 4, 8))
    def encode(x, lengths, cell):
        traces.append(x.shape)  # a Python side effect: runs once per trace, i.e. per compile
        return recurrax.dynamic_rnn(cell, x, sequence_length=lengths)

    rng = np.random.default_rng(0)
    hit = set()
    for _ in range(20):
        batch, time = int(rng.integers(1, 9)), int(rng.integers(1, 33))
        x = rng.normal(size=(batch, time, 2))
        lengths = rng.integers(0, time + 1, size=batch)
        outputs, state = encode(x, lengths, cell)
        hit.add((min(e for e in (2, 4, 8) if e >= batch), min(e for e in (8, 16, 32) if e >= time)))
        ref_out, ref_state = _rnn_reference(cell, x, lengths)
        np.testing.assert_allclose(outputs[:batch, :time], ref_out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state[:batch], ref_state, rtol=1e-10, atol=1e-12)
    assert len(traces) == len(set(traces)) == len(hit)  # one compilation per bucket met
    assert len(traces) <= 9 < 20
    assert encode.trace_count == len(traces)
    assert set(encode.buckets) == hit
    # A new cell with the same shapes reuses the compiled programs.
    other = recurrax.BasicRNNCell(4, 2, key=getkey(), dtype=jnp.float64)
    batch, time = next(iter(hit))
    encode(np.ones((batch, time, 2)), None, other)
    assert encode.trace_count == len(traces)


def test_static_rnn_retraces_for_every_length(getkey):
    cell = recurrax.BasicRNNCell(4, 2, key=getkey())
    traces = []

    @jax.jit
    def run(cell, xs):
        traces.append(len(xs))
        return recurrax.static_rnn(cell, xs, dtype=jnp.float32)[1]

    for time in (3, 4, 5, 3, 4):
        run(cell, [jnp.ones((2, 2), jnp.float32)] * time)
    assert traces == [3, 4, 5]  # one trace (and compilation) per new T, reused for a repeat T
    program = [
        recurrax.inspect_program(run, cell, [jnp.ones((2, 2), jnp.float32)] * t, run=False)
        for t in (3, 4)
    ]
    assert program[1].jaxpr_eqns > program[0].jaxpr_eqns  # and each program is bigger


def test_bucketed_function_direct_and_pad():
    f = recurrax.BucketedFunction(lambda x, n: (x.sum(), n.sum()), edges=[4, 8])
    padded, lengths = f.pad(np.ones((2, 3, 1)))
    assert padded.shape == (2, 4, 1)
    np.testing.assert_array_equal(lengths, [3, 3])
    total, steps = f(np.ones((2, 3, 1)))
    assert float(total) == 6.0 and int(steps) == 6
    assert f.edges == (4, 8) and f.batch_edges is None and f.buckets == ((2, 4),)
    g = recurrax.BucketedFunction(lambda x, n: x.shape, edges=(4,), time_major=True)
    g(np.ones((3, 5, 1)))
    assert g.buckets == ((5, 4),)


@pytest.mark.parametrize(
    "edges, error, match",
    [
        (
            (8, 4, 16),
            ValueError,
            r"edges must be strictly increasing.*edges\[0\]=8 then edges\[1\]=4",
        ),
        ((4, 4), ValueError, r"edges\[0\]=4 then edges\[1\]=4"),
        ((0, 4), ValueError, r"edges must be positive integers; got edges\[0\]=0"),
        ((-2,), ValueError, r"edges must be positive integers; got edges\[0\]=-2"),
        ((), ValueError, "edges must hold at least one edge"),
        ((4.0, 8), TypeError, r"edges must hold integers.*edges\[0\]=4.0 of type float"),
        ((True, 8), TypeError, r"edges must hold integers"),
        ("32", TypeError, "edges must be a sequence of increasing positive integers.*got str"),
        (32, TypeError, "edges must be a sequence of increasing positive integers.*got int"),
    ],
)
def test_bad_edges(edges, error, match):
    x = np.ones((2, 3, 1))
    with pytest.raises(error, match=match):
        recurrax.pad_to_bucket(x, edges=edges)
    with pytest.raises(error, match=match.replace("edges", "batch_edges")):
        recurrax.pad_to_bucket(x, edges=(4,), batch_edges=edges)
    with pytest.raises(error, match=match):
        recurrax.bucketed(lambda x, n: x, edges=edges)


def test_batch_beyond_the_largest_edge():
    with pytest.raises(ValueError, match=r"inputs has time length 9 but the largest of edges is 8"):
        recurrax.pad_to_bucket(np.ones((2, 9, 1)), edges=(4, 8))
    with pytest.raises(
        ValueError, match=r"inputs has batch 5 but the largest of batch_edges is 4: add an edge"
    ):
        recurrax.pad_to_bucket(np.ones((5, 3, 1)), edges=(4,), batch_edges=(2, 4))
    with pytest.raises(ValueError, match="the largest of edges is 8"):
        recurrax.bucketed(lambda x, n: x, edges=(8,))(np.ones((1, 9, 1)))


def test_bad_inputs_and_lengths():
    with pytest.raises(
        ValueError, match=r"inputs must have a batch and a time axis.*got shape \(3,\)"
    ):
        recurrax.pad_to_bucket(np.ones(3), edges=(4,))
    x = np.ones((2, 3, 1))
    with pytest.raises(ValueError, match=r"sequence_length must lie in \[0, 3\].*\[1\]=4"):
        recurrax.pad_to_bucket(x, [3, 4], edges=(4,))
    with pytest.raises(ValueError, match=r"sequence_length must have shape \[batch\]=\(2,\)"):
        recurrax.pad_to_bucket(x, [3], edges=(4,))
    with pytest.raises(TypeError, match="sequence_length must have an integer dtype"):
        recurrax.pad_to_bucket(x, [3.0, 1.0], edges=(4,))
    with pytest.raises(TypeError, match="fn must be callable; got int"):
        recurrax.BucketedFunction(3, edges=(4,))
