"""The Pallas recurrence kernels on one GPU: correctness first, then timings against cuDNN.

Run from the repository root (the script puts ``src`` on ``sys.path`` itself)::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_pallas.py --out $OUT

It checks, per family, the Pallas layer's outputs, final state and gradients against an XLA
``lax.scan`` reference at full float32 precision (relative error), then times the forward pass
and forward+backward (``value_and_grad`` of ``sum(outputs)`` with respect to the weights,
float32) of:

- ``pallas``: the input projection as one XLA matmul, then the Pallas kernel;
- ``pallas_len``: the same with random ``sequence_length``;
- ``fused``: ``recurrax.dynamic_rnn(cell, x, time_major=True, implementation="fused")``, jitted;
- ``cudnn``: PyTorch's ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (padded, no lengths);
- ``packed``: PyTorch with ``pack_padded_sequence`` and the same random lengths;
- ``jaxrnn``: ``jax.experimental.rnn.lstm`` (JAX's binding of cuDNN's LSTM, batch-major, full
  lengths), for the ``lstm`` family on a GPU only: elsewhere (other families, a CPU backend, the
  module missing) the case is recorded as ``"unsupported"`` with the reason, not as a failure.

The families: ``rnn``, ``gru``, ``lstm`` (``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell``; the
default) and, opt-in (``--families lstm,lstmp``), ``lstmp``: ``LSTMCell`` with a projection
``num_proj = P = max(1, H // 2)`` (no peepholes, no clips; the state is ``(c [B, H], h [B, P])``
and the outputs ``[T, B, P]``), against PyTorch's ``nn.LSTM(I, H, proj_size=P)``.

Each time is the median of repeated calls after a warm-up, synchronising after each call.
Failures of one case (e.g. a size the kernel does not support) are reported, not raised. Cases
run narrow shapes first and stop starting new ones after ``--budget-s`` seconds. Results go to
``$OUT/gpu_pallas.json`` (rewritten after every case) and a table at the end.

``--breakdown B,T,I,H`` (off by default) times, per selected family at that one shape, the
Pallas path (``pallas``, no lengths) and cuDNN (``cudnn``) forward and forward+backward at
``T/4``, ``T/2`` and ``T`` steps, fits ``time = fixed + per_step * steps`` by least squares and
reports microseconds per step and the fixed cost for the forward and for the backward
(forward+backward minus forward); at ``T`` it also times the XLA parts around the kernel alone:
``project`` (the input projection ``x @ W_x + b``) and ``wgrad`` (the backward's weight-gradient
matmuls at the kernel's padded sizes: ``H_prev^T dZ``, GRU's ``(r*H_prev)^T dZ_c``, the
projection's ``HH^T dM``, ``x^T d(xw)`` and the bias sum), so that what is left per step is the
kernels' own. Records of kind ``"breakdown"``; a second table at the end. With ``--breakdown``
the timing grid runs only for shapes given with ``--shapes``; the budget covers every timing.

``--dry-run`` runs tiny shapes on CPU through the Pallas interpreter (PyTorch on CPU when it is
installed).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
import traceback
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave memory to PyTorch too

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

SHAPES = [  # (B, T, I, H), narrow and long first
    (16, 2000, 32, 32),
    (8, 4000, 16, 64),
    (4, 1000, 3, 5),
    (32, 1000, 64, 128),
    (64, 200, 128, 256),
    (16, 100, 512, 1024),
]
DRY_SHAPES = [(4, 12, 3, 5), (18, 9, 4, 24)]
FAMILIES = ["lstm", "gru", "rnn"]  # the default; "lstmp" is opt-in
ALL_FAMILIES = ("rnn", "gru", "lstm", "lstmp")
METHODS = ["cudnn", "packed", "pallas", "pallas_len", "fused", "jaxrnn"]
BREAKDOWN_METHODS = ("pallas", "cudnn")


try:
    from recurrax.engine import pallas as P
except Exception as exc:  # reported per case; the other methods still run
    P = None
    PALLAS_ERROR = f"loading recurrax.engine.pallas failed: {type(exc).__name__}: {exc}"
else:
    PALLAS_ERROR = None
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "lstmp": 4}
try:
    import recurrax
except Exception as exc:  # reported per case
    recurrax = None
    RECURRAX_ERROR = f"import recurrax failed: {type(exc).__name__}: {exc}"
else:
    RECURRAX_ERROR = None


class Unsupported(Exception):
    """A method that cannot run a family or on this machine: recorded as ``"unsupported"``."""


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def proj_size(hidden: int) -> int:
    """``P`` of the ``lstmp`` family: ``max(1, H // 2)``."""
    return max(1, hidden // 2)


def out_width(family: str, hidden: int) -> int:
    """The width of the outputs and of ``h``: ``P`` for ``lstmp``, else ``H``."""
    return proj_size(hidden) if family == "lstmp" else hidden


def pallas_family(family: str):
    """The kernel's :class:`~recurrax.engine.pallas.Family` for a family name."""
    if P is None:
        raise RuntimeError(PALLAS_ERROR)
    if family == "lstmp":
        return P.Family("lstm", 1.0, projection=True)
    return P.Family(family, 1.0)


# ----------------------------------------------------------------------------- weights


def make_params(family: str, n_in: int, hidden: int, seed: int):
    """``(w_x [I, gH], b [gH], w_h)`` random, float32; ``w_h`` as ``pallas_layer`` takes it
    (``lstmp``: ``(w [P, 4H], None, projection [H, P])``)."""
    g = GATES[family]
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(n_in + hidden)

    def uniform(*shape):
        return jnp.asarray(rng.uniform(-1, 1, shape) * scale * 1.7, jnp.float32)

    w_x = uniform(n_in, g * hidden)
    b = jnp.asarray(rng.uniform(-0.1, 0.1, (g * hidden,)), jnp.float32)
    if family == "gru":
        w_h = (uniform(hidden, 2 * hidden), uniform(hidden, hidden))
    elif family == "lstmp":
        width = proj_size(hidden)
        w_h = (uniform(width, g * hidden), None, uniform(hidden, width))
    else:
        w_h = uniform(hidden, g * hidden)
    return w_x, b, w_h


def make_cell(family: str, n_in: int, hidden: int, params):
    """A recurrax cell holding ``params`` (for the fused path)."""
    if recurrax is None:
        raise RuntimeError(RECURRAX_ERROR)
    w_x, b, w_h = params
    key = jax.random.PRNGKey(0)
    if family == "lstm":
        cell = recurrax.BasicLSTMCell(hidden, n_in, key=key)
        return _replace(cell, kernel=jnp.concatenate([w_x, w_h]), bias=b)
    if family == "lstmp":
        w, _, proj = w_h
        cell = recurrax.LSTMCell(hidden, n_in, key=key, num_proj=proj_size(hidden))
        return _replace(cell, kernel=jnp.concatenate([w_x, w]), bias=b, projection_kernel=proj)
    if family == "rnn":
        cell = recurrax.BasicRNNCell(hidden, n_in, key=key)
        return _replace(cell, kernel=jnp.concatenate([w_x, w_h]), bias=b)
    cell = recurrax.GRUCell(hidden, n_in, key=key)
    w_gh, w_ch = w_h
    return _replace(
        cell,
        gates_kernel=jnp.concatenate([w_x[:, : 2 * hidden], w_gh]),
        gates_bias=b[: 2 * hidden],
        candidate_kernel=jnp.concatenate([w_x[:, 2 * hidden :], w_ch]),
        candidate_bias=b[2 * hidden :],
    )


def _replace(cell, **fields):
    import equinox as eqx

    names = list(fields)
    return eqx.tree_at(lambda c: [getattr(c, n) for n in names], cell, [fields[n] for n in names])


def zero_state(family: str, batch: int, hidden: int):
    """``h [B, H]``; for the LSTMs ``(c [B, H], h [B, P])`` (``P = H`` but for ``lstmp``)."""
    c = jnp.zeros((batch, hidden), jnp.float32)
    if family in ("lstm", "lstmp"):
        return c, jnp.zeros((batch, out_width(family, hidden)), jnp.float32)
    return c


# ----------------------------------------------------------------------------- models


def project(x, w_x, b):
    steps, batch = x.shape[:2]
    return (x.reshape(steps * batch, -1) @ w_x + b).reshape(steps, batch, -1)


def pallas_model(family: str, interpret: bool, options=None):
    fam = pallas_family(family)
    options = dict(options or {})

    def run(params, x, lengths):
        w_x, b, w_h = params
        xw = project(x, w_x, b)
        batch, hidden = x.shape[1], w_x.shape[1] // fam.gates
        state0 = zero_state(family, batch, hidden)
        return P.pallas_layer(fam, w_h, xw, state0, lengths, interpret=interpret, **options)

    return run


def scan_model(family: str, forget_bias: float = 1.0):
    """The reference: the same cell math as a plain ``lax.scan`` (TF1 length semantics)."""

    def run(params, x, lengths):
        w_x, b, w_h = params
        xw = project(x, w_x, b)
        steps, batch = xw.shape[:2]
        hidden = w_x.shape[1] // GATES[family]
        lens = jnp.full((batch,), steps) if lengths is None else lengths

        def step(state, inp):
            x_t, t = inp
            valid = (t < lens)[:, None]
            if family == "rnn":
                new = out = jnp.tanh(x_t + state @ w_h)
            elif family == "gru":
                w_gh, w_ch = w_h
                gates = jax.nn.sigmoid(x_t[:, : 2 * hidden] + state @ w_gh)
                r, u = gates[:, :hidden], gates[:, hidden:]
                c = jnp.tanh(x_t[:, 2 * hidden :] + (r * state) @ w_ch)
                new = out = u * state + (1 - u) * c
            else:
                c, h = state
                w = w_h[0] if family == "lstmp" else w_h
                i, j, f, o = jnp.split(x_t + h @ w, 4, axis=-1)
                c = c * jax.nn.sigmoid(f + forget_bias) + jax.nn.sigmoid(i) * jnp.tanh(j)
                out = jnp.tanh(c) * jax.nn.sigmoid(o)
                if family == "lstmp":
                    out = out @ w_h[2]  # m = (tanh(c) * o) @ projection
                new = (c, out)
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), new, state)
            return new, jnp.where(valid, out, 0.0)

        final, ys = lax.scan(step, zero_state(family, batch, hidden), (xw, jnp.arange(steps)))
        return ys, final

    return run


def _loss_and_grad(model):
    def loss(params, x, lengths):
        ys, _ = model(params, x, lengths)
        return jnp.sum(ys)

    return jax.jit(jax.value_and_grad(loss))


# ----------------------------------------------------------------------------- timing


def _median_ms(call, sync, target_s: float, min_reps: int, max_reps: int):
    """``(median ms, warm-up s)``: one warm-up call (compiles), one more, then timed calls."""
    t0 = time.perf_counter()
    sync(call())
    warm = time.perf_counter() - t0
    sync(call())
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (
        len(times) < max_reps and time.perf_counter() - start < target_s
    ):
        t0 = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, warm


def _jax_sync(out):
    jax.block_until_ready(out)


def _time_modes(call_f, call_b, sync, opts) -> dict:
    out = {}
    for mode, call in (("fwd", call_f), ("fwd_bwd", call_b)):
        ms, warm = _median_ms(call, sync, opts.target_s, opts.min_reps, opts.max_reps)
        out[mode] = {"ms": ms, "warmup_s": warm}
    return out


def time_jax(method, family, shape, params, x, lengths, opts):
    batch, steps, n_in, hidden = shape
    if method in ("pallas", "pallas_len"):
        model = pallas_model(family, opts.interpret, opts.pallas_options)
        lens = lengths if method == "pallas_len" else None
        fwd = jax.jit(model)
        vg = _loss_and_grad(model)
        call_f = lambda: fwd(params, x, lens)
        call_b = lambda: vg(params, x, lens)
    else:  # fused
        if recurrax is None:
            raise RuntimeError(RECURRAX_ERROR)
        cell = make_cell(family, n_in, hidden, params)

        def run(cell, x):
            return recurrax.dynamic_rnn(
                cell, x, time_major=True, implementation="fused", dtype=jnp.float32
            )

        def loss(cell, x):
            return jnp.sum(run(cell, x)[0])

        fwd = jax.jit(run)
        vg = jax.jit(jax.value_and_grad(loss))
        call_f = lambda: fwd(cell, x)
        call_b = lambda: vg(cell, x)
    return _time_modes(call_f, call_b, _jax_sync, opts)


def time_jaxrnn(family, shape, x):
    """``jax.experimental.rnn.lstm`` (cuDNN's LSTM through JAX) as :func:`time_jax` times the
    others, with its own weights (``init_lstm_weight``: cuDNN's packed layout) and full lengths;
    :class:`Unsupported` where it cannot run. Returns ``(call_f, call_b)``."""
    if family != "lstm":
        raise Unsupported(
            f"jax.experimental.rnn has cuDNN's plain LSTM only (no {family} family"
            + (", no projection)" if family == "lstmp" else ")")
        )
    backend = jax.default_backend()
    if backend != "gpu":
        raise Unsupported(
            f"jax.experimental.rnn.lstm runs on cuDNN only; the JAX backend is {backend!r}"
        )
    try:
        from jax.experimental import rnn
    except ImportError as exc:
        raise Unsupported(f"jax.experimental.rnn cannot be imported: {_short(exc)}") from exc
    batch, steps, n_in, hidden = shape
    w = rnn.init_lstm_weight(jax.random.key(0), n_in, hidden, 1, False)
    z = jnp.zeros((1, batch, hidden), jnp.float32)
    lens = jnp.full((batch,), steps, jnp.int32)
    xb = jnp.swapaxes(x, 0, 1)  # [B, T, I]: the binding is batch-major

    def run(w, xb, z, lens):
        return rnn.lstm(xb, z, z, w, lens, n_in, hidden, 1, 0.0, False)[0]

    def loss(w, xb, z, lens):
        return jnp.sum(run(w, xb, z, lens))

    fwd = jax.jit(run)
    vg = jax.jit(jax.value_and_grad(loss))
    return lambda: fwd(w, xb, z, lens), lambda: vg(w, xb, z, lens)


def time_torch(method, family, shape, x_np, lengths_np, opts):
    import torch

    device = "cpu" if opts.dry_run else "cuda"
    batch, steps, n_in, hidden = shape
    torch.manual_seed(0)
    if family == "lstmp":
        net = torch.nn.LSTM(n_in, hidden, proj_size=proj_size(hidden))
    else:
        kinds = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
        net = kinds[family](n_in, hidden)
    net = net.to(device)
    x = torch.as_tensor(x_np, device=device)
    lens = torch.as_tensor(lengths_np, dtype=torch.int64)  # on the CPU, as packing wants it

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    def forward():
        if method == "cudnn":
            return net(x)[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, enforce_sorted=False)
        out, _ = net(packed)
        return torch.nn.utils.rnn.pad_packed_sequence(out, total_length=steps)[0]

    def call_f():
        with torch.no_grad():
            return forward()

    def call_b():
        net.zero_grad(set_to_none=True)
        y = forward()
        y.sum().backward()
        return y

    return _time_modes(call_f, call_b, sync, opts)


def time_case(method, family, shape, params, x, lengths, x_np, lengths_np, opts) -> dict:
    """``{"fwd": {...}, "fwd_bwd": {...}}`` of one method on one case."""
    if method in ("cudnn", "packed"):
        return time_torch(method, family, shape, x_np, lengths_np, opts)
    if method == "jaxrnn":
        call_f, call_b = time_jaxrnn(family, shape, x)
        return _time_modes(call_f, call_b, _jax_sync, opts)
    return time_jax(method, family, shape, params, x, lengths, opts)


# ----------------------------------------------------------------------------- breakdown


def breakdown_steps(steps: int) -> list[int]:
    """The three lengths of a breakdown: ``T // 4``, ``T // 2`` and ``T`` (``T >= 4``)."""
    return [steps // 4, steps // 2, steps]


def fit_line(steps, ms) -> dict:
    """Least squares ``ms = fixed_ms + per_step_us * 1e-3 * steps``."""
    slope, intercept = np.polyfit(np.asarray(steps, np.float64), np.asarray(ms, np.float64), 1)
    return {"per_step_us": float(slope * 1e3), "fixed_ms": float(intercept)}


def breakdown_fits(points) -> dict:
    """Fits of the forward, the backward (forward+backward minus forward) and both."""
    steps = [p["steps"] for p in points]
    fwd = [p["fwd_ms"] for p in points]
    both = [p["fwd_bwd_ms"] for p in points]
    return {
        "fwd": fit_line(steps, fwd),
        "bwd": fit_line(steps, [b - f for b, f in zip(both, fwd)]),
        "fwd_bwd": fit_line(steps, both),
    }


def xla_parts(family: str, shape, params, x, opts) -> dict:
    """``{"project": call, "wgrad": call}``: the XLA work around the kernel at ``T`` steps
    alone. ``project`` is the input projection ``x @ W_x + b``; ``wgrad`` the backward's
    weight-gradient matmuls as ``pallas_layer``'s backward issues them (batch padded to blocks
    of 16, ``H`` to the kernel's padded width): ``H_prev^T dZ`` (GRU: ``H_prev^T dZ_[r,u]`` and
    ``(r*H_prev)^T dZ_c``; ``lstmp``: also ``HH^T dM`` with ``HH = tanh(c) * o``), then the
    projection's ``x^T d(xw)`` and ``sum d(xw)``, on random operands of the right shapes."""
    batch, steps, n_in, hidden = shape
    fam = pallas_family(family)
    width = out_width(family, hidden)
    plan_opts = {k: v for k, v in opts.pallas_options.items() if k in ("chunk", "resident")}
    hp = P.plan_for(fam, max(hidden, width), jnp.float32, **plan_opts)[0]
    block = int(opts.pallas_options.get("block_batch") or 16)
    bp = -(-batch // block) * block
    g = fam.gates
    w_x, b, _ = params
    rng = np.random.default_rng(2)

    def arr(*s):
        return jnp.asarray(rng.standard_normal(s), jnp.float32)

    ops = {
        "h_prev": arr(steps, bp, hp),
        "dz": arr(steps, bp, g * hp),
        "dxw": arr(steps, batch, g * hidden),
        "extra": arr(steps, bp, hp),  # GRU's r; lstmp's c
    }

    def wgrad(x, ops):
        h_prev = ops["h_prev"].reshape(-1, hp)
        dz = ops["dz"].reshape(-1, g * hp)
        extra = ops["extra"].reshape(-1, hp)
        if family == "gru":
            dw = jnp.concatenate(
                [h_prev.T @ dz[:, : 2 * hp], (extra * h_prev).T @ dz[:, 2 * hp :]], axis=1
            )
        else:
            dw = h_prev.T @ dz
        dxw = ops["dxw"].reshape(-1, g * hidden)
        out = [dw, x.reshape(-1, n_in).T @ dxw, jnp.sum(dxw, axis=0)]
        if family == "lstmp":  # dP = HH^T dM, HH recomputed from c and o
            hh = jnp.tanh(extra) * dz[:, 3 * hp :]  # stand-ins for c and the o gate
            out.append(hh.T @ ops["h_prev"].reshape(-1, hp))
        return out

    proj_f = jax.jit(project)
    wgrad_f = jax.jit(wgrad)
    return {"project": lambda: proj_f(x, w_x, b), "wgrad": lambda: wgrad_f(x, ops)}


def run_breakdown(shape, families, opts, records, save, budget_left, skipped):
    """The ``--breakdown`` records, one per family and method (and the XLA parts)."""
    batch, steps, n_in, hidden = shape
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((steps, batch, n_in)).astype(np.float32)
    lens_np = np.full((batch,), steps, np.int32)
    all_steps = breakdown_steps(steps)
    for family in families:
        params = make_params(family, n_in, hidden, seed=3)
        base = {"kind": "breakdown", "family": family, "shape": list(shape)}
        if not budget_left():
            skipped.append((shape, family, "breakdown:xla_parts"))
        else:
            t0 = time.perf_counter()
            rec = {**base, "method": "xla_parts", "steps": steps}
            try:
                calls = xla_parts(family, shape, params, jnp.asarray(x_np), opts)
                rec["result"] = {}
                for name, call in calls.items():
                    ms, warm = _median_ms(
                        call, _jax_sync, opts.target_s, opts.min_reps, opts.max_reps
                    )
                    rec["result"][name] = {"ms": ms, "warmup_s": warm}
            except Exception as exc:
                rec["error"] = _short(exc)
            _finish(rec, t0, records, save)
        for method in BREAKDOWN_METHODS:
            rec = {**base, "method": method, "steps": all_steps, "points": []}
            t0 = time.perf_counter()
            for n in all_steps:
                if not budget_left():
                    skipped.append((shape, family, f"breakdown:{method}@{n}"))
                    continue
                sub = (batch, n, n_in, hidden)
                try:
                    r = time_case(
                        method,
                        family,
                        sub,
                        params,
                        jnp.asarray(x_np[:n]),
                        None,
                        x_np[:n],
                        np.minimum(lens_np, n),
                        opts,
                    )
                except Exception as exc:
                    rec["error"] = f"at {n} steps: {_short(exc)}"
                    break
                rec["points"].append(
                    {"steps": n, "fwd_ms": r["fwd"]["ms"], "fwd_bwd_ms": r["fwd_bwd"]["ms"]}
                )
            if len(rec["points"]) == len(all_steps):
                rec["fit"] = breakdown_fits(rec["points"])
            _finish(rec, t0, records, save)


def _finish(rec, t0, records, save):
    """Append ``rec`` with its wall time, rewrite the JSON, print one line."""
    rec["s"] = round(time.perf_counter() - t0, 1)
    records.append(rec)
    save()
    what = f"{str(tuple(rec['shape'])):>22} {rec['family']:>5} {rec['method']:>10}:"
    if "error" in rec:
        print(f"{what} FAILED {rec['error']}", flush=True)
    elif "unsupported" in rec:
        print(f"{what} unsupported: {rec['unsupported']}", flush=True)
    elif rec["kind"] == "time":
        r = rec["result"]
        print(
            f"{what} fwd {r['fwd']['ms']:9.3f} ms  fwd+bwd {r['fwd_bwd']['ms']:9.3f} ms"
            f"  ({rec['s']} s incl. compile)",
            flush=True,
        )
    elif rec["method"] == "xla_parts":
        parts = "  ".join(f"{k} {v['ms']:9.3f} ms" for k, v in rec["result"].items())
        print(f"{what} at {rec['steps']} steps: {parts}", flush=True)
    else:
        fit = rec.get("fit")
        shown = (
            "  ".join(
                f"{k} {v['per_step_us']:.3f} us/step + {v['fixed_ms']:.3f} ms"
                for k, v in fit.items()
                if k != "fwd_bwd"
            )
            if fit
            else f"{len(rec['points'])} of {len(rec['steps'])} points (budget)"
        )
        print(f"{what} {shown}  ({rec['s']} s incl. compiles)", flush=True)


# ----------------------------------------------------------------------------- correctness


def _rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("nan")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(family: str, shape, opts) -> dict:
    """Relative errors of the Pallas layer against the ``lax.scan`` reference (float32,
    ``Precision.HIGHEST``): outputs, final state, gradients (random lengths incl. 0 and T)."""
    batch, steps, n_in, hidden = shape
    params = make_params(family, n_in, hidden, seed=11)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((steps, batch, n_in)), jnp.float32)
    lens = rng.integers(0, steps + 1, batch)
    lens[0], lens[-1] = 0, steps
    lens = jnp.asarray(lens, jnp.int32)
    width = out_width(family, hidden)
    ct = jnp.asarray(rng.standard_normal((steps, batch, width)), jnp.float32)

    def loss(model):
        def f(params, x):
            ys, final = model(params, x, lens)
            extra = sum(jnp.sum(s * 0.5) for s in jax.tree_util.tree_leaves(final))
            return jnp.sum(ys * ct) + extra, (ys, final)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

    (_, (ys, final)), grads = loss(pallas_model(family, opts.interpret))(params, x)
    with jax.default_matmul_precision("highest"):
        (_, (ys_r, final_r)), grads_r = loss(scan_model(family))(params, x)
    leaves = jax.tree_util.tree_leaves
    errs = {
        "outputs": _rel(ys, ys_r),
        "final_state": max(_rel(a, b) for a, b in zip(leaves(final), leaves(final_r))),
        "grad_weights": max(_rel(a, b) for a, b in zip(leaves(grads[0]), leaves(grads_r[0]))),
        "grad_inputs": _rel(grads[1], grads_r[1]),
    }
    return errs


# ----------------------------------------------------------------------------- main


def _table(records, methods) -> str:
    rows = {}
    for r in records:
        if r.get("kind") != "time":
            continue
        key = (tuple(r["shape"]), r["family"])
        rows.setdefault(key, {})[r["method"]] = r
    lines = []
    head = f"{'B,T,I,H':>18} {'fam':>5} {'mode':>7} " + " ".join(f"{m:>16}" for m in methods)
    lines.append(head)
    for (shape, family), by in rows.items():
        for mode in ("fwd", "fwd_bwd"):
            base = by.get("cudnn", {}).get("result", {}).get(mode, {}).get("ms")
            cells = []
            for m in methods:
                r = by.get(m)
                if r is None:
                    cells.append(f"{'-':>16}")
                elif "unsupported" in r:
                    cells.append(f"{'n/a':>16}")
                elif "error" in r:
                    cells.append(f"{'FAIL':>16}")
                else:
                    ms = r["result"][mode]["ms"]
                    ratio = f" ({ms / base:4.2f}x)" if base else ""
                    cells.append(f"{ms:>8.3f}{ratio:>8}")
            lines.append(
                f"{','.join(map(str, shape)):>18} {family:>5} {mode:>7} " + " ".join(cells)
            )
    lines.append(
        "ms per call (median); (Nx) = time / cuDNN's; FAIL: see the errors above / JSON; "
        "n/a: unsupported (reason in the JSON)."
    )
    return "\n".join(lines)


def _breakdown_table(records) -> str:
    """Per family: microseconds per step and fixed ms (forward, backward) of each method, the
    XLA parts at ``T``, and the Pallas kernels alone (the fit's per-step cost minus the XLA
    parts' time per step)."""
    recs = [r for r in records if r.get("kind") == "breakdown"]
    if not recs:
        return ""
    shape = recs[0]["shape"]
    steps = shape[1]
    lines = [
        f"breakdown at B,T,I,H = {','.join(map(str, shape))} (steps "
        f"{', '.join(map(str, breakdown_steps(steps)))}): time = fixed + per_step * steps",
        f"{'fam':>5} {'method':>10} {'fwd us/step':>12} {'fwd fixed ms':>13} "
        f"{'bwd us/step':>12} {'bwd fixed ms':>13}",
    ]
    for family in dict.fromkeys(r["family"] for r in recs):
        mine = {r["method"]: r for r in recs if r["family"] == family}
        for method in BREAKDOWN_METHODS:
            r = mine.get(method)
            if r is None:
                continue
            if "fit" not in r:
                why = r.get("error") or f"{len(r['points'])} of 3 points (budget)"
                lines.append(f"{family:>5} {method:>10} {why}")
                continue
            f, b = r["fit"]["fwd"], r["fit"]["bwd"]
            lines.append(
                f"{family:>5} {method:>10} {f['per_step_us']:>12.3f} {f['fixed_ms']:>13.3f} "
                f"{b['per_step_us']:>12.3f} {b['fixed_ms']:>13.3f}"
            )
        parts = mine.get("xla_parts")
        if parts is None or "result" not in parts:
            continue
        pr, wg = parts["result"]["project"]["ms"], parts["result"]["wgrad"]["ms"]
        text = (
            f"{family:>5} {'xla parts':>10} at {steps} steps: project {pr:.3f} ms "
            f"({pr * 1e3 / steps:.3f} us/step), wgrad {wg:.3f} ms ({wg * 1e3 / steps:.3f} us/step)"
        )
        lines.append(text)
        kernel = mine.get("pallas", {}).get("kernel_us_per_step")
        if kernel:
            lines.append(
                f"{family:>5} {'kernels':>10} forward {kernel['fwd']:.3f} us/step, "
                f"backward {kernel['bwd']:.3f} us/step (pallas per step minus the XLA parts)"
            )
    return "\n".join(lines)


def kernel_estimate(records) -> None:
    """Add ``kernel_us_per_step`` to each Pallas breakdown record that has a fit and XLA parts
    (forward: per step minus ``project``'s time per step; backward: minus ``wgrad``'s; their
    launch costs count as per-step here, so the XLA share is if anything overstated)."""
    recs = [r for r in records if r.get("kind") == "breakdown"]
    for r in recs:
        if r["method"] != "pallas" or "fit" not in r:
            continue
        parts = [
            p
            for p in recs
            if p["family"] == r["family"] and p["method"] == "xla_parts" and "result" in p
        ]
        if not parts:
            continue
        res, steps = parts[0]["result"], parts[0]["steps"]
        r["kernel_us_per_step"] = {
            "fwd": r["fit"]["fwd"]["per_step_us"] - res["project"]["ms"] * 1e3 / steps,
            "bwd": r["fit"]["bwd"]["per_step_us"] - res["wgrad"]["ms"] * 1e3 / steps,
        }


def _shape_arg(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected B,T,I,H (four positive integers); got {text!r}")
    return shape


def _breakdown_arg(text: str) -> tuple[int, int, int, int]:
    shape = _shape_arg(text)
    if shape[1] < 4:
        raise argparse.ArgumentTypeError(
            f"expected T >= 4 (the fit times T/4, T/2 and T steps); got T = {shape[1]}"
        )
    return shape


def _shapes_arg(text: str) -> list[tuple[int, int, int, int]]:
    return [_shape_arg(s) for s in text.split(";") if s]


def _names_arg(allowed):
    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed)}; got {text!r}"
            )
        return names

    return parse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for gpu_pallas.json")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no case after this")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (interpreter)")
    parser.add_argument(
        "--families",
        type=_names_arg(ALL_FAMILIES),
        default=list(FAMILIES),
        help=f"of {', '.join(ALL_FAMILIES)} (default {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--methods",
        type=_names_arg(METHODS),
        default=list(METHODS),
        help=f"of {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--shapes", type=_shapes_arg, default=None, help="e.g. '16,2000,32,32;8,4000,16,64'"
    )
    parser.add_argument(
        "--breakdown",
        type=_breakdown_arg,
        default=None,
        metavar="B,T,I,H",
        help="per-step and fixed costs at T/4, T/2, T steps (the grid then runs --shapes only)",
    )
    parser.add_argument("--target-s", type=float, default=0.25, help="timed seconds per case")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=30)
    parser.add_argument("--skip-check", action="store_true")
    parser.add_argument(
        "--check-shapes",
        type=_shapes_arg,
        default=None,
        help="shapes of the correctness check (default: two fixed ones; one in a dry run)",
    )
    parser.add_argument(
        "--pallas-options",
        type=json.loads,
        default={},
        help="keywords for pallas_layer in the timings, e.g. '{\"num_warps\": 2}'",
    )
    opts = parser.parse_args(argv)
    opts.interpret = opts.dry_run
    if opts.dry_run:
        jax.config.update("jax_platforms", "cpu")
        opts.target_s, opts.min_reps, opts.max_reps = 0.0, 1, 1
        # PyTorch on CPU says so on every call of nn.LSTM(proj_size=...): expected there.
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    start = time.perf_counter()
    out_dir = pathlib.Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "gpu_pallas.json"
    families, methods = opts.families, opts.methods
    if opts.shapes is not None:
        shapes = opts.shapes
    elif opts.breakdown is not None:
        shapes = []
    else:
        shapes = DRY_SHAPES if opts.dry_run else SHAPES

    backend = jax.default_backend()
    info = {
        "jax": jax.__version__,
        "backend": backend,
        "devices": [str(d) for d in jax.devices()],
        "recurrax_import_error": RECURRAX_ERROR,
        "pallas_import_error": PALLAS_ERROR,
        "argv": list(sys.argv[1:] if argv is None else argv),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    except Exception as exc:
        info["torch_error"] = _short(exc)
    print("info:", json.dumps(info), flush=True)
    if backend != "gpu" and not opts.dry_run:
        print("no GPU backend: use --dry-run on a CPU machine", flush=True)
    records = [{"kind": "info", **info}]

    def save():
        out_path.write_text(json.dumps(records, indent=1))

    def budget_left() -> bool:
        return time.perf_counter() - start <= opts.budget_s

    # (a) correctness on the device, before any timing.
    if not opts.skip_check:
        if opts.check_shapes is not None:
            check_shapes = opts.check_shapes
        else:
            check_shapes = (
                DRY_SHAPES[1:] if opts.dry_run else [(32, 100, 16, 48), (16, 50, 16, 128)]
            )
        for shape in check_shapes:
            for family in families:
                t0 = time.perf_counter()
                rec = {"kind": "check", "family": family, "shape": list(shape)}
                try:
                    rec["rel_error"] = check(family, shape, opts)
                except Exception as exc:
                    rec["error"] = _short(exc)
                    traceback.print_exc()
                rec["s"] = round(time.perf_counter() - t0, 1)
                records.append(rec)
                save()
                shown = rec.get("rel_error") or rec.get("error")
                print(f"check {family:>5} B,T,I,H={shape}: {shown}  ({rec['s']} s)", flush=True)
        print("(TF32 dots on GPU: relative errors near 1e-4..1e-3 are expected.)", flush=True)

    # (b) timings.
    skipped = []
    for shape in shapes:
        batch, steps, n_in, hidden = shape
        rng = np.random.default_rng(1)
        x_np = rng.standard_normal((steps, batch, n_in)).astype(np.float32)
        lens_np = rng.integers(1, steps + 1, batch).astype(np.int32)
        lens_np[0] = steps
        x = jnp.asarray(x_np)
        lengths = jnp.asarray(lens_np)
        for family in families:
            params = make_params(family, n_in, hidden, seed=3)
            for method in methods:
                if not budget_left():
                    skipped.append((shape, family, method))
                    continue
                rec = {"kind": "time", "family": family, "shape": list(shape), "method": method}
                if method.startswith("pallas"):
                    try:
                        plan_opts = {
                            k: v
                            for k, v in opts.pallas_options.items()
                            if k in ("chunk", "resident")
                        }
                        width = max(hidden, out_width(family, hidden))
                        hp, chunk, res_f, res_b = P.plan_for(
                            pallas_family(family), width, jnp.float32, **plan_opts
                        )
                        rec["plan"] = {
                            "padded_hidden": hp,
                            "chunk": chunk,
                            "resident_forward": res_f,
                            "resident_backward": res_b,
                            "options": opts.pallas_options,
                        }
                    except Exception:
                        pass
                t0 = time.perf_counter()
                try:
                    rec["result"] = time_case(
                        method, family, shape, params, x, lengths, x_np, lens_np, opts
                    )
                except Unsupported as exc:
                    rec["unsupported"] = str(exc)
                except Exception as exc:
                    rec["error"] = _short(exc)
                _finish(rec, t0, records, save)

    # (c) the per-step breakdown.
    if opts.breakdown is not None:
        run_breakdown(opts.breakdown, families, opts, records, save, budget_left, skipped)
        kernel_estimate(records)
        save()
    if skipped:
        records.append({"kind": "skipped", "cases": [[list(s), f, m] for s, f, m in skipped]})
        save()
        print(f"budget {opts.budget_s:.0f} s reached: skipped {len(skipped)} cases", flush=True)
    print()
    if shapes:
        print(_table(records, methods))
    if opts.breakdown is not None:
        print()
        print(_breakdown_table(records))
    print(f"total {time.perf_counter() - start:.0f} s; results in {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
