"""One step's VJP with its residuals split as XLA splits a scan's, for loops that store them.

A strategy that keeps every step's intermediate values (:class:`~recurrax.StoreAll` with an
early exit, and :class:`~recurrax.CheckpointEvery` within a segment) runs the forward pass of a
step through ``jax.vjp`` and stores the residuals in ``[T, ...]`` buffers. Storing all of them
would copy the weights once per step; so, like XLA's scan partial evaluation, the step's
program is traced once and its residuals are sorted: loop-invariant ones (the weights, values
computed from them alone) are computed once, the input ``x_t`` and ``t`` are read back, and only
the rest is stored per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Jaxpr, Literal

from .timeaxis import carried_cotangents, float0_cotangents

__all__ = ["StepResiduals", "shapes_of", "nbytes"]

tree_leaves = jax.tree_util.tree_leaves


def shapes_of(tree):
    """``jax.ShapeDtypeStruct`` of every leaf."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree
    )


def nbytes(shapes) -> int:
    """Bytes of all leaves of ``shapes``."""
    return sum(
        int(np.prod(s.shape)) * jnp.dtype(s.dtype).itemsize
        for s in jax.tree_util.tree_leaves(shapes)
    )


def _prune(jaxpr, outvars):
    """``jaxpr`` computing only ``outvars``: the equations they need, nothing else."""
    needed = {v for v in outvars if not isinstance(v, Literal)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    kept.reverse()
    effects = frozenset().union(*(e.effects for e in kept))
    return Jaxpr(jaxpr.constvars, jaxpr.invars, outvars, kept, effects, jaxpr.debug_info)


class StepResiduals:
    """The VJP residuals of ``g(p, fixed, s, x, t) -> (s, y)`` w.r.t. ``(p, s, x)``.

    Built from shapes: ``stored`` are the shapes of the per-step residuals, ``stored_bytes``
    their size. :meth:`forward` runs a step returning them; :meth:`backward` applies the VJP.
    """

    def __init__(self, g, p, fixed, s, x):
        box = {}

        def with_vjp(p, fixed, s, x, t):
            out, pull = jax.vjp(lambda p, s, x: g(p, fixed, s, x, t), p, s, x)
            res, box["tree"] = jax.tree_util.tree_flatten(pull)
            return out, res

        t0 = jax.ShapeDtypeStruct((), jnp.int32)
        closed, (out, res) = jax.make_jaxpr(with_vjp, return_shape=True)(
            *shapes_of((p, fixed, s, x)), t0
        )
        self.closed, self.pull_tree = closed, box["tree"]
        self.out_shapes, self.state_shapes = out, shapes_of(s)
        self.n_out, self.out_tree = len(tree_leaves(out)), jax.tree_util.tree_structure(out)
        jaxpr = closed.jaxpr
        n_fixed = len(tree_leaves((p, fixed)))
        n_x = len(tree_leaves(x))
        x_vars = jaxpr.invars[len(jaxpr.invars) - 1 - n_x : -1]
        variant = set(jaxpr.invars[n_fixed:])  # s, x, t
        for eqn in jaxpr.eqns:
            if any(not isinstance(v, Literal) and v in variant for v in eqn.invars):
                variant.update(eqn.outvars)
        # Per residual: ("x", j) an input leaf, ("t",) the step, ("s", k) stored, ("i", k) once.
        self.kinds, n_stored, n_inv, stored = [], 0, 0, []
        for v, shape in zip(jaxpr.outvars[self.n_out :], res):
            if isinstance(v, Literal) or v not in variant:
                self.kinds.append(("i", n_inv))
                n_inv += 1
            elif v in x_vars:
                self.kinds.append(("x", x_vars.index(v)))
            elif v is jaxpr.invars[-1]:
                self.kinds.append(("t",))
            else:
                self.kinds.append(("s", n_stored))
                n_stored += 1
                stored.append(shape)
        self.stored = stored
        self.stored_bytes = nbytes(stored)
        res_vars = jaxpr.outvars[self.n_out :]
        self.invariant_jaxpr = _prune(
            jaxpr, [v for v, k in zip(res_vars, self.kinds) if k[0] == "i"]
        )

    def _eval(self, p, fixed, s, x, t):
        outs = jax.core.eval_jaxpr(
            self.closed.jaxpr, self.closed.consts, *tree_leaves((p, fixed, s, x)), t
        )
        state, y = jax.tree_util.tree_unflatten(self.out_tree, outs[: self.n_out])
        return state, y, outs[self.n_out :]

    def invariant(self, p, fixed, s, x):
        """The residuals that are the same at every step, computed without running the step."""
        return jax.core.eval_jaxpr(
            self.invariant_jaxpr, self.closed.consts, *tree_leaves((p, fixed, s, x)), 0
        )

    def forward(self, p, fixed, s, x, t):
        """One step: ``(state, y, stored residuals)``."""
        state, y, res = self._eval(p, fixed, s, x, t)
        return state, y, [r for r, k in zip(res, self.kinds) if k[0] == "s"]

    def backward(self, invariant, stored, x, t, cts):
        """``(ct_p, ct_s, ct_x)`` of the step, from its residuals and ``cts = (ct_s', ct_y)``."""
        x_leaves = tree_leaves(x)
        picked = {"i": invariant, "s": stored, "x": x_leaves}
        leaves = [t if k[0] == "t" else picked[k[0]][k[1]] for k in self.kinds]
        pull = jax.tree_util.tree_unflatten(self.pull_tree, leaves)
        dp, ds, dx = pull(float0_cotangents(cts, self.out_shapes))
        return dp, carried_cotangents(ds, self.state_shapes), dx
