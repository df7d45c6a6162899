"""Read a TF1 ``tf.train.Saver`` checkpoint without TensorFlow.

A checkpoint (TensorFlow's "V2" tensor bundle, the default since TF 0.12) is a prefix and
files beside it::

    model.ckpt-100.index                   a table (``sstable.py``): "" -> BundleHeaderProto,
                                           variable name -> BundleEntryProto
    model.ckpt-100.data-00000-of-00002     the tensors' bytes, little-endian, C order
    model.ckpt-100.data-00001-of-00002
    checkpoint                             text: model_checkpoint_path: "model.ckpt-100"

The two protobuf messages are decoded from their wire format here, reading only the fields a
bundle uses:

    BundleHeaderProto  1 num_shards, 2 endianness (0 little, 1 big), 3 version {1 producer,
                       2 min_consumer}
    BundleEntryProto   1 dtype, 2 shape {2 dim {1 size}}, 3 shard_id, 4 offset, 5 size,
                       6 crc32c (masked, fixed32), 7 slices (a partitioned variable)

A partitioned variable (saved in slices by a partitioner) has an entry without data that lists
its slices' extents (TensorSliceProto: 1 extent {1 start, 2 length, absent: the whole
dimension}), and one entry per slice under a key that TensorFlow's OrderedCode builds:
``\x00``, the escaped name, ``\x00\x01``, then the number of dimensions and each slice's
``(start, length)`` as order-preserving numbers. The slice keys therefore sort by name, then by
their extents; the slices are matched to the extents in that order and assembled.

Every entry's CRC-32C is checked against its bytes, as are the index's block CRCs.
"""

from __future__ import annotations

import codecs
import re
import struct
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .crc32c import crc32c, mask
from .sstable import TableError, read_table, read_varint

__all__ = ["load_tf1_checkpoint"]

# TensorFlow's DataType enum -> NumPy dtype, for the types a variable can hold.
_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    8: np.dtype("<c8"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: jnp.dtype("bfloat16"),
    17: np.dtype("<u2"),
    18: np.dtype("<c16"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
_DT_STRING = 7
_DT_NAMES = {11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16"}
_DT_NAMES.update({20: "resource", 21: "variant"})
_TF2_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_HDF5 = b"\x89HDF\r\n\x1a\n"
_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")
_INTACT = "Use an intact copy of the checkpoint."


def _fields(buf, where: str) -> dict[int, list]:
    """Decode a protobuf message: ``{field number: [values]}`` (varints and fixed-size fields
    as ints, length-delimited fields as memoryviews)."""
    out: dict[int, list] = {}
    pos = 0
    try:
        while pos < len(buf):
            tag, pos = read_varint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                value, pos = read_varint(buf, pos)
            elif wire == 1:
                value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
            elif wire == 2:
                n, pos = read_varint(buf, pos)
                value, pos = buf[pos : pos + n], pos + n
            elif wire == 5:
                value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
            else:
                raise TableError(f"wire type {wire}")
            if pos > len(buf):
                raise TableError("a field runs past the end")
            out.setdefault(number, []).append(value)
    except (TableError, struct.error) as e:
        raise TableError(f"the record of {where} is not a valid protobuf message ({e})") from None
    return out


def _int(fields: dict, number: int, default: int = 0) -> int:
    """The last value of an int64 field, two's complement undone."""
    value = fields.get(number, [default])[-1]
    return value - (1 << 64) if value >= 1 << 63 else value


def _resolve(path) -> Path:
    """The checkpoint prefix that ``path`` (prefix, directory, or one of its files) names."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            raise ValueError(
                f"{path} is a SavedModel directory, not a checkpoint. Its variables are the "
                f"checkpoint with prefix {path / 'variables' / 'variables'}: pass that."
            )
        state = path / "checkpoint"
        if not state.is_file():
            found = sorted(p.name[: -len(".index")] for p in path.glob("*.index"))
            raise FileNotFoundError(
                f"{path} holds no 'checkpoint' state file naming its latest checkpoint"
                + (f"; pass one of the prefixes {found} in it" if found else "")
                + ". Pass the checkpoint prefix (e.g. 'model.ckpt-100'), or its directory."
            )
        text = state.read_text(errors="replace")
        match = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
        if match is None:
            raise ValueError(
                f"{state} does not name a model_checkpoint_path; it is not a TensorFlow "
                "checkpoint state file. Pass the checkpoint prefix instead."
            )
        named = Path(codecs.escape_decode(match.group(1).encode())[0].decode())
        prefix = named if named.is_absolute() else path / named
        if not Path(f"{prefix}.index").is_file() and Path(f"{path / named.name}.index").is_file():
            prefix = path / named.name  # the directory was moved since it was written
        return prefix
    if path.suffix == ".index" or _DATA.search(path.name):
        return path.with_name(_DATA.sub("", path.name.removesuffix(".index")))
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(len(_HDF5))
        if head == _HDF5:
            raise ValueError(
                f"{path} is an HDF5 file (Keras model.save / save_weights .h5), not a "
                "TensorFlow checkpoint. Read its arrays with h5py, or load it in Keras and save "
                "a checkpoint with tf.compat.v1.train.Saver."
            )
        if path.name in ("saved_model.pb", "saved_model.pbtxt"):
            raise ValueError(
                f"{path} is a SavedModel graph, not a checkpoint. Its variables are the "
                f"checkpoint with prefix {path.parent / 'variables' / 'variables'}: pass that."
            )
    return path


def _header(fields: dict, index: Path) -> int:
    """Check the bundle header; return the number of shards."""
    if _int(fields, 2) != 0:
        raise ValueError(
            f"{index} was written on a big-endian machine; only little-endian checkpoints "
            "are read. Re-save it on a little-endian machine (x86, ARM)."
        )
    version = _fields(fields.get(3, [b""])[-1], "the bundle version")
    if _int(version, 2) > 1:
        raise ValueError(
            f"{index} needs a reader of bundle version {_int(version, 2)} or newer; this one "
            "reads version 1. Re-save it with tf.compat.v1.train.Saver."
        )
    shards = _int(fields, 1, 1)
    if shards < 1:
        raise ValueError(f"{index} declares {shards} data shards. {_INTACT}")
    return shards


def _string_tensor(raw, count: int, name: str, data: Path) -> tuple[np.ndarray, int]:
    """Decode DT_STRING bytes: varint64 lengths, their masked CRC, then the strings.

    Returns the strings and the entry's CRC, which TensorFlow takes over each length as a
    fixed32 (fixed64 past 4 GiB), the lengths' masked CRC, then the strings (not over the bytes
    as stored).
    """
    lengths, pos, crc = [], 0, 0
    for _ in range(count):
        n, pos = read_varint(raw, pos)
        lengths.append(n)
        crc = crc32c(struct.pack("<I" if n < 1 << 32 else "<Q", n), crc)
    check = bytes(raw[pos : pos + 4])
    if len(check) < 4 or struct.pack("<I", mask(crc)) != check:
        raise ValueError(
            f"{data} is corrupted: the CRC-32C of the string lengths of {name!r} does not "
            f"match. {_INTACT}"
        )
    crc = crc32c(check, crc)
    pos += 4
    out = np.empty(count, dtype=object)
    for i, n in enumerate(lengths):
        out[i], pos = bytes(raw[pos : pos + n]), pos + n
        crc = crc32c(out[i], crc)
    return out, crc


def _tensor(name: str, entry: dict, prefix: Path, shards: int, files: dict) -> np.ndarray:
    dtype = _int(entry, 1)
    if dtype != _DT_STRING and dtype not in _DTYPES:
        raise ValueError(
            f"{prefix}.index: variable {name!r} has TensorFlow dtype "
            f"{_DT_NAMES.get(dtype, dtype)!r}, which has no NumPy equivalent here (numbers, "
            "bools and strings are read). Save the checkpoint without it (Saver(var_list=...))."
        )
    shape_fields = _fields(entry.get(2, [b""])[-1], name)
    shape = [_int(_fields(d, name), 1) for d in shape_fields.get(2, [])]
    shard, offset, size = _int(entry, 3), _int(entry, 4), _int(entry, 5)
    if not 0 <= shard < shards or offset < 0 or size < 0 or min(shape, default=0) < 0:
        raise ValueError(f"{prefix}.index: the entry of {name!r} is invalid. {_INTACT}")
    data = Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}")
    if data not in files:
        if not data.is_file():
            raise FileNotFoundError(
                f"the checkpoint {prefix} lacks its data shard {data.name} (it has {shards} "
                "shards, each a .data-NNNNN-of-NNNNN file beside the .index): copy all of them."
            )
        files[data] = memoryview(data.read_bytes())
    raw = files[data][offset : offset + size]
    if len(raw) < size:
        raise ValueError(
            f"{data} is truncated: {name!r} needs bytes {offset}..{offset + size} but the file "
            f"holds {len(files[data])}. {_INTACT}"
        )
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == _DT_STRING:
        value, crc = _string_tensor(raw, count, name, data)
    else:
        value, crc = raw, crc32c(raw)
    if mask(crc) != entry.get(6, [None])[-1]:
        raise ValueError(
            f"{data} is corrupted: the CRC-32C of {name!r} (bytes {offset}..{offset + size}) "
            f"does not match the one in the index. {_INTACT}"
        )
    if dtype == _DT_STRING:
        return value.reshape(shape)
    if size != count * _DTYPES[dtype].itemsize:
        raise ValueError(f"{prefix}.index: {name!r} has {size} bytes for shape {shape}. {_INTACT}")
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).copy()


def _slice_owner(key: bytes) -> str:
    """The variable name in a slice key: OrderedCode's escaped string after the ``\x00``."""
    end = key.find(b"\x00\x01", 1)
    if end < 0:
        raise TableError(f"the slice key {key!r} does not end its name")
    return key[1:end].replace(b"\x00\xff", b"\x00").replace(b"\xff\x00", b"\xff").decode()


def _assemble(name: str, entry: dict, parts: list, prefix: Path, shards: int, files: dict):
    """A partitioned variable, its slices (in key order) placed by their extents."""
    shape = [_int(_fields(d, name), 1) for d in _fields(entry[2][-1], name).get(2, [])]
    extents = []
    for proto in entry[7]:
        dims = [_fields(e, name) for e in _fields(proto, name).get(1, [])]
        extents.append(tuple((_int(d, 1), _int(d, 2) if 2 in d else -1) for d in dims))
    if len(parts) != len(extents) or any(len(e) != len(shape) for e in extents):
        raise ValueError(
            f"{prefix}.index: variable {name!r} lists {len(extents)} slices but the index holds "
            f"{len(parts)}. {_INTACT}"
        )
    first = _tensor(f"{name} (slice 0)", parts[0], prefix, shards, files)
    out = np.zeros(shape, dtype=first.dtype)
    for k, (extent, part) in enumerate(zip(sorted(extents), parts)):
        value = first if k == 0 else _tensor(f"{name} (slice {k})", part, prefix, shards, files)
        where = tuple(slice(None) if n < 0 else slice(start, start + n) for start, n in extent)
        if out[where].shape != value.shape:
            raise ValueError(
                f"{prefix}.index: slice {k} of {name!r} has shape {list(value.shape)}, which "
                f"does not fit its extent {list(extent)}. {_INTACT}"
            )
        out[where] = value
    return out


def load_tf1_checkpoint(path) -> dict[str, np.ndarray]:
    """Every variable of a TF1 ``tf.train.Saver`` checkpoint, by name, read without TensorFlow.

    **Arguments:**

    - ``path``: the checkpoint prefix (``"train/model.ckpt-100"``, what ``saver.save`` returned),
      its ``.index`` or a ``.data-*`` file, or the directory holding its ``checkpoint`` state
      file (then its latest checkpoint is read). Sharded checkpoints (several ``.data-*``
      files) are read whole.

    **Returns:** ``{name: array}`` for every saved variable, optimizer slots included
    (``"rnn/basic_lstm_cell/kernel"``, ``".../kernel/Adam"``, ``"global_step"``), with TF's
    shapes and dtypes; string variables are object arrays of ``bytes``. Pass it to
    :func:`load_tf1_weights` with ``strict=False`` to take a cell's weights from it.

    Raises ``FileNotFoundError`` for a missing checkpoint or data shard, and ``ValueError``
    naming the file for a truncated or corrupted file (every CRC-32C is checked), a dtype
    without a NumPy equivalent, a TF2 object-based checkpoint, a SavedModel or a Keras HDF5
    file. Partitioned variables are returned whole, assembled from their slices.

    **Example:**

    >>> variables = recurrax.load_tf1_checkpoint("train/")  # the latest checkpoint there
    >>> cell = recurrax.load_tf1_weights(cell, variables, strict=False)
    """
    prefix = _resolve(path)
    index = Path(f"{prefix}.index")
    if not index.is_file():
        if prefix.is_file():
            raise ValueError(
                f"{prefix} is not a checkpoint prefix: there is no {index.name} beside it. "
                "A single-file checkpoint is TF's old V1 format, which is not read; re-save it "
                "with tf.compat.v1.train.Saver() (V2, the default)."
            )
        raise FileNotFoundError(
            f"no TF1 checkpoint at {prefix}: {index} does not exist. Pass the prefix "
            "saver.save returned (e.g. 'model.ckpt-100'), or the directory holding it."
        )
    try:
        table = read_table(index.read_bytes())
    except TableError as e:
        raise ValueError(f"{index} is not a readable checkpoint index: {e}. {_INTACT}") from None
    if not table or table[0][0] != b"":
        raise ValueError(f"{index} has no bundle header: it is not a checkpoint index.")
    try:
        shards = _header(_fields(table[0][1], "the bundle header"), index)
        records = [(key.decode(), value) for key, value in table[1:] if key[:1] != b"\x00"]
        names = [name for name, _ in records]
        slices: dict[str, list] = {}
        for key, value in table[1:]:
            if key[:1] == b"\x00":  # one slice of a partitioned variable
                slices.setdefault(_slice_owner(key), []).append(_fields(value, repr(key)))
    except (TableError, UnicodeDecodeError) as e:
        raise ValueError(f"{index} is not a readable checkpoint index: {e}. {_INTACT}") from None
    if _TF2_GRAPH_KEY in names or any(n.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for n in names):
        raise ValueError(
            f"{prefix} is a TF2 object-based checkpoint (tf.train.Checkpoint or Keras), whose "
            "variables are named by object path ('.../.ATTRIBUTES/VARIABLE_VALUE'), not by TF1 "
            "variable name. Restore it in TensorFlow and pass "
            "{v.name: v.numpy() for v in model.variables} to load_tf1_weights, or re-save it "
            "with tf.compat.v1.train.Saver(var_list=model.variables)."
        )
    files: dict[Path, memoryview] = {}
    out = {}
    for name, value in records:
        try:
            entry = _fields(value, repr(name))
        except TableError as e:
            raise ValueError(f"{index}: {e}. {_INTACT}") from None
        if entry.get(7):
            out[name] = _assemble(name, entry, slices.get(name, []), prefix, shards, files)
        else:
            out[name] = _tensor(name, entry, prefix, shards, files)
    return out
