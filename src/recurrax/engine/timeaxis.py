"""Loops with a possibly traced trip count, and per-step reads and writes along a time axis.

The caller's arrays (inputs, outputs and their cotangents) keep the caller's layout: a
:class:`Loop` reads and writes step ``t`` along their time axis (0 time-major, 1 batch-major)
in place, so nothing the size of the padded sequence is transposed. Buffers the engine keeps for
itself (stored residuals, checkpointed states) are time-major.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "Loop",
    "add",
    "at_time",
    "carried_cotangents",
    "float0_cotangents",
    "fori",
    "merge",
    "pad_time",
    "set_time",
    "time_buffer",
    "time_first",
    "to_device",
    "to_host",
    "zeros_like",
]

tree_map = jax.tree_util.tree_map


def _count_loop(count, fn, carry):
    def body(c):
        return c[0] + 1, fn(c[0], c[1])

    return lax.while_loop(lambda c: c[0] < count, body, (jnp.int32(0), carry))[1]


def fori(lo, hi, body, carry, unroll: int = 1, reverse: bool = False):
    """``carry = body(t, carry)`` for ``t`` in ``[lo, hi)``, descending if ``reverse``.

    ``lo`` and ``hi`` may be traced: ``unroll`` steps run per iteration of a main loop and a
    second loop runs the remainder, so that no step ever runs past ``hi``.
    """
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


def _along(a, axis: int) -> int:
    """The time axis of leaf ``a``: ``axis``, or 0 for ``[T]``, the steps of an unbatched
    (rank-0) value, which has no batch axis to come first (TF1 leaves those unmoved too)."""
    return min(axis, jnp.ndim(a) - 1)


def at_time(tree, t, axis: int = 0):
    """Step ``t`` of every leaf whose time runs along ``axis`` (``[T, ...]`` by default)."""
    return tree_map(lambda a: lax.dynamic_index_in_dim(a, t, _along(a, axis), keepdims=False), tree)


def set_time(tree, values, t, axis: int = 0):
    """Every leaf (time along ``axis``) with step ``t`` replaced by the matching leaf of
    ``values``, in place."""
    return tree_map(
        lambda a, v: lax.dynamic_update_index_in_dim(a, v.astype(a.dtype), t, _along(a, axis)),
        tree,
        values,
    )


def time_buffer(shapes, length: int, host: bool = False, axis: int = 0):
    """Zeros per leaf with a time axis of ``length`` inserted at ``axis`` (``[length, *shape]``
    by default), in pinned host memory when ``host``."""

    def zeros(s):
        at = min(axis, len(s.shape))  # a rank-0 value's steps are [length]
        return jnp.zeros((*s.shape[:at], length, *s.shape[at:]), s.dtype)

    bufs = tree_map(zeros, shapes)
    return to_host(bufs) if host else bufs


def time_first(tree, axis: int):
    """Time-major leaves from leaves with time along ``axis`` (0 or 1), and back."""
    return tree if axis == 0 else tree_map(lambda a: jnp.swapaxes(a, 0, _along(a, 1)), tree)


def pad_time(a, steps: int, axis: int):
    """``a`` with ``steps`` zero steps appended along its time ``axis``."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, steps)
    return jnp.pad(a, pad)


def to_host(tree):
    return jax.device_put(tree, jax.memory.Space.Host)


def to_device(tree, host: bool):
    return jax.device_put(tree, jax.memory.Space.Device) if host else tree


def add(a, b):
    return tree_map(jnp.add, a, b)


def zeros_like(shapes):
    """Zeros for every ``jax.ShapeDtypeStruct`` leaf."""
    return tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _exact(a) -> bool:
    return not jnp.issubdtype(jnp.result_type(a), jnp.inexact)


def float0_cotangents(cts, like):
    """``cts`` for ``jax.vjp``'s pullback: the cotangent of every integer or boolean leaf of
    ``like`` (the primal outputs) as zeros of JAX's ``float0``.

    The reverse loops carry the cotangent of an integer state leaf (a step counter) as zeros of
    the leaf's own dtype, so that the carry keeps its types from step to step;
    :func:`carried_cotangents` turns the pullback's ``float0`` back into those."""
    return tree_map(
        lambda c, a: np.zeros(jnp.shape(a), jax.dtypes.float0) if _exact(a) else c, cts, like
    )


def carried_cotangents(cts, like):
    """The pullback's cotangents of the state ``like`` with every integer or boolean leaf as
    zeros of its own dtype (see :func:`float0_cotangents`)."""
    return tree_map(
        lambda c, a: jnp.zeros(jnp.shape(a), jnp.result_type(a)) if _exact(a) else c, cts, like
    )


def merge(mask, yes, no):
    """Interleave two lists back into one: ``yes`` where ``mask`` is true, ``no`` elsewhere."""
    it_yes, it_no = iter(yes), iter(no)
    return [next(it_yes) if m else next(it_no) for m in mask]


class Loop(NamedTuple):
    """One loop to run: the step ``g(p, fixed, s, x, t) -> (s, y)`` (``p`` the weights being
    differentiated, ``fixed`` everything else), the inputs ``xs``, the trip count ``n`` (int32,
    maybe traced), ``time = T``, ``unroll``, whether saved values go to the host and ``axis``,
    the time axis of the caller's arrays: ``xs``, the outputs and their cotangents are
    ``[T, B, ...]`` with ``axis=0`` and ``[B, T, ...]`` with ``axis=1``."""

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

    def keep(self, buf, s, i):
        """``buf`` (time-major, the engine's own) with ``s`` written at ``i``, on the host
        when the loop swaps."""
        return set_time(buf, to_host(s) if self.swap else s, i)

    def run(self, p, fixed, s, lo, hi, ys=None):
        """Advance ``s`` over ``[lo, hi)``, writing outputs into ``ys`` when given."""

        def body(t, c):
            s, ys = c
            new, y = self.g(p, fixed, s, self.x(t), t)
            return new, (None if ys is None else self.put(ys, y, t))

        return fori(lo, hi, body, (s, ys), self.unroll)

    def vjp(self, p, fixed, s, t, cts):
        """``(ct_p, ct_s, ct_x)`` of step ``t`` from state ``s``, recomputing its internals."""
        x = self.x(t)
        out, pull = jax.vjp(lambda p, s, x: self.g(p, fixed, s, x, t), p, s, x)
        dp, ds, dx = pull(float0_cotangents(cts, out))
        return dp, carried_cotangents(ds, s), dx

    def reverse_step(self, c, t, grads, want_dx: bool):
        """Fold one step's ``(ct_p, ct_s, ct_x)`` into the reverse carry
        ``(ct_s, ct_p, ct_xs)``."""
        dp, ds, dx = grads
        _, ct_p, ct_xs = c
        return ds, add(ct_p, dp), (self.put(ct_xs, dx, t) if want_dx else ct_xs)
