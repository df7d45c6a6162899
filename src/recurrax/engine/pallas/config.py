"""The Pallas recurrence kernels' static configuration: the cell family, the layer's padded
shape and tiling, and :func:`plan_for`, which decides whether the recurrent weights stay on chip.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

__all__ = [
    "Family",
    "KernelConfig",
    "plan_for",
    "RESIDENT_BYTES",
    "RESIDENT_BYTES_BACKWARD",
    "MAX_TILES",
]

#: Recurrent weights up to this many bytes are loaded once into each program of the forward
#: kernel and kept on chip (``resident``); larger ones are re-read every step (``stream``).
#: Triton 3.6's shared-memory report for sm_90 (227 KiB available): float32 LSTM H = 64
#: (64 KiB of weights) 68 KiB; bfloat16 LSTM H = 128 (128 KiB) 136 KiB; float32 LSTM H = 128
#: (256 KiB) does not fit.
RESIDENT_BYTES = 128 * 1024

#: The same for the backward kernel (its shared memory, as reported: float32 LSTM H = 64:
#: 84 KiB; bfloat16 LSTM H = 128: 136 KiB).
RESIDENT_BYTES_BACKWARD = 128 * 1024

#: Most ``chunk x chunk`` weight tiles one step may issue (the step is unrolled at trace time,
#: so this bounds the kernel's size, its register spills and its compile time):
#: ``gates * (H / chunk)^2``, and ``(H / chunk)^2`` more for ``LSTMCell``'s projection. 16
#: admits LSTM up to H = 256 with 128-wide tiles (with a projection, up to 128); at H = 512
#: (64 tiles) Triton took ~50 s per kernel and spilled 20-45 KB of registers.
MAX_TILES = 16

_KINDS = {"rnn": 1, "gru": 3, "lstm": 4}


@dataclasses.dataclass(frozen=True)
class Family:
    """The cell family of a layer (hashable: it is part of the kernels' static configuration).

    ``kind`` is ``"rnn"`` (``BasicRNNCell``), ``"gru"`` (``GRUCell``) or ``"lstm"``
    (``BasicLSTMCell`` and ``LSTMCell``); ``forget_bias`` is added to the LSTM's forget gate at
    run time (TF1's default is 1.0) and ignored by the other families. The activation is
    ``tanh``. ``LSTMCell``'s options, for ``kind="lstm"`` only: ``peepholes`` (the diagonal
    weights ``w_i_diag``, ``w_f_diag``, ``w_o_diag``), ``cell_clip`` (``c`` clipped to
    ``[-cell_clip, cell_clip]``), ``projection`` (the output ``m = (tanh(c) * o) @ P``) and
    ``proj_clip`` (``m`` clipped, with a projection only).
    """

    kind: str = "lstm"
    forget_bias: float = 1.0
    peepholes: bool = False
    cell_clip: float | None = None
    projection: bool = False
    proj_clip: float | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Family.kind must be one of {sorted(_KINDS)}; got {self.kind!r}.")
        object.__setattr__(self, "forget_bias", float(self.forget_bias))
        if self.kind != "lstm" and (
            self.peepholes or self.projection or self.cell_clip is not None
        ):
            raise ValueError(
                "Family: peepholes, cell_clip and projection belong to kind='lstm'; "
                f"got kind={self.kind!r}."
            )
        if self.proj_clip is not None and not self.projection:
            raise ValueError("Family: proj_clip needs projection=True (TF1 ignores it without).")
        for name in ("cell_clip", "proj_clip"):
            limit = getattr(self, name)
            if limit is not None:
                if not float(limit) >= 0.0:
                    raise ValueError(f"Family.{name} must be None or a number >= 0; got {limit!r}.")
                object.__setattr__(self, name, float(limit))
        object.__setattr__(self, "peepholes", bool(self.peepholes))
        object.__setattr__(self, "projection", bool(self.projection))

    @property
    def gates(self) -> int:
        """Column blocks of the pre-activations: 1, 3 or 4."""
        return _KINDS[self.kind]

    @property
    def weight_blocks(self) -> int:
        """``hidden x hidden`` blocks of on-chip weights: the gates, plus one for a
        projection."""
        return self.gates + int(self.projection)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static configuration of one layer's kernels (hashable)."""

    family: Family
    time: int
    batch: int  # padded to a multiple of block
    block: int
    hidden: int  # padded: a power of two, at least 16
    chunk: int  # tile edge: divides hidden
    resident: bool  # weights loaded once per program (else re-read every step)
    bwd_resident: bool  # the same for the backward kernel
    masked: bool  # lengths given
    out_dtype: Any  # of the outputs and the final state
    xw_dtype: Any  # of the projected inputs (and their gradient)
    precision: Any  # of the dots (None: Triton's default, TF32 for float32 on GPU)
    interpret: bool
    num_warps: int | None
    num_stages: int | None

    @property
    def nc(self) -> int:
        return self.hidden // self.chunk

    @property
    def gates(self) -> int:
        return self.family.gates


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def plan_for(
    family: Family,
    hidden: int,
    weight_dtype,
    *,
    chunk: int | None = None,
    resident: bool | None = None,
) -> tuple[int, int, bool, bool]:
    """``(padded_hidden, chunk, resident_forward, resident_backward)`` the layer would run
    with (``resident``, when given, applies to both kernels); raises ``ValueError`` for a
    shape the kernel does not support (more than :data:`MAX_TILES` tiles per step).

    ``hidden`` is the widest of the layer's state vectors: ``max(num_units, num_proj)`` for an
    ``LSTMCell`` with a projection (``c`` and ``m`` are padded to the same width).
    """
    hp = max(16, _pow2(hidden))
    wbytes = family.weight_blocks * hp * hp * jnp.dtype(weight_dtype).itemsize
    if resident is None:
        fwd, bwd = wbytes <= RESIDENT_BYTES, wbytes <= RESIDENT_BYTES_BACKWARD
    else:
        fwd = bwd = bool(resident)
    if chunk is None:
        chunk = min(hp, 128)
    chunk = int(chunk)
    if chunk < 16 or chunk & (chunk - 1) or hp % chunk:
        raise ValueError(
            f"chunk must be a power of two >= 16 dividing the padded hidden size {hp}; got {chunk}."
        )
    tiles = family.weight_blocks * (hp // chunk) ** 2
    if tiles > MAX_TILES:
        raise ValueError(
            f"pallas_layer: {family.kind} with hidden size {hidden} needs {tiles} weight tiles "
            f"of {chunk}x{chunk} per step (more than MAX_TILES={MAX_TILES}): the recurrent "
            f"weights ({wbytes / 2**20:.1f} MiB) are too large for one program per batch block "
            "to re-read every step; use the XLA path (recurrax.dynamic_rnn) for this size."
        )
    return hp, chunk, fwd, bwd
