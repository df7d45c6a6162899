"""One RNN layer's whole recurrence in one Pallas kernel launch, forward and backward.

The recurrence of ``BasicLSTMCell``, ``GRUCell`` and ``BasicRNNCell`` (tanh activation) runs as
one ``pallas_call``: the grid splits the batch into blocks of ``block_batch`` rows (rows are
independent), and each program runs a ``lax.fori_loop`` over time with the recurrent weights
loaded once (``resident``) or re-read from memory every step (``stream``, for weights too large
to keep on chip). A step is one ``[block, H] x [H, gH]`` product, issued as one dot per
``chunk x chunk`` tile, with the gate nonlinearities and TF1's ``sequence_length`` mask fused.

The input projection ``xw = X @ W_x + b`` for all steps is one large matmul that the caller runs
in XLA (:func:`project`); the kernel takes ``xw [T, B, gH]``. The backward pass is a
``jax.custom_vjp``: a second kernel runs the reverse loop (per batch block) and writes each
step's gate gradients ``dZ [T, B, gH]``; the weight gradients are then large XLA matmuls
(``dW_h = H_prev^T dZ``; GRU's candidate block uses ``(r * h_prev)``), and ``d(xw) = dZ``.

Cell math (TF1's):

- ``rnn``: ``h' = tanh(xw_t + h W_h)``;
- ``gru``: ``r, u = sigmoid(xw_[r,u] + h W_gh)``, ``c = tanh(xw_c + (r*h) W_ch)``,
  ``h' = u*h + (1-u)*c``;
- ``lstm``: gates ``i, j, f, o`` in that column order, ``c' = c*sigmoid(f + forget_bias) +
  sigmoid(i)*tanh(j)``, ``h' = tanh(c')*sigmoid(o)``.

``sequence_length`` follows TF1: for ``t >= lengths[b]`` the outputs are zeros and the state is
copied through, so the final state is the state after each row's last valid step. Each program
runs only ``max(lengths)`` of its own rows' steps, then writes zeros for the rest.

Design notes, padding rules and measured limits: ``benchmarks/PALLAS_NOTES.md``.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from .config import Family, KernelConfig, plan_for
from .kernels import backward_kernel, forward_kernel

__all__ = ["pallas_layer", "project"]

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


def _forward(cfg: KernelConfig, save: bool, w, xw, h0, c0, lens):
    T, B, Hp, g = cfg.time, cfg.batch, cfg.hidden, cfg.gates
    lstm = cfg.family.kind == "lstm"
    ins = [(lens, "row"), (xw, "seq"), (w, "all"), (h0, "row")]
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
    name = f"recurrax_{cfg.family.kind}_forward"
    res = _call(cfg, partial(forward_kernel, cfg, save), ins, outs, name)
    ys, ht = res[0], res[1]
    ct = res[2] if lstm else None
    extra = res[3:] if lstm else res[2:]
    return ys, ht, ct, tuple(extra)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(cfg: KernelConfig, w, xw, h0, c0, lens):
    ys, ht, ct, _ = _forward(cfg, False, w, xw, h0, c0, lens)
    return ys, ht, ct


def _core_fwd(cfg: KernelConfig, w, xw, h0, c0, lens):
    ys, ht, ct, extra = _forward(cfg, True, w, xw, h0, c0, lens)
    return (ys, ht, ct), (w, h0, c0, lens, ys, extra)


def _core_bwd(cfg: KernelConfig, res, cts):
    w, h0, c0, lens, ys, extra = res
    d_ys, d_ht, d_ct = cts
    kind, T, B, Hp, g = cfg.family.kind, cfg.time, cfg.batch, cfg.hidden, cfg.gates
    ins = [(lens, "row"), (d_ys, "seq"), (w, "all"), (d_ht, "row")]
    if kind == "rnn":
        ins += [(ys, "seq")]
    elif kind == "gru":
        ins += [(ys, "seq"), (h0, "row"), (extra[0], "seq")]
    else:
        ins += [(d_ct, "row"), (extra[0], "seq"), (extra[1], "seq"), (c0, "row")]
    outs = [
        (jax.ShapeDtypeStruct((T, B, g * Hp), _F32), "seq"),
        (jax.ShapeDtypeStruct((B, Hp), _F32), "row"),
    ]
    if kind == "lstm":
        outs.append((jax.ShapeDtypeStruct((B, Hp), _F32), "row"))
    bcfg = dataclasses.replace(cfg, resident=cfg.bwd_resident)
    out = _call(bcfg, partial(backward_kernel, bcfg), ins, outs, f"recurrax_{kind}_backward")
    dz, dh0 = out[0], out[1]
    dc0 = out[2].astype(c0.dtype) if kind == "lstm" else None

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
    return dw.astype(w.dtype), dz.astype(cfg.xw_dtype), dh0.astype(h0.dtype), dc0, None


_core.defvjp(_core_fwd, _core_bwd)


def _pad_gates(a, gates: int, hidden: int, hp: int):
    """``[..., gates * hidden] -> [..., gates * hp]``, each gate's block zero-padded."""
    if hp == hidden:
        return a
    lead = a.shape[:-1]
    a = a.reshape(*lead, gates, hidden)
    a = jnp.pad(a, [(0, 0)] * len(lead) + [(0, 0), (0, hp - hidden)])
    return a.reshape(*lead, gates * hp)


def _unpad_gates(a, gates: int, hidden: int, hp: int):
    if hp == hidden:
        return a
    lead = a.shape[:-1]
    return a.reshape(*lead, gates, hp)[..., :hidden].reshape(*lead, gates * hidden)


def _default_warps(block: int, chunk: int) -> int:
    return 4 if block * chunk <= 16 * 64 else 8


def pallas_layer(
    family: Family,
    w_h,
    xw,
    state0,
    lengths=None,
    *,
    interpret: bool | None = None,
    block_batch: int | None = None,
    chunk: int | None = None,
    resident: bool | None = None,
    precision=None,
    num_warps: int | None = None,
    num_stages: int | None = None,
):
    """One layer's recurrence, time-major: ``(ys [T, B, H], final_state)``.

    **Arguments:**

    - ``family``: a :class:`Family`.
    - ``w_h``: the recurrent weights: ``[H, gH]`` for ``rnn`` (``g = 1``) and ``lstm``
      (``g = 4``, columns ``i, j, f, o``); for ``gru`` the pair ``(w_gh [H, 2H], w_ch [H, H])``.
      These are the last ``H`` rows of the cells' kernels.
    - ``xw``: ``[T, B, gH]``, the projected inputs ``x_t @ W_x + b`` (see :func:`project`).
    - ``state0``: ``h0 [B, H]``; for ``lstm`` the pair ``(c0, h0)`` (``LSTMStateTuple`` order).
    - ``lengths``: ``None`` or int ``[B]`` (TF1's ``sequence_length``; clipped to ``[0, T]``).
    - ``interpret``: ``None`` interprets on CPU and compiles (Triton) on GPU.
    - ``block_batch``: rows per program (a power of two, at least 16; default 16).
    - ``chunk``, ``resident``: the weight tile edge and whether the weights stay on chip
      (default: :func:`plan_for`).
    - ``precision``: of the in-kernel dots; ``None`` is Triton's default, TF32 for float32 on
      GPU (as XLA's default on Hopper); ``lax.Precision.HIGHEST`` asks for full float32.
    - ``num_warps``, ``num_stages``: Triton's launch parameters (defaults: 4 or 8 warps by tile
      size; 1 stage when the weights are streamed, Triton's default otherwise).

    The outputs and the final state have ``h0``'s dtype (the kernel computes in float32; with
    bfloat16 ``xw`` and weights, the dots take bfloat16 operands and accumulate in float32).
    Differentiable (reverse mode) with respect to ``w_h``, ``xw`` and ``state0``.
    """
    kind = family.kind
    lstm = kind == "lstm"
    if xw.ndim != 3:
        raise ValueError(f"xw must be [T, B, gates * H]; got shape {xw.shape}.")
    T, B, width = xw.shape
    if T < 1:
        raise ValueError("pallas_layer needs at least one time step.")
    if kind == "gru":
        w_gh, w_ch = w_h
        H = w_ch.shape[0]
        if w_gh.shape != (H, 2 * H) or w_ch.shape != (H, H):
            raise ValueError(
                f"gru weights must be ([H, 2H], [H, H]); got {w_gh.shape}, {w_ch.shape}."
            )
        w = jnp.concatenate([w_gh, w_ch.astype(w_gh.dtype)], axis=1)
    else:
        w = w_h
        H = w.shape[0]
        if w.shape != (H, family.gates * H):
            raise ValueError(f"{kind} weights must be [H, {family.gates}H]; got {w.shape}.")
    if width != family.gates * H:
        raise ValueError(f"xw's last axis must be {family.gates} * H = {family.gates * H}.")
    if lstm:
        c0, h0 = state0
    else:
        h0, c0 = state0, None
    if h0.shape != (B, H) or (lstm and c0.shape != (B, H)):
        raise ValueError(f"the initial state must be [B, H] = [{B}, {H}].")

    hp, chunk, resident, bwd_resident = plan_for(family, H, w.dtype, chunk=chunk, resident=resident)
    bb = 16 if block_batch is None else int(block_batch)
    if bb < 16 or bb & (bb - 1):
        raise ValueError(f"block_batch must be a power of two >= 16; got {bb}.")
    bp = -(-B // bb) * bb
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    if num_warps is None:
        num_warps = _default_warps(bb, chunk)
    cfg = KernelConfig(
        family=family,
        time=T,
        batch=bp,
        block=bb,
        hidden=hp,
        chunk=chunk,
        resident=resident,
        bwd_resident=bwd_resident,
        masked=lengths is not None,
        out_dtype=jnp.dtype(h0.dtype),
        xw_dtype=jnp.dtype(xw.dtype),
        precision=precision,
        interpret=bool(interpret),
        num_warps=num_warps,
        num_stages=num_stages,
    )

    g = family.gates
    xw_p = _pad_gates(xw, g, H, hp)
    xw_p = jnp.pad(xw_p, ((0, 0), (0, bp - B), (0, 0)))
    w_p = jnp.pad(_pad_gates(w, g, H, hp), ((0, hp - H), (0, 0)))

    def pad_state(s):
        return jnp.pad(s, ((0, bp - B), (0, hp - H)))

    h0_p = pad_state(h0)
    c0_p = pad_state(c0.astype(h0.dtype)) if lstm else None
    if lengths is None:
        lens = jnp.full((bp, 1), T, jnp.int32)
    else:
        lens = jnp.clip(jnp.asarray(lengths).astype(jnp.int32), 0, T)
        if lens.shape != (B,):
            raise ValueError(f"lengths must be [B] = [{B}]; got {lens.shape}.")
        lens = jnp.pad(lens, (0, bp - B))[:, None]
    ys, ht, ct = _core(cfg, w_p, xw_p, h0_p, c0_p, lens)
    ys = ys[:, :B, :H]
    ht = ht[:B, :H]
    if lstm:
        return ys, (ct[:B, :H], ht)
    return ys, ht


def project(x, w_x, b):
    """``xw = x @ w_x + b`` for all steps at once (``x [T, B, I]``), as one matmul."""
    T, B = x.shape[:2]
    return (x.reshape(T * B, -1) @ w_x + b).reshape(T, B, -1)
