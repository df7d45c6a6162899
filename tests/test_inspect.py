"""inspect_program: equation and op counts, memory figures, the gradient step, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.inspect import _gradient_program, count_hlo_ops, count_jaxpr_eqns


def test_count_jaxpr_eqns_descends_into_scan_and_jit():
    def looped(x):  # scan (1) + its body: sin, mul (2)
        return jax.lax.scan(lambda c, _: (jnp.sin(c) * 2.0, None), x, None, length=5)[0]

    inner = jax.jit(lambda x: jnp.cos(x) + 1.0)

    def nested(x):  # jit (1) + its body: cos, add (2) + mul (1)
        return inner(x) * 3.0

    x = jnp.ones(3, jnp.float32)
    assert count_jaxpr_eqns(jax.make_jaxpr(looped)(x)) == 3
    assert count_jaxpr_eqns(jax.make_jaxpr(nested)(x)) == 4
    assert count_jaxpr_eqns(jax.make_jaxpr(nested)(x).jaxpr) == 4
    with pytest.raises(TypeError, match="jaxpr must be a Jaxpr or ClosedJaxpr; got int"):
        count_jaxpr_eqns(3)


def test_count_hlo_ops_and_memory_of_a_small_program():
    x = jnp.ones(1000, jnp.float32)
    report = recurrax.inspect_program(lambda x: jnp.sin(x)[:10], x)
    # func.func, stablehlo.sine, stablehlo.slice, func.return
    assert report.hlo_ops == 4
    assert report.jaxpr_eqns == 2  # sin, slice
    assert report.argument_bytes == 4000  # f32[1000]
    assert report.output_bytes == 40  # f32[10]
    assert report.mode == "forward"
    assert report.run_s is not None and report.run_s > 0
    lowered = jax.jit(lambda x: jnp.cos(x) + 1.0).lower(x)
    # func.func, cosine, constant, broadcast_in_dim, add, func.return
    assert count_hlo_ops(lowered.compiler_ir("stablehlo")) == 6


def _runners(cell):
    def static(c, xs):
        return recurrax.static_rnn(c, xs, dtype=jnp.float32)

    def dynamic(c, x):  # one copy of the step per loop iteration, on every backend
        return recurrax.dynamic_rnn(c, x, dtype=jnp.float32, unroll=1)

    return static, dynamic


@pytest.mark.parametrize("grad", [False, True])
def test_static_program_grows_by_one_cell_per_step_dynamic_does_not(getkey, grad):
    cell = recurrax.BasicRNNCell(3, 2, key=getkey())
    static, dynamic = _runners(cell)
    s, d = {}, {}
    for T in (2, 3, 4):
        x = jnp.ones((2, T, 2), jnp.float32)
        s[T] = recurrax.inspect_program(static, cell, list(jnp.moveaxis(x, 1, 0)), grad=grad)
        d[T] = recurrax.inspect_program(dynamic, cell, x, grad=grad, run=False)
    for field in ("jaxpr_eqns", "hlo_ops"):
        per_step = getattr(s[3], field) - getattr(s[2], field)
        assert per_step > 0
        assert getattr(s[4], field) - getattr(s[3], field) == per_step  # exactly linear
        assert getattr(d[2], field) == getattr(d[3], field) == getattr(d[4], field)
    assert d[2].run_s is None
    if grad:
        assert s[4].mode == "gradient"
        # The gradient step keeps one step's activations per step: its scratch grows with T.
        assert s[2].temp_bytes < s[3].temp_bytes < s[4].temp_bytes


def test_gradient_program_is_value_and_grad_of_half_sum_of_squares():
    w = jnp.array([1.0, -2.0, 0.5], jnp.float64)
    x = jnp.array([3.0, 1.0, -4.0], jnp.float64)

    def fn(w, x):
        return {"y": w * x, "n": jnp.arange(3)}  # the integer leaf is not part of the loss

    loss, grads = jax.jit(_gradient_program(fn, 2, (0,)))(w, x)
    np.testing.assert_allclose(loss, 0.5 * np.sum((np.asarray(w) * np.asarray(x)) ** 2))
    np.testing.assert_allclose(grads[0], np.asarray(w) * np.asarray(x) ** 2)
    assert grads[1] is None
    # A scalar output is the loss itself; argnums picks the second argument.
    loss, grads = _gradient_program(lambda w, x: jnp.sum(w * x), 2, (1,))(w, x)
    np.testing.assert_allclose(loss, np.sum(np.asarray(w) * np.asarray(x)))
    np.testing.assert_allclose(grads[1], w)


def test_gradient_step_of_a_cell(getkey):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    x = jnp.ones((2, 5, 3), jnp.float32)
    report = recurrax.inspect_program(
        lambda c, x: recurrax.dynamic_rnn(c, x)[0], cell, x, grad=True
    )
    forward = recurrax.inspect_program(lambda c, x: recurrax.dynamic_rnn(c, x)[0], cell, x)
    assert report.mode == "gradient"
    assert report.jaxpr_eqns > forward.jaxpr_eqns
    # The gradient step returns the loss and one gradient per weight: kernel [7, 16], bias [16]
    # (XLA may add a table of one pointer per output).
    assert 4 * (1 + 7 * 16 + 16) <= report.output_bytes <= 4 * (1 + 7 * 16 + 16) + 8 * 3
    text = str(report)
    assert f"{report.jaxpr_eqns} jaxpr equations" in text
    assert f"{report.hlo_ops} StableHLO ops" in text
    assert report.build_s == pytest.approx(report.trace_s + report.lower_s + report.compile_s)


def test_shape_dtype_struct_compiles_without_data(getkey):
    cell = recurrax.BasicRNNCell(3, 2, key=getkey())
    x = jax.ShapeDtypeStruct((2, 1000, 2), jnp.float32)
    fn = lambda c, x: recurrax.dynamic_rnn(c, x)[0]
    report = recurrax.inspect_program(fn, cell, x, run=False)
    assert report.run_s is None
    assert report.argument_bytes == 4 * (2 * 1000 * 2 + 5 * 3 + 3)
    with pytest.raises(ValueError, match="ShapeDtypeStruct placeholders.*pass run=False"):
        recurrax.inspect_program(fn, cell, x)


def test_errors():
    x = jnp.ones(3)
    with pytest.raises(TypeError, match="fn must be callable; got int"):
        recurrax.inspect_program(3, x)
    with pytest.raises(TypeError, match="grad must be a bool; got str"):
        recurrax.inspect_program(jnp.sin, x, grad="yes")
    with pytest.raises(ValueError, match="repeats must be a positive int; got 0"):
        recurrax.inspect_program(jnp.sin, x, repeats=0)
    with pytest.raises(
        ValueError, match=r"argnums must name arguments of fn: integers in \[0, 1\)"
    ):
        recurrax.inspect_program(jnp.sin, x, grad=True, argnums=2)
    with pytest.raises(TypeError, match="argnums must be an int or a tuple of ints"):
        recurrax.inspect_program(jnp.sin, x, grad=True, argnums="0")
    with pytest.raises(ValueError, match="grad=True needs at least one argument"):
        recurrax.inspect_program(lambda: jnp.ones(2), grad=True)
    with pytest.raises(TypeError, match="fn must return at least one floating array"):
        recurrax.inspect_program(lambda x: jnp.arange(3), x, grad=True)
