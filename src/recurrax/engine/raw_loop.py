"""A loop that stops when its state says so, with the memory strategies' reverse passes.

:func:`while_loop` runs ``step(state, t) -> (state, y)`` while ``not done(state)``, for at most
``max_steps`` steps; the number of steps is known only once the loop has run (``raw_rnn``'s
loop ends when every row has finished). ``lax.while_loop`` has no reverse-mode rule, so the loop
carries a ``jax.custom_vjp``: its forward pass is a while loop that saves what the memory
strategy keeps, its backward pass is the strategy's own reverse loop (``strategies.py``) over
the steps that ran.

The strategies differentiate a step with respect to its state; integer and boolean leaves of
the state (the finished flags, fed-back token ids) have no derivative. So the state is split:
its floating leaves are the state the strategies see, and its other leaves are recorded before
every step in a ``[max_steps, ...]`` buffer that the strategies read back as the step's input
``x_t``. The step's other outputs (integer emits, the next integer state) get zero cotangents.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from .loop import convert_step
from .residuals import StepResiduals, shapes_of
from .strategies import CheckpointEvery, Recompute, Revolve, StoreAll
from .timeaxis import Loop, at_time, merge, set_time, time_buffer, zeros_like

__all__ = ["while_loop"]

tree_map, tree_leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.inexact)


class _Split:
    """A pytree's leaves split into floating ones and the rest, and joined back."""

    def __init__(self, tree):
        leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        self.mask = [_is_float(a) for a in leaves]

    def split(self, tree) -> tuple[list, list]:
        leaves = tree_leaves(tree)
        return (
            [a for a, m in zip(leaves, self.mask) if m],
            [a for a, m in zip(leaves, self.mask) if not m],
        )

    def join(self, floats, others):
        return jax.tree_util.tree_unflatten(self.treedef, merge(self.mask, floats, others))


def _float0_zeros(tree):
    """The cotangent of integer or boolean values: zeros of JAX's ``float0``."""
    return tree_map(lambda s: np.zeros(s.shape, jax.dtypes.float0), shapes_of(tree))


def _saving(strategy, L: Loop, p, fixed, sf, si):
    """``(saved, advance)``: what ``strategy`` keeps for the backward pass, and
    ``advance(saved, sf, si, t) -> (sf', y, saved)``, one step that keeps it (``strategy`` is
    ``None`` in a forward pass that keeps nothing)."""

    def plain(saved, sf, si, t):
        return *L.g(p, fixed, sf, si, t), saved

    if isinstance(strategy, StoreAll):
        R = StepResiduals(L.g, p, fixed, sf, si)

        def store(saved, sf, si, t):
            new, y, stored = R.forward(p, fixed, sf, si, t)
            return new, y, (saved[0], L.keep(saved[1], stored, t))

        return (R.invariant(p, fixed, sf, si), time_buffer(R.stored, L.time, L.swap)), store
    if isinstance(strategy, Recompute):

        def keep_state(saved, sf, si, t):
            return plain(L.keep(saved, sf, t), sf, si, t)

        return time_buffer(shapes_of(sf), L.time, L.swap), keep_state
    if isinstance(strategy, CheckpointEvery):
        every = strategy.every

        def checkpoint(saved, sf, si, t):
            saved = lax.cond(
                t % every == 0, lambda k: L.keep(k, sf, t // every), lambda k: k, saved
            )
            return plain(saved, sf, si, t)

        return time_buffer(shapes_of(sf), -(-L.time // every), L.swap), checkpoint
    if isinstance(strategy, Revolve):
        # The number of steps is known only when the loop ends: keep the initial state alone
        # (the stack's bottom slot) and let the backward pass place every checkpoint.
        slots = min(strategy.checkpoints, L.time)
        bottom = L.keep(time_buffer(shapes_of(sf), slots, L.swap), sf, 0)
        return (bottom, jnp.zeros((slots,), jnp.int32), jnp.int32(0)), plain
    return None, plain


def _forward(L: Loop, p, fixed, sf, si, done, strategy, ys):
    """Run ``L`` from ``(sf, si)`` until ``done``: ``(sf, si, ys, n, xs, saved)``.

    ``L.g(p, fixed, sf, si, t) -> (sf', (y_floats, y_others, si'))``; ``xs`` holds the integer
    states before every step, ``saved`` what ``strategy`` keeps, ``n`` the steps run.
    """
    saved, advance = _saving(strategy, L, p, fixed, sf, si)

    def body(c):
        t, sf, si, ys, xs, saved = c
        xs = set_time(xs, si, t)
        sf, (y_floats, y_others, si), saved = advance(saved, sf, si, t)
        return t + 1, sf, si, set_time(ys, (y_floats, y_others), t), xs, saved

    def cond(c):
        t, sf, si = c[:3]
        return (t < L.time) & jnp.logical_not(done(sf, si))

    init = (jnp.int32(0), sf, si, ys, time_buffer(shapes_of(si), L.time), saved)
    n, sf, si, ys, xs, saved = lax.while_loop(cond, body, init)
    return sf, si, ys, n, xs, saved


def while_loop(step, state, *, max_steps: int, done, strategy, swap: bool = False):
    """Run ``step`` while ``not done(state)``, at most ``max_steps`` times.

    Reference loop::

        ys = zeros([max_steps, *y_shape])
        t = 0
        while t < max_steps and not done(state):
            state, ys[t] = step(state, t)
            t += 1
        return state, ys, t

    **Arguments:**

    - ``step``: ``(state, t int32 scalar) -> (state, y)``, pure; it may close over anything,
      traced values included (they become arguments of the custom VJP). ``state`` and ``y``
      are pytrees of arrays of fixed shapes and dtypes.
    - ``state``: the initial state.
    - ``max_steps``: a positive int, the length of the ``ys`` buffers.
    - ``done``: ``state -> bool scalar``; it must not close over traced values.
    - ``strategy``: a memory strategy object (``StoreAll``, ``Recompute``, ``CheckpointEvery``,
      ``Revolve``); what the forward pass keeps for the backward pass. ``Revolve`` places all
      its checkpoints in the backward pass, since the number of steps is known only then.
    - ``swap``: keep what the strategy saves in pinned host memory.

    **Returns:** ``(final_state, ys, steps)``: ``ys`` a pytree of ``[max_steps, ...]`` arrays,
    zero from step ``steps`` on; ``steps`` the int32 number of steps run. Differentiable in
    reverse mode with respect to the floating leaves of ``state`` and whatever ``step`` closes
    over; the integer and boolean leaves have no derivative.
    """
    y_shapes = jax.eval_shape(step, state, jnp.int32(0))[1]
    state_split, y_split = _Split(state), _Split(y_shapes)
    sf0, si0 = state_split.split(state)

    def flat_step(sf, si, t):
        new, y = step(state_split.join(sf, si), t)
        new_f, new_i = state_split.split(new)
        y_f, y_i = y_split.split(y)
        return new_f, (y_f, y_i, new_i)

    conv = convert_step(flat_step, sf0, si0)
    floats = [_is_float(c) for c in conv.consts]
    weights = [c for c, f in zip(conv.consts, floats) if f]
    ints = [c for c, f in zip(conv.consts, floats) if not f]
    yf_shapes, yi_shapes, _ = conv.y_shapes

    def done_split(sf, si):
        return done(state_split.join(sf, si))

    def make_loop(perturbed, ints, xs, n) -> Loop:
        def g(p, fixed, sf, si, t):
            return conv.fn(merge(floats, merge(perturbed, p, fixed[0]), fixed[1]), sf, si, t)

        return Loop(g, xs, n, max_steps, 1, swap)

    def ys_buffer():
        return time_buffer((yf_shapes, yi_shapes), max_steps)

    def run_forward(perturbed, weights, ints, sf, si, saving):
        p = [w for w, q in zip(weights, perturbed) if q]
        fixed = ([w for w, q in zip(weights, perturbed) if not q], ints)
        L = make_loop(perturbed, ints, None, max_steps)
        out = _forward(L, p, fixed, sf, si, done_split, saving, ys_buffer())
        return p, fixed, out

    @jax.custom_vjp
    def run(weights, ints, sf, si):
        _, _, (sf, si, ys, n, _, _) = run_forward(
            [False] * len(weights), weights, ints, sf, si, None
        )
        return sf, si, ys, n

    static: dict[str, Any] = {}  # what the backward pass must know about the forward's arguments

    def run_fwd(weights, ints, sf, si):
        static["perturbed"] = perturbed = [w.perturbed for w in weights]
        weights, ints, sf, si = tree_map(
            lambda a: a.value,
            (weights, ints, sf, si),
            is_leaf=lambda a: isinstance(a, CustomVJPPrimal),
        )
        p, fixed, out = run_forward(perturbed, weights, ints, sf, si, strategy)
        sf_n, si_n, ys, n, xs, saved = out
        return (sf_n, si_n, ys, n), (p, fixed, sf, xs, n, saved)

    def run_bwd(res, cts):
        p, fixed, sf0, xs, n, saved = res
        perturbed = static["perturbed"]
        ct_final, _, (ct_yf, _), _ = cts
        L = make_loop(perturbed, fixed[1], xs, n)
        ct_final = [
            jnp.zeros(s.shape, s.dtype) if isinstance(c, SymbolicZero) else c
            for c, s in zip(ct_final, shapes_of(sf0))
        ]
        zeros_i = (_float0_zeros(yi_shapes), _float0_zeros(shapes_of(at_time(xs, 0))))

        def ct_y(t):
            ct_f = [
                jnp.zeros(s.shape, s.dtype) if isinstance(c, SymbolicZero) else at_time(c, t)
                for c, s in zip(ct_yf, yf_shapes)
            ]
            return (ct_f, *zeros_i)

        carry = (ct_final, zeros_like(shapes_of(p)), None)
        ct_s0, ct_p, _ = strategy.backward(L, p, fixed, sf0, saved, carry, ct_y, False)
        ct_weights = merge(perturbed, ct_p, [None] * (len(perturbed) - len(ct_p)))
        return ct_weights, [None] * len(fixed[1]), ct_s0, [None] * len(tree_leaves(xs))

    run.defvjp(run_fwd, run_bwd, symbolic_zeros=True)
    sf, si, (ys_f, ys_i), n = run(weights, ints, sf0, si0)
    return state_split.join(sf, si), y_split.join(ys_f, ys_i), n
