"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Checkpoints are written by ``orbax-checkpoint`` (the ``train`` extra), one per step, each in a
step directory of the save directory; the last ``keep`` steps are kept::

    <directory>/22/meta/metadata     JSON: step, data_state, config, history, and per array
                                     its name, dtype, shape and SHA-256
    <directory>/22/arrays/...        the arrays (orbax's array format, tensorstore + OCDBT)
    <directory>/44/...

Each holds

- the model's arrays (named ``model<pytree path>``) and the optimizer state's
  (``opt_state<pytree path>``);
- the optimizer step, the PRNG key the run derives its per-step keys from (as its key data and
  the name of its implementation), and the data-order state (the seed; the batch of step ``s``
  follows from ``(seed, s)``);
- the run's configuration, so that resuming with other settings is refused, and its history.

Resuming from it and training on gives parameters bit-identical to a run that never stopped,
because every random choice of the run is a function of ``(seed, step)``.

**Atomic.** orbax writes a step into ``<directory>/<step>.orbax-checkpoint-tmp`` and renames it
to ``<directory>/<step>`` once complete, so a process killed while saving leaves the earlier
steps loadable; only step directories (named by their step number) are read, and the next save
removes what an interrupted one left.

**Checked on load** (the checks: ``checkpoint_checks.py``; orbax's reads and writes:
``checkpoint_store.py``). orbax and tensorstore do not
reliably checksum array contents, so the metadata holds the SHA-256 of every array and of
itself, verified after reading. A step whose
contents do not make a checkpoint (a metadata field missing or of the wrong type, a step out
of range, no PRNG key, weights that are NaN or infinite) is refused with a ``ValueError``
naming the field or array. Nothing in a checkpoint is executed on load: it is JSON and arrays.

**Nothing overwritten.** Saving a step that is already saved is a no-op (the trainer may save
the same step twice, e.g. when interrupted right after an epoch's save), refused if that step
was saved with another configuration; saving a step below the latest saved one is refused,
since it would mix two runs in one directory.

**Several processes.** Under ``jax.distributed`` every process calls :func:`save_checkpoint`
and :func:`load_checkpoint` with the same arguments: they are collective (orbax synchronises
the processes). Only the primary process (process 0) creates directories and writes files, so
no file is written by two processes; every process reads the whole checkpoint on load, so the
directory must be on a file system every process sees. :func:`find_checkpoint` and
:func:`checkpoint_steps` only list the directory and may be called by any process alone.

**The earlier format.** Checkpoints of recurrax's earlier single-file format,
``<directory>/checkpoint.rcx`` (``io/tensorfile.py``), are still read, with the same checks,
when the directory holds no step directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checkpoint_checks import (
    DTYPES,
    FORMAT,
    MAX_STEP,
    VERSION,
    check_finite,
    check_meta,
    config_diff,
    digest,
    seal,
)
from .checkpoint_store import checkpoint_steps, read_meta, read_step, require_backend, write_step
from .tensorfile import read_arrays
from .weights import fill_like, tree_arrays

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "checkpoint_steps",
    "find_checkpoint",
    "require_backend",
]

FILENAME = "checkpoint.rcx"  # the earlier single-file format, still read
DEFAULT_KEEP = 3


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


def checkpoint_path(directory, step: int | None = None) -> Path:
    """The directory of the checkpoint of ``step`` in ``directory``: ``<directory>/<step>``.

    With ``step=None``, that of the latest complete checkpoint, as :func:`find_checkpoint`
    finds it (``FileNotFoundError`` if there is none).
    """
    if step is None:
        return find_checkpoint(directory)
    return Path(directory) / str(step)


def find_checkpoint(directory, *, step: int | None = None) -> Path:
    """The checkpoint :func:`load_checkpoint` would read in ``directory``.

    **Arguments:**

    - ``directory``: where :func:`save_checkpoint` wrote.
    - ``step``: the step to find; ``None`` for the latest one saved completely.

    **Returns:** the step's directory, ``<directory>/<step>``; or, when ``directory`` holds no
    step directory but a checkpoint of the earlier single-file format, ``<directory>/
    checkpoint.rcx``.

    Raises ``FileNotFoundError`` when there is no such checkpoint. Reads the directory only
    (no orbax); safe to call from every process.
    """
    directory = Path(directory)
    steps = checkpoint_steps(directory)
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint of step {step} at {directory}: it holds steps {steps}."
            )
        return directory / str(step)
    if steps:
        return directory / str(steps[-1])
    if (directory / FILENAME).is_file():
        return directory / FILENAME
    unfinished = sorted(p.name for p in directory.glob("*.orbax-checkpoint-tmp"))
    why = (
        f" (only {unfinished}, left by a save that was interrupted: never a checkpoint)"
        if unfinished
        else ""
    )
    raise FileNotFoundError(
        f"no checkpoint at {directory}{why}: run once with this directory to save one first."
    )


def _host(x) -> np.ndarray:
    """``x`` as a NumPy array on this host, also when it spans several processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:  # every process holds all of it (data-parallel parameters)
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))  # collective
    return np.asarray(x)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


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
    keep: int | None = DEFAULT_KEEP,
) -> Path:
    """Write the checkpoint of ``step`` to ``<directory>/<step>`` atomically; return its path.

    **Arguments:**

    - ``directory``: created if missing. The step is written to a temporary directory and
      renamed once complete; what an interrupted earlier save left there is removed first.
    - ``model``, ``opt_state``: any pytrees (an ``eqx.Module``, an optax state).
    - ``step``: the number of optimizer steps taken (an int from 0 to ``2**31 - 1``). If this
      step is saved already, nothing is written (its path is returned) unless it was saved with
      another ``config`` (``ValueError``); a step below the latest one saved is refused
      (``ValueError``): the directory belongs to a run that went further.
    - ``key``: the run's PRNG key, a typed key (``jax.random.key(seed)``).
    - ``data_state``: a dict of ints fixing the data order.
    - ``config``: the run's JSON-serialisable settings, compared on resume.
    - ``history``: optional JSON-serialisable metrics so far (lists of numbers by name).
    - ``keep``: how many steps to keep (the latest ones; older ones are deleted after a save);
      ``None`` keeps them all.

    **Returns:** ``<directory>/<step>``.

    Under ``jax.distributed`` every process must call it, with the same values: it is
    collective. Arrays that span processes are taken whole (replicated ones from this process's
    copy, others gathered); only process 0 writes.

    Raises ``ImportError`` without orbax-checkpoint (``pip install 'recurrax[train]'``).
    """
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(f"step must be an int >= 0 and <= {MAX_STEP}; got {step!r}.")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None (keep all); got {keep!r}.")
    if not _is_key(key):
        raise TypeError(
            f"key must be a typed PRNG key, as jax.random.key(seed) makes; got "
            f"{getattr(key, 'dtype', type(key).__name__)}. Wrap raw key data with "
            "jax.random.wrap_key_data."
        )
    require_backend()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "data_state": dict(data_state),
        "config": dict(config),
        "history": dict(history or {}),
    }
    check_meta(meta, "the checkpoint to save", saving=True)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"config, data_state and history must be JSON-serialisable (finite numbers, "
            f"strings, lists, dicts): {e}."
        ) from None
    directory = Path(directory)
    steps = checkpoint_steps(directory)
    if step in steps:
        return _same_run(directory, step, meta["config"])
    if steps and step < steps[-1]:
        raise ValueError(
            f"cannot save step {step} to {directory}: it holds step {steps[-1]}, of a run that "
            "went further, which this save would mix with this one. Save to another directory, "
            "or resume that run."
        )
    named = {
        **{f"model{k}": v for k, v in tree_arrays(model).items()},
        **{f"opt_state{k}": v for k, v in tree_arrays(opt_state).items()},
    }
    arrays, entries = {}, []
    for name, x in [*named.items(), ("key", key)]:
        entry = {"name": name}
        if _is_key(x):
            entry["key_impl"] = str(jax.random.key_impl(x))
            x = jax.random.key_data(x)
        host = _host(x)
        dtype = jnp.dtype(host.dtype).name
        if dtype not in DTYPES:
            raise TypeError(f"array {name!r} has dtype {dtype}; a checkpoint holds {DTYPES}.")
        entry.update(dtype=dtype, shape=list(host.shape), sha256=digest(host))
        arrays[str(len(entries))] = host
        entries.append(entry)
    write_step(directory, step, keep, seal({**meta, "arrays": entries}), arrays)
    return directory / str(step)


def _same_run(directory: Path, step: int, config: dict) -> Path:
    """The path of ``step``, saved already: a no-op save, unless another run saved it."""
    path = directory / str(step)
    saved = read_meta(directory, step, str(path)).get("config")
    diff = config_diff(saved, config) if isinstance(saved, dict) else ["config: not a dict"]
    if diff:
        raise ValueError(
            f"cannot save step {step} to {directory}: that step is saved already, by a run with "
            "other settings (" + "; ".join(diff) + "), and is not overwritten. Save to another "
            "directory."
        )
    return path


def load_checkpoint(
    directory, *, model, opt_state, config: dict | None = None, step: int | None = None
) -> Checkpoint:
    """Read and validate the latest complete checkpoint in ``directory`` (or that of ``step``).

    **Arguments:**

    - ``directory``: where :func:`save_checkpoint` wrote.
    - ``model``, ``opt_state``: pytrees of the same structure as the saved ones (a freshly
      initialised model and ``optimizer.init(...)``); their arrays are replaced, bit for bit.
    - ``config``: if given, must equal the saved configuration; otherwise a ``ValueError`` lists
      every setting that differs.
    - ``step``: the step to load; ``None`` for the latest one saved completely (see
      :func:`find_checkpoint`, which also finds a checkpoint of the earlier single-file format).

    **Returns:** a :class:`Checkpoint`.

    Raises ``FileNotFoundError`` if there is no checkpoint, ``ImportError`` without
    orbax-checkpoint, and ``ValueError`` if the checkpoint is truncated, corrupted (an array or
    the metadata does not match its SHA-256), written for another configuration or model
    structure, or not a valid checkpoint although its checksums hold (a metadata field missing
    or of the wrong type, a step below 0 or above ``2**31 - 1``, no PRNG key, NaN or infinite
    weights): the message names the field or array. Nothing is written.

    Under ``jax.distributed`` every process must call it: it is collective, and every process
    reads the whole checkpoint.
    """
    path = find_checkpoint(directory, step=step)
    source = str(path)
    if path.name == FILENAME:
        arrays, meta = read_arrays(path, kind="checkpoint")
        check_meta(meta, source)
    else:
        arrays, meta = read_step(path.parent, int(path.name), source)
    if config is not None:
        diff = config_diff(meta["config"], dict(config))
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
    if not _is_key(key):
        raise ValueError(
            f"{source} is not a valid checkpoint: array 'key' is not a typed PRNG key (as "
            "jax.random.key makes)."
        )
    check_finite(arrays, source)
    return Checkpoint(
        model=fill_like(parts["model"], model, source=source, what="model"),
        opt_state=fill_like(parts["opt_state"], opt_state, source=source, what="optimizer state"),
        step=meta["step"],
        key=key,
        data_state=meta["data_state"],
        config=meta["config"],
        history=meta.get("history", {}),
    )
