"""The loop that ``dynamic_rnn`` compiles: early exit, partial unrolling, custom reverse pass.

``run_loop(step, state, xs, length=n)`` runs ``step(state, x_t, t) -> (state, y_t)`` for
``t < n`` only, where ``n`` may be a traced value (:func:`trip_count` of the sequence lengths
under ``jax.jit``). ``lax.while_loop`` has no reverse-mode rule, so the loop carries a
``jax.custom_vjp`` whose backward pass is a reverse loop over the same ``n`` steps; what it
saves for that pass is the memory strategy's choice (``_memory.py``, loops in
``_backprop.py``). That loop reads each step's inputs, and writes each step's outputs (and, in
the backward pass, reads their cotangents and writes the inputs' cotangents) along the caller's
time axis, in place: batch-major arrays are not transposed, so a sequence padded far beyond
``n`` costs no work proportional to its padded length but zeroing the outputs. With a traced
trip count and the default strategy, a loop over more than :data:`EXIT_CHUNK` steps stores
one segment of that many steps at a time (``CheckpointEvery``) rather than buffers sized by
the padded length (see ``_run``). With a static trip count, the default
strategy and no swapping, the loop is a plain ``lax.scan`` (XLA's own autodiff) over the first
``n`` steps, on time-major arrays (batch-major ones are transposed for it).

The step is closure-converted first (``jax.make_jaxpr``): every traced value it closes over (a
cell's weights under ``jax.jit`` or ``jax.grad``, traced sequence lengths) becomes an explicit
argument of the custom VJP, so cells may be any Python objects.

Interface for other runners (stable): :func:`trip_count` (the early-exit step count),
:func:`run_loop` (the loop), :func:`convert_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from ._backprop import (
    Loop,
    at_time,
    merge,
    strategy_fns,
    time_buffer,
    zeros_like,
)
from ._memory import CheckpointEvery, StoreAll, check_budget, plan_memory, resolve_memory
from ._residuals import StepResiduals, nbytes, shapes_of

__all__ = ["trip_count", "run_loop", "Converted", "convert_step"]

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
    if not isinstance(sequence_length, jax.core.Tracer):
        longest = int(np.max(np.asarray(sequence_length), initial=0))
        return min(max(longest, 0), time)
    return jnp.clip(jnp.max(sequence_length, initial=0), 0, time).astype(jnp.int32)


def is_primal(a) -> bool:
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
    hoist = [
        isinstance(c, jax.core.Tracer) or (hoist_all and np.ndim(c) > 0) for c in closed.consts
    ]
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

    Time runs along ``axis`` of ``xs`` and of the returned ``ys`` (0 time-major, 1 batch-major);
    the loops read and write one step at a time in that layout, as they do the cotangents.
    """
    time = tree_leaves(xs)[0].shape[axis]
    floats = [jnp.issubdtype(jnp.result_type(c), jnp.inexact) for c in conv.consts]
    dc = [c for c, f in zip(conv.consts, floats) if f]
    nc = [c for c, f in zip(conv.consts, floats) if not f]
    forward, backward = strategy_fns(strategy)

    def looper(pert, nc, xs, n):
        """The loop over weights split into perturbed ``p`` and ``fixed = (unperturbed, nc)``."""

        def g(p, fixed, s, x, t):
            return conv.fn(merge(floats, merge(pert, p, fixed[0]), fixed[1]), s, x, t)

        return Loop(g, xs, n, time, unroll, swap, axis)

    def ys_buffer():
        return time_buffer(conv.y_shapes, time, axis=axis)

    @jax.custom_vjp
    def loop(dc, nc, state, xs, n):
        L = looper([False] * len(dc), nc, xs, n)
        return L.run([], (dc, nc), state, 0, n, ys_buffer())

    static = {}  # what the backward pass must know about the forward's arguments

    def loop_fwd(dc, nc, state, xs, n):
        static["pert"] = pert = [d.perturbed for d in dc]
        static["want_dx"] = any(a.perturbed for a in tree_leaves(xs, is_leaf=is_primal))
        dc, nc, state, xs, n = tree_map(
            lambda a: a.value, (dc, nc, state, xs, n), is_leaf=is_primal
        )
        p = [d for d, q in zip(dc, pert) if q]
        fixed = ([d for d, q in zip(dc, pert) if not q], nc)
        final, ys, saved = forward(looper(pert, nc, xs, n), p, fixed, state, ys_buffer())
        return (final, ys), (p, fixed, state, xs, n, saved)

    def loop_bwd(res, cts):
        p, fixed, s0, xs, n, saved = res
        pert, want_dx = static["pert"], static["want_dx"]
        ct_final, ct_ys = cts
        L = looper(pert, fixed[1], xs, n)
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
        ct_s0, ct_p, ct_xs = backward(L, p, fixed, s0, saved, carry, ct_y, want_dx)
        ct_dc = merge(pert, ct_p, [None] * (len(pert) - len(ct_p)))
        return ct_dc, [None] * len(fixed[1]), ct_s0, ct_xs, None

    loop.defvjp(loop_fwd, loop_bwd, symbolic_zeros=True)
    return loop(dc, nc, state, xs, n)


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


#: With a traced trip count, loops over more than this many steps keep one chunk (segment) of
#: this many steps' values at a time, recomputing it in the backward pass: here when everything
#: is to be stored (see _run), and in the fused path (``_fused._chunked``).
EXIT_CHUNK = 64


def _run(conv: Converted, strategy, state, xs, n, unroll: int, swap: bool, axis: int):
    """``(final_state, ys)``, time along ``axis`` of ``xs`` and ``ys``."""
    if isinstance(strategy, StoreAll) and not swap:
        if isinstance(n, int):
            final, ys = _scan_loop(conv, state, _time_first(xs, axis), n, unroll)
            return final, _time_first(ys, axis)
        # A traced trip count: buffers of every step's values would be sized by the padded T
        # (allocated and cleared at every call, however short the batch). Past one chunk,
        # store one segment of EXIT_CHUNK steps at a time instead, recomputing it in the
        # backward pass; up to one chunk, store every step (small buffers, no recomputation).
        if tree_leaves(xs)[0].shape[axis] > EXIT_CHUNK:
            strategy = CheckpointEvery(EXIT_CHUNK)
    n = jnp.asarray(n, jnp.int32)
    return _custom_loop(conv, strategy, state, xs, n, unroll, swap, axis)


def _check_unroll(unroll) -> int:
    if isinstance(unroll, bool) or not isinstance(unroll, (int, np.integer)):
        raise TypeError(
            f"unroll must be a positive int (steps per loop iteration); got "
            f"{type(unroll).__name__}."
        )
    if unroll < 1:
        raise ValueError(f"unroll must be a positive int (steps per loop iteration); got {unroll}.")
    return int(unroll)


def _check_host_memory() -> None:
    kinds = [m.kind for m in jax.devices()[0].addressable_memories()]
    if "pinned_host" not in kinds:
        raise ValueError(
            f"swap_memory=True needs a device with pinned_host memory; {jax.devices()[0]} has "
            f"{kinds}. Use memory='recompute' or a checkpointing strategy instead."
        )


def _time_first(tree, axis: int):
    """Time-major leaves from leaves with time along ``axis`` (0 or 1), and back."""
    return tree if axis == 0 else tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)


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
    - ``memory``: the backward pass's strategy (``"store"``, ``"recompute"`` or an object of
      :mod:`recurrax._memory`); ``None`` stores everything.
    - ``swap_memory``: keep what the strategy saves in pinned host memory.
    - ``memory_budget``: bytes; when given, overrides ``memory`` with the fastest strategy whose
      compiled gradient step fits (:func:`plan_memory`).
    - ``time_major``: the layout of ``xs`` and of the returned ``ys``.

    **Returns:** ``(final_state, ys)``, ``ys`` a pytree of ``[T, B, ...]`` arrays (batch-major
    without ``time_major``) that are zero at and past ``length``.
    """
    unroll = _check_unroll(unroll)
    strategy = resolve_memory(memory)
    if not isinstance(swap_memory, bool):
        raise TypeError(f"swap_memory must be a bool; got {type(swap_memory).__name__}.")
    if swap_memory:
        _check_host_memory()
    if memory_budget is not None:
        check_budget(memory_budget)
        if memory not in (None, "store"):
            raise ValueError(
                f"pass memory or memory_budget, not both: memory={memory!r} fixes the strategy "
                f"and memory_budget={memory_budget} asks for one to be chosen."
            )
    axis = 0 if time_major else 1
    time = tree_leaves(xs)[0].shape[axis]
    n = time if length is None else length
    if isinstance(n, (int, np.integer)):
        n = min(max(int(n), 0), time)
    if memory_budget is not None:
        strategy = _plan(step, state, xs, n, unroll, swap_memory, memory_budget, axis)
    conv = convert_step(step, state, at_time(xs, 0, axis))
    return _run(conv, strategy, state, xs, n, unroll, swap_memory, axis)


_PLANS: dict = {}  # (program, shapes, options, budget) -> strategy
_MEASURED: dict = {}  # (program, shapes, options, strategy) -> temp bytes
_CACHE_SIZE = 256  # entries of each; both are emptied when one is full
_QUICK = {"xla_backend_optimization_level": 0}


def _plan(step, state, xs, n, unroll, swap, budget, axis: int):
    """The strategy :func:`plan_memory` picks for this loop, cached per program and budget.

    The gradient step measured is the loop's VJP compiled on its own: weights (every array the
    step closes over), initial state, inputs and the cotangents of the outputs are arguments;
    outputs, final state and gradients are results. Its temp bytes are what the loop keeps for
    the backward pass plus its working buffers; a loss that reads the outputs adds its own.
    Time runs along ``axis`` of ``xs``, as in the program measured.
    """
    time = tree_leaves(xs)[0].shape[axis]
    x0 = at_time(xs, 0, axis)
    conv = convert_step(step, state, x0, hoist_all=True)
    traced_n = not isinstance(n, int)
    floats = [jnp.issubdtype(jnp.result_type(c), jnp.inexact) for c in conv.consts]
    dc = [c for c, f in zip(conv.consts, floats) if f]
    nc = [c for c, f in zip(conv.consts, floats) if not f]
    cts = jax.eval_shape(
        lambda c, s, x: _run(conv._replace(consts=c), StoreAll(), s, x, time, 1, False, axis),
        conv.consts,
        state,
        xs,
    )
    args = shapes_of((dc, nc, state, xs, n if traced_n else 0, cts))
    program = (conv.key, str(args), None if traced_n else n, unroll, swap, axis)
    if max(len(_PLANS), len(_MEASURED)) >= _CACHE_SIZE:
        _PLANS.clear()
        _MEASURED.clear()
    if (*program, budget) not in _PLANS:

        def measure(strategy) -> int:
            if (*program, strategy) not in _MEASURED:
                _MEASURED[(*program, strategy)] = _measure(strategy)
            return _MEASURED[(*program, strategy)]

        def _measure(strategy) -> int:
            def vjp(dc, nc, state, xs, n_arg, cts):
                def loop(dc, state, xs):
                    c = conv._replace(consts=merge(floats, dc, nc))
                    length = n_arg if traced_n else n
                    return _run(c, strategy, state, xs, length, unroll, swap, axis)

                outs, pull = jax.vjp(loop, dc, state, xs)
                return outs, pull(cts)

            # Buffers are assigned on the optimised HLO, before code generation: skipping the
            # backend's optimisations compiles faster and reports the same temp bytes.
            compiled = jax.jit(vjp).lower(*args).compile(_QUICK)
            return int(compiled.memory_analysis().temp_size_in_bytes)

        def g(p, fixed, s, x, t):
            return conv.fn(merge(floats, p, fixed[1]), s, x, t)

        step_bytes = StepResiduals(g, dc, ([], nc), state, x0).stored_bytes
        # The caller's program keeps a few small buffers around the loop (its initial state, the
        # gradient's accumulators, say): plan with a margin of four states and 2 KiB for them.
        # Measured excess over the loop's own VJP: 192 bytes on CPU, 1.5 KiB on an H200 GPU
        # (benchmarks/RESULTS.md, "On a GPU"), where two states and 1 KiB fell 256 bytes short.
        margin = 4 * nbytes(shapes_of(state)) + 2048
        plan = plan_memory(
            budget, time, nbytes(shapes_of(state)), step_bytes, lambda s: measure(s) + margin
        )
        _PLANS[(*program, budget)] = plan
    return _PLANS[(*program, budget)]
