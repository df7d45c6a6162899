"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one file, ``<directory>/checkpoint.rcx``, in the format of
``io/weights.py`` (checksummed, written atomically), holding

- the model's arrays (under ``model``) and the optimizer state's (under ``opt_state``);
- the optimizer step, the PRNG key the run derives its per-step keys from, and the data-order
  state (the seed; the batch of step ``s`` follows from ``(seed, s)``);
- the run's configuration, so that resuming with other settings is refused, and its history.

Resuming from it and training on gives parameters bit-identical to a run that never stopped,
because every random choice of the run is a function of ``(seed, step)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax

from .weights import fill_like, read_arrays, tree_arrays, write_arrays

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "find_checkpoint",
]

FILENAME = "checkpoint.rcx"


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    - ``model``, ``opt_state``: pytrees shaped like the ones passed to :func:`load_checkpoint`.
    - ``step``: the number of optimizer steps taken.
    - ``key``: the run's PRNG key (a typed key array).
    - ``data_state``: a dict of ints that fixes the data order (e.g. ``{"seed": 0}``).
    - ``config``: the run's configuration (a JSON dict); ``history``: its metrics so far.
    """

    model: Any
    opt_state: Any
    step: int
    key: jax.Array
    data_state: dict
    config: dict
    history: dict


def checkpoint_path(directory) -> Path:
    """The checkpoint file inside ``directory``: ``<directory>/checkpoint.rcx``."""
    return Path(directory) / FILENAME


def find_checkpoint(directory) -> Path:
    """The checkpoint file in ``directory``; ``FileNotFoundError`` if there is none."""
    path = checkpoint_path(directory)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: run once with this directory to save one first."
        )
    return path


def save_checkpoint(
    directory,
    *,
    model,
    opt_state,
    step: int,
    key,
    data_state: dict,
    config: dict,
    history: dict | None = None,
) -> Path:
    """Write a checkpoint to ``<directory>/checkpoint.rcx`` atomically; return its path.

    **Arguments:**

    - ``directory``: created if missing. A previous checkpoint there is replaced only once the
      new one is completely written (temporary file, then ``os.replace``).
    - ``model``, ``opt_state``: any pytrees (an ``eqx.Module``, an optax state).
    - ``step``: the number of optimizer steps taken (an int >= 0).
    - ``key``: the run's PRNG key (``jax.random.key(seed)``).
    - ``data_state``: a dict of ints fixing the data order.
    - ``config``: the run's JSON-serialisable settings, compared on resume.
    - ``history``: optional JSON-serialisable metrics so far.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0; got {step!r}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        **{f"model{k}": v for k, v in tree_arrays(model).items()},
        **{f"opt_state{k}": v for k, v in tree_arrays(opt_state).items()},
        "key": key,
    }
    meta = {
        "step": step,
        "data_state": dict(data_state),
        "config": dict(config),
        "history": history or {},
    }
    return write_arrays(checkpoint_path(directory), arrays, kind="checkpoint", meta=meta)


def _config_diff(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: checkpoint has {saved.get(k)!r}, this run has {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


def load_checkpoint(directory, *, model, opt_state, config: dict | None = None) -> Checkpoint:
    """Read and validate ``<directory>/checkpoint.rcx``.

    **Arguments:**

    - ``directory``: where :func:`save_checkpoint` wrote.
    - ``model``, ``opt_state``: pytrees of the same structure as the saved ones (a freshly
      initialised model and ``optimizer.init(...)``); their arrays are replaced.
    - ``config``: if given, must equal the saved configuration; otherwise a ``ValueError`` lists
      every setting that differs.

    **Returns:** a :class:`Checkpoint`.

    Raises ``FileNotFoundError`` if there is no checkpoint, and ``ValueError`` if it is truncated,
    corrupted, or written for another configuration or model structure. Nothing is written.
    """
    path = find_checkpoint(directory)
    arrays, meta = read_arrays(path, kind="checkpoint")
    if config is not None:
        diff = _config_diff(meta["config"], dict(config))
        if diff:
            raise ValueError(
                f"{path} was written by a run with other settings: "
                + "; ".join(diff)
                + ". Resume with the same settings, or save to another directory."
            )
    source = str(path)
    parts = {"model": {}, "opt_state": {}}
    for name, value in arrays.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is not None:
            parts[prefix][name[len(prefix) :]] = value
    if "key" not in arrays:
        raise ValueError(f"{source} holds no PRNG key: it is not a complete checkpoint.")
    return Checkpoint(
        model=fill_like(parts["model"], model, source=source, what="model"),
        opt_state=fill_like(parts["opt_state"], opt_state, source=source, what="optimizer state"),
        step=int(meta["step"]),
        key=arrays["key"],
        data_state=meta["data_state"],
        config=meta["config"],
        history=meta.get("history", {}),
    )
