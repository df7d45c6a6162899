"""``recurrax train``: its options and its printing; the work is :mod:`recurrax.apps.train`.

Errors follow :mod:`recurrax.apps.cli`'s one path: bad settings, files or a missing extra are a
:class:`~recurrax.apps.options.UsageError` (exit status 2) before any work; a diverged run a
:class:`~recurrax.apps.options.CommandError` (1); Ctrl-C an
:class:`~recurrax.apps.options.Interrupted` (130) after saving.
"""

from __future__ import annotations

import argparse

from recurrax.io.checkpoint import DEFAULT_KEEP

from .options import (
    CELLS,
    CommandError,
    Interrupted,
    UsageError,
    address,
    need_pyplot,
    positive,
    save_directory,
    seconds,
    shared_options,
)

__all__ = ["add_train", "run_train_cli"]


def add_train(sub) -> None:
    """The ``train`` subparser, on ``sub`` (``argparse``'s subparsers)."""
    train = sub.add_parser(
        "train",
        parents=[shared_options(seed=0)],
        help="train a sequence model on bundled data (digits, sine)",
    )
    add = train.add_argument
    add("--task", choices=["digits", "sine"], default="digits", help="data set (bundled)")
    add("--cell", choices=CELLS, default="lstm", help="recurrent cell (default lstm)")
    add(
        "--mode", choices=["static", "dynamic"], default="dynamic", help="static_rnn or dynamic_rnn"
    )
    add("--num-units", type=int, default=64, help="units per layer (default 64)")
    add("--num-layers", type=int, default=1, help="stacked layers, MultiRNNCell above 1")
    add("--batch-size", type=int, default=32, help="global batch, split over devices")
    add("--epochs", type=int, default=None, help="default: digits 40, sine 20")
    add("--learning-rate", type=float, default=0.01, help="Adam, cosine-decayed (default 0.01)")
    add("--keep-prob", type=float, default=1.0, help="dropout keep probability (default 1.0)")
    add("--save", metavar="DIR", default=None, help="write checkpoints to DIR (every epoch)")
    add("--resume", action="store_true", help="continue from the checkpoint in --save DIR")
    add(
        "--keep",
        type=positive("--keep"),
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"keep the last N checkpoints in --save DIR (default {DEFAULT_KEEP})",
    )
    add(
        "--stop-after",
        type=positive("--stop-after"),
        default=None,
        metavar="N",
        help="stop after N steps (and save)",
    )
    add("--plot", metavar="FILE.png", default=None, help="draw loss and metric curves to FILE")
    add(
        "--num-processes",
        type=positive("--num-processes"),
        default=1,
        metavar="N",
        help="train in N processes, data parallel through jax.distributed; without "
        "--process-id, start all N on this machine (CPU, one device each) (default 1)",
    )
    add(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="with --coordinator: run only process I (0 to N-1) of the N, on this machine "
        "(one command per machine)",
    )
    add(
        "--coordinator",
        type=address("--coordinator"),
        default=None,
        metavar="HOST:PORT",
        help="where process 0 listens and the others join (HOST: process 0's machine)",
    )
    add(
        "--coordinator-timeout",
        type=seconds("--coordinator-timeout", positive=True),
        default=60.0,
        metavar="SECONDS",
        help="give up when the N processes have not all joined within this time (default 60)",
    )
    train.set_defaults(run=run_train_cli)


def _train_config(args: argparse.Namespace):
    """The :class:`~.train.TrainConfig` of the command's options (``ValueError`` if bad)."""
    from .train import TrainConfig

    return TrainConfig(
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


def run_train_cli(args: argparse.Namespace, echo=print) -> int:
    """``recurrax train``: settings, files and checkpoint checked first (:func:`~.train.prepare`).

    A diverged run (:class:`~.train.NonFiniteLoss`) ends with exit status 1; Ctrl-C
    (:class:`~.train.TrainingInterrupted`) with 130, after saving to ``--save``.

    Several processes (:mod:`~recurrax.apps.launch`): ``--num-processes N`` alone starts N
    children of this command on this machine and returns their status; with ``--process-id``
    and ``--coordinator`` this process joins the run first, and only process 0 prints.
    """
    from .launch import join, plan, run_local

    form = plan(args.num_processes, args.process_id, args.coordinator, args.batch_size)
    lead = args.process_id in (None, 0)  # the process that prints and plots
    progress = args.progress if lead else "none"
    if not lead:
        echo = _quiet
    save_directory(args.save)
    need_pyplot(args.plot if lead else None)
    try:
        config = _train_config(args)
    except (ValueError, ImportError) as e:  # the settings, the train extra
        raise UsageError(str(e)) from None
    if form == "launch":
        return run_local(args.argv, args.num_processes)
    if form == "join":  # imports JAX, but nothing has touched a device yet
        join(args.coordinator, args.num_processes, args.process_id, args.coordinator_timeout)

    import jax

    from .plots import plot_history
    from .train import NonFiniteLoss, TrainingInterrupted, fit, prepare

    try:
        run = prepare(config, save_dir=args.save, resume=args.resume, keep=args.keep)
    except (ValueError, FileNotFoundError, ImportError) as e:  # the settings, files, extras
        raise UsageError(str(e)) from None
    devices = jax.devices()
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    echo(
        f"task {config.task}: {config.cell} x{config.num_layers} ({config.num_units} units), "
        f"{config.mode}_rnn, {config.epochs} epochs, global batch {config.batch_size} over "
        f"{len(devices)} {devices[0].platform} device(s){processes}"
    )
    try:
        result = fit(run, stop_after=args.stop_after, progress=progress, echo=echo)
    except NonFiniteLoss as e:
        message = str(e).replace("a smaller learning rate", "a smaller --learning-rate")
        raise CommandError(message) from None
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1 or not _lost_peer(str(e)):
            raise
        raise CommandError(
            f"process {jax.process_index()} of {jax.process_count()} lost the others "
            f"({str(e).splitlines()[0]}): another process of the run failed or was stopped; "
            "see its output."
        ) from None
    except TrainingInterrupted as e:
        where = f"after step {e.step} of {e.total_steps}"
        raise Interrupted(
            f"{where}; checkpoint saved to {e.path}: continue with --save {args.save} --resume"
            if e.path is not None
            else f"{where}; nothing saved (no --save)."
        ) from None
    echo(
        f"trained to step {result.step} of {result.total_steps} in {result.seconds:.1f} s "
        "of wall time"
    )
    if args.plot and lead:
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


def _lost_peer(message: str) -> bool:
    """Whether a JAX runtime error says that another process of the run has gone."""
    return any(sign in message for sign in ("Connection closed by peer", "Gloo", "heartbeat"))


def _quiet(*args, **kwargs) -> None:
    """The ``echo`` of processes other than 0 in a multi-process run: they print nothing."""
