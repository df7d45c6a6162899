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

import jax
import jax.numpy as jnp

from .calls import REVERSE_ONLY, layer_call
from .config import Family, KernelConfig, plan_for

__all__ = ["pallas_layer", "project"]


def _pad_gates(a, gates: int, hidden: int, hp: int):
    """``[..., gates * hidden] -> [..., gates * hp]``, each gate's block zero-padded."""
    if hp == hidden:
        return a
    lead = a.shape[:-1]
    a = a.reshape(*lead, gates, hidden)
    a = jnp.pad(a, [(0, 0)] * len(lead) + [(0, 0), (0, hp - hidden)])
    return a.reshape(*lead, gates * hp)


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
        ys, ht, ct = layer_call(cfg, w_p, peep, proj, xw_p, h0_p, c0_p, lens)
    except TypeError as e:  # JAX's refusal of jax.jvp through a custom_vjp, told with the fix
        if "forward-mode" in str(e):
            raise TypeError(REVERSE_ONLY) from e
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
