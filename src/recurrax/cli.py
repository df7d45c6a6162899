"""The ``recurrax`` command: ``recurrax demo`` (and more subcommands as they are added)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _cmd_demo(args) -> int:
    from ._demo import run_demo_cli

    return run_demo_cli(args)


def _cmd_train(args) -> int:
    from ._train_cli import run_train

    return run_train(args)


def _cmd_bench(args) -> int:
    from ._bench_report import run_bench_cli

    return run_bench_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recurrax", description="TF1-style recurrent networks for JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from ._demo import add_demo_arguments

    demo = sub.add_parser(
        "demo",
        help="run the article's example through static_rnn and dynamic_rnn, then compare "
        "their program size, compile time, run time and memory as T grows",
    )
    add_demo_arguments(demo)
    demo.set_defaults(func=_cmd_demo)

    from ._train_cli import add_train_arguments

    train = sub.add_parser("train", help="train a sequence model on bundled data (digits, sine)")
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)

    from ._bench_report import add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="time RNN, GRU and LSTM layers forward and forward+backward against PyTorch and "
        "Flax (needs the [bench] extras)",
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
