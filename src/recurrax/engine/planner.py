"""The memory planner: the fastest backprop strategy whose compiled gradient step fits a budget.

:func:`plan_memory` tries candidates in order of speed, measuring each one's temp memory by
compiling the loop's gradient step on its own (:func:`plan_loop`); plans and measurements are
cached per program, shapes, options and budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..cells.checks import check_positive_int
from .residuals import StepResiduals, nbytes, shapes_of
from .strategies import CheckpointEvery, Revolve, StoreAll, Strategy
from .timeaxis import at_time, merge

__all__ = ["segment_length", "check_budget", "plan_memory", "plan_loop", "planned"]


def segment_length(time: int, state_bytes: int, step_bytes: int) -> int:
    """The ``every`` that minimises ``ceil(time / every) * state_bytes + every * step_bytes``."""
    best = math.sqrt(time * max(state_bytes, 1) / max(step_bytes, 1))
    near = range(max(1, min(time, int(best / 2))), min(time, int(2 * best) + 2) + 1)
    return min(near, key=lambda k: (-(-time // k) * state_bytes + k * step_bytes, k))


def check_budget(budget) -> int:
    """``budget`` as an int, or a clear error: it must be a positive number of bytes."""
    return check_positive_int(budget, "memory_budget", "bytes of temp memory")


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


_PLANS: dict = {}  # (program, shapes, options, budget) -> strategy
_MEASURED: dict = {}  # (program, shapes, options, strategy) -> temp bytes
_CACHE_SIZE = 256  # entries of each; both are emptied when one is full
_QUICK = {"xla_backend_optimization_level": 0}


def plan_loop(run, conv, state, xs, n, unroll: int, swap: bool, budget: int, axis: int):
    """The strategy :func:`plan_memory` picks for one loop, cached per program and budget.

    ``run(conv, strategy, state, xs, n, unroll, swap, axis) -> (final_state, ys)`` runs the
    loop (``loop.py``); ``conv`` is its step, closure-converted with every array constant
    hoisted (the weights become arguments). The gradient step measured is the loop's VJP
    compiled on its own: weights, initial state, inputs and the cotangents of the outputs are
    arguments; outputs, final state and gradients are results. Its temp bytes are what the loop
    keeps for the backward pass plus its working buffers; a loss that reads the outputs adds
    its own. Time runs along ``axis`` of ``xs``, as in the program measured.
    """
    time = jax.tree_util.tree_leaves(xs)[0].shape[axis]
    x0 = at_time(xs, 0, axis)
    traced_n = not isinstance(n, int)
    floats = [jnp.issubdtype(jnp.result_type(c), jnp.inexact) for c in conv.consts]
    weights = [c for c, f in zip(conv.consts, floats) if f]
    ints = [c for c, f in zip(conv.consts, floats) if not f]
    cts = jax.eval_shape(
        lambda c, s, x: run(conv._replace(consts=c), StoreAll(), s, x, time, 1, False, axis),
        conv.consts,
        state,
        xs,
    )
    args = shapes_of((weights, ints, state, xs, n if traced_n else 0, cts))
    program = (conv.key, str(args), None if traced_n else n, unroll, swap, axis)
    if max(len(_PLANS), len(_MEASURED)) >= _CACHE_SIZE:
        _PLANS.clear()
        _MEASURED.clear()
    if (*program, budget) in _PLANS:
        return _PLANS[(*program, budget)]

    def measure(strategy) -> int:
        if (*program, strategy) not in _MEASURED:
            _MEASURED[(*program, strategy)] = _measure(strategy)
        return _MEASURED[(*program, strategy)]

    def _measure(strategy) -> int:
        def vjp(weights, ints, state, xs, n_arg, cts):
            def loop(weights, state, xs):
                c = conv._replace(consts=merge(floats, weights, ints))
                length = n_arg if traced_n else n
                return run(c, strategy, state, xs, length, unroll, swap, axis)

            outs, pull = jax.vjp(loop, weights, state, xs)
            return outs, pull(cts)

        # Buffers are assigned on the optimised HLO, before code generation: skipping the
        # backend's optimisations compiles faster and reports the same temp bytes.
        compiled = jax.jit(vjp).lower(*args).compile(_QUICK)
        return int(compiled.memory_analysis().temp_size_in_bytes)

    def g(p, fixed, s, x, t):
        return conv.fn(merge(floats, p, fixed[1]), s, x, t)

    step_bytes = StepResiduals(g, weights, ([], ints), state, x0).stored_bytes
    # The caller's program keeps a few small buffers around the loop (its initial state, the
    # gradient's accumulators, say): plan with a margin of four states and 2 KiB for them
    # (measured excess over the loop's own VJP: 192 bytes on CPU, 1.5 KiB on a GPU).
    margin = 4 * nbytes(shapes_of(state)) + 2048
    plan = plan_memory(
        budget, time, nbytes(shapes_of(state)), step_bytes, lambda s: measure(s) + margin
    )
    _PLANS[(*program, budget)] = plan
    return plan


def planned(budget: int) -> list[Strategy]:
    """The strategies :func:`plan_loop` chose for ``budget`` (bytes), oldest first, as long as
    they are cached: what a ``memory_budget`` call ran with, for benchmarks and debugging."""
    return [plan for key, plan in _PLANS.items() if key[-1] == budget]
