"""A griffe extension that lets mkdocstrings render recurrax's docstrings as Markdown.

The docstrings are Markdown with three habits of reStructuredText, rewritten here:

- ``:func:`~recurrax.dynamic_rnn``` (and ``:class:``, ``:meth:``, ...) becomes a link to the
  object's entry in the API reference, or plain code where it has none;
- a paragraph ending in ``::`` ends in ``:`` (the indented block after it is already code);
- ``>>>`` examples become fenced ``pycon`` blocks instead of nested block quotes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)`")
PROMPT = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    title = target.rsplit(".", 1)[-1] if tilde else target
    identifier = target if target.startswith("recurrax") else f"recurrax.{target}"
    # "optional": a name the reference does not document stays plain code, without a warning.
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _examples(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        prompt = PROMPT.match(lines[i])
        if not prompt:
            out.append(lines[i])
            i += 1
            continue
        indent = prompt.group(1)
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():  # the prompts and their output
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return out


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reStructuredText habits turned into Markdown."""
    text = ROLE.sub(_role, text)
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)
    return "\n".join(_examples(text.split("\n")))


class ReSTHabits(griffe.Extension):
    """Rewrite every docstring of the loaded package with :func:`to_markdown`."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
