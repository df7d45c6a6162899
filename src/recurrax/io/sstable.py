"""Read the sorted key/value table (LevelDB's SSTable) that a TensorFlow checkpoint index is.

A table is a run of blocks, then a fixed 48-byte footer::

    data block 0 | ... | data block k | metaindex block | index block | footer

    footer = varint64 metaindex offset, size | varint64 index offset, size | zero padding to 40
             bytes | fixed64 magic 0xdb4775248b80fb57
    block  = entries | fixed32 restart offsets... | fixed32 number of restarts
             followed on disk by a 5-byte trailer: the compression type (0: none) and the
             masked CRC-32C of the block and that type byte
    entry  = varint32 shared | varint32 non_shared | varint32 value length
             | key bytes after the shared prefix | value

Keys are prefix-compressed against the previous key, except at the restart points, whose offsets
the block lists at its end. The index block maps the last key of each data block to that block's
``(offset, size)``. Every block's CRC is checked and every offset is checked against the file, so
a damaged or cut index is reported, never misread.
"""

from __future__ import annotations

import struct

from .crc32c import crc32c, unmask

__all__ = ["read_table", "read_varint"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class TableError(ValueError):
    """The table is damaged; the message says how (the caller adds the file name)."""


def read_varint(data, pos: int, limit: int | None = None) -> tuple[int, int]:
    """``(value, next position)`` of the base-128 varint at ``data[pos]``."""
    limit = len(data) if limit is None else limit
    value, shift = 0, 0
    while True:
        if pos >= limit or shift > 63:
            raise TableError("a varint runs past its end")
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7


def _handle(data, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(data, pos)
    size, pos = read_varint(data, pos)
    return (offset, size), pos


def _block(data, handle: tuple[int, int], what: str):
    offset, size = handle
    end = offset + size + _TRAILER
    if end > len(data) - _FOOTER:
        raise TableError(f"its {what} (bytes {offset}..{end}) runs past the end of the table")
    kind = data[offset + size]
    stored = unmask(_U32.unpack_from(data, offset + size + 1)[0])
    if crc32c(data[offset : offset + size + 1]) != stored:
        raise TableError(f"the CRC-32C of its {what} at byte {offset} does not match")
    if kind != 0:
        raise TableError(
            f"its {what} is compressed (type {kind}); TensorFlow writes checkpoint indexes "
            "uncompressed, so this is not a checkpoint index"
        )
    return data[offset : offset + size]


def _entries(block, what: str):
    """Yield ``(key, value)`` of every entry of a block, checking its restart points."""
    if len(block) < 4:
        raise TableError(f"its {what} is too short to hold its restart count")
    (n_restarts,) = _U32.unpack_from(block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    if n_restarts == 0 or end < 0:
        raise TableError(f"its {what} declares {n_restarts} restart points, which do not fit")
    restarts = {_U32.unpack_from(block, end + 4 * i)[0] for i in range(n_restarts)}
    if end == 0:
        restarts.discard(0)  # an empty block still lists restart 0
    pos, key = 0, b""
    while pos < end:
        start = pos
        shared, pos = read_varint(block, pos, end)
        non_shared, pos = read_varint(block, pos, end)
        n_value, pos = read_varint(block, pos, end)
        if shared > len(key) or pos + non_shared + n_value > end:
            raise TableError(f"an entry of its {what} at byte {start} runs past its end")
        if start in restarts and shared:
            raise TableError(f"the restart point at byte {start} of its {what} shares a prefix")
        restarts.discard(start)
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        yield key, block[pos : pos + n_value]
        pos += n_value
    if restarts:
        raise TableError(f"its {what} lists restart points {sorted(restarts)} between entries")


def read_table(data) -> list[tuple[bytes, memoryview]]:
    """Every ``(key, value)`` of the table held in ``data`` (bytes), in key order.

    Raises :class:`TableError` (a ``ValueError``) for a file that is not a table, is truncated,
    or fails a block CRC.
    """
    data = memoryview(data)
    if len(data) < _FOOTER:
        raise TableError(f"it holds {len(data)} bytes, fewer than a table's {_FOOTER}-byte footer")
    footer = len(data) - _FOOTER
    if _U64.unpack_from(data, len(data) - 8)[0] != _MAGIC:
        raise TableError("it does not end with a table's magic number (truncated, or another file)")
    meta_handle, pos = _handle(data, footer)
    index_handle, _ = _handle(data, pos)
    _block(data, meta_handle, "metaindex block")
    out, last = [], None
    for _, value in _entries(_block(data, index_handle, "index block"), "index block"):
        handle, _ = _handle(value, 0)
        for key, item in _entries(_block(data, handle, "data block"), "block"):
            if last is not None and key <= last:
                raise TableError(f"its keys are out of order at {key!r}")
            out.append((key, item))
            last = key
    return out
