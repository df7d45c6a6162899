"""The Pallas recurrence kernels on one GPU: correctness first, then timings against cuDNN.

Run from the repository root (the script puts ``src`` on ``sys.path`` itself)::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_pallas.py --out $OUT

It checks, per family (rnn, gru, lstm), the Pallas layer's outputs, final state and gradients
against an XLA ``lax.scan`` reference at full float32 precision (relative error), then times
the forward pass and forward+backward (``value_and_grad`` of ``sum(outputs)`` with respect to
the weights, float32) of:

- ``pallas``: the input projection as one XLA matmul, then the Pallas kernel;
- ``pallas_len``: the same with random ``sequence_length``;
- ``fused``: ``recurrax.dynamic_rnn(cell, x, time_major=True, implementation="fused")``, jitted;
- ``cudnn``: PyTorch's ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (padded, no lengths);
- ``packed``: PyTorch with ``pack_padded_sequence`` and the same random lengths.

Each time is the median of repeated calls after a warm-up, synchronising after each call.
Failures of one case (e.g. a size the kernel does not support) are reported, not raised. Cases
run narrow shapes first and stop starting new ones after ``--budget-s`` seconds. Results go to
``$OUT/gpu_pallas.json`` (rewritten after every case) and a table at the end.

``--dry-run`` runs a tiny shape on CPU through the Pallas interpreter (PyTorch optional).
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
FAMILIES = ["lstm", "gru", "rnn"]
METHODS = ["cudnn", "packed", "pallas", "pallas_len", "fused"]


try:
    from recurrax.engine import pallas as P
except Exception as exc:  # reported per case; the other methods still run
    P = None
    PALLAS_ERROR = f"loading recurrax.engine.pallas failed: {type(exc).__name__}: {exc}"
else:
    PALLAS_ERROR = None
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
try:
    import recurrax
except Exception as exc:  # reported per case
    recurrax = None
    RECURRAX_ERROR = f"import recurrax failed: {type(exc).__name__}: {exc}"
else:
    RECURRAX_ERROR = None


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ----------------------------------------------------------------------------- weights


def make_params(family: str, n_in: int, hidden: int, seed: int):
    """``(w_x [I, gH], b [gH], w_h)`` random, float32; ``w_h`` as ``pallas_layer`` takes it."""
    g = GATES[family]
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(n_in + hidden)
    w_x = jnp.asarray(rng.uniform(-1, 1, (n_in, g * hidden)) * scale * 1.7, jnp.float32)
    b = jnp.asarray(rng.uniform(-0.1, 0.1, (g * hidden,)), jnp.float32)
    if family == "gru":
        w_h = (
            jnp.asarray(rng.uniform(-1, 1, (hidden, 2 * hidden)) * scale * 1.7, jnp.float32),
            jnp.asarray(rng.uniform(-1, 1, (hidden, hidden)) * scale * 1.7, jnp.float32),
        )
    else:
        w_h = jnp.asarray(rng.uniform(-1, 1, (hidden, g * hidden)) * scale * 1.7, jnp.float32)
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
    h = jnp.zeros((batch, hidden), jnp.float32)
    return (h, h) if family == "lstm" else h


# ----------------------------------------------------------------------------- models


def project(x, w_x, b):
    steps, batch = x.shape[:2]
    return (x.reshape(steps * batch, -1) @ w_x + b).reshape(steps, batch, -1)


def pallas_model(family: str, interpret: bool, options=None):
    if P is None:
        raise RuntimeError(PALLAS_ERROR)
    fam = P.Family(family, 1.0)
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
                i, j, f, o = jnp.split(x_t + h @ w_h, 4, axis=-1)
                c = c * jax.nn.sigmoid(f + forget_bias) + jax.nn.sigmoid(i) * jnp.tanh(j)
                out = jnp.tanh(c) * jax.nn.sigmoid(o)
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
    out = {}
    for mode, call in (("fwd", call_f), ("fwd_bwd", call_b)):
        ms, warm = _median_ms(call, _jax_sync, opts.target_s, opts.min_reps, opts.max_reps)
        out[mode] = {"ms": ms, "warmup_s": warm}
    return out


def time_torch(method, family, shape, x_np, lengths_np, opts):
    import torch

    device = "cpu" if opts.dry_run else "cuda"
    batch, steps, n_in, hidden = shape
    kinds = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    torch.manual_seed(0)
    net = kinds[family](n_in, hidden).to(device)
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

    out = {}
    for mode, call in (("fwd", call_f), ("fwd_bwd", call_b)):
        ms, warm = _median_ms(call, sync, opts.target_s, opts.min_reps, opts.max_reps)
        out[mode] = {"ms": ms, "warmup_s": warm}
    return out


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
    ct = jnp.asarray(rng.standard_normal((steps, batch, hidden)), jnp.float32)

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


def _table(records) -> str:
    rows = {}
    for r in records:
        if r.get("kind") != "time":
            continue
        key = (tuple(r["shape"]), r["family"])
        rows.setdefault(key, {})[r["method"]] = r
    lines = []
    head = f"{'B,T,I,H':>18} {'fam':>4} {'mode':>7} " + " ".join(f"{m:>16}" for m in METHODS)
    lines.append(head)
    for (shape, family), by in rows.items():
        for mode in ("fwd", "fwd_bwd"):
            base = by.get("cudnn", {}).get("result", {}).get(mode, {}).get("ms")
            cells = []
            for m in METHODS:
                r = by.get(m)
                if r is None:
                    cells.append(f"{'-':>16}")
                elif "error" in r:
                    cells.append(f"{'FAIL':>16}")
                else:
                    ms = r["result"][mode]["ms"]
                    ratio = f" ({ms / base:4.2f}x)" if base else ""
                    cells.append(f"{ms:>8.3f}{ratio:>8}")
            lines.append(
                f"{','.join(map(str, shape)):>18} {family:>4} {mode:>7} " + " ".join(cells)
            )
    lines.append("ms per call (median); (Nx) = time / cuDNN's; FAIL: see the errors above / JSON.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for gpu_pallas.json")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no case after this")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (interpreter)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--shapes", default=None, help="e.g. '16,2000,32,32;8,4000,16,64'")
    parser.add_argument("--target-s", type=float, default=0.25, help="timed seconds per case")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=30)
    parser.add_argument("--skip-check", action="store_true")
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
    start = time.perf_counter()
    out_dir = pathlib.Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "gpu_pallas.json"
    families = [f for f in opts.families.split(",") if f]
    methods = [m for m in opts.methods.split(",") if m]
    if opts.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in opts.shapes.split(";")]
    else:
        shapes = DRY_SHAPES if opts.dry_run else SHAPES

    backend = jax.default_backend()
    info = {
        "jax": jax.__version__,
        "backend": backend,
        "devices": [str(d) for d in jax.devices()],
        "recurrax_import_error": RECURRAX_ERROR,
        "pallas_import_error": PALLAS_ERROR,
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

    # (a) correctness on the device, before any timing.
    if not opts.skip_check:
        check_shapes = DRY_SHAPES[1:] if opts.dry_run else [(32, 100, 16, 48), (16, 50, 16, 128)]
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
                print(f"check {family:>4} B,T,I,H={shape}: {shown}  ({rec['s']} s)", flush=True)
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
                if time.perf_counter() - start > opts.budget_s:
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
                        hp, chunk, res_f, res_b = P.plan_for(
                            P.Family(family), hidden, jnp.float32, **plan_opts
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
                    if method in ("cudnn", "packed"):
                        rec["result"] = time_torch(method, family, shape, x_np, lens_np, opts)
                    else:
                        rec["result"] = time_jax(method, family, shape, params, x, lengths, opts)
                except Exception as exc:
                    rec["error"] = _short(exc)
                rec["s"] = round(time.perf_counter() - t0, 1)
                records.append(rec)
                save()
                if "error" in rec:
                    print(f"{str(shape):>22} {family:>4} {method:>10}: FAILED {rec['error']}")
                else:
                    r = rec["result"]
                    print(
                        f"{str(shape):>22} {family:>4} {method:>10}: fwd {r['fwd']['ms']:9.3f} ms"
                        f"  fwd+bwd {r['fwd_bwd']['ms']:9.3f} ms  ({rec['s']} s incl. compile)",
                        flush=True,
                    )
    if skipped:
        records.append({"kind": "skipped", "cases": [[list(s), f, m] for s, f, m in skipped]})
        save()
        print(f"budget {opts.budget_s:.0f} s reached: skipped {len(skipped)} cases", flush=True)
    print()
    print(_table(records))
    print(f"total {time.perf_counter() - start:.0f} s; results in {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
