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
import functools
import math
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recurrax import load_checkpoint, save_checkpoint
from recurrax.cells.registry import BUILTIN
from recurrax.io.checkpoint import DEFAULT_KEEP, checkpoint_steps, find_checkpoint, require_backend

from .data import batch_indices, digits_dataset, last_value_mse, sine_dataset
from .model import RecurrentModel, loss_and_metric, make_cell
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

TASK_EPOCHS = {"digits": 40, "sine": 20}
_MODES = ("static", "dynamic")
SEED_MAX = 2**32 - 1


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run (all saved in its checkpoints and checked on resume).

    - ``task``: ``"digits"`` (classification) or ``"sine"`` (forecasting).
    - ``cell``: a name of :data:`recurrax.cells.registry.BUILTIN`: ``"rnn"``
      (``BasicRNNCell``), ``"gru"`` (``GRUCell``) or ``"lstm"`` (``BasicLSTMCell``).
    - ``mode``: ``"static"`` (``static_rnn``) or ``"dynamic"`` (``dynamic_rnn``).
    - ``num_units``, ``num_layers``: the encoder's size (``MultiRNNCell`` above one layer).
    - ``batch_size``: the global batch, split over the devices (must divide evenly).
    - ``epochs``: ``None`` picks the task's default (digits 40, sine 20).
    - ``learning_rate``: Adam's initial rate, cosine-decayed to 0 over the run.
    - ``keep_prob``: dropout keep probability on the encoder's outputs (1.0: none).
    - ``seed``: the one seed every random choice derives from, an int in ``[0, 2**32 - 1]``.
    """

    task: str = "digits"
    cell: str = "lstm"
    mode: str = "dynamic"
    num_units: int = 64
    num_layers: int = 1
    batch_size: int = 32
    epochs: int | None = None
    learning_rate: float = 0.01
    keep_prob: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("task", TASK_EPOCHS), ("cell", BUILTIN), ("mode", _MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {sorted(allowed)}; got {getattr(self, name)!r}."
                )
        for name in ("num_units", "num_layers", "batch_size", "epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"learning_rate must be a finite number > 0; got {self.learning_rate}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int; got {self.seed!r}.")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be from 0 to {SEED_MAX} (2**32 - 1); got {self.seed}.")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1]; got {self.keep_prob}.")
        if self.epochs is None:
            object.__setattr__(self, "epochs", TASK_EPOCHS[self.task])


@eqx.filter_jit
def _init(config: TrainConfig, input_size: int, num_outputs: int, optimizer):
    """``(model, optimizer state, run key)`` from ``config.seed``; one compiled program."""
    model_key, run_key = jax.random.split(jax.random.key(config.seed))
    cell_key, readout_key = jax.random.split(model_key)
    cell = make_cell(
        config.cell, config.num_units, input_size, key=cell_key, num_layers=config.num_layers
    )
    model = RecurrentModel(
        cell,
        num_outputs,
        key=readout_key,
        mode=config.mode,
        per_step=config.task == "sine",
        keep_prob=config.keep_prob,
    )
    return model, optimizer.init(eqx.filter(model, eqx.is_array)), run_key


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


def _dataset(config: TrainConfig):
    return digits_dataset() if config.task == "digits" else sine_dataset()


class Prepared(NamedTuple):
    """A run ready for its first step: what :func:`prepare` returns and :func:`fit` continues.

    ``config``, ``save_dir`` and ``keep`` (the checkpoints kept there); ``data`` (a
    :class:`~recurrax.apps.data.Dataset`); the ``"data"``-axis ``batch_sharding`` and the
    ``replicated`` sharding; ``optimizer``;
    ``model``, ``opt_state``, ``run_key``, ``step`` and ``history`` (fresh, or as the checkpoint
    left them); ``data_state`` (what fixes the batch order, saved with each checkpoint).
    """

    config: TrainConfig
    save_dir: Any
    keep: int | None
    data: Any
    batch_sharding: NamedSharding
    replicated: NamedSharding
    optimizer: Any
    model: Any
    opt_state: Any
    run_key: jax.Array
    step: int
    history: dict
    data_state: dict

    @property
    def total_steps(self) -> int:
        return self.config.epochs * (len(self.data.x_train) // self.config.batch_size)


def prepare(
    config: TrainConfig = TrainConfig(),
    *,
    save_dir=None,
    resume: bool = False,
    keep: int | None = DEFAULT_KEEP,
    devices=None,
) -> Prepared:
    """Everything before the first step: check the settings, load the data, build the model and
    optimizer state, or restore them from the checkpoint in ``save_dir`` (``resume=True``).

    **Arguments:** as in :func:`train`.

    **Raises** (all before a step is taken or a file written): ``ValueError`` for settings that
    do not fit (a batch the devices do not divide or larger than the training set, ``resume``
    without ``save_dir``, a damaged checkpoint or one of other settings or data, a fresh run
    (``resume=False``) into a ``save_dir`` that holds checkpoints already, a ``keep`` that is
    not a positive int or ``None``), ``FileNotFoundError`` when ``save_dir`` holds no checkpoint
    to resume, ``ImportError`` when an extra the task needs (optax, scikit-learn, and
    orbax-checkpoint with ``save_dir``) is missing.
    """
    if resume and save_dir is None:
        raise ValueError("resume=True needs save_dir: the directory holding the checkpoint.")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None (keep all); got {keep!r}.")
    # Fail before any data is loaded or anything compiled.
    if save_dir is not None:
        require_backend()
    if resume:
        find_checkpoint(save_dir)
    elif save_dir is not None and (saved := checkpoint_steps(save_dir)):
        raise ValueError(
            f"{save_dir} holds the checkpoints of another run already (the latest at step "
            f"{saved[-1]}): continue it with resume=True (--resume), or save to another "
            "directory."
        )
    devices = list(jax.devices() if devices is None else devices)
    if config.batch_size % len(devices):
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by the {len(devices)} devices "
            "the batch is split over; pick a multiple of the device count."
        )
    mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())

    data = _dataset(config)
    n_train = len(data.x_train)
    if config.batch_size > n_train:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {n_train} training examples of task "
            f"{config.task!r}; pick a batch_size of at most {n_train}."
        )
    optimizer = make_optimizer(config.learning_rate, config.epochs * (n_train // config.batch_size))
    num_outputs = 1 if config.task == "sine" else data.num_classes
    model, opt_state, run_key = _init(config, data.x_train.shape[-1], num_outputs, optimizer)
    history = {"loss": [], "metric": [], "test_metric": []}
    data_state = {"seed": config.seed, "num_examples": n_train}  # the order of every batch
    step = 0
    if resume:
        settings = dataclasses.asdict(config)
        ckpt = load_checkpoint(save_dir, model=model, opt_state=opt_state, config=settings)
        if ckpt.data_state != data_state:
            raise ValueError(
                f"the checkpoint in {save_dir} saw other data ({ckpt.data_state}, now "
                f"{data_state}): the batch order would differ. Resume on the same data set."
            )
        model, opt_state, step, run_key = ckpt.model, ckpt.opt_state, ckpt.step, ckpt.key
        history = ckpt.history
    model, opt_state = eqx.filter_shard((model, opt_state), replicated)
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    return Prepared(
        config, save_dir, keep, data, batch_sharding, replicated, optimizer,
        model, opt_state, run_key, step, history, data_state,
    )  # fmt: skip


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


@functools.lru_cache(maxsize=16)
def make_optimizer(learning_rate: float, total_steps: int):
    """Adam with the rate cosine-decayed to 0 over ``total_steps``, gradients clipped to norm 1.

    Cached: equal settings give the same object, so later runs reuse the compiled step.
    """
    try:
        import optax
    except ImportError as e:
        raise ImportError("training needs optax: pip install 'recurrax[train]'.") from e
    schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
