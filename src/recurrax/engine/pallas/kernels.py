"""The two Pallas kernels of one layer: the forward recurrence and the reverse (gradient) loop.

Each program owns ``block`` rows of the batch and runs a ``lax.fori_loop`` over time; see
``calls.py`` for the launch and ``benchmarks/PALLAS_NOTES.md`` for the design.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from .config import KernelConfig

__all__ = ["forward_kernel", "backward_kernel", "rows", "cols"]

_F32 = jnp.float32


def rows(cfg: KernelConfig, k: int):
    return pl.ds(k * cfg.chunk, cfg.chunk)


def cols(cfg: KernelConfig, g: int, n: int):
    """Chunk ``n`` of gate ``g`` along a ``[.., gates * hidden]`` axis."""
    return pl.ds(g * cfg.hidden + n * cfg.chunk, cfg.chunk)


def _tiles(cfg: KernelConfig, w_ref, gates):
    """``tile(g, k, n)``: rows chunk ``k``, gate ``g``'s column chunk ``n`` of the weights.

    Resident: every tile is loaded here, once per program (call this outside the time loop).
    Streamed: each call loads its tile (inside the loop: re-read every step).
    """

    def load(g, k, n):
        return w_ref[rows(cfg, k), cols(cfg, g, n)]

    if not cfg.resident:
        return load
    cache = {(g, k, n): load(g, k, n) for g in gates for k in range(cfg.nc) for n in range(cfg.nc)}
    return lambda g, k, n: cache[(g, k, n)]


def _dot(cfg: KernelConfig, a, w):
    """``a @ w`` with ``a`` cast to the weights' dtype, accumulated in float32."""
    return jnp.dot(a.astype(w.dtype), w, preferred_element_type=_F32, precision=cfg.precision)


def _dot_t(cfg: KernelConfig, a, w):
    """``a @ w.T`` (the backward step's product with the transposed weights)."""
    return lax.dot_general(
        a.astype(w.dtype),
        w,
        (((1,), (1,)), ((), ())),
        preferred_element_type=_F32,
        precision=cfg.precision,
    )


def _sum(terms):
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def _matvec(cfg: KernelConfig, tile, hs, g):
    """Gate ``g``'s ``[block, hidden]`` product ``hs @ W_g`` as ``nc`` column chunks."""
    return [_sum([_dot(cfg, hs[k], tile(g, k, n)) for k in range(cfg.nc)]) for n in range(cfg.nc)]


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _select(valid, new, old):
    return new if valid is None else jnp.where(valid, new, old)


def _lengths_of(cfg: KernelConfig, len_ref):
    """``(lens [block, 1], trip count)``: the block's lengths and its longest row's length
    (int32 loop bounds and indices, also where 64-bit types are enabled)."""
    if not cfg.masked:
        return None, np.int32(cfg.time)
    lens = len_ref[...]
    return lens, jnp.max(lens)


def _valid(lens, t):
    return None if lens is None else t < lens


def _zero_fill(cfg: KernelConfig, start, refs_widths):
    """Zeros into steps ``[start, T)`` of each ``(ref, width)``."""
    if not cfg.masked:
        return

    def body(t, carry):
        for ref, width in refs_widths:
            for m in range(width // cfg.chunk):  # power-of-two pieces (Triton needs them)
                ref[t, :, pl.ds(m * cfg.chunk, cfg.chunk)] = jnp.zeros(
                    (cfg.block, cfg.chunk), ref.dtype
                )
        return carry

    lax.fori_loop(start, np.int32(cfg.time), body, 0)


# ----------------------------------------------------------------------------- forward kernels


def _lstm_extras(cfg: KernelConfig, refs):
    """``(peep_ref, proj_ref, rest)``: ``LSTMCell``'s peephole and projection refs (``None``
    where the family has none), which follow the recurrent weights' ref."""
    refs = list(refs)
    peep_ref = refs.pop(0) if cfg.family.peepholes else None
    proj_ref = refs.pop(0) if cfg.family.projection else None
    return peep_ref, proj_ref, refs


def _peepholes(cfg: KernelConfig, peep_ref):
    """``{gate: [nc chunks of [1, chunk]]}`` of the peephole weights (rows ``i, -, f, o`` of a
    ``[4, hidden]`` ref), loaded once per program; ``None`` without peepholes."""
    if peep_ref is None:
        return None
    return {
        g: [peep_ref[pl.ds(g, 1), rows(cfg, n)].astype(_F32) for n in range(cfg.nc)]
        for g in (0, 2, 3)
    }


def _clip(x, limit):
    return x if limit is None else jnp.minimum(jnp.maximum(x, -limit), limit)


def forward_kernel(cfg: KernelConfig, save: bool, len_ref, xw_ref, w_ref, *refs):
    fam = cfg.family
    kind, nc, n_gates = fam.kind, cfg.nc, cfg.gates
    lstm = kind == "lstm"
    peep_ref, proj_ref, refs = _lstm_extras(cfg, refs)
    if lstm:
        h0_ref, c0_ref, ys_ref, ht_ref, ct_ref, *res = refs
    else:
        h0_ref, ys_ref, ht_ref, *res = refs
    act_ref = res[0] if save and kind != "rnn" else None
    cs_ref = res[1] if save and lstm else None
    mraw_ref = res[2] if save and fam.proj_clip is not None else None

    lens, trips = _lengths_of(cfg, len_ref)
    tile = _tiles(cfg, w_ref, range(n_gates))
    ptile = None if proj_ref is None else _tiles(cfg, proj_ref, range(1))
    peep = _peepholes(cfg, peep_ref)
    h = tuple(h0_ref[:, rows(cfg, k)].astype(_F32) for k in range(nc))
    c = tuple(c0_ref[:, rows(cfg, k)].astype(_F32) for k in range(nc)) if lstm else ()

    def load_x(t):
        return tuple(
            tuple(xw_ref[t, :, cols(cfg, g, n)].astype(_F32) for n in range(nc))
            for g in range(n_gates)
        )

    # Resident weights: the next step's projected inputs are loaded one step ahead, so that
    # their latency hides behind this step's products (they do not depend on the state).
    prefetch = cfg.resident

    def step(t, carry):
        h, c, x = carry
        if prefetch:
            x_next = load_x(jnp.minimum(t + 1, cfg.time - 1))
        else:
            x, x_next = load_x(t), ()
        valid = _valid(lens, t)
        acts = []
        if kind == "rnn":
            z = _matvec(cfg, tile, h, 0)
            h_new = [jnp.tanh(x[0][n] + z[n]) for n in range(nc)]
            c_new = ()
        elif kind == "gru":
            zr, zu = _matvec(cfg, tile, h, 0), _matvec(cfg, tile, h, 1)
            r = [_sigmoid(x[0][n] + zr[n]) for n in range(nc)]
            u = [_sigmoid(x[1][n] + zu[n]) for n in range(nc)]
            rh = [r[k] * h[k] for k in range(nc)]
            zc = _matvec(cfg, tile, rh, 2)
            cand = [jnp.tanh(x[2][n] + zc[n]) for n in range(nc)]
            h_new = [u[n] * h[n] + (1.0 - u[n]) * cand[n] for n in range(nc)]
            acts, c_new = [r, u, cand], ()
        else:
            z = [_matvec(cfg, tile, h, g) for g in range(4)]
            pre = [[x[g][n] + z[g][n] for n in range(nc)] for g in range(4)]
            if peep is not None:  # i and f see the previous c, o the new one
                for g in (0, 2):
                    pre[g] = [pre[g][n] + peep[g][n] * c[n] for n in range(nc)]
            i = [_sigmoid(pre[0][n]) for n in range(nc)]
            j = [jnp.tanh(pre[1][n]) for n in range(nc)]
            f = [_sigmoid(pre[2][n] + fam.forget_bias) for n in range(nc)]
            c_new = [_clip(c[n] * f[n] + i[n] * j[n], fam.cell_clip) for n in range(nc)]
            if peep is not None:
                pre[3] = [pre[3][n] + peep[3][n] * c_new[n] for n in range(nc)]
            o = [_sigmoid(pre[3][n]) for n in range(nc)]
            h_new = [jnp.tanh(c_new[n]) * o[n] for n in range(nc)]
            if ptile is not None:  # m = clip((tanh(c) * o) @ P)
                m_raw = _matvec(cfg, ptile, h_new, 0)
                if mraw_ref is not None:
                    for n in range(nc):
                        mraw_ref[t, :, rows(cfg, n)] = m_raw[n]
                h_new = [_clip(m_raw[n], fam.proj_clip) for n in range(nc)]
            acts = [i, j, f, o]
            c_new = tuple(_select(valid, c_new[n], c[n]) for n in range(nc))
        for n in range(nc):
            y = h_new[n] if valid is None else jnp.where(valid, h_new[n], 0.0)
            ys_ref[t, :, rows(cfg, n)] = y.astype(ys_ref.dtype)
        if act_ref is not None:
            for g, a in enumerate(acts):
                for n in range(nc):
                    act_ref[t, :, cols(cfg, g, n)] = a[n].astype(act_ref.dtype)
        if cs_ref is not None:
            for n in range(nc):
                cs_ref[t, :, rows(cfg, n)] = c_new[n].astype(cs_ref.dtype)
        h_new = tuple(_select(valid, h_new[n], h[n]) for n in range(nc))
        return h_new, c_new, x_next

    x0 = load_x(0) if prefetch else ()
    h, c, _ = lax.fori_loop(np.int32(0), trips, step, (h, c, x0))
    fills = [(ys_ref, cfg.hidden)]
    if act_ref is not None:
        fills.append((act_ref, n_gates * cfg.hidden))
    if cs_ref is not None:
        fills.append((cs_ref, cfg.hidden))
    if mraw_ref is not None:
        fills.append((mraw_ref, cfg.hidden))
    _zero_fill(cfg, trips, fills)
    for k in range(nc):
        ht_ref[:, rows(cfg, k)] = h[k].astype(ht_ref.dtype)
        if lstm:
            ct_ref[:, rows(cfg, k)] = c[k].astype(ct_ref.dtype)


# ----------------------------------------------------------------------------- backward kernels


def _prev(cfg: KernelConfig, seq_ref, first_ref, t, k):
    """Chunk ``k`` of the state before step ``t``: ``seq[t - 1]``, or ``first`` at ``t = 0``."""
    before = seq_ref[jnp.maximum(t - 1, 0), :, rows(cfg, k)].astype(_F32)
    return jnp.where(t > 0, before, first_ref[:, rows(cfg, k)].astype(_F32))


def backward_kernel(cfg: KernelConfig, len_ref, dy_ref, w_ref, *refs):
    fam = cfg.family
    kind, nc, n_gates = fam.kind, cfg.nc, cfg.gates
    lstm = kind == "lstm"
    peep_ref, proj_ref, refs = _lstm_extras(cfg, refs)
    mraw_ref = dmr_ref = None
    if kind == "rnn":
        dht_ref, ys_ref, dz_ref, dh0_ref = refs
    elif kind == "gru":
        dht_ref, ys_ref, h0_ref, act_ref, dz_ref, dh0_ref = refs
    else:
        dht_ref, dct_ref, act_ref, cs_ref, c0_ref, *refs = refs
        if fam.proj_clip is not None:
            mraw_ref, *refs = refs
        dz_ref, dh0_ref, dc0_ref, *refs = refs
        if fam.projection:
            (dmr_ref,) = refs

    lens, trips = _lengths_of(cfg, len_ref)
    tile = _tiles(cfg, w_ref, range(n_gates))
    ptile = None if proj_ref is None else _tiles(cfg, proj_ref, range(1))
    peep = _peepholes(cfg, peep_ref)
    dh = tuple(dht_ref[:, rows(cfg, k)].astype(_F32) for k in range(nc))
    dc = tuple(dct_ref[:, rows(cfg, k)].astype(_F32) for k in range(nc)) if lstm else ()

    def back(dz, g, tile=tile):
        """``dz_g @ W_g^T`` as ``nc`` chunks (``dz`` given as ``nc`` column chunks)."""
        return [_sum([_dot_t(cfg, dz[n], tile(g, k, n)) for n in range(nc)]) for k in range(nc)]

    def store(t, g, dz):
        for n in range(nc):
            dz_ref[t, :, cols(cfg, g, n)] = dz[n].astype(dz_ref.dtype)

    def mask(valid, xs):
        return [x if valid is None else jnp.where(valid, x, 0.0) for x in xs]

    def load_step(t):
        """The step's inputs besides the carried cotangents: ``dy_t`` and what the forward
        saved (each a list of ``nc`` chunks)."""

        def seq(ref, g=0):
            return [ref[t, :, cols(cfg, g, n)].astype(_F32) for n in range(nc)]

        dy = seq(dy_ref)
        if kind == "rnn":
            return dy, seq(ys_ref)
        if kind == "gru":
            h_prev = [_prev(cfg, ys_ref, h0_ref, t, n) for n in range(nc)]
            return dy, h_prev, seq(act_ref, 0), seq(act_ref, 1), seq(act_ref, 2)
        c_prev = [_prev(cfg, cs_ref, c0_ref, t, n) for n in range(nc)]
        m_raw = () if mraw_ref is None else (seq(mraw_ref),)
        return dy, *(seq(act_ref, g) for g in range(4)), seq(cs_ref), c_prev, *m_raw

    # Resident weights: the inputs of step t - 1 are loaded during step t (they do not depend
    # on the carried cotangents), as the forward kernel does with xw.
    prefetch = cfg.resident

    def step(s, carry):
        dh, dc, inputs = carry
        t = trips - 1 - s
        if prefetch:
            inputs_next = load_step(jnp.maximum(t - 1, 0))
        else:
            inputs, inputs_next = load_step(t), ()
        valid = _valid(lens, t)
        dhs = [dh[n] + inputs[0][n] for n in range(nc)]
        if kind == "rnn":
            _, hs = inputs
            dz = mask(valid, [dhs[n] * (1.0 - hs[n] * hs[n]) for n in range(nc)])
            store(t, 0, dz)
            dh_prev, dc_new = back(dz, 0), ()
        elif kind == "gru":
            _, hp, r, u, cand = inputs
            dzu = [dhs[n] * (hp[n] - cand[n]) * u[n] * (1.0 - u[n]) for n in range(nc)]
            dzc = [dhs[n] * (1.0 - u[n]) * (1.0 - cand[n] * cand[n]) for n in range(nc)]
            dzu, dzc = mask(valid, dzu), mask(valid, dzc)
            drh = back(dzc, 2)
            dzr = [drh[n] * hp[n] * r[n] * (1.0 - r[n]) for n in range(nc)]
            store(t, 0, dzr)
            store(t, 1, dzu)
            store(t, 2, dzc)
            from_r, from_u = back(dzr, 0), back(dzu, 1)
            dh_prev = [dhs[k] * u[k] + drh[k] * r[k] + from_r[k] + from_u[k] for k in range(nc)]
            dc_new = ()
        else:
            _, i, j, f, o, cn, cp = inputs[:7]
            if ptile is not None:  # through m = clip(hh @ P): d(hh) = dm_raw @ P^T
                dmr = dhs
                if fam.proj_clip is not None:
                    m_raw = inputs[7]
                    pc = fam.proj_clip
                    dmr = [jnp.where(jnp.abs(m_raw[n]) < pc, dmr[n], 0.0) for n in range(nc)]
                dmr = mask(valid, dmr)
                for n in range(nc):
                    dmr_ref[t, :, rows(cfg, n)] = dmr[n]
                dhs = back(dmr, 0, ptile)
            tc = [jnp.tanh(cn[n]) for n in range(nc)]
            dzo = [dhs[n] * tc[n] * o[n] * (1.0 - o[n]) for n in range(nc)]
            dcs = [dc[n] + dhs[n] * o[n] * (1.0 - tc[n] * tc[n]) for n in range(nc)]
            if peep is not None:
                dcs = [dcs[n] + dzo[n] * peep[3][n] for n in range(nc)]
            if fam.cell_clip is not None:  # the clip's slope: 1 inside, 0 where it clipped
                cc = fam.cell_clip
                dcs = [jnp.where(jnp.abs(cn[n]) < cc, dcs[n], 0.0) for n in range(nc)]
            dzs = [
                mask(valid, [dcs[n] * j[n] * i[n] * (1.0 - i[n]) for n in range(nc)]),
                mask(valid, [dcs[n] * i[n] * (1.0 - j[n] * j[n]) for n in range(nc)]),
                mask(valid, [dcs[n] * cp[n] * f[n] * (1.0 - f[n]) for n in range(nc)]),
                mask(valid, dzo),
            ]
            for g in range(4):
                store(t, g, dzs[g])
            parts = [back(dzs[g], g) for g in range(4)]
            dh_prev = [_sum([p[k] for p in parts]) for k in range(nc)]
            dc_prev = [dcs[n] * f[n] for n in range(nc)]
            if peep is not None:
                dc_prev = [
                    dc_prev[n] + dzs[0][n] * peep[0][n] + dzs[2][n] * peep[2][n] for n in range(nc)
                ]
            dc_new = tuple(_select(valid, dc_prev[n], dc[n]) for n in range(nc))
        dh_new = tuple(_select(valid, dh_prev[k], dh[k]) for k in range(nc))
        return dh_new, dc_new, inputs_next

    first = load_step(jnp.maximum(trips - 1, 0)) if prefetch else ()
    dh, dc, _ = lax.fori_loop(np.int32(0), trips, step, (dh, dc, first))
    fills = [(dz_ref, n_gates * cfg.hidden)]
    if dmr_ref is not None:
        fills.append((dmr_ref, cfg.hidden))
    _zero_fill(cfg, trips, fills)
    for k in range(nc):
        dh0_ref[:, rows(cfg, k)] = dh[k].astype(dh0_ref.dtype)
        if lstm:
            dc0_ref[:, rows(cfg, k)] = dc[k].astype(dc0_ref.dtype)
