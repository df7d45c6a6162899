"""The speed grid on one GPU: recurrax's ``dynamic_rnn`` against PyTorch's cuDNN layers.

For each cell (rnn, gru, lstm) and each (B, T, I, H) of :data:`recurrax.apps.bench.GRID` it
times, forward and forward+backward (gradient of ``sum(outputs)`` w.r.t. the weights), float32,
every implementation in the same process, round-robin, medians of timed rounds after warm-up:

* recurrax ``dynamic_rnn`` with its defaults, fused path (on GPU it projects the inputs for all
  steps before the loop and runs 8 steps per loop iteration) and generic path
  (``implementation="generic"``, one step per iteration);
* PyTorch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` (cuDNN);
* for the LSTM, ``jax.experimental.rnn.lstm`` (JAX's binding of cuDNN's LSTM).

First it checks on the GPU that the fused path equals the generic one in value and gradient
(at ``highest`` matmul precision). Timings use each library's default float32 matmul precision
on the GPU (TF32 tensor cores for both XLA and cuDNN on Ampere and later); the header records
it. Each case is guarded: a failure prints its traceback and the grid goes on. Rows are printed
and, with ``--out FILE``, appended to a Markdown file as they finish, so a run cut short keeps
what it measured; ``--json FILE`` writes the results file (one record per cell, size and mode,
unrounded seconds; see ``recurrax.apps.bench_report.write_results``) after every case.

    bash benchmarks/gpu_check.sh                 # from the repository root; 81 s on an H200
    python benchmarks/gpu_check.py --smoke       # the same code on CPU, tiny grid (a dry run)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for PyTorch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import recurrax  # noqa: E402
from recurrax.apps.bench import (  # noqa: E402
    CELLS,
    GRID,
    Case,
    recurrax_layer,
    round_robin,
    torch_layer,
)
from recurrax.apps.bench_report import environment, write_results  # noqa: E402

IMPLS = ("torch_cudnn", "recurrax", "recurrax_generic", "jax_cudnn")


def _emit(line: str, out: str | None) -> None:
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def check_fused_equals_generic() -> float:
    """Largest |difference| between the fused and generic paths, value and gradient."""
    cell = recurrax.LSTMCell(16, 8, key=jax.random.key(0), use_peepholes=True, num_proj=12)
    x = jax.random.normal(jax.random.key(1), (4, 9, 8))
    n = jnp.array([9, 0, 4, 7])

    def loss(c, implementation):
        out, (cc, h) = recurrax.dynamic_rnn(c, x, n, implementation=implementation)
        return jnp.sum(jnp.sin(out)) + jnp.sum(cc * h[:, :1])

    with jax.default_matmul_precision("highest"):
        f = jax.jit(jax.value_and_grad(loss), static_argnums=1)
        got, want = f(cell, "fused"), f(cell, "generic")
    pairs = zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)


def builders(case: Case, device: str) -> dict:
    """{(impl, mode): fn} for one case; each fn runs one pass to completion."""
    b, t, i, h = case.shape
    fns = {}
    for impl, peer in (
        ("recurrax", recurrax_layer(case)),
        ("recurrax_generic", recurrax_layer(case, implementation="generic")),
        ("torch_cudnn", torch_layer(case, device=device)),
    ):
        fns.update({(impl, mode): fn for mode, fn in peer.items()})

    if case.cell == "lstm" and jax.default_backend() == "gpu":
        try:
            from jax.experimental import rnn
        except ImportError as e:  # the module is experimental: report, do not fail the grid
            print(f"  jax.experimental.rnn unavailable: {e}", flush=True)
            return fns
        w = rnn.init_lstm_weight(jax.random.key(0), i, h, 1, False)
        z, lengths = jnp.zeros((1, b, h)), jnp.full((b,), t, jnp.int32)

        def lstm(w, x):
            return rnn.lstm(x, z, z, w, lengths, i, h, 1, 0.0, False)[0]

        jf = jax.jit(lstm)
        jg = jax.jit(jax.grad(lambda w, x: jnp.sum(lstm(w, x))))
        xj = jnp.asarray(case.data())
        fns[("jax_cudnn", "fwd")] = lambda: jax.block_until_ready(jf(w, xj))
        fns[("jax_cudnn", "fwd+bwd")] = lambda: jax.block_until_ready(jg(w, xj))
    return fns


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="run on CPU over a tiny grid (dry run)")
    p.add_argument("--out", help="append the Markdown table to this file as rows finish")
    p.add_argument("--json", help="write the results file (records of unrounded seconds)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per case (default 5)")
    p.add_argument("--deadline", type=float, default=420.0, help="stop starting cases after S s")
    args = p.parse_args(argv)
    start = time.perf_counter()

    import torch

    if args.smoke:
        device, grid = "cpu", ((2, 20, 3, 5),)
    else:
        if jax.default_backend() != "gpu":
            raise SystemExit(f"JAX sees no GPU (backend {jax.default_backend()!r}).")
        if not torch.cuda.is_available():
            raise SystemExit("torch sees no GPU: a CUDA build of torch is needed.")
        device, grid = "cuda", GRID
    out = args.out
    meta = dict(environment(), smoke=args.smoke, repeats=args.repeats, torch=torch.__version__)
    records = []
    cudnn = torch.backends.cudnn.version() if device == "cuda" else None
    _emit(
        f"jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}); "
        f"equinox {__import__('equinox').__version__}; torch {torch.__version__}, cuDNN {cudnn}; "
        f"JAX default matmul precision {jax.config.jax_default_matmul_precision!r}, "
        f"torch cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        out,
    )
    try:
        err = meta["fused_vs_generic_max_diff"] = check_fused_equals_generic()
        _emit(f"\nfused vs generic on {device}, value and gradient: max |diff| = {err:.2e}", out)
        if err > 1e-4:
            _emit("  MISMATCH: fused and generic paths differ by more than 1e-4", out)
    except Exception:
        traceback.print_exc()
        _emit("\nfused vs generic check FAILED (traceback above)", out)

    _emit(
        "\n| cell | (B, T, I, H) | mode | PyTorch cuDNN ms | recurrax ms | recurrax / PyTorch"
        " | generic / PyTorch | JAX cuDNN LSTM / PyTorch |\n|---|---|---|---|---|---|---|---|",
        out,
    )
    for shape in grid:
        for cell_name in CELLS:
            if time.perf_counter() - start > args.deadline:
                _emit(f"| {cell_name} | {shape} | deadline reached: not measured |", out)
                continue
            case = Case(cell_name, *shape)
            try:
                times = round_robin(builders(case, device), args.repeats, 2, budget_s=5.0)
            except Exception:
                traceback.print_exc()
                _emit(f"| {cell_name} | {shape} | failed (traceback above) |", out)
                continue
            med = {k: float(np.median(v)) for k, v in times.items()}
            for mode in ("fwd", "fwd+bwd"):
                records.append(
                    {
                        "cell": cell_name,
                        "shape": shape,
                        "mode": mode,
                        "seconds": {i: med[(i, mode)] for i in IMPLS if (i, mode) in med},
                        "times": {i: times[(i, mode)] for i in IMPLS if (i, mode) in times},
                    }
                )
                ref = med[("torch_cudnn", mode)]
                ratio = {m: med.get((m, mode)) for m in IMPLS[1:]}
                cells = " | ".join("-" if r is None else f"{r / ref:.2f}" for r in ratio.values())
                _emit(
                    f"| {cell_name} | {shape} | {mode} | {ref * 1e3:.2f} | "
                    f"{med[('recurrax', mode)] * 1e3:.2f} | {cells} |",
                    out,
                )
            if args.json:
                write_results(args.json, records, meta)
    _emit(f"\ntotal {time.perf_counter() - start:.0f} s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
