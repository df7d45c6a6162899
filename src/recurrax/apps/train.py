"""Train a sequence model end to end: the work of ``recurrax train``.

The model (:mod:`recurrax.apps.model`) is a recurrent encoder, one of the TF1 cells run by
:func:`~recurrax.static_rnn` or :func:`~recurrax.dynamic_rnn`, and a dense readout: on its last
output for ``digits`` (classify an 8x8 image read row by row), on every output for ``sine``
(forecast the next value). :func:`train` is :func:`prepare` (every check of the settings and of
the checkpoint to resume from) then :func:`fit` (the steps).

The training step is data parallel: each global batch is split over all devices along a
``"data"`` mesh axis (``jax.sharding``), the parameters and optimizer state are replicated, and
the loss is a mean over the whole global batch, so any number of devices computes the same
update as one (up to the order of float additions). Under ``jax.distributed`` (``recurrax train
--num-processes``, :mod:`recurrax.apps.launch`) the mesh spans the devices of every process and
each process feeds its own slice of the global batch; every process saves and loads the
checkpoints (collectively).

Everything random is a function of the seed: the initial weights of ``key(seed)``, the dropout
masks of step ``s`` of ``fold_in(key, s)``, the batch of step ``s`` of ``(seed, s)``. So a run
stopped and resumed from a checkpoint ends with the same bits as one that never stopped.

Two ways a run ends early, both after :func:`fit` has left the progress display: a loss that is
not finite (the losses are fetched once an epoch, and at the end, so this costs no extra
synchronisation) raises :class:`NonFiniteLoss` naming the step, without saving; a
``KeyboardInterrupt`` (Ctrl-C) saves the last completed step (with ``save_dir``) and raises
:class:`TrainingInterrupted`, from which the run resumes to the same bits.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

from recurrax import save_checkpoint
from recurrax.io.checkpoint import DEFAULT_KEEP

from .data import batch_indices, last_value_mse
from .model import RecurrentModel, loss_and_metric, make_cell
from .prepare import Prepared, TrainConfig, prepare
from .progress import make_reporter

__all__ = [
    "TrainConfig",
    "TrainResult",
    "RecurrentModel",
    "Prepared",
    "NonFiniteLoss",
    "TrainingInterrupted",
    "make_cell",
    "prepare",
    "fit",
    "train",
]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run diverged. ``step`` (1-based) is the
    first step whose loss was not finite; no checkpoint of that state was written."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class TrainingInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` during :func:`fit`, after the last completed step was saved.

    ``step`` and ``total_steps``: where the run stopped; ``path``: the checkpoint written (or
    ``None`` without ``save_dir``). A ``KeyboardInterrupt``, so callers that stop on Ctrl-C
    still do."""

    def __init__(self, step: int, total_steps: int, path):
        super().__init__(f"interrupted after step {step} of {total_steps}")
        self.step, self.total_steps, self.path = step, total_steps, path


@eqx.filter_jit
def _train_step(model, opt_state, batch, run_key, step, optimizer, replicated):
    # optimizer and replicated are static: runs with equal settings share one compiled step.
    key = jax.random.fold_in(run_key, step)  # this step's dropout masks: a function of (seed, s)
    (loss, metric), grads = eqx.filter_value_and_grad(loss_and_metric, has_aux=True)(
        model, batch, key
    )
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    model = eqx.apply_updates(model, updates)
    model, opt_state = eqx.filter_shard((model, opt_state), replicated)
    return model, opt_state, loss, metric


@eqx.filter_jit
def _evaluate(model, x, y, lengths):
    return loss_and_metric(model, (x, y, lengths), None)[1]


def _put(x, sharding):
    """Place this host's part of a global array on the mesh (all of it for one host)."""
    if x is None:
        return None
    spec = sharding.spec
    n = jax.process_count()
    shape = (x.shape[0] * n, *x.shape[1:]) if spec and spec[0] == "data" else x.shape
    return jax.make_array_from_process_local_data(sharding, x, shape)


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    - ``model`` (trained) and ``opt_state``;
    - ``history``: ``loss`` and ``metric`` of every step, ``test_metric`` of every epoch;
    - ``metric_name``: ``"accuracy"`` or ``"mse"``;
    - ``test_metric``: of the final model, or ``None`` when the run stopped before its end;
    - ``baseline``: the last-value MSE for sine, else ``None``;
    - ``step`` (steps taken in all), ``total_steps``, ``seconds`` (wall time of this call).
    """

    model: Any
    opt_state: Any
    history: dict
    metric_name: str
    test_metric: float | None
    baseline: float | None
    step: int
    total_steps: int
    seconds: float


class _State(NamedTuple):
    """Where a run is: replaced as a whole after each step, so that a ``KeyboardInterrupt``
    arriving anywhere finds a consistent one (``pending``: the device arrays of the losses and
    metrics not yet in ``history``)."""

    model: Any
    opt_state: Any
    step: int
    history: dict
    pending: tuple


def fit(
    run: Prepared, *, stop_after: int | None = None, progress: str = "none", echo=print
) -> TrainResult:
    """Train a :class:`Prepared` run to its end, or for ``stop_after`` steps; see :func:`train`."""
    start = time.perf_counter()
    if stop_after is not None and (not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be a positive int or None; got {stop_after!r}.")
    config, data, replicated = run.config, run.data, run.replicated
    n_train, per_epoch = len(data.x_train), len(data.x_train) // config.batch_size
    total_steps = run.total_steps
    per_step = config.task == "sine"
    settings = dataclasses.asdict(config)

    def save(state: _State):
        if run.save_dir is None:
            return None
        return save_checkpoint(
            run.save_dir,
            model=state.model,
            opt_state=state.opt_state,
            step=state.step,
            key=run.run_key,
            data_state=run.data_state,
            config=settings,
            history=state.history,
            keep=run.keep,
        )

    def record(state: _State) -> _State:
        """``state`` with its pending losses fetched into its history, checked to be finite."""
        if not state.pending:
            return state
        values = np.asarray(jax.device_get(list(state.pending)), np.float64)  # (steps, 2)
        bad = ~np.isfinite(values[:, 0])
        if bad.any():
            first = int(np.argmax(bad))
            at = state.step - len(values) + first + 1
            raise NonFiniteLoss(
                f"the training loss became {values[first, 0]} at step {at} of {total_steps} "
                f"(learning rate {config.learning_rate}): the run diverged, and no checkpoint "
                "of it was written. Try a smaller learning rate.",
                at,
            )
        history = {
            **state.history,
            "loss": [*state.history["loss"], *values[:, 0].tolist()],
            "metric": [*state.history["metric"], *values[:, 1].tolist()],
        }
        return state._replace(history=history, pending=())

    def settle(state: _State) -> _State:
        """Fetch the pending losses; at an epoch's end, measure the test metric too."""
        done = record(state)
        if state.step % per_epoch == 0:
            tests = [*done.history["test_metric"], float(_evaluate(done.model, *test))]
            done = done._replace(history={**done.history, "test_metric": tests})
        return done

    test = tuple(_put(a, replicated) for a in (data.x_test, data.y_test, data.len_test))
    metric_name = "mse" if per_step else "accuracy"
    state = _State(run.model, run.opt_state, run.step, run.history, ())
    end = total_steps if stop_after is None else min(total_steps, state.step + stop_after)
    host, hosts = jax.process_index(), jax.process_count()
    local = config.batch_size // hosts
    reporter = make_reporter(progress, total_steps, state.step, metric_name, echo)
    try:
        with reporter:
            while state.step < end:
                step = state.step
                idx = batch_indices(step, n_train, config.batch_size, config.seed)
                idx = idx[host * local : (host + 1) * local]  # this host's slice of the batch
                batch = tuple(
                    _put(None if a is None else a[idx], run.batch_sharding)
                    for a in (data.x_train, data.y_train, data.len_train)
                )
                model, opt_state, loss, metric = _train_step(
                    state.model,
                    state.opt_state,
                    batch,
                    run.run_key,
                    np.int32(step),
                    run.optimizer,
                    replicated,
                )
                state = _State(
                    model, opt_state, step + 1, state.history, (*state.pending, (loss, metric))
                )
                reporter.advance(state.step, (loss, metric))
                if state.step % per_epoch == 0 or state.step == end:
                    state = settle(state)  # one assignment: an interrupt sees before or after
                    if state.step % per_epoch == 0:
                        reporter.epoch(state.step // per_epoch, config.epochs, state.history)
                    save(state)
    except KeyboardInterrupt:
        if state.pending:  # the steps since the last settle(), this step's included
            state = settle(state)
        raise TrainingInterrupted(state.step, total_steps, save(state)) from None
    history = state.history
    # A finished run ends on an epoch boundary, whose test metric was just measured.
    test_metric = history["test_metric"][-1] if state.step == total_steps else None
    baseline = last_value_mse(data.x_test, data.y_test, data.len_test) if per_step else None
    return TrainResult(
        state.model,
        state.opt_state,
        history,
        metric_name,
        test_metric,
        baseline,
        state.step,
        total_steps,
        time.perf_counter() - start,
    )


def train(
    config: TrainConfig = TrainConfig(),
    *,
    save_dir=None,
    resume: bool = False,
    keep: int | None = DEFAULT_KEEP,
    stop_after: int | None = None,
    progress: str = "none",
    echo=print,
    devices=None,
) -> TrainResult:
    """Train ``config``'s model on its task with Adam, data parallel over ``devices``.

    **Arguments:**

    - ``config``: a :class:`TrainConfig`.
    - ``save_dir``: if given, a checkpoint is written there atomically after every epoch and at
      the end (see :func:`~recurrax.save_checkpoint`).
    - ``resume``: continue from the checkpoint in ``save_dir``; its settings must equal
      ``config``. A missing, corrupted or mismatched checkpoint raises before anything is
      written. Without it, a ``save_dir`` that holds checkpoints is refused.
    - ``keep``: how many of the latest checkpoints ``save_dir`` keeps (default 3; ``None``:
      all).
    - ``stop_after``: stop after this many steps in this call (as if interrupted), saving first.
    - ``progress``: ``"auto"``, ``"rich"`` (a live bar), ``"plain"`` (a line per epoch) or
      ``"none"``; see :mod:`recurrax.apps.progress`.
    - ``echo``: where the plain lines go (default ``print``).
    - ``devices``: the devices of the ``"data"`` mesh axis; default ``jax.devices()`` (all of
      them, on every host).

    **Returns:** a :class:`TrainResult`; ``seconds`` counts the whole call.

    **Raises**, besides what :func:`prepare` raises: :class:`NonFiniteLoss` when the loss
    becomes NaN or infinite (checked whenever the losses are fetched: once an epoch and at the
    end), before that state is saved; :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) on
    Ctrl-C, after saving the last completed step to ``save_dir``.

    It is :func:`prepare` (every check of the settings and the checkpoint) then :func:`fit`.
    """
    start = time.perf_counter()
    run = prepare(config, save_dir=save_dir, resume=resume, keep=keep, devices=devices)
    result = fit(run, stop_after=stop_after, progress=progress, echo=echo)
    return result._replace(seconds=time.perf_counter() - start)
