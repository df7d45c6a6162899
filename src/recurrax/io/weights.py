"""Save and load the weights of a cell, or of any pytree built from cells, as one file.

The file is self-describing and validated on load::

    b"RECURRAX" | uint64 length | header (JSON) | SHA-256 of the header | the arrays' bytes

The header records the format version, what the file holds (``kind``), free metadata, and for
every array its pytree path (``".cells[0].kernel"``), shape, dtype and byte range, plus the
SHA-256 of all the array bytes. So a truncated or corrupted file, or a file written for another
model, is reported as such instead of loading wrong numbers. Writes are atomic: the bytes go to
a temporary file in the same directory, which is then renamed over the destination
(``os.replace``), so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "save_weights",
    "load_weights",
    "write_arrays",
    "read_arrays",
    "tree_arrays",
    "fill_like",
]

_MAGIC = b"RECURRAX"
_VERSION = 1
_LEN = struct.Struct("<Q")
_DIGEST = 32  # bytes of the header's SHA-256, written right after the header
_INTACT = "It was not written completely or was damaged since; use an intact copy."


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def tree_arrays(tree) -> dict[str, Any]:
    """The array leaves of ``tree`` by pytree path, e.g. ``{".cells[0].kernel": Array}``.

    Non-array leaves (sizes, flags, functions, ``None``) are not included: they are the
    structure, which the loader takes from a ``like`` tree.
    """
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
    return {jax.tree_util.keystr(path): x for path, x in leaves}


def _to_numpy(x) -> tuple[np.ndarray, str | None]:
    """``(host array, PRNG implementation or None)``; typed PRNG keys are stored as key data."""
    if _is_key(x):
        return np.asarray(jax.random.key_data(x)), str(jax.random.key_impl(x))
    return np.asarray(x), None  # tobytes() writes C order whatever the layout


def write_arrays(path, arrays: dict[str, Any], *, kind: str, meta: dict | None = None) -> Path:
    """Atomically write named arrays and JSON-able ``meta`` to ``path``; return the path.

    **Arguments:** ``path`` (str or Path; its directory must exist), ``arrays`` (name -> array of
    any shape; typed PRNG keys allowed), ``kind`` (a label checked on read, e.g. ``"weights"``),
    ``meta`` (a JSON-serialisable dict).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: directory {path.parent} does not exist; create it first."
        )
    entries, blobs, offset = [], [], 0
    digest = hashlib.sha256()
    for name, x in arrays.items():
        host, key_impl = _to_numpy(x)
        blob = host.tobytes()
        entry = {"name": name, "shape": list(host.shape), "dtype": host.dtype.name}
        if key_impl is not None:
            entry["key_impl"] = key_impl
        entries.append({**entry, "offset": offset, "nbytes": len(blob)})
        digest.update(blob)
        blobs.append(blob)
        offset += len(blob)
    header = {
        "format": "recurrax",
        "version": _VERSION,
        "kind": kind,
        "meta": meta or {},
        "arrays": entries,
        "payload_nbytes": offset,
        "payload_sha256": digest.hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + _LEN.pack(len(head)) + head + hashlib.sha256(head).digest())
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_arrays(path, *, kind: str) -> tuple[dict[str, Any], dict]:
    """Read and validate a file written by :func:`write_arrays`; return ``(arrays, meta)``.

    Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` when it is not a
    recurrax file, holds another ``kind``, is truncated, or fails its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} file at {path}.")
    data = path.read_bytes()
    n_head = len(_MAGIC) + _LEN.size
    if not data.startswith(_MAGIC) and not (len(data) < len(_MAGIC) and _MAGIC.startswith(data)):
        raise ValueError(
            f"{path} is not a recurrax {kind} file (it does not start with {_MAGIC!r}): "
            "pass a file written by recurrax."
        )
    if len(data) < n_head:
        raise ValueError(f"{path} is truncated: it holds only {len(data)} bytes. {_INTACT}")
    (head_len,) = _LEN.unpack_from(data, len(_MAGIC))
    head = data[n_head : n_head + head_len]
    check = data[n_head + head_len : n_head + head_len + _DIGEST]
    if len(head) < head_len or len(check) < _DIGEST:
        raise ValueError(f"{path} is truncated: its header is cut short. {_INTACT}")
    if hashlib.sha256(head).digest() != check:
        raise ValueError(
            f"{path} is corrupted: the SHA-256 of its header does not match. {_INTACT}"
        )
    header = json.loads(head)
    if header.get("version") != _VERSION:
        raise ValueError(
            f"{path} has format version {header.get('version')}; this recurrax reads "
            f"version {_VERSION}."
        )
    if header.get("kind") != kind:
        raise ValueError(
            f"{path} holds a {header.get('kind')!r} file, not a {kind!r} file: pass the right file."
        )
    payload = memoryview(data)[n_head + head_len + _DIGEST :]
    if len(payload) != header["payload_nbytes"]:
        raise ValueError(
            f"{path} is truncated: its header declares {header['payload_nbytes']} bytes of "
            f"arrays but the file holds {len(payload)}. {_INTACT}"
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError(
            f"{path} is corrupted: the SHA-256 of its arrays does not match the one in its "
            f"header. {_INTACT}"
        )
    arrays = {}
    for e in header["arrays"]:
        raw = payload[e["offset"] : e["offset"] + e["nbytes"]]
        x = np.frombuffer(raw, dtype=jnp.dtype(e["dtype"])).reshape(e["shape"]).copy()
        if "key_impl" in e:
            x = jax.random.wrap_key_data(x, impl=e["key_impl"])
        arrays[e["name"]] = x
    return arrays, header["meta"]


def _describe(x) -> tuple[tuple[int, ...], str]:
    if _is_key(x):
        return tuple(x.shape), f"key<{jax.random.key_impl(x)}>"
    return tuple(np.shape(x)), jnp.dtype(x.dtype).name


def fill_like(arrays: dict[str, Any], like, *, source: str, what: str = "model"):
    """``like`` with its array leaves replaced by ``arrays`` (matched by pytree path).

    Raises ``ValueError`` naming the missing and unexpected paths, or the first leaf whose shape
    or dtype differs; ``source`` names where ``arrays`` came from in the messages.
    """
    dynamic, static = eqx.partition(like, eqx.is_array)
    flat, treedef = jax.tree_util.tree_flatten_with_path(dynamic)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in set(names)]
    if missing or extra:
        raise ValueError(
            f"{source} does not match the {what}: "
            + "; ".join(
                s
                for s in (
                    f"arrays the {what} needs but the file lacks: {missing}" if missing else "",
                    f"arrays in the file the {what} does not have: {extra}" if extra else "",
                )
                if s
            )
            + f". Build the {what} with the same structure (cell types, layers, options) as the "
            "one that was saved."
        )
    leaves = []
    for name, (_, x) in zip(names, flat):
        new = arrays[name]
        if _describe(new) != _describe(x):
            (s_new, d_new), (s_old, d_old) = _describe(new), _describe(x)
            raise ValueError(
                f"{source} does not match the {what}: array {name!r} is {d_new}{list(s_new)} "
                f"in the file but {d_old}{list(s_old)} in the {what}. Build the {what} with "
                "the sizes and dtype it was saved with."
            )
        leaves.append(new if _is_key(new) else jnp.asarray(new))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def save_weights(path, model, *, meta: dict | None = None) -> Path:
    """Save every array of ``model`` (a cell, or any pytree built from cells) to ``path``.

    **Arguments:**

    - ``path``: the file to write (its directory must exist). It is replaced atomically.
    - ``model``: a cell, wrapper, ``MultiRNNCell``, an ``eqx.Module`` holding cells, or any
      pytree; its array leaves are saved under their pytree paths with shape and dtype.
    - ``meta``: optional JSON-serialisable dict stored alongside (e.g. how to rebuild the model).

    **Returns:** the path written.

    **Example:**

    >>> recurrax.save_weights("lstm.rcx", cell)
    >>> same = recurrax.load_weights("lstm.rcx", recurrax.BasicLSTMCell(64, 8, key=key))
    """
    return write_arrays(path, tree_arrays(model), kind="weights", meta=meta)


def load_weights(path, like):
    """Load weights saved by :func:`save_weights` into a model shaped like ``like``.

    **Arguments:**

    - ``path``: the file to read.
    - ``like``: a model of the same structure as the saved one (same cell types, sizes, dtypes);
      its own weights are ignored, its configuration (static fields) is kept.

    **Returns:** ``like`` with every array replaced by the saved one, bit for bit.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    recurrax weights file, is truncated or corrupted (checksum), or does not match ``like``
    (missing or unexpected arrays, other shapes or dtypes); the message says which.
    """
    arrays, _ = read_arrays(path, kind="weights")
    return fill_like(arrays, like, source=str(path))
