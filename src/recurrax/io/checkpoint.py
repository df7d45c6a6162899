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

**Checked on load.** orbax and tensorstore do not reliably checksum array contents, so the
metadata holds the SHA-256 of every array and of itself, verified after reading. A step whose
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

import hashlib
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
MAX_STEP = 2**31 - 1  # steps are counted in int32 by the training step
DEFAULT_KEEP = 3
FORMAT = "recurrax-checkpoint"
VERSION = 1
_ITEMS = ("meta", "arrays")  # orbax's item names: <step>/meta, <step>/arrays
_STEP_NAME = re.compile(r"0|[1-9][0-9]*")  # str(step), as orbax names step directories
_DTYPES = (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
    "uint64", "uint32", "uint16", "uint8", "bool",
)  # fmt: skip
_INSTALL = "training checkpoints need orbax-checkpoint: pip install 'recurrax[train]'."


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


def _orbax():
    """``orbax.checkpoint``, imported on first use: ``import recurrax`` does not need it."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    return ocp


def require_backend() -> None:
    """Raise the ``ImportError`` (naming the extra to install) that saving or loading would
    raise without orbax-checkpoint: for callers that check before any work."""
    _orbax()


def _manager(directory: Path, keep: int | None, *, create: bool):
    ocp = _orbax()
    from orbax.checkpoint.checkpoint_managers import LatestN

    options = ocp.CheckpointManagerOptions(
        preservation_policy=LatestN(keep),
        enable_async_checkpointing=False,  # a save is complete (and renamed) when it returns
        create=create,
        cleanup_tmp_directories=create,  # what an interrupted save left: removed before saving
    )
    # orbax wants an absolute path; the caller's form is kept for the paths returned.
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=_ITEMS)


def checkpoint_steps(directory) -> list[int]:
    """The steps saved (completely) in ``directory``, in increasing order; ``[]`` if none.

    A step is a directory named by its number (``<directory>/22``); what an interrupted save
    left (``<directory>/22.orbax-checkpoint-tmp``) is not one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name) for p in directory.iterdir() if _STEP_NAME.fullmatch(p.name) and p.is_dir()
    )


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


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _seal(meta: dict) -> dict:
    """``meta`` with ``sha256_meta``: the SHA-256 of the rest, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "sha256_meta"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**body, "sha256_meta": hashlib.sha256(canonical).hexdigest()}


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
    ocp = _orbax()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "data_state": dict(data_state),
        "config": dict(config),
        "history": dict(history or {}),
    }
    _check_meta(meta, "the checkpoint to save", saving=True)
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
        if dtype not in _DTYPES:
            raise TypeError(f"array {name!r} has dtype {dtype}; a checkpoint holds {_DTYPES}.")
        entry.update(dtype=dtype, shape=list(host.shape), sha256=_digest(host))
        arrays[str(len(entries))] = host
        entries.append(entry)
    with _manager(directory, keep, create=True) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                meta=ocp.args.JsonSave(_seal({**meta, "arrays": entries})),
                arrays=ocp.args.StandardSave(arrays),
            ),
            force=True,  # the checks above decided; orbax's save interval does not apply
        )
    return directory / str(step)


def _same_run(directory: Path, step: int, config: dict) -> Path:
    """The path of ``step``, saved already: a no-op save, unless another run saved it."""
    path = directory / str(step)
    with _manager(directory, None, create=False) as manager:
        saved = _read_meta(manager, step, str(path)).get("config")
    diff = _config_diff(saved, config) if isinstance(saved, dict) else ["config: not a dict"]
    if diff:
        raise ValueError(
            f"cannot save step {step} to {directory}: that step is saved already, by a run with "
            "other settings (" + "; ".join(diff) + "), and is not overwritten. Save to another "
            "directory."
        )
    return path


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


def _check_meta(meta, source: str, *, saving: bool = False) -> None:
    """``ValueError`` naming the first field of a checkpoint's metadata that is missing or
    wrong."""

    def bad(field: str, what: str):
        if saving:
            return ValueError(f"{field.removeprefix('field ')} {what}.")
        return ValueError(
            f"{source} is not a valid checkpoint: {field} {what}. Its checksums hold, so it "
            "was written this way; use a checkpoint written by recurrax.save_checkpoint."
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


def _check_entries(meta: dict, source: str) -> list[dict]:
    """The ``arrays`` field of an orbax checkpoint's metadata, checked entry by entry."""

    def bad(field: str, what: str):
        return ValueError(
            f"{source} is not a valid checkpoint: field {field!r} {what}. Use a checkpoint "
            "written by recurrax.save_checkpoint."
        )

    entries = meta.get("arrays")
    if not isinstance(entries, list):
        raise bad("arrays", "is missing or not a list (it must list the arrays saved)")
    names = set()
    for i, e in enumerate(entries):
        where = f"arrays[{i}]"
        if not isinstance(e, dict):
            raise bad(where, f"must be a dict; it is {e!r}")
        name = e.get("name")
        if not isinstance(name, str) or name in names:
            raise bad(f"{where}.name", f"must be a string naming one array; it is {name!r}")
        names.add(name)
        if e.get("dtype") not in _DTYPES:
            raise bad(f"{where}.dtype", f"must be one of {_DTYPES}; it is {e.get('dtype')!r}")
        shape = e.get("shape")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise bad(f"{where}.shape", f"must be a list of sizes >= 0; it is {shape!r}")
        digest = e.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"{where}.sha256", f"must be a SHA-256 in hex; it is {digest!r}")
        if "key_impl" in e and not isinstance(e["key_impl"], str):
            raise bad(f"{where}.key_impl", f"must be a string; it is {e['key_impl']!r}")
    return entries


def _restore(manager, step: int, source: str, what: str, **items):
    """``manager.restore`` of the named items; any failure to read is a ``ValueError``."""
    ocp = _orbax()
    try:
        return manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax and tensorstore raise many kinds; all mean "unreadable"
        detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        raise ValueError(
            f"{source} is corrupted or {what} cannot be read ({detail}). It was not written "
            "completely or was damaged since; use an intact checkpoint."
        ) from None


def _read_meta(manager, step: int, source: str) -> dict:
    """The metadata of ``step``, its checksum and format verified."""
    ocp = _orbax()
    meta = _restore(manager, step, source, "incomplete: its metadata", meta=ocp.args.JsonRestore())[
        "meta"
    ]
    if not isinstance(meta, dict) or _seal(meta).get("sha256_meta") != meta.get("sha256_meta"):
        raise ValueError(
            f"{source} is corrupted: the SHA-256 of its metadata does not match. It was "
            "damaged since it was written; use an intact checkpoint."
        )
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{source} holds format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this recurrax reads {FORMAT!r} version {VERSION}."
        )
    return meta


def _read_orbax(directory: Path, step: int, source: str) -> tuple[dict[str, Any], dict]:
    """The arrays (by name) and metadata of ``step``, every array checked against its SHA-256."""
    ocp = _orbax()
    with _manager(directory, None, create=False) as manager:
        meta = _read_meta(manager, step, source)
        _check_meta(meta, source)
        if meta["step"] != step:
            raise ValueError(
                f"{source} is not a valid checkpoint: field 'step' is {meta['step']}, but the "
                f"checkpoint is the one of step {step} (its directory's name)."
            )
        entries = _check_entries(meta, source)
        if not any(e["name"] == "key" for e in entries):
            raise ValueError(f"{source} holds no PRNG key: it is not a complete checkpoint.")
        like = {str(i): np.empty(e["shape"], jnp.dtype(e["dtype"])) for i, e in enumerate(entries)}
        restored = _restore(
            manager,
            step,
            source,
            "truncated: its arrays",
            arrays=ocp.args.StandardRestore(like),
        )["arrays"]
    arrays = {}
    for i, e in enumerate(entries):
        x = restored.get(str(i))
        if (
            not isinstance(x, np.ndarray)
            or list(x.shape) != e["shape"]
            or jnp.dtype(x.dtype).name != e["dtype"]
            or _digest(x) != e["sha256"]
        ):
            raise ValueError(
                f"{source} is corrupted: array {e['name']!r} does not match the SHA-256 (or "
                "shape and dtype) its metadata records. It was damaged since it was written; "
                "use an intact checkpoint."
            )
        if "key_impl" in e:
            try:
                x = jax.random.wrap_key_data(x, impl=e["key_impl"])
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{source} is not a valid checkpoint: array {e['name']!r} is not the data of "
                    f"a {e['key_impl']!r} PRNG key ({err})."
                ) from None
        arrays[e["name"]] = x
    return arrays, meta


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
        _check_meta(meta, source)
    else:
        arrays, meta = _read_orbax(path.parent, int(path.name), source)
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
    if not _is_key(key):
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
