"""The test tool that emulates a GPU's TF32 float32 dots on the CPU (tests/tf32_emulation.py)."""

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from tf32_emulation import tf32_round

ULP = 2.0**-10  # TF32's mantissa: 10 bits


def test_rounds_to_ten_mantissa_bits_to_nearest_even():
    x = jnp.array(
        [1 + ULP / 2, 1 + 1.5 * ULP, 1 + 0.4 * ULP, 1 + 0.6 * ULP, -2 * (1 + 0.6 * ULP)],
        jnp.float32,
    )
    want = [1.0, 1 + 2 * ULP, 1.0, 1 + ULP, -2 * (1 + ULP)]  # ties go to the even mantissa
    np.testing.assert_array_equal(np.asarray(tf32_round(x)), np.array(want, np.float32))
    special = jnp.array([np.inf, -np.inf, np.nan, 0.0, -0.0], jnp.float32)
    out = np.asarray(tf32_round(special))
    assert np.isposinf(out[0]) and np.isneginf(out[1]) and np.isnan(out[2])
    assert out[3] == 0.0 and np.signbit(out[4])


_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
import tf32_emulation
tf32_emulation.install()
a = jax.random.normal(jax.random.key(0), (64, 64), jnp.float32)
b = jax.random.normal(jax.random.key(1), (64, 64), jnp.float32)
exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
rounded = np.asarray(tf32_emulation.tf32_round(a), np.float64) @ np.asarray(
    tf32_emulation.tf32_round(b), np.float64)
default = np.asarray(jax.jit(jnp.matmul)(a, b), np.float64)
grad = np.asarray(jax.grad(lambda a: jnp.sum(a @ b))(a), np.float64)
with jax.default_matmul_precision("highest"):
    highest = np.asarray(jax.jit(jnp.matmul)(a, b), np.float64)
with jax.default_device(jax.devices("cpu")[0]):
    pinned = np.asarray(jax.jit(lambda a, b: a @ b)(a, b), np.float64)
scale = np.abs(exact).max()
print(np.abs(default - rounded).max() / scale, np.abs(default - exact).max() / scale,
      np.abs(highest - exact).max() / scale, np.abs(pinned - exact).max() / scale,
      np.abs(grad - np.asarray(tf32_emulation.tf32_round(b), np.float64).sum(1)).max())
"""


def test_install_rounds_default_precision_dots_only():
    """In a fresh process (the lowering it registers stays for the process): a default float32
    dot equals the dot of the rounded operands, and is TF32-far from the exact one; full
    precision and a CPU-pinned dot are not rounded; gradients are dots too."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    as_rounded, tf32_error, highest, pinned, grad = map(float, proc.stdout.split())
    assert as_rounded < 1e-6  # float32 sums of the rounded products
    assert 1e-4 < tf32_error < 1e-2  # TF32: about 2^-11 relative per operand
    assert highest < 1e-6 and pinned < 1e-6
    assert grad < 1e-5  # d/da sum(a @ b) = row sums of the rounded b
