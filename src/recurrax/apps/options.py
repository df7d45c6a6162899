"""What the ``recurrax`` subcommands share: their options, read one way, and their one error.

- :func:`shared_options`: ``--progress auto|rich|plain|none`` (see
  :mod:`recurrax.apps.progress`) and ``--seed``, defined once for every subcommand that takes
  them;
- :class:`Parser`: argparse, raising :class:`UsageError` for a bad argument instead of
  printing its usage and exiting; :func:`recurrax.apps.cli.main` prints any
  :class:`UsageError` as one line ``recurrax <command>: error: <message>`` and returns 2;
- argument types that check a value where it is read (``--lengths``, ``--shape``, seconds,
  positive counts, ``--seed``, lists of names, ``HOST:PORT``), and the checks made before a
  command's work starts (:func:`need_pyplot`, :func:`writable`, :func:`save_directory`);
- :class:`CommandError`, the base of :class:`UsageError`: a failure during the work that is
  not a bug (exit status 1), or an interruption (:class:`Interrupted`, exit status 130).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recurrax.cells.registry import BUILTIN

from .progress import MODES

__all__ = [
    "CommandError",
    "UsageError",
    "Interrupted",
    "SEED_MAX",
    "CELLS",
    "Parser",
    "shared_options",
    "lengths",
    "shape",
    "seconds",
    "address",
    "positive",
    "names",
    "seed_option",
    "writable",
    "save_directory",
    "need_pyplot",
]

SEED_MAX = 2**32 - 1  # seeds are 32-bit: what jax.random.key and numpy both take alike
CELLS = tuple(BUILTIN)  # the --cell names: "rnn", "gru", "lstm"


class CommandError(Exception):
    """A command that cannot go on: :func:`~recurrax.apps.cli.main` prints
    ``<prog>: <label>: <message>`` on one line, without a traceback, and returns ``status``.

    Used as is for a failure of the work that is not a bug (e.g. a training run whose loss
    became NaN): ``status`` 1, ``label`` ``"error"``."""

    status = 1
    label = "error"

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class UsageError(CommandError):
    """A bad argument or another mistake of the user: :func:`main` prints
    ``<prog>: error: <message>`` on one line and returns 2."""

    status = 2


class Interrupted(CommandError):
    """The user pressed Ctrl-C: ``<prog>: interrupted: <message>``, exit status 130."""

    status = 130
    label = "interrupted"


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
            "--seed",
            type=seed_option,
            default=seed,
            help=f"the seed of every random choice ({seed})",
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


def seconds(name: str, *, positive: bool = False):
    """The type of option ``name``: a number of seconds ``>= 0``; with ``positive``, a finite
    number ``> 0`` (a timeout)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if positive and not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(
                f"{name} must be a finite number of seconds > 0; got {text!r}."
            )
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be seconds >= 0; got {text!r}.")
        return value

    return parse


def address(name: str):
    """The type of option ``name``: ``HOST:PORT``, a host name or an address (IPv6 in brackets,
    ``[::1]:8476``) and a port from 1 to 65535."""

    def parse(text: str) -> str:
        host, _, port = text.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if not host or (":" in host and not bracketed) or not port.isdigit():
            port = "0"
        if not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(
                f"{name} must be HOST:PORT, e.g. 10.0.0.1:8476 or [::1]:8476, with a port from "
                f"1 to 65535; got {text!r}."
            )
        return text

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


def seed_option(text: str) -> int:
    """``--seed``: an integer in ``[0, 2**32 - 1]``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"--seed must be an integer from 0 to {SEED_MAX} (2**32 - 1); got {text!r}."
        )
    return value


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


def _can_write(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def writable(path, option: str) -> None:
    """Fail before any work when the file ``path`` (given as ``option``) cannot be written: its
    directory does not exist or is not writable, or ``path`` is a directory."""
    if path is None:
        return
    target = Path(path)
    parent = target.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: its directory does not exist.")
    if target.is_dir():
        raise UsageError(f"{option} {path}: it is a directory; name a file to write.")
    if not _can_write(parent):
        raise UsageError(f"{option} {path}: its directory {parent} is not writable.")


def save_directory(path, option: str = "--save") -> None:
    """Fail before any work when ``path`` cannot be a directory this process writes to: it is
    a file, or is (or would be created in) a directory that is not writable."""
    if path is None:
        return
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{option} {path}: it is a file, not a directory.")
    if directory.is_dir():
        if not _can_write(directory):
            raise UsageError(f"{option} {path}: the directory is not writable.")
        return
    ancestor = directory.resolve().parent  # the directory will be created: where?
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {path}: {ancestor} is a file, not a directory.")
    if not _can_write(ancestor):
        raise UsageError(f"{option} {path}: cannot create it, {ancestor} is not writable.")


def need_pyplot(path) -> None:
    """Fail before any work when ``--plot`` is given and matplotlib is missing."""
    if path is not None:
        from .plots import pyplot

        try:
            pyplot()
        except ImportError as e:
            raise UsageError(str(e)) from None
        writable(path, "--plot")
