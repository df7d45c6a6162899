import os

# Several processes share one machine: the test processes under `pytest -n N`, and the
# subprocesses some tests start. On a GPU, let each allocate memory as it needs it instead of
# reserving most of the device up front (subprocesses inherit the setting).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A fresh PRNG key on every call, deterministic per test."""
    state = {"n": 0}

    def _getkey():
        state["n"] += 1
        return jax.random.key(state["n"])

    return _getkey


def tree_allclose(a, b, rtol=1e-6, atol=1e-6) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    return all(
        np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)
        for x, y in zip(la, lb)
    )


@pytest.fixture
def allclose():
    return tree_allclose


def f32(x):
    return jnp.asarray(x, jnp.float32)
