"""A training run's settings and everything before its first step, for :mod:`recurrax.apps.train`.

:class:`TrainConfig` holds the settings (all saved in the run's checkpoints); :func:`prepare`
checks them and the checkpoint to resume from, loads the data, and builds (or restores) the
model and optimizer state on the ``"data"`` mesh: a :class:`Prepared` run, which
:func:`recurrax.apps.train.fit` trains.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recurrax import load_checkpoint
from recurrax.cells.registry import BUILTIN
from recurrax.io.checkpoint import DEFAULT_KEEP, checkpoint_steps, find_checkpoint, require_backend

from .data import digits_dataset, sine_dataset
from .model import RecurrentModel, make_cell
from .options import SEED_MAX

__all__ = ["TrainConfig", "Prepared", "prepare", "make_optimizer", "TASK_EPOCHS"]

TASK_EPOCHS = {"digits": 40, "sine": 20}
_MODES = ("static", "dynamic")


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
