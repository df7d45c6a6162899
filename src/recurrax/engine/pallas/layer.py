"""One RNN layer's whole recurrence in one Pallas kernel launch, forward and backward.

The recurrence of ``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell`` and ``LSTMCell`` (tanh
activation) runs as one ``pallas_call``: the grid splits the batch into blocks of
``block_batch`` rows (rows are independent), and each program runs a ``lax.fori_loop`` over
time with the recurrent weights loaded once (``resident``) or re-read from memory every step
(``stream``, for weights too large to keep on chip). A step is one ``[block, H] x [H, gH]``
product, issued as one dot per ``chunk x chunk`` tile, with the gate nonlinearities and TF1's
``sequence_length`` mask fused.

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
  sigmoid(i)*tanh(j)``, ``h' = tanh(c')*sigmoid(o)``; ``LSTMCell``'s options add the peepholes
  (``w_i_diag * c`` to ``i``, ``w_f_diag * c`` to ``f``, ``w_o_diag * c'`` to ``o``), clip
  ``c'`` to ``±cell_clip``, and project the output, ``m' = clip(h' @ P, ±proj_clip)``: one
  more ``[block, H] x [H, P]`` product per step, ``dM @ P^T`` in the backward step, and
  ``dP = HH^T dM`` and the peepholes' gradients as sums over all steps afterwards.

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


_REVERSE_ONLY = (
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
    raise TypeError(_REVERSE_ONLY)


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
def _core(cfg: KernelConfig, w, peep, proj, xw, h0, c0, lens):
    ys, ht, ct, _ = _forward(cfg, False, w, peep, proj, xw, h0, c0, lens)
    return ys, ht, ct


def _core_fwd(cfg: KernelConfig, w, peep, proj, xw, h0, c0, lens):
    ys, ht, ct, extra = _forward(cfg, True, w, peep, proj, xw, h0, c0, lens)
    return (ys, ht, ct), (w, peep, proj, h0, c0, lens, ys, extra)


def _core_bwd(cfg: KernelConfig, res, cts):
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
    """One layer's recurrence, time-major: ``(ys [T, B, P], final_state)`` (``P = H`` but for
    ``LSTMCell``'s projection).

    **Arguments:**

    - ``family``: a :class:`Family`.
    - ``w_h``: the recurrent weights: ``[H, gH]`` for ``rnn`` (``g = 1``) and ``lstm``
      (``g = 4``, columns ``i, j, f, o``); for ``gru`` the pair ``(w_gh [H, 2H], w_ch [H, H])``.
      These are the last ``H`` (``P``) rows of the cells' kernels. For an ``lstm`` family with
      peepholes or a projection, the triple ``(w [P, 4H], (w_i_diag, w_f_diag, w_o_diag) or
      None, projection [H, P] or None)``, as ``LSTMCell`` holds them.
    - ``xw``: ``[T, B, gH]``, the projected inputs ``x_t @ W_x + b`` (see :func:`project`).
    - ``state0``: ``h0 [B, H]``; for ``lstm`` the pair ``(c0 [B, H], h0 [B, P])``
      (``LSTMStateTuple`` order).
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
    Differentiable (reverse mode) with respect to ``w_h`` (peepholes and projection
    included), ``xw`` and ``state0``.
    """
    kind = family.kind
    lstm = kind == "lstm"
    if xw.ndim != 3:
        raise ValueError(f"xw must be [T, B, gates * H]; got shape {xw.shape}.")
    T, B, width = xw.shape
    if T < 1:
        raise ValueError("pallas_layer needs at least one time step.")
    peep = proj = None
    if kind == "gru":
        w_gh, w_ch = w_h
        H = P = w_ch.shape[0]
        if w_gh.shape != (H, 2 * H) or w_ch.shape != (H, H):
            raise ValueError(
                f"gru weights must be ([H, 2H], [H, H]); got {w_gh.shape}, {w_ch.shape}."
            )
        w = jnp.concatenate([w_gh, w_ch.astype(w_gh.dtype)], axis=1)
    elif lstm:
        w, peep, proj = _lstm_weights(family, w_h)
        P, H = w.shape[0], w.shape[1] // 4
    else:
        w = w_h
        H = P = w.shape[0]
        if w.shape != (H, H):
            raise ValueError(f"rnn weights must be [H, H]; got {w.shape}.")
    if width != family.gates * H:
        raise ValueError(f"xw's last axis must be {family.gates} * H = {family.gates * H}.")
    if lstm:
        c0, h0 = state0
    else:
        h0, c0 = state0, None
    if h0.shape != (B, P) or (lstm and c0.shape != (B, H)):
        what = f"(c0 [B, H], h0 [B, {'P' if P != H else 'H'}])" if lstm else "[B, H]"
        raise ValueError(
            f"the initial state must be {what} with B = {B}, H = {H}"
            + (f", P = {P}" if P != H else "")
            + f"; got {jax.tree_util.tree_map(jnp.shape, state0)}."
        )

    hp, chunk, resident, bwd_resident = plan_for(
        family, max(H, P), w.dtype, chunk=chunk, resident=resident
    )
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
    w_p = jnp.pad(_pad_gates(w, g, H, hp), ((0, hp - P), (0, 0)))
    if peep is not None:  # rows i, j (none), f, o: the gates' order
        peep = jnp.stack([peep[0], jnp.zeros_like(peep[0]), peep[1], peep[2]])
        peep = jnp.pad(peep, ((0, 0), (0, hp - H)))
    if proj is not None:
        proj = jnp.pad(proj, ((0, hp - H), (0, hp - P)))

    def pad_state(s):
        return jnp.pad(s, ((0, bp - B), (0, hp - s.shape[1])))

    h0_p = pad_state(h0)
    c0_p = pad_state(c0.astype(h0.dtype)) if lstm else None
    if lengths is None:
        lens = jnp.full((bp, 1), T, jnp.int32)
    else:
        lens = jnp.clip(jnp.asarray(lengths).astype(jnp.int32), 0, T)
        if lens.shape != (B,):
            raise ValueError(f"lengths must be [B] = [{B}]; got {lens.shape}.")
        lens = jnp.pad(lens, (0, bp - B))[:, None]
    try:
        ys, ht, ct = _core(cfg, w_p, peep, proj, xw_p, h0_p, c0_p, lens)
    except TypeError as e:  # JAX's refusal of jax.jvp through a custom_vjp, told with the fix
        if "forward-mode" in str(e):
            raise TypeError(_REVERSE_ONLY) from e
        raise
    ys = ys[:, :B, :P]
    ht = ht[:B, :P]
    if lstm:
        return ys, (ct[:B, :H], ht)
    return ys, ht


def _lstm_weights(family: Family, w_h):
    """``(w [P, 4H], (w_i, w_f, w_o) or None, proj [H, P] or None)`` from ``lstm``'s
    ``w_h``: an array, or ``LSTMCell``'s triple ``(w, peepholes, projection)``, which must
    match the family's ``peepholes`` and ``projection``."""
    if isinstance(w_h, (tuple, list)):
        if len(w_h) != 3:
            raise ValueError(
                "lstm w_h must be an array [H, 4H] or the triple (w [P, 4H], (w_i_diag, "
                f"w_f_diag, w_o_diag) or None, projection [H, P] or None); got {len(w_h)} items."
            )
        w, peep, proj = w_h
    else:
        w, peep, proj = w_h, None, None
    H = w.shape[1] // 4
    P = H if proj is None else proj.shape[1]
    if w.ndim != 2 or w.shape != (P, 4 * H):
        raise ValueError(
            f"lstm weights must be [P, 4H] (P = H without a projection); got {w.shape}."
        )
    for flag, arg, name in (
        (family.peepholes, peep, "peephole"),
        (family.projection, proj, "projection"),
    ):
        if flag != (arg is not None):
            raise ValueError(
                f"Family(peepholes={family.peepholes}, projection={family.projection}) "
                f"{'needs' if flag else 'takes no'} {name} weights in w_h."
            )
    if peep is not None:
        peep = tuple(peep)
        if len(peep) != 3 or any(p.shape != (H,) for p in peep):
            raise ValueError(f"the peepholes must be three [H] = [{H}] vectors (w_i, w_f, w_o).")
    if proj is not None and proj.shape != (H, P):
        raise ValueError(f"the projection must be [H, P] = [{H}, {P}]; got {proj.shape}.")
    return w, peep, proj


def project(x, w_x, b):
    """``xw = x @ w_x + b`` for all steps at once (``x [T, B, I]``), as one matmul."""
    T, B = x.shape[:2]
    return (x.reshape(T * B, -1) @ w_x + b).reshape(T, B, -1)
