"""Backprop memory strategies of ``dynamic_rnn``, each with its forward and backward loops.

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
``planner.py`` chooses the fastest strategy whose compiled gradient step fits a byte budget.

Each strategy has two loops over steps ``[0, n)`` of a :class:`~.timeaxis.Loop` ``L``
(``n`` possibly traced):

- ``forward(L, p, fixed, s0, ys) -> (final_state, ys, saved)`` writes the outputs and returns
  what it saves;
- ``backward(L, p, fixed, s0, saved, (ct_final, zeros_p, ct_xs), ct_y, want_dx)
  -> (ct_s0, ct_p, ct_xs)`` runs the same steps in reverse, accumulating the weights'
  cotangents and writing each step's input cotangent; ``ct_y(t)`` is the cotangent of step
  ``t``'s output.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from ..cells.checks import check_positive_int
from .residuals import StepResiduals, shapes_of
from .revolve import revolve_split, revolve_tables
from .timeaxis import Loop, at_time, fori, set_time, time_buffer, to_device

__all__ = ["StoreAll", "Recompute", "CheckpointEvery", "Revolve", "Strategy", "resolve_memory"]


@dataclasses.dataclass(frozen=True)
class StoreAll:
    """Keep every step's intermediate values: the fastest backward pass, ``O(T)`` memory.

    With a static trip count (no lengths, or concrete ones) and no ``swap_memory`` this is
    XLA's ordinary ``lax.scan`` autodiff (built-in cells take the fused fast path instead);
    otherwise (traced lengths, swapping) the engine stores each step's residuals itself, moving
    the loop-invariant ones (the weights) out of the loop as XLA does.
    """

    def forward(self, L: Loop, p, fixed, s, ys):
        R = StepResiduals(L.g, p, fixed, s, L.x(0))
        bufs = time_buffer(R.stored, L.time, L.swap)

        def body(t, c):
            s, ys, bufs = c
            s, y, stored = R.forward(p, fixed, s, L.x(t), t)
            return s, L.put(ys, y, t), L.keep(bufs, stored, t)

        s_final, ys, bufs = fori(0, L.n, body, (s, ys, bufs), L.unroll)
        return s_final, ys, (R.invariant(p, fixed, s, L.x(0)), bufs)

    def backward(self, L: Loop, p, fixed, s0, saved, carry, ct_y, want_dx):
        R = StepResiduals(L.g, p, fixed, s0, L.x(0))
        invariant, bufs = saved

        def body(t, c):
            stored = to_device(at_time(bufs, t), L.swap)
            grads = R.backward(invariant, stored, L.x(t), t, (c[0], ct_y(t)))
            return L.reverse_step(c, t, grads, want_dx)

        return fori(0, L.n, body, carry, L.unroll, reverse=True)


@dataclasses.dataclass(frozen=True)
class Recompute:
    """Keep only the carried state before each step; recompute each step's internals.

    Memory ``T`` states instead of ``T`` steps' intermediates (for a BasicLSTMCell, about 1/6);
    one extra forward step per step.
    """

    def forward(self, L: Loop, p, fixed, s, ys):
        states = time_buffer(shapes_of(s), L.time, L.swap)

        def body(t, c):
            s, ys, states = c
            states = L.keep(states, s, t)
            new, y = L.g(p, fixed, s, L.x(t), t)
            return new, L.put(ys, y, t), states

        return fori(0, L.n, body, (s, ys, states), L.unroll)

    def backward(self, L: Loop, p, fixed, s0, states, carry, ct_y, want_dx):
        def body(t, c):
            s = to_device(at_time(states, t), L.swap)
            return L.reverse_step(c, t, L.vjp(p, fixed, s, t, (c[0], ct_y(t))), want_dx)

        return fori(0, L.n, body, carry, L.unroll, reverse=True)


@dataclasses.dataclass(frozen=True)
class CheckpointEvery:
    """Keep the state every ``every`` steps; reverse one segment at a time.

    Each segment is recomputed once, storing its intermediates (on device), and then reversed.
    Memory is ``ceil(T / every)`` states plus ``every`` steps' intermediates, smallest near
    ``every = sqrt(T * state_bytes / step_bytes)``; one extra forward step per step.

    **Arguments:** ``every``, a positive int (the segment length).
    """

    every: int

    def __post_init__(self):
        check_positive_int(self.every, "CheckpointEvery.every", "the segment length in steps")

    def forward(self, L: Loop, p, fixed, s, ys):
        # One flat loop (not a loop of segments): XLA then drops `ys` when nothing reads it.
        every = self.every
        ckpts = time_buffer(shapes_of(s), -(-L.time // every), L.swap)

        def body(t, c):
            s, ys, ckpts = c
            ckpts = lax.cond(t % every == 0, lambda k: L.keep(k, s, t // every), lambda k: k, ckpts)
            new, y = L.g(p, fixed, s, L.x(t), t)
            return new, L.put(ys, y, t), ckpts

        return fori(0, L.n, body, (s, ys, ckpts), L.unroll)

    def backward(self, L: Loop, p, fixed, s0, ckpts, carry, ct_y, want_dx):
        every = self.every
        R = StepResiduals(L.g, p, fixed, s0, L.x(0))
        invariant = R.invariant(p, fixed, s0, L.x(0))

        def segment(i, c):
            lo = i * every
            hi = jnp.minimum(lo + every, L.n)

            def store(t, cc):  # recompute the segment, keeping its residuals (on device)
                s, local = cc
                s, _, stored = R.forward(p, fixed, s, L.x(t), t)
                return s, set_time(local, stored, t - lo)

            s = to_device(at_time(ckpts, i), L.swap)
            _, local = fori(lo, hi, store, (s, time_buffer(R.stored, every)), L.unroll)

            def back(t, cc):
                stored = at_time(local, t - lo)
                grads = R.backward(invariant, stored, L.x(t), t, (cc[0], ct_y(t)))
                return L.reverse_step(cc, t, grads, want_dx)

            return fori(lo, hi, back, c, L.unroll, reverse=True)

        return fori(0, (L.n + every - 1) // every, segment, carry, reverse=True)


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
        check_positive_int(self.checkpoints, "Revolve.checkpoints", "the number of saved states")

    # A stack of c slots (slot 0: the initial state). The backward pass repeats, until every
    # step is reversed: from the top slot's state at `lo`, with `hi` the first step not yet
    # reversed, either advance to the binomial split point and push its state (a free slot and
    # two or more steps left), or advance to `hi - 1` and reverse that step, popping the slot
    # once its own step is reversed. The forward pass takes the first descent's checkpoints.

    def forward(self, L: Loop, p, fixed, s, ys):
        checkpoints = min(self.checkpoints, L.time)  # more slots than steps would stay empty
        slots = L.keep(time_buffer(shapes_of(s), checkpoints, L.swap), s, 0)
        idx = jnp.zeros((checkpoints,), jnp.int32)
        tables = revolve_tables(checkpoints, L.time)

        def next_checkpoint(t, top):  # where the descent puts its next checkpoint, or -1
            free = checkpoints - 1 - top
            split = revolve_split(tables, jnp.maximum(L.n - t, 2), jnp.maximum(free + 1, 2))
            return jnp.where((free > 0) & (L.n - t >= 2), t + split, -1)

        def body(t, c):
            s, ys, slots, idx, top, nxt = c

            def take(c):
                slots, idx, top, _ = c
                return L.keep(slots, s, top + 1), idx.at[top + 1].set(t), top + 1, t

            slots, idx, top, _ = lax.cond(t == nxt, take, lambda c: c, (slots, idx, top, nxt))
            nxt = jnp.where(t == nxt, next_checkpoint(t, top), nxt)
            new, y = L.g(p, fixed, s, L.x(t), t)
            return new, L.put(ys, y, t), slots, idx, top, nxt

        init = (s, ys, slots, idx, jnp.int32(0), next_checkpoint(jnp.int32(0), jnp.int32(0)))
        s, ys, slots, idx, top, _ = fori(0, L.n, body, init, L.unroll)
        return s, ys, (slots, idx, top)

    def backward(self, L: Loop, p, fixed, s0, saved, carry, ct_y, want_dx):
        checkpoints = min(self.checkpoints, L.time)
        tables = revolve_tables(checkpoints, L.time)
        slots, idx, top = saved

        def body(c):
            hi, top, slots, idx, rev = c
            lo = idx[top]
            free = checkpoints - 1 - top
            push = (hi - lo >= 2) & (free > 0)
            split = revolve_split(tables, jnp.maximum(hi - lo, 2), jnp.maximum(free + 1, 2))
            target = jnp.where(push, lo + split, hi - 1)
            s, _ = L.run(p, fixed, to_device(at_time(slots, top), L.swap), lo, target)

            def take(_):
                return hi, top + 1, L.keep(slots, s, top + 1), idx.at[top + 1].set(target), rev

            def reverse(_):
                grads = L.vjp(p, fixed, s, hi - 1, (rev[0], ct_y(hi - 1)))
                new_top = jnp.where(target == lo, jnp.maximum(top - 1, 0), top)
                return hi - 1, new_top, slots, idx, L.reverse_step(rev, hi - 1, grads, want_dx)

            return lax.cond(push, take, reverse, None)

        init = (jnp.asarray(L.n, jnp.int32), top, slots, idx, carry)
        return lax.while_loop(lambda c: c[0] > 0, body, init)[4]


Strategy = StoreAll | Recompute | CheckpointEvery | Revolve
_NAMES = {"store": StoreAll, "recompute": Recompute}


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
