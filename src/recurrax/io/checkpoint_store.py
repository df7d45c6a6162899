"""The orbax-checkpoint side of :mod:`recurrax.io.checkpoint`: the step directories, writing
one step, and reading one back with its metadata and every array checked against its SHA-256.

orbax-checkpoint (the ``train`` extra) is imported on first use: ``import recurrax`` does not
need it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .checkpoint_checks import FORMAT, VERSION, check_entries, check_meta, digest, seal

__all__ = ["checkpoint_steps", "read_meta", "read_step", "require_backend", "write_step"]

_ITEMS = ("meta", "arrays")  # orbax's item names: <step>/meta, <step>/arrays
_STEP_NAME = re.compile(r"0|[1-9][0-9]*")  # str(step), as orbax names step directories
_INSTALL = "training checkpoints need orbax-checkpoint: pip install 'recurrax[train]'."


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
    """orbax's manager of the step directories in ``directory``, keeping the last ``keep``."""
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


def write_step(directory: Path, step: int, keep: int | None, meta: dict, arrays: dict) -> None:
    """Write ``meta`` (sealed JSON) and ``arrays`` (NumPy, by name) as step ``step``; orbax
    writes to a temporary directory and renames it once complete, then keeps the last ``keep``
    steps. Collective under ``jax.distributed`` (only process 0 writes)."""
    ocp = _orbax()
    with _manager(directory, keep, create=True) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                meta=ocp.args.JsonSave(meta), arrays=ocp.args.StandardSave(arrays)
            ),
            force=True,  # the caller's checks decided; orbax's save interval does not apply
        )


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


def _meta(manager, step: int, source: str) -> dict:
    """The metadata of ``step``, its checksum and format verified."""
    ocp = _orbax()
    meta = _restore(manager, step, source, "incomplete: its metadata", meta=ocp.args.JsonRestore())[
        "meta"
    ]
    if not isinstance(meta, dict) or seal(meta).get("sha256_meta") != meta.get("sha256_meta"):
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


def read_step(directory: Path, step: int, source: str) -> tuple[dict[str, Any], dict]:
    """The arrays (by name) and metadata of ``step``, every array checked against its SHA-256."""
    ocp = _orbax()
    with _manager(directory, None, create=False) as manager:
        meta = _meta(manager, step, source)
        check_meta(meta, source)
        if meta["step"] != step:
            raise ValueError(
                f"{source} is not a valid checkpoint: field 'step' is {meta['step']}, but the "
                f"checkpoint is the one of step {step} (its directory's name)."
            )
        entries = check_entries(meta, source)
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
            or digest(x) != e["sha256"]
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


def read_meta(directory: Path, step: int, source: str) -> dict:
    """The metadata of ``step`` in ``directory``, its checksum and format verified."""
    with _manager(directory, None, create=False) as manager:
        return _meta(manager, step, source)
