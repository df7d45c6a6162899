"""Every program in examples/ runs to completion (each asserts its own numbers)."""

import pathlib
import runpy

import jax
import pytest

# ptb_port.py trains for 60 steps: test_tf1_port.py runs it once and checks its numbers.
SEPARATE = {"ptb_port.py"}
EXAMPLES = sorted(
    p
    for p in (pathlib.Path(__file__).resolve().parents[1] / "examples").glob("*.py")
    if p.name not in SEPARATE
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, capsys):
    # The examples check float32 programs against reference loops to 1e-6: full float32 dots
    # also on a GPU (whose default, TF32, is about 1e-3 relative).
    with jax.default_matmul_precision("highest"):
        runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
