"""The forward and backward loops of each backprop memory strategy (see ``_memory.py``).

Every loop runs steps ``[0, n)`` only, ``n`` possibly traced; forwards write the outputs and
return what they save, backwards run the same steps in reverse, accumulating the weights'
cotangents and writing each step's input cotangent. ``g(p, fixed, s, x, t) -> (s, y)`` is the
step with the weights being differentiated in ``p`` and everything else in ``fixed``.

The caller's arrays (the inputs, the outputs and their cotangents) keep the caller's layout:
:class:`Loop` reads and writes step ``t`` along their time axis (0 time-major, 1 batch-major)
in place, so nothing the size of the padded sequence is transposed. The buffers a strategy
keeps for itself (stored residuals, checkpointed states) are time-major.
Trip counts may be traced, so ``unroll`` steps run per iteration of a main loop and a second
loop runs the remainder: no step ever runs past ``n``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._memory import CheckpointEvery, Recompute, StoreAll, revolve_split, revolve_tables
from ._residuals import StepResiduals, shapes_of

__all__ = [
    "Loop",
    "at_time",
    "fori",
    "merge",
    "set_time",
    "strategy_fns",
    "time_buffer",
    "zeros_like",
]

tree_map, tree_leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves


def _count_loop(count, fn, carry):
    def body(c):
        return c[0] + 1, fn(c[0], c[1])

    return lax.while_loop(lambda c: c[0] < count, body, (jnp.int32(0), carry))[1]


def fori(lo, hi, body, carry, unroll: int = 1, reverse: bool = False):
    """``carry = body(t, carry)`` for ``t`` in ``[lo, hi)``, descending if ``reverse``."""
    lo, hi = jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32)
    span = jnp.maximum(hi - lo, 0)

    def at(k):
        return hi - 1 - k if reverse else lo + k

    def chunk(i, c):
        for j in range(unroll):
            c = body(at(i * unroll + j), c)
        return c

    carry = _count_loop(span // unroll, chunk, carry)
    if unroll > 1:
        done = (span // unroll) * unroll
        carry = _count_loop(span - done, lambda i, c: body(at(done + i), c), carry)
    return carry


def at_time(tree, t, axis: int = 0):
    """Step ``t`` of every leaf whose time runs along ``axis`` (``[T, ...]`` by default)."""
    return tree_map(lambda a: lax.dynamic_index_in_dim(a, t, axis, keepdims=False), tree)


def set_time(tree, values, t, axis: int = 0):
    """Every leaf (time along ``axis``) with step ``t`` replaced by the matching leaf of
    ``values``, in place."""
    return tree_map(
        lambda a, v: lax.dynamic_update_index_in_dim(a, v.astype(a.dtype), t, axis), tree, values
    )


def time_buffer(shapes, length: int, host: bool = False, axis: int = 0):
    """Zeros per leaf with a time axis of ``length`` inserted at ``axis`` (``[length, *shape]``
    by default), in pinned host memory when ``host``."""
    bufs = tree_map(
        lambda s: jnp.zeros((*s.shape[:axis], length, *s.shape[axis:]), s.dtype), shapes
    )
    return _to_host(bufs) if host else bufs


def _to_host(tree):
    return jax.device_put(tree, jax.memory.Space.Host)


def _to_device(tree, host: bool):
    return jax.device_put(tree, jax.memory.Space.Device) if host else tree


def _keep(buf, s, i, host: bool):
    """``buf`` with ``s`` written at index ``i`` (moved to host memory first when ``host``)."""
    return set_time(buf, _to_host(s) if host else s, i)


def _same(x):
    return x


def _add(a, b):
    return tree_map(jnp.add, a, b)


def zeros_like(shapes):
    """Zeros for every ``jax.ShapeDtypeStruct`` leaf."""
    return tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def merge(mask, yes, no):
    """Interleave two lists back into one: ``yes`` where ``mask`` is true, ``no`` elsewhere."""
    it_yes, it_no = iter(yes), iter(no)
    return [next(it_yes) if m else next(it_no) for m in mask]


class Loop(NamedTuple):
    """One loop to run: the step ``g``, the inputs ``xs``, the trip count ``n`` (int32, maybe
    traced), ``time = T``, ``unroll``, whether saved values go to the host and ``axis``, the
    time axis of the caller's arrays: ``xs``, the outputs and their cotangents are
    ``[T, B, ...]`` with ``axis=0`` and ``[B, T, ...]`` with ``axis=1``, read and written one
    step at a time in that layout."""

    g: Any
    xs: Any
    n: Any
    time: int
    unroll: int
    swap: bool
    axis: int = 0

    def x(self, t):
        """The input of step ``t``."""
        return at_time(self.xs, t, self.axis)

    def put(self, buf, values, t):
        """``buf`` (the outputs, or the inputs' cotangents) with step ``t`` set to ``values``."""
        return set_time(buf, values, t, self.axis)

    def run(self, p, fixed, s, lo, hi, ys=None):
        """Advance ``s`` over ``[lo, hi)``, writing outputs into ``ys`` when given."""

        def body(t, c):
            s, ys = c
            new, y = self.g(p, fixed, s, self.x(t), t)
            return new, (None if ys is None else self.put(ys, y, t))

        return fori(lo, hi, body, (s, ys), self.unroll)

    def vjp(self, p, fixed, s, t, cts):
        """``(ct_p, ct_s, ct_x)`` of step ``t`` from state ``s``, recomputing its internals."""
        _, pull = jax.vjp(lambda p, s, x: self.g(p, fixed, s, x, t), p, s, self.x(t))
        return pull(cts)


def _reverse_step(L: Loop, c, t, grads, ct_xs_wanted):
    """Fold one step's ``(ct_p, ct_s, ct_x)`` into the reverse carry ``(ct_s, ct_p, ct_xs)``."""
    dp, ds, dx = grads
    _, ct_p, ct_xs = c
    return ds, _add(ct_p, dp), (L.put(ct_xs, dx, t) if ct_xs_wanted else ct_xs)


# StoreAll: every step's residuals in time-major [T, ...] buffers (the loop-invariant ones once).


def _store_forward(L: Loop, p, fixed, s, ys):
    R = StepResiduals(L.g, p, fixed, s, L.x(0))
    bufs = time_buffer(R.stored, L.time, L.swap)

    def body(t, c):
        s, ys, bufs = c
        s, y, stored = R.forward(p, fixed, s, L.x(t), t)
        return s, L.put(ys, y, t), set_time(bufs, _to_host(stored) if L.swap else stored, t)

    s_final, ys, bufs = fori(0, L.n, body, (s, ys, bufs), L.unroll)
    return s_final, ys, (R.invariant(p, fixed, s, L.x(0)), bufs)


def _store_backward(L: Loop, p, fixed, s0, saved, carry, ct_y, want_dx):
    R = StepResiduals(L.g, p, fixed, s0, L.x(0))
    invariant, bufs = saved

    def body(t, c):
        stored = _to_device(at_time(bufs, t), L.swap)
        grads = R.backward(invariant, stored, L.x(t), t, (c[0], ct_y(t)))
        return _reverse_step(L, c, t, grads, want_dx)

    return fori(0, L.n, body, carry, L.unroll, reverse=True)


# Recompute: the state before every step; the backward pass re-runs each step under jax.vjp.


def _recompute_forward(L: Loop, p, fixed, s, ys):
    states = time_buffer(shapes_of(s), L.time, L.swap)

    def body(t, c):
        s, ys, states = c
        states = set_time(states, _to_host(s) if L.swap else s, t)
        new, y = L.g(p, fixed, s, L.x(t), t)
        return new, L.put(ys, y, t), states

    s_final, ys, states = fori(0, L.n, body, (s, ys, states), L.unroll)
    return s_final, ys, states


def _recompute_backward(L: Loop, p, fixed, s0, states, carry, ct_y, want_dx):
    def body(t, c):
        s = _to_device(at_time(states, t), L.swap)
        return _reverse_step(L, c, t, L.vjp(p, fixed, s, t, (c[0], ct_y(t))), want_dx)

    return fori(0, L.n, body, carry, L.unroll, reverse=True)


# CheckpointEvery(k): the state at t = 0, k, 2k, ...; the backward pass re-runs one segment at
# a time, storing its residuals (k steps' worth, on device), and reverses it.


def _segments_forward(L: Loop, p, fixed, s, ys, every: int):
    # One flat loop (not a loop of segments): XLA then drops `ys` when nothing reads it.
    ckpts = time_buffer(shapes_of(s), -(-L.time // every), L.swap)

    def body(t, c):
        s, ys, ckpts = c
        ckpts = lax.cond(t % every == 0, lambda k: _keep(k, s, t // every, L.swap), _same, ckpts)
        new, y = L.g(p, fixed, s, L.x(t), t)
        return new, L.put(ys, y, t), ckpts

    return fori(0, L.n, body, (s, ys, ckpts), L.unroll)


def _segments_backward(L: Loop, p, fixed, s0, ckpts, carry, ct_y, want_dx, every: int):
    R = StepResiduals(L.g, p, fixed, s0, L.x(0))
    invariant = R.invariant(p, fixed, s0, L.x(0))

    def segment(i, c):
        lo = i * every
        hi = jnp.minimum(lo + every, L.n)

        def store(t, cc):  # recompute the segment, keeping its residuals (on device)
            s, local = cc
            s, _, stored = R.forward(p, fixed, s, L.x(t), t)
            return s, set_time(local, stored, t - lo)

        s = _to_device(at_time(ckpts, i), L.swap)
        _, local = fori(lo, hi, store, (s, time_buffer(R.stored, every)), L.unroll)

        def back(t, cc):
            stored = at_time(local, t - lo)
            grads = R.backward(invariant, stored, L.x(t), t, (cc[0], ct_y(t)))
            return _reverse_step(L, cc, t, grads, want_dx)

        return fori(lo, hi, back, c, L.unroll, reverse=True)

    return fori(0, (L.n + every - 1) // every, segment, carry, reverse=True)


# Revolve(c): a stack of c slots (slot 0: the initial state). The backward pass repeats, until
# every step is reversed: from the top slot's state at `lo`, with `hi` the first step not yet
# reversed, either advance to the binomial split point and push its state (a free slot and two
# or more steps left), or advance to `hi - 1` and reverse that step, popping the slot once its
# own step is reversed. The forward pass takes the first descent's checkpoints itself.


def _revolve_forward(L: Loop, p, fixed, s, ys, checkpoints: int):
    checkpoints = min(checkpoints, L.time)  # more slots than steps would stay empty
    # The first descent's checkpoints are taken while computing the outputs, in one flat loop.
    slots = _keep(time_buffer(shapes_of(s), checkpoints, L.swap), s, 0, L.swap)
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
            return _keep(slots, s, top + 1, L.swap), idx.at[top + 1].set(t), top + 1, t

        slots, idx, top, _ = lax.cond(t == nxt, take, lambda c: c, (slots, idx, top, nxt))
        nxt = jnp.where(t == nxt, next_checkpoint(t, top), nxt)
        new, y = L.g(p, fixed, s, L.x(t), t)
        return new, L.put(ys, y, t), slots, idx, top, nxt

    init = (s, ys, slots, idx, jnp.int32(0), next_checkpoint(jnp.int32(0), jnp.int32(0)))
    s, ys, slots, idx, top, _ = fori(0, L.n, body, init, L.unroll)
    return s, ys, (slots, idx, top)


def _revolve_backward(L: Loop, p, fixed, s0, saved, carry, ct_y, want_dx, checkpoints: int):
    checkpoints = min(checkpoints, L.time)
    tables = revolve_tables(checkpoints, L.time)
    slots, idx, top = saved

    def body(c):
        hi, top, slots, idx, rev = c
        lo = idx[top]
        free = checkpoints - 1 - top
        push = (hi - lo >= 2) & (free > 0)
        split = revolve_split(tables, jnp.maximum(hi - lo, 2), jnp.maximum(free + 1, 2))
        target = jnp.where(push, lo + split, hi - 1)
        s, _ = L.run(p, fixed, _to_device(at_time(slots, top), L.swap), lo, target)

        def take(_):
            kept = _keep(slots, s, top + 1, L.swap)
            return hi, top + 1, kept, idx.at[top + 1].set(target), rev

        def reverse(_):
            grads = L.vjp(p, fixed, s, hi - 1, (rev[0], ct_y(hi - 1)))
            new_top = jnp.where(target == lo, jnp.maximum(top - 1, 0), top)
            return hi - 1, new_top, slots, idx, _reverse_step(L, rev, hi - 1, grads, want_dx)

        return lax.cond(push, take, reverse, None)

    init = (jnp.asarray(L.n, jnp.int32), top, slots, idx, carry)
    return lax.while_loop(lambda c: c[0] > 0, body, init)[4]


def strategy_fns(strategy):
    """``(forward, backward)`` loops of a strategy object (see ``_memory.py``).

    ``forward(L, p, fixed, s0, ys) -> (final_state, ys, saved)``;
    ``backward(L, p, fixed, s0, saved, (ct_final, zeros_p, ct_xs), ct_y, want_dx)
    -> (ct_s0, ct_p, ct_xs)`` where ``ct_y(t)`` is the cotangent of step ``t``'s output.
    ``ys`` and ``ct_xs`` are in the caller's layout (time along ``L.axis``).
    """
    if isinstance(strategy, StoreAll):
        return _store_forward, _store_backward
    if isinstance(strategy, Recompute):
        return _recompute_forward, _recompute_backward
    if isinstance(strategy, CheckpointEvery):
        k = strategy.every
        return (
            lambda *a: _segments_forward(*a, k),
            lambda *a: _segments_backward(*a, k),
        )
    c = strategy.checkpoints
    return lambda *a: _revolve_forward(*a, c), lambda *a: _revolve_backward(*a, c)
