"""What the ``recurrax`` subcommands share: their options, read one way, and their one error.

- :func:`shared_options`: ``--progress auto|rich|plain|none`` (see
  :mod:`recurrax.apps.progress`) and ``--seed``, defined once for every subcommand that takes
  them;
- :class:`Parser`: argparse, raising :class:`UsageError` for a bad argument instead of
  printing its usage and exiting; :func:`recurrax.apps.cli.main` prints any
  :class:`UsageError` as one line ``recurrax <command>: error: <message>`` and returns 2;
- argument types that check a value where it is read (``--lengths``, ``--shape``, seconds,
  positive counts, lists of names), and the checks made before a command's work starts
  (:func:`need_pyplot`, :func:`writable`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress import MODES

__all__ = [
    "UsageError",
    "Parser",
    "shared_options",
    "lengths",
    "shape",
    "seconds",
    "positive",
    "names",
    "writable",
    "need_pyplot",
]


class UsageError(Exception):
    """A bad argument or another mistake of the user: :func:`main` prints
    ``<prog>: error: <message>`` on one line and returns 2."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as :class:`UsageError` (one line, no usage dump)."""

    def error(self, message):
        raise UsageError(message, self.prog)


def shared_options(*, seed: int | None = None) -> argparse.ArgumentParser:
    """The options every subcommand that takes them reads the same way, as an argparse parent:
    ``--progress`` and, when ``seed`` is given (its default), ``--seed``."""
    shared = Parser(add_help=False)
    shared.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="progress: a live bar on stderr (rich), plain lines, or none; auto: the bar on a "
        "terminal, else plain (default auto)",
    )
    if seed is not None:
        shared.add_argument(
            "--seed", type=int, default=seed, help=f"the seed of every random choice ({seed})"
        )
    return shared


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        return ()


def lengths(text: str) -> tuple[int, ...]:
    """``--lengths``: increasing positive integers, ``"2,10,50"``."""
    values = _ints(text)
    if not values or min(values) < 1 or sorted(set(values)) != list(values):
        raise argparse.ArgumentTypeError(
            f"--lengths must be increasing positive integers separated by commas, e.g. "
            f"2,10,50; got {text!r}."
        )
    return values


def shape(text: str) -> tuple[int, int, int, int]:
    """``--shape``: four positive integers ``"B,T,I,H"``."""
    shape = _ints(text)
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--shape must be four positive integers B,T,I,H; got {text!r}."
        )
    return shape


def seconds(name: str):
    """The type of option ``name``: a number of seconds ``>= 0``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be seconds >= 0; got {text!r}.")
        return value

    return parse


def positive(name: str):
    """The type of option ``name``: an integer ``>= 1``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {text!r}.")
        return value

    return parse


def names(name: str, allowed: tuple[str, ...]):
    """The type of option ``name``: comma-separated names of ``allowed``, as a tuple."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n for n in text.split(",") if n)
        if set(names) - set(allowed) or (not names and name == "--cells"):
            raise argparse.ArgumentTypeError(
                f"{name} must name some of {allowed}, separated by commas; got {text!r}."
            )
        return names

    return parse


def writable(path, option: str) -> None:
    """Fail before any work when ``path`` (given as ``option``) cannot be written: its
    directory does not exist."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{option} {path}: its directory does not exist.")


def need_pyplot(path) -> None:
    """Fail before any work when ``--plot`` is given and matplotlib is missing."""
    if path is not None:
        from .plots import pyplot

        try:
            pyplot()
        except ImportError as e:
            raise UsageError(str(e)) from None
        writable(path, "--plot")
