"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one file, ``<directory>/checkpoint.rcx``: a safetensors file in the layout of
``io/tensorfile.py`` (checksummed, written atomically; ``kind`` ``"checkpoint"``), holding

- the model's arrays (under ``model``) and the optimizer state's (under ``opt_state``);
- the optimizer step, the PRNG key the run derives its per-step keys from, and the data-order
  state (the seed; the batch of step ``s`` follows from ``(seed, s)``);
- the run's configuration, so that resuming with other settings is refused, and its history.

Resuming from it and training on gives parameters bit-identical to a run that never stopped,
because every random choice of the run is a function of ``(seed, step)``.

Loading checks more than the checksums: a file whose checksums hold but whose contents do not
make a checkpoint (a field of the metadata missing or of the wrong type, a step out of range,
no PRNG key, weights that are NaN or infinite) is refused with a ``ValueError`` naming the field
or array. Temporary files an interrupted write left in the directory are never read as the
checkpoint, and the next save removes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from .tensorfile import read_arrays, write_arrays
from .weights import fill_like, tree_arrays

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "find_checkpoint",
]

FILENAME = "checkpoint.rcx"
MAX_STEP = 2**31 - 1  # steps are counted in int32 by the training step


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
      new one is completely written (temporary file, then ``os.replace``); temporary files an
      interrupted earlier save left there are removed first.
    - ``model``, ``opt_state``: any pytrees (an ``eqx.Module``, an optax state).
    - ``step``: the number of optimizer steps taken (an int from 0 to ``2**31 - 1``).
    - ``key``: the run's PRNG key (``jax.random.key(seed)``).
    - ``data_state``: a dict of ints fixing the data order.
    - ``config``: the run's JSON-serialisable settings, compared on resume.
    - ``history``: optional JSON-serialisable metrics so far.
    """
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(f"step must be an int >= 0 and <= {MAX_STEP}; got {step!r}.")
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


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_meta(meta, source: str) -> None:
    """``ValueError`` naming the first field of a checkpoint's metadata that is missing or
    wrong."""

    def bad(field: str, what: str):
        return ValueError(
            f"{source} is not a valid checkpoint: {field} {what}. The file's checksums hold, so "
            "it was written this way; use a checkpoint written by recurrax.save_checkpoint."
        )

    if not isinstance(meta, dict):
        raise bad("its metadata", f"is a {type(meta).__name__}, not a JSON object")
    for field, kind in (("step", "an int"), ("data_state", "a dict"), ("config", "a dict")):
        if field not in meta:
            raise bad(f"field {field!r}", f"is missing (it must be {kind})")
    step = meta["step"]
    if not _is_int(step):
        raise bad("field 'step'", f"must be an int; it is {step!r}")
    if not 0 <= step <= MAX_STEP:
        raise bad("field 'step'", f"must be from 0 to {MAX_STEP}; it is {step}")
    data_state = meta["data_state"]
    if not isinstance(data_state, dict):
        raise bad("field 'data_state'", f"must be a dict; it is {data_state!r}")
    for k, v in data_state.items():
        if not _is_int(v):
            raise bad(f"field 'data_state.{k}'", f"must be an int; it is {v!r}")
    if not isinstance(meta["config"], dict):
        raise bad("field 'config'", f"must be a dict; it is {meta['config']!r}")
    history = meta.get("history", {})
    if not isinstance(history, dict):
        raise bad("field 'history'", f"must be a dict; it is {history!r}")
    for k, values in history.items():
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise bad(f"field 'history.{k}'", "must be a list of numbers")


def _check_finite(arrays: dict, source: str) -> None:
    for name, x in arrays.items():
        if name == "key":
            continue
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            raise ValueError(
                f"{source} is not a valid checkpoint: array {name!r} holds NaN or infinite "
                "values; resume from a checkpoint saved before the run diverged."
            )


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
    corrupted, written for another configuration or model structure, or not a valid checkpoint
    although its checksums hold (a metadata field missing or of the wrong type, a step below 0
    or above ``2**31 - 1``, no PRNG key, NaN or infinite weights): the message names the field
    or array. Nothing is written.
    """
    path = find_checkpoint(directory)
    source = str(path)
    arrays, meta = read_arrays(path, kind="checkpoint")
    _check_meta(meta, source)
    if config is not None:
        diff = _config_diff(meta["config"], dict(config))
        if diff:
            raise ValueError(
                f"{path} was written by a run with other settings: "
                + "; ".join(diff)
                + ". Resume with the same settings, or save to another directory."
            )
    parts = {"model": {}, "opt_state": {}}
    for name, value in arrays.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is not None:
            parts[prefix][name[len(prefix) :]] = value
    if "key" not in arrays:
        raise ValueError(f"{source} holds no PRNG key: it is not a complete checkpoint.")
    key = arrays["key"]
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError(
            f"{source} is not a valid checkpoint: array 'key' is not a typed PRNG key (as "
            "jax.random.key makes)."
        )
    _check_finite(arrays, source)
    return Checkpoint(
        model=fill_like(parts["model"], model, source=source, what="model"),
        opt_state=fill_like(parts["opt_state"], opt_state, source=source, what="optimizer state"),
        step=meta["step"],
        key=key,
        data_state=meta["data_state"],
        config=meta["config"],
        history=meta.get("history", {}),
    )
