"""How glibc's allocator settings change forward+backward time on CPU (recurrax, floor, PyTorch).

XLA's CPU runtime allocates each call's scratch memory afresh; with glibc's defaults,
allocations over 32 MiB (or too large for a worker thread's arena) are ``mmap``-ed and
``munmap``-ed per call, so every call page-faults on the scratch pages it touches. This script
times the forward+backward of recurrax's ``dynamic_rnn``, the matmul floor and PyTorch ``nn.*``
(see ``recurrax.apps.bench``) for RNN, GRU and LSTM at the grid's shapes with H >= 128, in child
processes started with and without the settings below (alternating, ``--rounds`` of each; the
better of them is kept), and prints a Markdown table of both and their ratio; ``--json FILE``
writes the same as the benchmarks' results file.

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736

    python benchmarks/experiments/bench_allocator.py            # ~6 minutes on 2 cores
    python benchmarks/experiments/bench_allocator.py --quick    # one small shape, to check it
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

TUNED = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30),
}
SHAPES = ((32, 1000, 64, 128), (64, 200, 128, 256), (16, 100, 512, 1024))
IMPLS = ("recurrax", "floor", "torch")


def _child(quick: bool) -> None:
    """Time every (cell, shape) in this process; print ``{key: {impl: ms}}`` as JSON."""
    import numpy as np

    from recurrax.apps.bench import Case, build, round_robin

    shapes = ((4, 50, 8, 16),) if quick else SHAPES
    out = {}
    for cell in ("rnn", "gru", "lstm"):
        for shape in shapes:
            case = Case(cell, *shape)
            fns = {impl: build(impl, case)["fwd+bwd"] for impl in IMPLS}
            times = round_robin(fns, 3 if quick else 5)
            out[f"{cell} {shape}"] = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(json.dumps(out))


def _run(tuned: bool, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if tuned:
        env.update(TUNED)
    cmd = [sys.executable, os.path.abspath(__file__), "--child"] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, 3 rounds")
    parser.add_argument("--rounds", type=int, default=2, help="processes of each kind")
    parser.add_argument("--json", metavar="FILE", help="write the results file too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.quick)
        return 0
    if args.rounds < 1:
        raise SystemExit(f"bench_allocator: --rounds must be >= 1; got {args.rounds}.")
    runs: dict = {False: [], True: []}
    for r in range(args.rounds):
        for tuned in (False, True):
            print(
                f"[{2 * r + tuned + 1}/{2 * args.rounds}] {'tuned' if tuned else 'default'}",
                file=sys.stderr,
                flush=True,
            )
            runs[tuned].append(_run(tuned, args.quick))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"`python benchmarks/experiments/bench_allocator.py {' '.join(argv or sys.argv[1:])}`, "
        f"{date}, "
        f"{os.cpu_count()} cores, load average (1 min) {os.getloadavg()[0]:.1f} at the end; "
        f"tuned = {' '.join(f'{k}={v}' for k, v in TUNED.items())}. Forward+backward ms, "
        f"the better of {args.rounds} processes each.\n"
    )
    print(
        "| cell | (B, T, I, H) | recurrax default | recurrax tuned | tuned / default | "
        "floor default | floor tuned | PyTorch nn.* default | PyTorch nn.* tuned | "
        "efficiency default | efficiency tuned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    records = []
    for key in runs[False][0]:
        d, t = ({i: min(r[key][i] for r in runs[k]) for i in IMPLS} for k in (False, True))
        cell, shape = key.split(" ", 1)
        records.append({"cell": cell, "shape": shape, "default_ms": d, "tuned_ms": t})
        print(
            f"| {cell} | {shape} | {d['recurrax']:.1f} | {t['recurrax']:.1f} | "
            f"{t['recurrax'] / d['recurrax']:.2f} | {d['floor']:.1f} | {t['floor']:.1f} | "
            f"{d['torch']:.1f} | {t['torch']:.1f} | {d['floor'] / d['recurrax']:.2f} | "
            f"{t['floor'] / t['recurrax']:.2f} |"
        )
    if args.json:
        from recurrax.apps.bench_report import environment, write_results

        meta = dict(environment(), tuned=TUNED, rounds=args.rounds, quick=args.quick)
        write_results(args.json, records, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
