"""The generic loop ``dynamic_rnn`` compiles: early exit, partial unrolling, custom reverse pass.

:func:`loop` runs ``step(state, x_t, t) -> (state, y_t)`` for ``t < n`` only, where ``n`` may be
a traced value (:func:`trip_count` of the sequence lengths under ``jax.jit``).
``lax.while_loop`` has no reverse-mode rule, so the loop carries a ``jax.custom_vjp`` whose
backward pass is a reverse loop over the same ``n`` steps; what it saves for that pass is the
memory strategy's choice (``strategies.py``). That loop reads each step's inputs, and writes
each step's outputs (and, in the backward pass, reads their cotangents and writes the inputs'
cotangents) along the caller's time axis, in place: batch-major arrays are not transposed, so a
sequence padded far beyond ``n`` costs no work proportional to its padded length but zeroing
the outputs. With a traced trip count and the default strategy, a loop over more than one chunk
stores one chunk at a time (``CheckpointEvery``; :func:`~.options.runs_in_chunks`). With a
static trip count, the default strategy and no swapping, the loop is a plain ``lax.scan``
(XLA's own autodiff) over the first ``n`` steps, on time-major arrays.

The step is closure-converted first (``jax.make_jaxpr``): every traced value it closes over (a
cell's weights under ``jax.jit`` or ``jax.grad``, traced sequence lengths) becomes an explicit
argument of the custom VJP, so cells may be any Python objects.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from ..cells.checks import is_traced
from .options import RunOptions, resolve_options, runs_in_chunks
from .planner import plan_loop
from .residuals import shapes_of
from .strategies import CheckpointEvery, StoreAll
from .timeaxis import Loop, at_time, merge, time_buffer, time_first, zeros_like

__all__ = ["trip_count", "run_loop", "loop", "Converted", "convert_step"]

tree_map, tree_leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves


def trip_count(sequence_length, time: int):
    """How many steps the loop must run: ``max(sequence_length)`` clipped to ``[0, time]``.

    Under TF1's contract every step at or past the longest row outputs zeros and leaves the
    state alone, so those steps need not run, forward or backward.

    **Arguments:** ``sequence_length``: ``None`` or int ``[batch]``; ``time``: the padded length.

    **Returns:** ``time`` without lengths, a Python ``int`` for concrete lengths, or a traced
    int32 scalar for traced ones (under ``jax.jit``).
    """
    if sequence_length is None:
        return time
    if not is_traced(sequence_length):
        longest = int(np.max(np.asarray(sequence_length), initial=0))
        return min(max(longest, 0), time)
    return jnp.clip(jnp.max(sequence_length, initial=0), 0, time).astype(jnp.int32)


def _is_primal(a) -> bool:
    return isinstance(a, CustomVJPPrimal)


class Converted(NamedTuple):
    """A step with its traced closure made explicit: ``fn(consts, state, x, t)``."""

    fn: Any
    consts: list
    y_shapes: Any
    key: str  # the step's program, to cache plans by


def convert_step(step, state, x_t, hoist_all: bool = False) -> Converted:
    """Closure-convert ``step(state, x_t, t)`` for one step's shapes.

    Constants that are tracers are hoisted into ``consts``; with ``hoist_all`` every array
    constant is (to compile the loop on its own with the weights as arguments).
    """
    leaves, tree = jax.tree_util.tree_flatten((state, x_t))

    def flat_step(*args):
        s, x = jax.tree_util.tree_unflatten(tree, args[:-1])
        return step(s, x, args[-1])

    t0 = jax.ShapeDtypeStruct((), jnp.int32)
    closed, shapes = jax.make_jaxpr(flat_step, return_shape=True)(*leaves, t0)
    out_tree = jax.tree_util.tree_structure(shapes)
    hoist = [is_traced(c) or (hoist_all and np.ndim(c) > 0) for c in closed.consts]
    kept = [c for c, h in zip(closed.consts, hoist) if not h]

    def fn(consts, s, x, t):
        it_kept, it_hoisted = iter(kept), iter(consts)
        merged = [next(it_hoisted) if h else next(it_kept) for h in hoist]
        out = jax.core.eval_jaxpr(closed.jaxpr, merged, *tree_leaves((s, x)), t)
        return jax.tree_util.tree_unflatten(out_tree, out)

    hoisted = [c for c, h in zip(closed.consts, hoist) if h]
    return Converted(fn, hoisted, shapes[1], str(closed.jaxpr))


def _custom_loop(conv: Converted, strategy, state, xs, n, unroll: int, swap: bool, axis: int):
    """``(final_state, ys)`` through a custom VJP; ``n`` is an int32 scalar, maybe traced.

    Time runs along ``axis`` of ``xs`` and of the returned ``ys`` (0 time-major, 1 batch-major).
    The step's constants are split into floating ones (``weights``, differentiable) and the
    rest (``ints``); the backward pass differentiates only the weights JAX perturbs.
    """
    time = tree_leaves(xs)[0].shape[axis]
    floats = [jnp.issubdtype(jnp.result_type(c), jnp.inexact) for c in conv.consts]
    weights = [c for c, f in zip(conv.consts, floats) if f]
    ints = [c for c, f in zip(conv.consts, floats) if not f]

    def make_loop(perturbed, ints, xs, n) -> Loop:
        """The loop over weights split into perturbed ``p`` and ``fixed = (others, ints)``."""

        def g(p, fixed, s, x, t):
            return conv.fn(merge(floats, merge(perturbed, p, fixed[0]), fixed[1]), s, x, t)

        return Loop(g, xs, n, time, unroll, swap, axis)

    def ys_buffer():
        return time_buffer(conv.y_shapes, time, axis=axis)

    @jax.custom_vjp
    def run(weights, ints, state, xs, n):
        L = make_loop([False] * len(weights), ints, xs, n)
        return L.run([], (weights, ints), state, 0, n, ys_buffer())

    static = {}  # what the backward pass must know about the forward's arguments

    def run_fwd(weights, ints, state, xs, n):
        static["perturbed"] = perturbed = [w.perturbed for w in weights]
        static["want_dx"] = any(a.perturbed for a in tree_leaves(xs, is_leaf=_is_primal))
        weights, ints, state, xs, n = tree_map(
            lambda a: a.value, (weights, ints, state, xs, n), is_leaf=_is_primal
        )
        p = [w for w, q in zip(weights, perturbed) if q]
        fixed = ([w for w, q in zip(weights, perturbed) if not q], ints)
        L = make_loop(perturbed, ints, xs, n)
        final, ys, saved = strategy.forward(L, p, fixed, state, ys_buffer())
        return (final, ys), (p, fixed, state, xs, n, saved)

    def run_bwd(res, cts):
        p, fixed, s0, xs, n, saved = res
        perturbed, want_dx = static["perturbed"], static["want_dx"]
        ct_final, ct_ys = cts
        L = make_loop(perturbed, fixed[1], xs, n)
        ct_final = tree_map(
            lambda c, s: jnp.zeros(s.shape, s.dtype) if isinstance(c, SymbolicZero) else c,
            ct_final,
            shapes_of(s0),
        )

        def ct_y(t):
            return tree_map(
                lambda c, s: (
                    jnp.zeros(s.shape, s.dtype)
                    if isinstance(c, SymbolicZero)
                    else at_time(c, t, axis)
                ),
                ct_ys,
                conv.y_shapes,
            )

        ct_xs = zeros_like(shapes_of(xs)) if want_dx else None
        carry = (ct_final, zeros_like(shapes_of(p)), ct_xs)
        ct_s0, ct_p, ct_xs = strategy.backward(L, p, fixed, s0, saved, carry, ct_y, want_dx)
        ct_weights = merge(perturbed, ct_p, [None] * (len(perturbed) - len(ct_p)))
        return ct_weights, [None] * len(fixed[1]), ct_s0, ct_xs, None

    run.defvjp(run_fwd, run_bwd, symbolic_zeros=True)
    return run(weights, ints, state, xs, n)


def _scan_loop(conv: Converted, state, xs, n: int, unroll: int):
    """Static trip count, everything stored: ``lax.scan`` and XLA's own autodiff."""
    time = tree_leaves(xs)[0].shape[0]
    if n == 0:
        return state, time_buffer(conv.y_shapes, time)

    def body(s, inp):
        x, t = inp
        return conv.fn(conv.consts, s, x, t)

    head = tree_map(lambda a: a[:n], xs)
    final, ys = lax.scan(body, state, (head, jnp.arange(n, dtype=jnp.int32)), unroll=unroll)
    if n < time:
        pad = time_buffer(conv.y_shapes, time - n)
        ys = tree_map(lambda a, z: jnp.concatenate([a, z]), ys, pad)
    return final, ys


def _run(conv: Converted, strategy, state, xs, n, unroll, swap, axis, exit_chunk=None):
    """``(final_state, ys)``, time along ``axis`` of ``xs`` and ``ys``."""
    if isinstance(strategy, StoreAll) and not swap:
        if isinstance(n, int):
            final, ys = _scan_loop(conv, state, time_first(xs, axis), n, unroll)
            return final, time_first(ys, axis)
        time = tree_leaves(xs)[0].shape[axis]
        if exit_chunk is not None and runs_in_chunks(time, n, exit_chunk):
            strategy = CheckpointEvery(exit_chunk)
    n = jnp.asarray(n, jnp.int32)
    return _custom_loop(conv, strategy, state, xs, n, unroll, swap, axis)


def loop(step, state, xs, n, options: RunOptions, unroll: int):
    """The loop with checked options (see :func:`run_loop`): ``(final_state, ys)``.

    ``n`` is the trip count (an int in ``[0, T]`` or a traced int32 scalar); ``unroll`` is
    resolved (a positive int). Time runs along ``options.axis`` of ``xs`` and ``ys``.
    """
    axis = options.axis
    strategy = options.memory
    if options.memory_budget is not None:
        conv = convert_step(step, state, at_time(xs, 0, axis), hoist_all=True)
        run = partial(_run, exit_chunk=options.exit_chunk)
        strategy = plan_loop(
            run, conv, state, xs, n, unroll, options.swap_memory, options.memory_budget, axis
        )
    conv = convert_step(step, state, at_time(xs, 0, axis))
    return _run(conv, strategy, state, xs, n, unroll, options.swap_memory, axis, options.exit_chunk)


def run_loop(
    step,
    state,
    xs,
    *,
    length=None,
    unroll: int = 1,
    memory=None,
    swap_memory: bool = False,
    memory_budget: int | None = None,
    time_major: bool = True,
):
    """Run ``step(state, x_t, t) -> (state, y_t)`` for ``t < length``; ``ys`` stacked over time.

    Reference loop (``T`` the length of the time axis of ``xs``)::

        ys = zeros([T, *y_shape])
        for t in range(length):
            state, ys[t] = step(state, xs[t], t)
        return state, ys

    The caller guarantees that steps at or past ``length`` would output zeros and leave the
    state alone (TF1's contract past ``max(sequence_length)``), so they are not run at all,
    neither forward nor backward.

    **Arguments:**

    - ``step``: a pure function ``(state, x_t [B, ...], t int32 scalar) -> (state, y_t)``; it
      may close over anything, traced values included.
    - ``state``: the initial state, a pytree of arrays.
    - ``xs``: a pytree of ``[T, B, ...]`` arrays (``[B, T, ...]`` with ``time_major=False``).
    - ``length``: the trip count (see :func:`trip_count`): ``None`` (all ``T``), a Python int
      or a traced int32 scalar.
    - ``unroll``: steps per iteration of the compiled loops (a positive int).
    - ``memory``: the backward pass's strategy (``"store"``, ``"recompute"`` or a strategy
      object); ``None`` stores everything.
    - ``swap_memory``: keep what the strategy saves in pinned host memory.
    - ``memory_budget``: bytes; when given, the fastest strategy whose compiled gradient step
      fits (``planner.py``).
    - ``time_major``: the layout of ``xs`` and of the returned ``ys``.

    **Returns:** ``(final_state, ys)``, ``ys`` a pytree of ``[T, B, ...]`` arrays (batch-major
    without ``time_major``) that are zero at and past ``length``.
    """
    options = resolve_options(
        unroll=unroll,
        memory=memory,
        memory_budget=memory_budget,
        swap_memory=swap_memory,
        time_major=time_major,
    )
    time = tree_leaves(xs)[0].shape[options.axis]
    n = time if length is None else length
    if isinstance(n, (int, np.integer)):
        n = min(max(int(n), 0), time)
    return loop(step, state, xs, n, options, options.unroll_for("generic"))
