"""The code is linted and formatted (ruff is a test dependency), and the manual's Python blocks
name only what exists."""

import ast
import importlib
import pathlib
import re
import shutil
import subprocess

import pytest

import recurrax

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.skipif(RUFF is None, reason="ruff is installed by the [test] extra")
@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    proc = subprocess.run([RUFF, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _python_blocks(page: pathlib.Path):
    """``(line, code)`` of every fenced ``python`` block of a Markdown page."""
    text = page.read_text()
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        yield text[: match.start()].count("\n") + 2, match.group(1)


def _missing_names(code: str) -> list[str]:
    """The ``recurrax`` names ``code`` imports or reads (``recurrax.X``) that do not exist."""
    missing = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "recurrax":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "recurrax":
                    try:
                        importlib.import_module(alias.name)
                    except ImportError:
                        missing.append(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "recurrax"
            and not hasattr(recurrax, node.attr)
        ):
            missing.append(f"recurrax.{node.attr}")
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_manuals_python_blocks_parse_and_name_what_exists(page):
    """Every ``python`` block of the README and docs/ is valid Python, and every recurrax
    module, function or class it imports or reads exists: a renamed API cannot leave the
    manual behind. (The blocks are not run: many are fragments of a larger program.)"""
    problems = []
    for line, code in _python_blocks(page):
        try:
            problems += [f"{page.name}:{line}: {name}" for name in _missing_names(code)]
        except SyntaxError as error:
            problems.append(f"{page.name}:{line}: {error}")
    assert not problems, problems


def test_the_block_check_catches_a_wrong_name():
    assert _missing_names("from recurrax.cells.base import random_uniform_initializer") == [
        "recurrax.cells.base.random_uniform_initializer"
    ]
    assert _missing_names("recurrax.dynamic_rnn\nrecurrax.dinamic_rnn") == ["recurrax.dinamic_rnn"]
    assert _missing_names("from recurrax import TensorShape, static_rnn") == []
