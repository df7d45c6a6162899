"""recurrax's array files: the safetensors layout, checksummed and written atomically.

A file is what ``safetensors`` writes, so ``safetensors.numpy.load_file`` and other tools read
it::

    uint64 n (little-endian) | header: n bytes of JSON | the arrays' bytes, one after another

    header = {"<array name>": {"dtype": "F32", "shape": [7, 16], "data_offsets": [begin, end]},
              ...,
              "__metadata__": {"format": "recurrax", "version": "2", "kind": "weights",
                               "meta": "<JSON>", "sha256_header": "<hex>",
                               "sha256_data": "<hex>", ...}}

Metadata values are strings (the format allows nothing else), so structured values are JSON
inside them. ``sha256_data`` is the SHA-256 of the arrays' bytes; ``sha256_header`` that of the
header without the two checksums, as canonical JSON (sorted keys, no spaces). A truncated or
corrupted file, or a file of another ``kind``, is reported instead of loading wrong numbers.
Nothing in a file is executed on load: it is JSON and raw bytes.

Writes are atomic: the bytes go to a temporary file in the same directory, which is then renamed
over the destination (``os.replace``), so a crash mid-write leaves the previous file intact.
Files of recurrax's first format (``b"RECURRAX"`` first) are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["write_arrays", "read_arrays", "remove_leftovers"]

_VERSION = "2"
_LEN = struct.Struct("<Q")
_INTACT = "It was not written completely or was damaged since; use an intact copy."
_CHECKSUMS = ("sha256_header", "sha256_data")
_MAX_HEADER = 100 << 20  # safetensors' own limit on the header's size

# NumPy dtype name <-> safetensors dtype name.
_TO_ST = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
_FROM_ST = {v: k for k, v in _TO_ST.items()}


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def remove_leftovers(path) -> list[Path]:
    """Remove the temporary files that interrupted writes of ``path`` left beside it.

    They are named as :func:`write_arrays` names them while it writes, ``.<name>.<random>.tmp``
    in ``path``'s directory; a write that failed removes its own, so these remain only from a
    process that was killed mid-write. Returns the paths removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def write_arrays(
    path,
    arrays: dict[str, Any],
    *,
    kind: str,
    meta: dict | None = None,
    info: dict[str, str] | None = None,
) -> Path:
    """Atomically write named arrays and JSON-able ``meta`` to ``path``; return the path.

    **Arguments:** ``path`` (str or Path; its directory must exist), ``arrays`` (name -> array of
    any shape and of a dtype safetensors has: floats, ints, bools; typed PRNG keys allowed),
    ``kind`` (a label checked on read, e.g. ``"weights"``), ``meta`` (a JSON-serialisable dict,
    stored as JSON text under the metadata key ``"meta"`` and returned by :func:`read_arrays`),
    ``info`` (more metadata strings for other tools to read, e.g. ``{"config": "<JSON>"}``).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: directory {path.parent} does not exist; create it first."
        )
    remove_leftovers(path)
    header: dict[str, Any] = {}
    blobs, offset, keys = [], 0, {}
    digest = hashlib.sha256()
    for name, x in arrays.items():
        if _is_key(x):
            keys[name] = str(jax.random.key_impl(x))
            x = jax.random.key_data(x)
        host = np.asarray(x)
        dtype = _TO_ST.get(jnp.dtype(host.dtype).name)
        if dtype is None:
            raise TypeError(
                f"array {name!r} has dtype {host.dtype}, which a safetensors file cannot hold "
                f"(it holds {sorted(_TO_ST)}); cast it first."
            )
        blob = np.ascontiguousarray(host).astype(host.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(host.shape)}
        header[name]["data_offsets"] = [offset, offset + len(blob)]
        digest.update(blob)
        blobs.append(blob)
        offset += len(blob)
    metadata = {**(info or {}), "format": "recurrax", "version": _VERSION, "kind": kind}
    metadata["meta"] = json.dumps(meta or {}, sort_keys=True)
    if keys:
        metadata["prng_keys"] = json.dumps(keys, sort_keys=True)
    header["__metadata__"] = metadata
    metadata["sha256_header"] = hashlib.sha256(_canonical(header)).hexdigest()
    metadata["sha256_data"] = digest.hexdigest()
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # as safetensors pads: the arrays start 8-byte aligned
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_LEN.pack(len(head)) + head)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parse_header(data: bytes, path: Path, kind: str) -> tuple[dict, int]:
    """The JSON header and where the arrays start; errors for a foreign or damaged file."""
    if len(data) < _LEN.size:
        raise ValueError(f"{path} is truncated: it holds only {len(data)} bytes. {_INTACT}")
    (n,) = _LEN.unpack_from(data)
    start = data[_LEN.size : _LEN.size + 1]
    if start not in (b"{", b"") or n > _MAX_HEADER:
        raise ValueError(
            f"{path} is not a recurrax {kind} file (it is not a safetensors file: no JSON "
            "header after its first 8 bytes): pass a file written by recurrax."
        )
    if len(data) < _LEN.size + n:
        raise ValueError(f"{path} is truncated: its header is cut short. {_INTACT}")
    try:
        header = json.loads(data[_LEN.size : _LEN.size + n])
        metadata = header.get("__metadata__")
    except (ValueError, AttributeError):
        raise ValueError(
            f"{path} is corrupted: its header is not the JSON recurrax writes. {_INTACT}"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != "recurrax":
        raise ValueError(
            f"{path} is a safetensors file, but not one written by recurrax (its metadata "
            "has no format 'recurrax', so it carries no checksum): pass a file written by "
            "recurrax.save_weights."
        )
    return header, _LEN.size + n


def read_arrays(path, *, kind: str) -> tuple[dict[str, Any], dict]:
    """Read and validate a file written by :func:`write_arrays`; return ``(arrays, meta)``.

    Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` when it is not a
    recurrax file, holds another ``kind``, is truncated, or fails its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} file at {path}.")
    data = path.read_bytes()
    if data.startswith(_V1_MAGIC):
        return _read_v1(data, path, kind)
    header, begin = _parse_header(data, path, kind)
    metadata = header["__metadata__"]
    stripped = {
        **header,
        "__metadata__": {k: v for k, v in metadata.items() if k not in _CHECKSUMS},
    }
    if hashlib.sha256(_canonical(stripped)).hexdigest() != metadata.get("sha256_header"):
        raise ValueError(
            f"{path} is corrupted: the SHA-256 of its header does not match. {_INTACT}"
        )
    if metadata.get("version") != _VERSION:
        raise ValueError(
            f"{path} has format version {metadata.get('version')}; this recurrax reads "
            f"version {_VERSION} (and the first format)."
        )
    if metadata.get("kind") != kind:
        raise ValueError(
            f"{path} holds a {metadata.get('kind')!r} file, not a {kind!r} file: pass the right "
            "file."
        )
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    payload = memoryview(data)[begin:]
    size = max((e["data_offsets"][1] for e in entries.values()), default=0)
    _check_payload(payload, size, metadata["sha256_data"], path)
    keys = json.loads(metadata.get("prng_keys", "{}"))
    arrays = {}
    for name, e in entries.items():
        raw = payload[e["data_offsets"][0] : e["data_offsets"][1]]
        dtype = jnp.dtype(_FROM_ST[e["dtype"]]).newbyteorder("<")
        x = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(dtype.newbyteorder("="))
        arrays[name] = jax.random.wrap_key_data(x, impl=keys[name]) if name in keys else x
    return arrays, json.loads(metadata.get("meta", "{}"))


def _check_payload(payload, size: int, sha256: str, path) -> None:
    """The arrays' bytes of a file against its header: ``size`` bytes with SHA-256 ``sha256``
    (hex); a ``ValueError`` for a truncated or corrupted file."""
    if len(payload) != size:
        raise ValueError(
            f"{path} is truncated: its header declares {size} bytes of arrays but the file "
            f"holds {len(payload)}. {_INTACT}"
        )
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ValueError(
            f"{path} is corrupted: the SHA-256 of its arrays does not match the one in its "
            f"header. {_INTACT}"
        )


# recurrax's first format: b"RECURRAX" | uint64 n | n bytes of JSON | SHA-256 of the JSON | data.
_V1_MAGIC = b"RECURRAX"
_V1_DIGEST = 32


def _read_v1(data: bytes, path: Path, kind: str) -> tuple[dict[str, Any], dict]:
    n_head = len(_V1_MAGIC) + _LEN.size
    if len(data) < n_head:
        raise ValueError(f"{path} is truncated: it holds only {len(data)} bytes. {_INTACT}")
    (head_len,) = _LEN.unpack_from(data, len(_V1_MAGIC))
    head = data[n_head : n_head + head_len]
    check = data[n_head + head_len : n_head + head_len + _V1_DIGEST]
    if len(head) < head_len or len(check) < _V1_DIGEST:
        raise ValueError(f"{path} is truncated: its header is cut short. {_INTACT}")
    if hashlib.sha256(head).digest() != check:
        raise ValueError(
            f"{path} is corrupted: the SHA-256 of its header does not match. {_INTACT}"
        )
    header = json.loads(head)
    if header.get("kind") != kind:
        raise ValueError(
            f"{path} holds a {header.get('kind')!r} file, not a {kind!r} file: pass the right file."
        )
    payload = memoryview(data)[n_head + head_len + _V1_DIGEST :]
    _check_payload(payload, header["payload_nbytes"], header["payload_sha256"], path)
    arrays = {}
    for e in header["arrays"]:
        raw = payload[e["offset"] : e["offset"] + e["nbytes"]]
        x = np.frombuffer(raw, dtype=jnp.dtype(e["dtype"])).reshape(e["shape"]).copy()
        if "key_impl" in e:
            x = jax.random.wrap_key_data(x, impl=e["key_impl"])
        arrays[e["name"]] = x
    return arrays, header["meta"]
