"""The launches of one layer's two kernels and their custom VJP (:func:`layer_call`).

The forward kernel runs the recurrence and, when differentiated, saves what the backward needs;
the backward kernel runs the reverse loop and writes each step's gate gradients ``dZ``; the
weight gradients are XLA matmuls after it. Both take padded arrays (see ``layer.py``). A Pallas
call has no derivative of its own: forward-mode and higher-order differentiation are refused
with :data:`REVERSE_ONLY`.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from .config import KernelConfig
from .kernels import backward_kernel, forward_kernel

__all__ = ["layer_call", "REVERSE_ONLY"]

_F32 = jnp.float32


def _call(cfg: KernelConfig, kernel, ins, outs, name):
    """``pallas_call`` over batch blocks: ``ins``/``outs`` are ``(array or shape, kind)`` with
    kind ``"seq"`` (``[T, B, w]``), ``"row"`` (``[B, w]``) or ``"all"`` (whole array)."""
    bb = cfg.block

    def spec(shape, where):
        if where == "seq":
            return pl.BlockSpec((shape[0], bb, shape[2]), lambda i: (0, i, 0))
        if where == "row":
            return pl.BlockSpec((bb, shape[1]), lambda i: (i, 0))
        return pl.BlockSpec(tuple(shape), lambda i: (0,) * len(shape))

    stages = cfg.num_stages
    if stages is None and not cfg.resident:
        stages = 1  # streamed tiles: software pipelining would buffer every tile's load
    params = pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=stages)
    return pl.pallas_call(
        kernel,
        out_shape=[s for s, _ in outs],
        grid=(cfg.batch // bb,),
        in_specs=[spec(a.shape, w) for a, w in ins],
        out_specs=[spec(s.shape, w) for s, w in outs],
        interpret=cfg.interpret,
        compiler_params=params,
        name=name,
    )(*[a for a, _ in ins])


REVERSE_ONLY = (
    "implementation='pallas' differentiates in reverse mode, once (jax.grad, jax.vjp); "
    "forward mode (jax.jvp, jax.jacfwd) and derivatives of its gradient (jax.hessian, a grad "
    "of a grad) need implementation='fused' (built-in cells) or 'generic'."
)


@jax.custom_jvp
def _no_forward_mode(x):
    """``x``; differentiating it in forward mode is a ``TypeError`` naming the fix. Both
    kernels' inputs pass through it: a Pallas call has no derivative of its own, and the custom
    VJP differentiates them in reverse mode once (no trace differentiates these inputs then)."""
    return x


@_no_forward_mode.defjvp
def _no_forward_mode_jvp(primals, tangents):
    raise TypeError(REVERSE_ONLY)


def _weights(w, peep, proj):
    """The kernels' weight inputs: the recurrent weights, then ``LSTMCell``'s peepholes
    ``[4, H_p]`` and projection ``[H_p, H_p]`` where the family has them."""
    return [(a, "all") for a in (w, peep, proj) if a is not None]


def _forward(cfg: KernelConfig, save: bool, w, peep, proj, xw, h0, c0, lens):
    inputs = jax.tree_util.tree_map(_no_forward_mode, (w, peep, proj, xw, h0, c0))
    w, peep, proj, xw, h0, c0 = inputs
    T, B, Hp, g = cfg.time, cfg.batch, cfg.hidden, cfg.gates
    lstm = cfg.family.kind == "lstm"
    ins = [(lens, "row"), (xw, "seq"), *_weights(w, peep, proj), (h0, "row")]
    if lstm:
        ins.append((c0, "row"))
    outs = [
        (jax.ShapeDtypeStruct((T, B, Hp), cfg.out_dtype), "seq"),
        (jax.ShapeDtypeStruct((B, Hp), cfg.out_dtype), "row"),
    ]
    if lstm:
        outs.append((jax.ShapeDtypeStruct((B, Hp), cfg.out_dtype), "row"))
    if save and cfg.family.kind != "rnn":
        outs.append((jax.ShapeDtypeStruct((T, B, g * Hp), _F32), "seq"))
    if save and lstm:
        outs.append((jax.ShapeDtypeStruct((T, B, Hp), _F32), "seq"))
    if save and cfg.family.proj_clip is not None:  # m before its clip: the clip's slope
        outs.append((jax.ShapeDtypeStruct((T, B, Hp), _F32), "seq"))
    name = f"recurrax_{cfg.family.kind}_forward"
    res = _call(cfg, partial(forward_kernel, cfg, save), ins, outs, name)
    ys, ht = res[0], res[1]
    ct = res[2] if lstm else None
    extra = res[3:] if lstm else res[2:]
    return ys, ht, ct, tuple(extra)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def layer_call(cfg: KernelConfig, w, peep, proj, xw, h0, c0, lens):
    ys, ht, ct, _ = _forward(cfg, False, w, peep, proj, xw, h0, c0, lens)
    return ys, ht, ct


def _layer_fwd(cfg: KernelConfig, w, peep, proj, xw, h0, c0, lens):
    ys, ht, ct, extra = _forward(cfg, True, w, peep, proj, xw, h0, c0, lens)
    return (ys, ht, ct), (w, peep, proj, h0, c0, lens, ys, extra)


def _layer_bwd(cfg: KernelConfig, res, cts):
    w, peep, proj, h0, c0, lens, ys, extra = res
    d_ys, d_ht, d_ct = jax.tree_util.tree_map(_no_forward_mode, cts)
    fam = cfg.family
    kind, T, B, Hp, g = fam.kind, cfg.time, cfg.batch, cfg.hidden, cfg.gates
    ins = [(lens, "row"), (d_ys, "seq"), *_weights(w, peep, proj), (d_ht, "row")]
    if kind == "rnn":
        ins += [(ys, "seq")]
    elif kind == "gru":
        ins += [(ys, "seq"), (h0, "row"), (extra[0], "seq")]
    else:
        ins += [(d_ct, "row"), (extra[0], "seq"), (extra[1], "seq"), (c0, "row")]
        if fam.proj_clip is not None:
            ins.append((extra[2], "seq"))
    outs = [
        (jax.ShapeDtypeStruct((T, B, g * Hp), _F32), "seq"),
        (jax.ShapeDtypeStruct((B, Hp), _F32), "row"),
    ]
    if kind == "lstm":
        outs.append((jax.ShapeDtypeStruct((B, Hp), _F32), "row"))
    if fam.projection:  # the cotangent of m before the projection's clip
        outs.append((jax.ShapeDtypeStruct((T, B, Hp), _F32), "seq"))
    bcfg = dataclasses.replace(cfg, resident=cfg.bwd_resident)
    out = _call(bcfg, partial(backward_kernel, bcfg), ins, outs, f"recurrax_{kind}_backward")
    dz, dh0 = out[0], out[1]
    dc0 = out[2].astype(c0.dtype) if kind == "lstm" else None
    d_peep, d_proj = _lstm_extras_grads(cfg, peep, proj, c0, dz, extra, out[3:])

    # Weight gradients: large matmuls over all steps and rows (H_prev is the outputs shifted by
    # one step; past a row's length the outputs are zeros, but there dZ is zero too).
    h_prev = jnp.concatenate([h0[None].astype(_F32), ys[:-1].astype(_F32)]).reshape(T * B, Hp)
    dz_flat = dz.reshape(T * B, g * Hp)
    if kind == "gru":
        r = extra[0][:, :, :Hp].reshape(T * B, Hp)
        d_gates = h_prev.T @ dz_flat[:, : 2 * Hp]
        d_cand = (r * h_prev).T @ dz_flat[:, 2 * Hp :]
        dw = jnp.concatenate([d_gates, d_cand], axis=1)
    else:
        dw = h_prev.T @ dz_flat
    dxw = dz.astype(cfg.xw_dtype)
    return dw.astype(w.dtype), d_peep, d_proj, dxw, dh0.astype(h0.dtype), dc0, None


def _lstm_extras_grads(cfg: KernelConfig, peep, proj, c0, dz, extra, dmr):
    """``(d_peep, d_proj)`` for ``LSTMCell``, as sums over all steps and rows after the
    backward kernel: ``d w_i = sum dZ_i * c_prev``, ``d w_f = sum dZ_f * c_prev``,
    ``d w_o = sum dZ_o * c``, and ``dP = HH^T dM`` with ``HH = tanh(c) * o`` (the output before
    the projection) and ``dM`` the cotangent of the projected output before its clip."""
    d_peep = d_proj = None
    if peep is None and proj is None:
        return d_peep, d_proj
    Hp = cfg.hidden
    acts, cs = extra[0], extra[1]
    if peep is not None:
        c_prev = jnp.concatenate([c0[None].astype(_F32), cs[:-1]])
        d_i = jnp.sum(dz[..., :Hp] * c_prev, axis=(0, 1))
        d_f = jnp.sum(dz[..., 2 * Hp : 3 * Hp] * c_prev, axis=(0, 1))
        d_o = jnp.sum(dz[..., 3 * Hp :] * cs, axis=(0, 1))
        d_peep = jnp.stack([d_i, jnp.zeros_like(d_i), d_f, d_o]).astype(peep.dtype)
    if proj is not None:
        hh = jnp.tanh(cs) * acts[..., 3 * Hp :]
        (d_m,) = dmr
        d_proj = (hh.reshape(-1, Hp).T @ d_m.reshape(-1, Hp)).astype(proj.dtype)
    return d_peep, d_proj


layer_call.defvjp(_layer_fwd, _layer_bwd)
