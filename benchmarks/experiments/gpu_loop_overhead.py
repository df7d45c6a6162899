"""Where a long, narrow recurrence spends its time on a GPU: loop overhead versus work.

On a GPU, a step of a small RNN is a few microseconds of kernels; what XLA adds around each
iteration of the compiled loop (launches, the trip-count check) can be most of the time. This
script times recurrax's fused ``dynamic_rnn`` (forward, and forward+backward) at the long,
narrow shapes of the speed grid under:

* ``unroll`` 1 and 8 (steps per loop iteration), and
* three XLA command-buffer settings (``XLA_FLAGS=--xla_gpu_enable_command_buffer=...``): XLA's
  default, none (every kernel launched from the host), and with ``WHILE`` and ``CONDITIONAL``
  added (the whole loop captured as one CUDA graph with conditional nodes),

each setting in its own process, against PyTorch's cuDNN layer timed in the same process.

    python benchmarks/experiments/gpu_loop_overhead.py [--out FILE.md]   # ~2 minutes on a GPU

``--json FILE`` writes the medians as the benchmarks' results file (one record per setting,
cell and size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = ((4, 1000, 3, 5), (32, 1000, 64, 128))
WIDE = ((64, 200, 128, 256), (16, 100, 512, 1024))  # --wide: the grid's other shapes
CELLS = ("gru", "lstm")
UNROLLS = (1, 8)
SETTINGS = {
    "XLA default": None,
    "no command buffers": "--xla_gpu_enable_command_buffer=",
    "+WHILE,CONDITIONAL": "--xla_gpu_enable_command_buffer="
    "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL",
}


def child(shapes) -> None:
    """Time every (cell, shape, unroll, mode) in this process's XLA setting; JSON lines out."""
    import numpy as np
    import torch

    from recurrax.apps.bench import Case, recurrax_layer, round_robin, torch_layer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for shape in shapes:
        for name in CELLS:
            case = Case(name, *shape)
            peers = {f"unroll {u}": recurrax_layer(case, unroll=u) for u in UNROLLS}
            peers["cudnn"] = torch_layer(case, device=dev)
            fns = {(impl, mode): fn for impl, peer in peers.items() for mode, fn in peer.items()}
            times = round_robin(fns, repeats=5, warmup=2, budget_s=3.0)
            med = {f"{k[0]}|{k[1]}": float(np.median(v)) for k, v in times.items()}
            print(json.dumps({"cell": name, "shape": shape, "med": med}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="append the Markdown table to this file")
    p.add_argument("--json", help="write the results file (medians in seconds)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (a dry run, CPU or GPU)")
    p.add_argument("--wide", action="store_true", help="the grid's wide shapes instead")
    p.add_argument("--default-only", action="store_true", help="XLA's default setting only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(((2, 20, 3, 5),) if args.smoke else WIDE if args.wide else SHAPES)
        return 0
    lines = [
        "| XLA command buffers | cell | (B, T, I, H) | mode | cuDNN ms | unroll 1 ms | unroll 8 ms"
        " | unroll 1 / cuDNN | unroll 8 / cuDNN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    settings = list(SETTINGS.items())[: 1 if args.default_only else None]
    records = []
    for label, flag in settings:
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        if flag is not None:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child"]
            + ["--smoke"] * args.smoke
            + ["--wide"] * args.wide,
            env=env,
            capture_output=True,
            text=True,
        )
        rows = [json.loads(s) for s in proc.stdout.splitlines() if s.startswith("{")]
        if proc.returncode:
            print(f"{label}: child failed ({proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
        records += [dict(r, setting=label, xla_flag=flag) for r in rows]
        for r in rows:
            m = r["med"]
            for mode in ("fwd", "fwd+bwd"):
                ref, u1, u8 = (m[f"{k}|{mode}"] for k in ("cudnn", "unroll 1", "unroll 8"))
                line = (
                    f"| {label} | {r['cell']} | {tuple(r['shape'])} | {mode} | {ref * 1e3:.2f} | "
                    f"{u1 * 1e3:.2f} | {u8 * 1e3:.2f} | {u1 / ref:.2f} | {u8 / ref:.2f} |"
                )
                lines.append(line)
                print(line, flush=True)
        print(f"  ({label}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    if args.json:
        from recurrax.apps.bench_report import environment, write_results

        write_results(args.json, records, dict(environment(), smoke=args.smoke, wide=args.wide))
    return 0


if __name__ == "__main__":
    sys.exit(main())
