"""CRC-32C (Castagnoli), the checksum of TensorFlow's checkpoint files, in NumPy.

``crc32c(data)`` is the CRC of RFC 3720 (iSCSI): reflected polynomial ``0x82F63B78``, initial
value and final XOR ``0xFFFFFFFF``; ``crc32c(b"123456789") == 0xE3069283``. ``mask`` and
``unmask`` are the rotation TensorFlow (after LevelDB) applies to the CRCs it stores, so that a
CRC of data that itself holds CRCs stays a good checksum.

A byte-at-a-time loop in Python runs at a few MB/s, too slow for a large checkpoint. Large
inputs are therefore cut into ``n`` lanes of ``L`` bytes, whose register updates run side by
side as NumPy operations (``L`` steps over arrays of ``n`` registers); the lanes' CRCs are then
chained. Chaining rests on the CRC register being linear: feeding a lane to a register ``r``
gives ``Z(r) ^ raw(lane)``, where ``raw(lane)`` is the lane fed to a zero register and ``Z`` is
the linear map "feed ``L`` zero bytes", applied through four 256-entry tables.
"""

from __future__ import annotations

import numpy as np

__all__ = ["crc32c", "mask", "unmask"]

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_M32 = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_SMALL = 1 << 12  # below this many bytes the plain loop is fast enough


def _raw_loop(register: int, data) -> int:
    """The register after feeding ``data`` byte by byte (no initial or final XOR)."""
    table = _TABLE_LIST
    for b in data:
        register = table[(register ^ b) & 0xFF] ^ (register >> 8)
    return register


def _zero_feed_tables(length: int) -> np.ndarray:
    """``[4, 256]`` tables of the linear map "feed ``length`` zero bytes" to a register.

    ``Z(r) = T[0][r & 255] ^ T[1][(r >> 8) & 255] ^ T[2][(r >> 16) & 255] ^ T[3][r >> 24]``.
    """
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    for _ in range(length):
        basis = _TABLE[basis & 0xFF] ^ (basis >> 8)
    tables = np.zeros((4, 256), dtype=np.uint32)
    values = np.arange(256)
    for byte in range(4):
        for bit in range(8):
            hit = ((values >> bit) & 1).astype(bool)
            tables[byte, hit] ^= basis[8 * byte + bit]
    return tables


def _raw_lanes(register: int, data: np.ndarray) -> int:
    """``_raw_loop`` for a large uint8 array, ``n`` lanes of ``L`` bytes at a time."""
    lane = max(256, int(np.sqrt(data.size)))
    n = data.size // lane
    lanes = data[: n * lane].reshape(n, lane)
    registers = np.zeros(n, dtype=np.uint32)
    for k in range(lane):
        registers = _TABLE[(registers ^ lanes[:, k]) & 0xFF] ^ (registers >> 8)
    t0, t1, t2, t3 = (t.tolist() for t in _zero_feed_tables(lane))
    for value in registers.tolist():  # chain the lanes in order
        r = register
        register = t0[r & 0xFF] ^ t1[(r >> 8) & 0xFF] ^ t2[(r >> 16) & 0xFF] ^ t3[r >> 24]
        register ^= value
    return _raw_loop(register, data[n * lane :].tobytes())


def crc32c(data, value: int = 0) -> int:
    """The CRC-32C of ``data`` (bytes-like), continuing from ``value`` (the CRC so far)."""
    register = (value ^ _M32) & _M32
    view = memoryview(data).cast("B")
    if len(view) < _SMALL:
        register = _raw_loop(register, view)
    else:
        register = _raw_lanes(register, np.frombuffer(view, dtype=np.uint8))
    return register ^ _M32


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC, as stored in its files."""
    return ((((crc >> 15) | (crc << 17)) & _M32) + _MASK_DELTA) & _M32


def unmask(masked: int) -> int:
    """The CRC whose :func:`mask` is ``masked``."""
    rot = (masked - _MASK_DELTA) & _M32
    return ((rot >> 17) | (rot << 15)) & _M32
