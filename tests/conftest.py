import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

# Several processes share one machine: the test processes under `pytest -n N`, and the
# subprocesses some tests start. On a GPU, let each allocate memory as it needs it instead of
# reserving most of the device up front (subprocesses inherit the setting).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# The suite's time is mostly XLA compiling some thousands of small programs on the CPU. Two
# settings cut it, measured on 2 cores: 12:57 -> 10:17 -> 9:25 (benchmarks/RESULTS.md, "The
# test suite's time"). Neither changes what a test asserts: both code generators give the same
# numbers within every tolerance here, and a cached executable is the one XLA compiled.
# - XLA:CPU's older elemental emitters instead of its MLIR fusion emitters, which take 2-3x as
#   long to compile these programs (a few large ones compile slower: the PTB port's 6 -> 11 s).
#   Probed first in a subprocess: a jaxlib that lacks the flag would abort on it.
# - One persistent compilation cache per run, shared by the test processes and the
#   subprocesses they start (several compile the same programs), removed at the end.
# The controller decides once; xdist's workers and every subprocess inherit the environment.
# RECURRAX_TEST_XLA_DEFAULTS=1 runs with XLA's defaults and no cache.
_FAST_CODEGEN = "--xla_cpu_use_fusion_emitters=false"
_DECIDED = "RECURRAX_TEST_COMPILER"  # set once decided: "fast" or "default"


def _flag_is_known(flag: str) -> bool:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flag)
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _choose_compiler_settings() -> None:
    if _DECIDED in os.environ:
        return
    if os.environ.get("RECURRAX_TEST_XLA_DEFAULTS") == "1":
        os.environ[_DECIDED] = "default"
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" not in flags and _flag_is_known(_FAST_CODEGEN):
        os.environ["XLA_FLAGS"] = f"{flags} {_FAST_CODEGEN}".strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="recurrax-tests-jit-")
        os.environ["RECURRAX_TEST_CACHE_OWNED"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ[_DECIDED] = "fast"


_choose_compiler_settings()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)

if os.environ.get("RECURRAX_TEST_EMULATE_TF32") == "1":  # a GPU's float32 dots, on the CPU
    import tf32_emulation

    tf32_emulation.install()


@pytest.fixture
def full_float32_dots():
    """Dots at full float32 precision, as on a CPU: for the modules whose float32 results are
    checked to 1e-5 or closer (TF1's numbers, float64 references). On a GPU, JAX's default
    float32 dot is TF32, about 1e-3 relative. Such a module says
    ``pytestmark = pytest.mark.usefixtures("full_float32_dots")``."""
    with jax.default_matmul_precision("highest"):
        yield


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


def pytest_unconfigure(config):
    """The run's compilation cache goes with the run (removed by the process that made it)."""
    owned = os.environ.get("RECURRAX_TEST_CACHE_OWNED")
    if owned and not hasattr(config, "workerinput"):
        shutil.rmtree(owned, ignore_errors=True)
