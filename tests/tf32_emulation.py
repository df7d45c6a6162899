"""A GPU's default float32 matmul, emulated on the CPU: ``RECURRAX_TEST_EMULATE_TF32=1``.

On an Ampere or Hopper GPU, XLA runs a float32 dot at JAX's default precision as TF32: each
operand is rounded to a 10-bit mantissa, products are summed in float32. A CPU computes it in
full float32, so a test checked to 1e-5 on the CPU can fail on a GPU. With the variable set,
``conftest.py`` calls :func:`install`, and the suite runs on the CPU with the operands of every
such dot rounded to TF32 (to nearest, ties to even; infinities and NaNs kept; a GPU may break
ties otherwise, which no tolerance here can see), which finds those tests without a GPU. Left
alone, as on a GPU: dots of other dtypes, dots at an explicit or configured full precision
(``jax.default_matmul_precision("highest")``), and dots traced under ``jax.default_device(cpu)``
(code pinned to a GPU machine's CPU).

The rounding is added where the dot is lowered for the CPU, so autodiff and every other
transformation see the ordinary primitive. It uses JAX internals (the dot's CPU lowering rule):
a test tool, not part of recurrax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ENV = "RECURRAX_TEST_EMULATE_TF32"


def tf32_round(x: jax.Array) -> jax.Array:
    """``x`` (float32) rounded to TF32's 10-bit mantissa, to nearest, ties to even."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    half = jnp.uint32(0xFFF) + ((bits >> 13) & jnp.uint32(1))
    rounded = lax.bitcast_convert_type((bits + half) & jnp.uint32(0xFFFFE000), jnp.float32)
    return jnp.where(jnp.isfinite(x), rounded, x)


def _full_precision(precision) -> bool:
    """Whether a dot's precision parameter asks for more than TF32 (HIGHEST, or an explicit
    algorithm); None, DEFAULT and HIGH are TF32 on such a GPU."""
    from jax._src.lax.lax import Precision

    if precision is None:
        return False
    if isinstance(precision, tuple):
        return any(p == Precision.HIGHEST for p in precision)
    return str(precision) != "DEFAULT"  # a DotAlgorithmPreset


def _pinned_to_cpu() -> bool:
    device = jax.config.jax_default_device
    return device is not None and getattr(device, "platform", device) == "cpu"


def install() -> None:
    """Register the TF32-rounding CPU lowering of ``dot_general`` in this process."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.lax import lax as lax_internal

        lower = lax_internal._dot_general_lower
        primitive = lax_internal.dot_general_p
    except (ImportError, AttributeError) as e:  # pragma: no cover - another JAX's internals
        raise RuntimeError(f"{ENV}=1 needs JAX's dot_general lowering rule: {e}") from e
    rounding = mlir.lower_fun(tf32_round, multiple_results=False)

    def _lower(ctx, lhs, rhs, *, precision, **params):
        a, b = ctx.avals_in
        if (
            a.dtype == np.float32
            and b.dtype == np.float32
            and not _full_precision(precision)
            and not _pinned_to_cpu()
        ):
            lhs = rounding(ctx.replace(primitive=None, avals_in=[a], avals_out=[a]), lhs)[0]
            rhs = rounding(ctx.replace(primitive=None, avals_in=[b], avals_out=[b]), rhs)[0]
        return lower(ctx, lhs, rhs, precision=precision, platform="cpu", **params)

    mlir.register_lowering(primitive, _lower, platform="cpu")
