"""``recurrax train``: its arguments and what it prints (the work is in :mod:`recurrax._train`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_train_arguments", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` subcommand's options to ``parser``."""
    add = parser.add_argument
    add("--task", choices=["digits", "sine"], default="digits", help="data set (bundled)")
    add("--cell", choices=["basic_rnn", "gru", "lstm"], default="lstm", help="recurrent cell")
    add(
        "--mode", choices=["static", "dynamic"], default="dynamic", help="static_rnn or dynamic_rnn"
    )
    add("--num-units", type=int, default=64, help="units per layer (default 64)")
    add("--num-layers", type=int, default=1, help="stacked layers, MultiRNNCell above 1")
    add("--batch-size", type=int, default=32, help="global batch, split over devices")
    add("--epochs", type=int, default=None, help="default: digits 40, sine 20")
    add("--learning-rate", type=float, default=0.01, help="Adam, cosine-decayed (default 0.01)")
    add("--keep-prob", type=float, default=1.0, help="dropout keep probability (default 1.0)")
    add("--seed", type=int, default=0, help="the seed of every random choice")
    add("--save", metavar="DIR", default=None, help="write checkpoints to DIR (every epoch)")
    add("--resume", action="store_true", help="continue from the checkpoint in --save DIR")
    add("--stop-after", type=int, default=None, metavar="N", help="stop after N steps (and save)")
    add("--plot", metavar="FILE.png", default=None, help="draw loss and metric curves to FILE")
    add(
        "--progress",
        choices=["auto", "rich", "plain", "none"],
        default="auto",
        help="live bar (rich), a line per epoch (plain); auto: rich on a terminal",
    )
    add(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host; reads the usual env vars)",
    )


def run_train(args: argparse.Namespace, echo=print) -> int:
    """Run ``recurrax train`` for parsed ``args``; return the exit status."""
    import jax

    if args.distributed:
        jax.distributed.initialize()

    from ._progress import plot_history
    from ._train import TrainConfig, train

    progress = args.progress
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "plain"
    try:
        config = TrainConfig(
            task=args.task,
            cell=args.cell,
            mode=args.mode,
            num_units=args.num_units,
            num_layers=args.num_layers,
            batch_size=args.batch_size,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            keep_prob=args.keep_prob,
            seed=args.seed,
        )
        devices = jax.devices()
        echo(
            f"task {config.task}: {config.cell} x{config.num_layers} ({config.num_units} units), "
            f"{config.mode}_rnn, {config.epochs} epochs, global batch {config.batch_size} over "
            f"{len(devices)} {devices[0].platform} device(s)"
        )
        result = train(
            config,
            save_dir=args.save,
            resume=args.resume,
            stop_after=args.stop_after,
            progress=progress,
            echo=echo,
        )
    except (ValueError, FileNotFoundError, ImportError) as e:
        echo(f"recurrax train: error: {e}")
        return 2
    echo(
        f"trained to step {result.step} of {result.total_steps} in {result.seconds:.1f} s "
        f"of wall time"
    )
    if args.plot:
        plot_history(result.history, args.plot, result.metric_name, result.baseline)
        echo(f"plot written to {args.plot}")
    if result.test_metric is None:
        echo(
            f"stopped early at step {result.step} of {result.total_steps}"
            + (f": continue with --save {args.save} --resume" if args.save else "")
        )
    elif result.baseline is not None:
        echo(f"test mse: {result.test_metric:.5f} (last-value baseline: {result.baseline:.5f})")
    else:
        echo(f"test accuracy: {result.test_metric:.4f}")
    return 0
