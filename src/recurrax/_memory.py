"""Backprop memory strategies of ``dynamic_rnn`` and the planner that picks one for a budget.

Reverse-mode differentiation of a loop of ``T`` steps needs, at step ``t``, the values the
forward pass computed at step ``t``. The strategies trade memory for recomputation:

==========================  ==========================================  ======================
strategy                    kept from the forward pass                  extra forward steps
==========================  ==========================================  ======================
``StoreAll()``              every step's intermediate values            none
``Recompute()``             the carried state before every step         ``T`` (one per step)
``CheckpointEvery(k)``      every ``k``-th state; a segment's values    ``T``
                            while it is reversed
``Revolve(c)``              ``c`` states, placed binomially             ``~ (r - 1) T``, with
                            (Griewank & Walther 2000)                   ``C(c + r, c) >= T``
==========================  ==========================================  ======================

``swap_memory=True`` keeps what a strategy saves across the whole loop (stored values, states,
checkpoints) in host memory (JAX's ``pinned_host`` memory kind) instead of device memory.
:func:`plan_memory` chooses the fastest strategy whose compiled gradient step fits a byte budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "StoreAll",
    "Recompute",
    "CheckpointEvery",
    "Revolve",
    "resolve_memory",
    "revolve_tables",
    "revolve_split",
    "plan_memory",
    "check_budget",
]


def _positive_int(value, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int ({what}); got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int ({what}); got {value}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class StoreAll:
    """Keep every step's intermediate values: the fastest backward pass, ``O(T)`` memory.

    With a static trip count (no lengths, or concrete ones) and no ``swap_memory`` this is
    XLA's ordinary ``lax.scan`` autodiff (built-in cells take the fused fast path instead);
    otherwise (traced lengths, swapping) the engine stores each step's residuals itself, moving
    the loop-invariant ones (the weights) out of the loop as XLA does.
    """


@dataclasses.dataclass(frozen=True)
class Recompute:
    """Keep only the carried state before each step; recompute each step's internals.

    Memory ``T`` states instead of ``T`` steps' intermediates (for a BasicLSTMCell, about 1/6);
    one extra forward step per step.
    """


@dataclasses.dataclass(frozen=True)
class CheckpointEvery:
    """Keep the state every ``every`` steps; reverse one segment at a time.

    Each segment is recomputed once, storing its intermediates, and then reversed. Memory is
    ``ceil(T / every)`` states plus ``every`` steps' intermediates, smallest near
    ``every = sqrt(T * state_bytes / step_bytes)``; one extra forward step per step.

    **Arguments:** ``every``, a positive int (the segment length).
    """

    every: int

    def __post_init__(self):
        _positive_int(self.every, "CheckpointEvery.every", "the segment length in steps")


@dataclasses.dataclass(frozen=True)
class Revolve:
    """Binomial checkpointing with ``checkpoints`` saved states (Griewank & Walther 2000).

    Memory is ``checkpoints`` states plus one step's intermediates, whatever ``T``. With
    ``r`` the least integer such that ``C(checkpoints + r, checkpoints) >= T``, each step is
    run at most ``r`` times forward (``Revolve(1)``: ``T(T - 1)/2`` extra steps; with
    ``checkpoints >= T`` it is :class:`Recompute`). The first checkpoints are taken during the
    forward pass itself.

    **Arguments:** ``checkpoints``, a positive int, counting the initial state.
    """

    checkpoints: int

    def __post_init__(self):
        _positive_int(self.checkpoints, "Revolve.checkpoints", "the number of saved states")


_NAMES = {"store": StoreAll, "recompute": Recompute}
Strategy = StoreAll | Recompute | CheckpointEvery | Revolve


def resolve_memory(memory) -> Strategy:
    """``memory`` as a strategy object: ``None``/``"store"`` -> :class:`StoreAll`, etc."""
    if memory is None:
        return StoreAll()
    if isinstance(memory, (StoreAll, Recompute, CheckpointEvery, Revolve)):
        return memory
    if isinstance(memory, str):
        if memory in _NAMES:
            return _NAMES[memory]()
        raise ValueError(
            f"memory must be 'store', 'recompute' or a strategy object "
            f"(recurrax.CheckpointEvery(k), recurrax.Revolve(c)); got {memory!r}."
        )
    raise TypeError(
        "memory must be 'store', 'recompute', recurrax.StoreAll(), recurrax.Recompute(), "
        f"recurrax.CheckpointEvery(k) or recurrax.Revolve(c); got {type(memory).__name__}."
    )


# ----------------------------------------------------------------------------------------------
# Revolve's schedule. beta(s, r) = C(s + r, s) is the most steps that s slots (the one holding the
# start state included) reverse when no step is advanced more than r times. To reverse l steps
# from a held state with s slots: r is the least with beta(s, r) >= l, and the next checkpoint
# goes m steps ahead, m chosen as in Griewank & Walther's revolve.c so that the total number of
# steps advanced is the least possible. l is traced, so the choice is tabulated per (s, r).


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


# ----------------------------------------------------------------------------------------------
# The budget planner.


def segment_length(time: int, state_bytes: int, step_bytes: int) -> int:
    """The ``every`` that minimises ``ceil(time / every) * state_bytes + every * step_bytes``."""
    best = math.sqrt(time * max(state_bytes, 1) / max(step_bytes, 1))
    near = range(max(1, min(time, int(best / 2))), min(time, int(2 * best) + 2) + 1)
    return min(near, key=lambda k: (-(-time // k) * state_bytes + k * step_bytes, k))


def check_budget(budget) -> int:
    """``budget`` as an int, or a clear error: it must be a positive number of bytes."""
    return _positive_int(budget, "memory_budget", "bytes of temp memory")


def plan_memory(
    budget: int,
    time: int,
    state_bytes: int,
    step_bytes: int,
    measure: Callable[[Strategy], int],
) -> Strategy:
    """The fastest strategy whose compiled gradient step needs at most ``budget`` temp bytes.

    Candidates, fastest first: :class:`StoreAll`; :class:`CheckpointEvery` with the segment
    length of least memory; :class:`Revolve` with as many checkpoints as fit (fewer
    checkpoints, more recomputation). ``measure(strategy)`` compiles the gradient step and
    returns its temp bytes (``compiled.memory_analysis().temp_size_in_bytes``).

    Raises ``ValueError`` naming the smallest budget that would work when none fits.
    """
    budget = check_budget(budget)
    for candidate in (StoreAll(), CheckpointEvery(segment_length(time, state_bytes, step_bytes))):
        if measure(candidate) <= budget:
            return candidate
    least = measure(Revolve(1))
    if least > budget:
        raise ValueError(
            f"memory_budget={budget} bytes is too small for any plan: the smallest, "
            f"Revolve(1) (only the initial state kept), needs {least} bytes of temp memory. "
            f"Pass memory_budget >= {least}, or shorten the sequences."
        )
    # Temp bytes grow by about one state per checkpoint: predict, then verify downwards.
    slope = max(measure(Revolve(2)) - least, 1) if time > 1 else 1
    lo, hi = 1, max(1, min(time, 1 + (budget - least) // slope))
    if measure(Revolve(hi)) <= budget:
        return Revolve(hi)
    while hi - lo > 1:  # invariant: Revolve(lo) fits, Revolve(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if measure(Revolve(mid)) <= budget else (lo, mid)
    return Revolve(lo)
