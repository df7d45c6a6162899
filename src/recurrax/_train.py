"""Train a sequence model end to end: ``recurrax train``.

The model is a recurrent encoder (one of the TF1 cells, run by :func:`~recurrax.static_rnn` or
:func:`~recurrax.dynamic_rnn`) and a dense readout: on its last output for ``digits`` (classify
an 8x8 image read row by row), on every output for ``sine`` (forecast the next value).

The training step is data parallel: each global batch is split over all devices along a
``"data"`` mesh axis (``jax.sharding``), the parameters and optimizer state are replicated, and
the loss is a mean over the whole global batch, so any number of devices computes the same
update as one (up to the order of float additions). Under ``jax.distributed`` the mesh spans the
devices of every host and each host feeds its own slice of the global batch.

Everything random is a function of the seed: the initial weights of ``key(seed)``, the dropout
masks of step ``s`` of ``fold_in(key, s)``, the batch of step ``s`` of ``(seed, s)``. So a run
stopped and resumed from a checkpoint ends with the same bits as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._base import glorot_uniform
from ._cells import BasicLSTMCell, BasicRNNCell, GRUCell
from ._checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from ._data import batch_indices, digits_dataset, last_value_mse, sine_dataset
from ._dynamic import dynamic_rnn
from ._progress import make_reporter
from ._static import static_rnn
from ._wrappers import DropoutWrapper, MultiRNNCell

__all__ = ["TrainConfig", "TrainResult", "RecurrentModel", "make_cell", "train"]

CELLS = {"basic_rnn": BasicRNNCell, "gru": GRUCell, "lstm": BasicLSTMCell}
TASK_EPOCHS = {"digits": 40, "sine": 20}
_MODES = ("static", "dynamic")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run (all saved in its checkpoints and checked on resume).

    - ``task``: ``"digits"`` (classification) or ``"sine"`` (forecasting).
    - ``cell``: ``"basic_rnn"``, ``"gru"`` or ``"lstm"`` (``BasicLSTMCell``).
    - ``mode``: ``"static"`` (``static_rnn``) or ``"dynamic"`` (``dynamic_rnn``).
    - ``num_units``, ``num_layers``: the encoder's size (``MultiRNNCell`` above one layer).
    - ``batch_size``: the global batch, split over the devices (must divide evenly).
    - ``epochs``: ``None`` picks the task's default (digits 40, sine 20).
    - ``learning_rate``: Adam's initial rate, cosine-decayed to 0 over the run.
    - ``keep_prob``: dropout keep probability on the encoder's outputs (1.0: none).
    - ``seed``: the one seed every random choice derives from.
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
        for name, allowed in (("task", TASK_EPOCHS), ("cell", CELLS), ("mode", _MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {sorted(allowed)}; got {getattr(self, name)!r}."
                )
        for name in ("num_units", "num_layers", "batch_size", "epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1]; got {self.keep_prob}.")
        if self.epochs is None:
            object.__setattr__(self, "epochs", TASK_EPOCHS[self.task])


def make_cell(kind: str, num_units: int, input_size: int, *, key, num_layers: int = 1):
    """A ``basic_rnn``/``gru``/``lstm`` cell, or a ``MultiRNNCell`` of ``num_layers`` of them."""
    keys = jax.random.split(key, num_layers)
    sizes = [input_size] + [num_units] * (num_layers - 1)
    cells = [CELLS[kind](num_units, n, key=k) for n, k in zip(sizes, keys)]
    return cells[0] if num_layers == 1 else MultiRNNCell(cells)


class RecurrentModel(eqx.Module):
    """A recurrent encoder and a dense readout, as an Equinox module.

    **Arguments:** ``cell`` (the encoder), ``num_outputs`` (classes, or 1 for forecasting),
    ``key``; static ``mode`` (``"static"``/``"dynamic"``), ``per_step`` (readout at every step
    rather than the last), ``keep_prob`` (output dropout during training).

    **Call:** ``model(x [B, T, F], lengths [B] or None, *, key=None)`` returns ``[B, num_outputs]``
    or, with ``per_step``, ``[B, T, num_outputs]``; dropout applies only when ``key`` is given.
    """

    cell: Any
    readout_kernel: jax.Array  # [num_units, num_outputs], TF1's dense/kernel layout
    readout_bias: jax.Array  # [num_outputs]
    mode: str = eqx.field(static=True)
    per_step: bool = eqx.field(static=True)
    keep_prob: float = eqx.field(static=True)

    def __init__(self, cell, num_outputs, *, key, mode="dynamic", per_step=False, keep_prob=1.0):
        self.cell = cell
        units = cell.output_size
        self.readout_kernel = glorot_uniform(key, (units, num_outputs), cell.dtype)
        self.readout_bias = jnp.zeros((num_outputs,), cell.dtype)
        self.mode, self.per_step, self.keep_prob = mode, per_step, keep_prob

    def __call__(self, x, lengths=None, *, key=None):
        cell = self.cell
        if key is not None and self.keep_prob < 1.0:
            cell = DropoutWrapper(cell, output_keep_prob=self.keep_prob, key=key)
        if self.mode == "static":
            steps = [x[:, t] for t in range(x.shape[1])]
            outs, _ = static_rnn(cell, steps, dtype=x.dtype, sequence_length=lengths)
            outputs = jnp.stack(outs, axis=1)  # (B, T, U)
        else:
            outputs, _ = dynamic_rnn(cell, x, sequence_length=lengths, dtype=x.dtype)
        features = outputs if self.per_step else outputs[:, -1]  # (B, T, U) or (B, U)
        return features @ self.readout_kernel + self.readout_bias


def _loss(model, batch, key):
    """``(loss, metric)``: cross-entropy and accuracy, or masked MSE and MSE; global means."""
    x, y, lengths = batch
    pred = model(x, lengths, key=key)
    if not model.per_step:
        logp = jax.nn.log_softmax(pred.astype(jnp.float32), axis=-1)
        loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        return loss, jnp.mean((jnp.argmax(pred, -1) == y).astype(jnp.float32))
    valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
    err = jnp.where(valid, (pred - y) ** 2, 0.0)
    loss = jnp.sum(err) / jnp.sum(valid)  # over the global batch: matches one device
    return loss, loss


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
    (loss, metric), grads = eqx.filter_value_and_grad(_loss, has_aux=True)(model, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    model = eqx.apply_updates(model, updates)
    model, opt_state = eqx.filter_shard((model, opt_state), replicated)
    return model, opt_state, loss, metric


@eqx.filter_jit
def _evaluate(model, x, y, lengths):
    return _loss(model, (x, y, lengths), None)[1]


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


def train(
    config: TrainConfig = TrainConfig(),
    *,
    save_dir=None,
    resume: bool = False,
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
      written.
    - ``stop_after``: stop after this many steps in this call (as if interrupted), saving first.
    - ``progress``: ``"rich"`` (a live bar), ``"plain"`` (a line per epoch) or ``"none"``.
    - ``echo``: where summary lines go (default ``print``).
    - ``devices``: the devices of the ``"data"`` mesh axis; default ``jax.devices()`` (all of
      them, on every host).

    **Returns:** a :class:`TrainResult`.
    """
    start = time.perf_counter()
    if resume and save_dir is None:
        raise ValueError("resume=True needs save_dir: the directory holding the checkpoint.")
    if resume:
        find_checkpoint(save_dir)  # fail before any data is loaded or anything compiled
    if stop_after is not None and (not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be a positive int or None; got {stop_after!r}.")
    devices = list(jax.devices() if devices is None else devices)
    if config.batch_size % len(devices):
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by the {len(devices)} devices "
            "the batch is split over; pick a multiple of the device count."
        )
    mesh = Mesh(np.asarray(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())

    data = _dataset(config)
    n_train, per_epoch = len(data.x_train), len(data.x_train) // config.batch_size
    total_steps = config.epochs * per_epoch
    per_step = config.task == "sine"
    optimizer = make_optimizer(config.learning_rate, total_steps)
    num_outputs = 1 if per_step else data.num_classes
    model, opt_state, run_key = _init(config, data.x_train.shape[-1], num_outputs, optimizer)
    settings = dataclasses.asdict(config)
    history = {"loss": [], "metric": [], "test_metric": []}
    data_state = {"seed": config.seed, "num_examples": n_train}  # the order of every batch
    step = 0
    if resume:
        ckpt = load_checkpoint(save_dir, model=model, opt_state=opt_state, config=settings)
        if ckpt.data_state != data_state:
            raise ValueError(
                f"the checkpoint in {save_dir} saw other data ({ckpt.data_state}, now "
                f"{data_state}): the batch order would differ. Resume on the same data set."
            )
        model, opt_state, step, run_key = ckpt.model, ckpt.opt_state, ckpt.step, ckpt.key
        history = ckpt.history
    model, opt_state = eqx.filter_shard((model, opt_state), replicated)

    def save(at: int):
        if save_dir is not None:
            save_checkpoint(
                save_dir,
                model=model,
                opt_state=opt_state,
                step=at,
                key=run_key,
                data_state=data_state,
                config=settings,
                history=history,
            )

    test = tuple(_put(a, replicated) for a in (data.x_test, data.y_test, data.len_test))
    metric_name = "mse" if per_step else "accuracy"
    end = total_steps if stop_after is None else min(total_steps, step + stop_after)
    host, hosts = jax.process_index(), jax.process_count()
    local = config.batch_size // hosts
    reporter = make_reporter(progress, total_steps, step, metric_name, echo)
    pending = []  # this epoch's (loss, metric) device arrays: fetched once per epoch
    with reporter:
        while step < end:
            idx = batch_indices(step, n_train, config.batch_size, config.seed)
            idx = idx[host * local : (host + 1) * local]  # this host's slice of the global batch
            batch = tuple(
                _put(None if a is None else a[idx], batch_sharding)
                for a in (data.x_train, data.y_train, data.len_train)
            )
            model, opt_state, loss, metric = _train_step(
                model, opt_state, batch, run_key, np.int32(step), optimizer, replicated
            )
            pending.append((loss, metric))
            step += 1
            reporter.advance(step, pending[-1])
            if step % per_epoch == 0 or step == end:
                values = np.asarray(jax.device_get(pending), np.float64)  # (steps, 2)
                history["loss"] += values[:, 0].tolist()
                history["metric"] += values[:, 1].tolist()
                pending = []
                if step % per_epoch == 0:
                    history["test_metric"].append(float(_evaluate(model, *test)))
                    reporter.epoch(step // per_epoch, config.epochs, history)
                save(step)
    # A finished run ends on an epoch boundary, whose test metric was just measured.
    test_metric = history["test_metric"][-1] if step == total_steps else None
    baseline = last_value_mse(data.x_test, data.y_test, data.len_test) if per_step else None
    return TrainResult(
        model,
        opt_state,
        history,
        metric_name,
        test_metric,
        baseline,
        step,
        total_steps,
        time.perf_counter() - start,
    )


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
