"""The ``recurrax`` command: ``demo``, ``train`` and ``bench``.

    recurrax demo  [--lengths 2,10,50] [--cell rnn|gru|lstm] [--plot FILE.png]
    recurrax train [--task digits|sine] [--cell rnn|gru|lstm] [--save DIR [--resume]]
                   [--num-processes N [--process-id I --coordinator HOST:PORT]]
    recurrax bench [--quick | --shape B,T,I,H] [--cells rnn,gru,lstm] [--json FILE]

Each subcommand's options and its printing are here (``train``'s, the longest, in
:mod:`~recurrax.apps.cli_train`); the work is in :mod:`~recurrax.apps.demo`,
:mod:`~recurrax.apps.train` and :mod:`~recurrax.apps.bench`. The options several subcommands
take are defined once (:func:`~recurrax.apps.options.shared_options`): ``--progress
auto|rich|plain|none`` and ``--seed``. Cells are named as in
:data:`recurrax.cells.registry.BUILTIN`: ``rnn``, ``gru``, ``lstm``.

One error path: a bad argument, a file it names that is missing or does not fit, a file or
directory it is to write that cannot be written, or a missing optional extra ends the command
with one line ``recurrax <command>: error: <message>`` on stderr and exit status 2, without a
traceback. argparse reports what it checks that way; each subcommand checks the rest before its
work starts and raises :class:`~recurrax.apps.options.UsageError`. A failure of the work that
is not a bug (a training run whose loss became NaN) is one line and exit status 1
(:class:`~recurrax.apps.options.CommandError`); Ctrl-C is one line
``recurrax <command>: interrupted: ...`` and exit status 130 (``recurrax train`` saves its
checkpoint first). Any other exception raised during the work is a bug, and keeps its
traceback. ``recurrax train --num-processes N`` keeps to this in every process
(:mod:`~recurrax.apps.launch`): a process that lost the others, or the launcher whose child
failed, ends with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback

from .cli_train import add_train, run_train_cli
from .launch import joined
from .options import (
    CELLS,
    CommandError,
    Interrupted,
    Parser,
    UsageError,
    lengths,
    names,
    need_pyplot,
    positive,
    seconds,
    shape,
    shared_options,
    writable,
)

__all__ = [
    "build_parser",
    "run_demo_cli",
    "run_train_cli",
    "run_bench_cli",
    "main",
]


# ------------------------------------------------------------------------------------ demo --


def _add_demo(sub) -> None:
    from .demo import DEMO_LENGTHS

    demo = sub.add_parser(
        "demo",
        parents=[shared_options(seed=42)],
        help="run the article's example through static_rnn and dynamic_rnn, then compare "
        "their program size, compile time, run time and memory as T grows",
    )
    add = demo.add_argument
    add(
        "--lengths",
        type=lengths,
        default=DEMO_LENGTHS,
        metavar="T,T,...",
        help="time steps of the trade-off table (default %(default)s)",
    )
    add(
        "--budget",
        type=seconds("--budget"),
        default=60.0,
        metavar="SECONDS",
        help="stop the table before a length that would overrun this many seconds (60)",
    )
    add("--cell", choices=CELLS, default="rnn", help="the cell of the table (default rnn)")
    add("--plot", metavar="FILE.png", default=None, help="draw the table (needs matplotlib)")
    add("--no-table", dest="table", action="store_false", help="only the article's example")
    demo.set_defaults(run=run_demo_cli)


def run_demo_cli(args: argparse.Namespace) -> int:
    """``recurrax demo``: 0 when the runners agreed on the article's example, else 1."""
    from .demo import run_demo

    need_pyplot(args.plot)
    equal = run_demo(
        args.seed,
        lengths=args.lengths,
        budget_s=args.budget,
        cell=args.cell,
        table=args.table,
        plot=args.plot,
        progress=args.progress,
    )
    return 0 if equal else 1


# ----------------------------------------------------------------------------------- bench --


def _add_bench(sub) -> None:
    from .bench import IMPLS, QUICK_GRID

    bench = sub.add_parser(
        "bench",
        parents=[shared_options()],
        help="time RNN, GRU and LSTM layers forward and forward+backward against PyTorch and "
        "Flax (needs the [bench] extras)",
    )
    add = bench.add_argument
    sizes = bench.add_mutually_exclusive_group()
    sizes.add_argument(
        "--quick", action="store_true", help=f"small sizes {QUICK_GRID}, 3 rounds: under 2 minutes"
    )
    sizes.add_argument(
        "--shape",
        action="append",
        type=shape,
        metavar="B,T,I,H",
        help="time this (batch, steps, inputs, units) instead of the grid; repeatable",
    )
    add(
        "--cells",
        type=names("--cells", CELLS),
        default=CELLS,
        help="comma-separated: rnn,gru,lstm",
    )
    add(
        "--repeats",
        type=positive("--repeats"),
        default=None,
        help="timed rounds (default 5; 3 quick)",
    )
    add(
        "--static-cap",
        type=seconds("--static-cap"),
        default=60.0,
        help="seconds a static_rnn compilation may take before it is skipped",
    )
    add(
        "--skip",
        type=names("--skip", IMPLS),
        default=(),
        help=f"comma-separated peers to leave out of {IMPLS}",
    )
    add("--plot", metavar="FILE.png", help="draw the ratios to this file")
    add("--json", metavar="FILE", help="write the results to this file (one record per case)")
    bench.set_defaults(run=run_bench_cli)


def _check_peers(impls) -> None:
    """Fail before any work when a peer to be timed is not installed."""
    for module, peers in (("torch", ("torch", "torch_1t", "torch_cells")), ("flax", ("flax",))):
        if any(i in impls for i in peers):
            try:
                __import__(module)
            except ImportError as e:
                raise UsageError(
                    f"the {module} peer is not installed ({e}). Install the benchmark extras "
                    'with `pip install -e ".[bench]"` (torch==2.13.0, flax, matplotlib, rich), '
                    "or leave that peer out with --skip."
                ) from None


def run_bench_cli(args: argparse.Namespace, run=None) -> int:
    """``recurrax bench``: the Markdown report on stdout, ``--json`` and ``--plot`` files.

    ``run``: the measurement, :func:`recurrax.apps.bench.run_bench` by default (which needs the
    peers installed); a test passes a stand-in with the same arguments.
    """
    from .bench import GRID, IMPLS, QUICK_GRID, run_bench
    from .bench_report import environment, markdown, summarize, write_results
    from .plots import plot_ratios

    impls = tuple(i for i in IMPLS if i not in args.skip)
    if "recurrax" not in impls or "torch" not in impls:
        raise UsageError("recurrax and torch cannot be skipped (ratios need both).")
    need_pyplot(args.plot)
    writable(args.json, "--json")
    if run is None:
        _check_peers(impls)
        run = run_bench
    grid = tuple(args.shape) if args.shape else QUICK_GRID if args.quick else GRID
    repeats = args.repeats or (3 if args.quick else 5)
    meta = environment(getattr(args, "command_line", None))
    meta["torch_threads"] = os.cpu_count()
    results = run(grid, tuple(args.cells), impls, repeats, args.static_cap, args.progress)
    meta["load_end"] = os.getloadavg()[0]
    rows = summarize(results)
    print(markdown(rows, meta))
    if args.json:
        write_results(args.json, rows, meta)
        print(f"(results written to {args.json})", file=sys.stderr)
    if args.plot:
        plot_ratios(rows, args.plot)
        print(f"(ratios plotted to {args.plot})", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------- the command --


def build_parser() -> argparse.ArgumentParser:
    """The ``recurrax`` parser, with its subcommands."""
    parser = Parser(prog="recurrax", description="TF1-style recurrent networks for JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,bench}")
    _add_demo(sub)
    add_train(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``recurrax`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    A process of a multi-process run (:mod:`~recurrax.apps.launch`) that fails does not
    return: it ends at once with its status (after its error line, or its traceback for a
    bug), as the other processes may never reach the farewell ``jax.distributed`` waits for
    at exit.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(e.prog or "recurrax", e)
    args.command_line = shlex.join(["recurrax", *argv])
    args.argv = argv
    try:
        status = int(args.run(args))
    except CommandError as e:
        status = _fail(e.prog or f"recurrax {args.command}", e)
    except KeyboardInterrupt:
        status = _fail(f"recurrax {args.command}", Interrupted("stopped by Ctrl-C."))
    except Exception:
        if not joined():
            raise
        traceback.print_exc()
        status = 1
    if status and joined():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _fail(prog: str, error: CommandError) -> int:
    message = " ".join(str(error).split())  # one line, whatever the message held
    print(f"{prog}: {error.label}: {message}", file=sys.stderr)
    return error.status


if __name__ == "__main__":
    sys.exit(main())
