"""The schedule of :class:`~recurrax.Revolve`: where binomial checkpointing puts its states.

beta(s, r) = C(s + r, s) is the most steps that s slots (the one holding the
start state included) reverse when no step is advanced more than r times. To reverse l steps
from a held state with s slots: r is the least with beta(s, r) >= l, and the next checkpoint
goes m steps ahead, m chosen as in Griewank & Walther's revolve.c so that the total number of
steps advanced is the least possible. l is traced, so the choice is tabulated per (s, r).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["revolve_tables", "revolve_split", "revolve_split_py", "revolve_advances"]


def _beta(s: int, r: int) -> int:
    return 0 if s < 0 or r < 0 else math.comb(s + r, s)


def _revolve_row(s: int, r: int) -> tuple[int, ...]:
    """(beta(s, r), and the thresholds and offsets of revolve.c's choice for l in that band)."""
    b1, b2, b3, b4 = _beta(s, r - 1), _beta(s - 1, r - 1), _beta(s - 2, r - 1), _beta(s, r - 2)
    b5 = _beta(s - 3, r)
    return _beta(s, r), b1 + b3, _beta(s, r) - b5, b4, b1, b2 + b3


def revolve_tables(checkpoints: int, time: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The schedule of :class:`Revolve` for ``s = 2 .. checkpoints`` slots and up to ``time``.

    Returns ``(table, offsets, lengths)``: ``table[offsets[s] + r]`` holds, for ``r = 0 ..
    lengths[s] - 1`` (the last ``r`` is the first with ``beta(s, r) >= time``), the row
    ``(beta, low_limit, high_limit, low_m, high_m, subtract)`` capped at ``time + 1``;
    ``table`` is padded so that a window of ``max(lengths)`` rows from any offset is in bounds.
    """
    cap = time + 1
    offsets = np.zeros(checkpoints + 1, np.int32)
    lengths = np.zeros(checkpoints + 1, np.int32)
    rows: list[tuple[int, ...]] = []
    for s in range(2, checkpoints + 1):
        offsets[s] = len(rows)
        r = 0
        while True:
            rows.append(tuple(min(v, cap) for v in _revolve_row(s, r)))
            if rows[-1][0] >= time:
                break
            r += 1
        lengths[s] = len(rows) - offsets[s]
    width = max(int(lengths.max()), 1)
    table = np.asarray(rows + [(cap,) * 6] * width, np.int32)
    return table, offsets, lengths


def _choose(steps, beta, low_limit, high_limit, low_m, high_m, subtract):
    del beta
    m = np.where(steps <= low_limit, low_m, np.where(steps >= high_limit, high_m, steps - subtract))
    return np.clip(m, 1, steps - 1)


def revolve_split(tables, steps, slots):
    """Where to put the next checkpoint: ``m`` in ``[1, steps - 1]`` steps ahead.

    ``steps >= 2`` is the number of steps left to reverse from the held state and ``slots >= 2``
    the slots that may hold states for them (the held one included); traced int32 scalars.
    """
    table, offsets, lengths = tables
    width = max(int(np.max(lengths)), 1)
    window = lax.dynamic_slice_in_dim(jnp.asarray(table), jnp.asarray(offsets)[slots], width)
    inside = jnp.arange(width) < jnp.asarray(lengths)[slots]
    r = jnp.sum((window[:, 0] < steps) & inside)  # least r with beta(slots, r) >= steps
    row = window[jnp.minimum(r, width - 1)]
    m = jnp.where(steps <= row[1], row[3], jnp.where(steps >= row[2], row[4], steps - row[5]))
    return jnp.clip(m, 1, steps - 1).astype(jnp.int32)


def revolve_split_py(tables, steps: int, slots: int) -> int:
    """:func:`revolve_split` in plain Python, for schedules computed on the host."""
    table, offsets, lengths = tables
    rows = table[offsets[slots] : offsets[slots] + lengths[slots]]
    r = int(np.sum(rows[:, 0] < steps))
    return int(_choose(steps, *rows[r]))


def revolve_advances(steps: int, checkpoints: int) -> tuple[int, int]:
    """Steps run forward to place checkpoints, by the schedule above (plain Python).

    Returns ``(first_descent, backward)``: the steps advanced while taking the first checkpoints
    (the forward pass does these while computing the outputs) and the steps advanced again in
    the backward pass. Each of the ``steps`` steps is also run once more, when differentiated.
    """
    tables = revolve_tables(checkpoints, steps)
    stack, hi, counts, phase = [0], steps, [0, 0], 0
    while hi > 0:
        lo, free = stack[-1], checkpoints - len(stack)
        if hi - lo >= 2 and free > 0:
            m = lo + revolve_split_py(tables, hi - lo, free + 1)
            counts[phase] += m - lo
            stack.append(m)
        else:
            phase = 1
            counts[phase] += hi - 1 - lo
            hi -= 1
            if lo == hi and len(stack) > 1:
                stack.pop()
    return counts[0], counts[1]
