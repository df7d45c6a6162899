"""Every program in examples/ runs to completion (each asserts its own numbers)."""

import pathlib
import runpy

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
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
