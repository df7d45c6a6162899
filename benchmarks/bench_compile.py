"""Static vs dynamic: compile time as T grows, compile time at huge T, and early exit.

Three measurements, all with a BasicLSTMCell (``lstm``) of 64 units on 32 inputs and a batch
of 16 (``--cell rnn|gru|lstm`` picks another cell for the first two):

1. compile ratio: ``static_rnn`` / ``dynamic_rnn`` trace + lower + compile seconds at
   T = 100 and 500, for the forward pass and for a gradient step (value and gradient of
   ``0.5 * sum of squares`` of outputs and final state with respect to the cell's weights);
2. compile at huge T: ``dynamic_rnn``'s gradient-step compile seconds at T = 100,000 over
   T = 10 (target <= 1.5; the inputs are ``jax.ShapeDtypeStruct``, nothing is allocated);
3. early exit: run time of a batch padded to T = 4096 whose longest row is 256, over the same
   rows unpadded at T = 256 (target <= 1.2), forward and gradient; lengths are traced inputs.

Every measurement runs in a fresh Python process (so no cache is shared and a runaway
compilation can be stopped): it is killed after ``--cap`` seconds or beyond ``--mem-cap`` GiB
of resident memory, and reported as such. Progress goes to stderr; the Markdown report to
stdout; ``--json FILE`` writes every measurement as a record of the benchmarks' results file.

    python benchmarks/bench_compile.py            # the full run (minutes to an hour)
    python benchmarks/bench_compile.py --quick    # small sizes, to check the script (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from recurrax.apps.bench_report import environment, write_results
from recurrax.apps.progress import MODES, TaskBar

CELL_SIZES = dict(num_units=64, input_size=32, batch=16)
FULL = ((100, 500), 10, 100_000, 3, 4096, 256, 20)  # see main()


# ---------------------------------------------------------------- one measurement (child) ----


def _measure(spec: dict) -> dict:
    """Build the inputs of ``spec`` and inspect the program; runs in the child process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import recurrax
    from recurrax.cells.registry import BUILTIN

    n, i, b = CELL_SIZES["num_units"], CELL_SIZES["input_size"], CELL_SIZES["batch"]
    cell = BUILTIN[spec["cell"]](n, i, key=jax.random.key(0), dtype=jnp.float32)
    T, grad, run = spec["time"], spec["mode"] == "gradient", spec.get("run", False)
    if spec["runner"] == "static_rnn":
        xs = [jax.ShapeDtypeStruct((b, i), jnp.float32)] * T

        def fn(cell, xs):
            return recurrax.static_rnn(cell, xs, dtype=jnp.float32)

        args = (cell, xs)
    else:
        if run:
            rng = np.random.default_rng(0)
            longest, padded_to = spec["longest"], T
            lengths = rng.integers(1, longest + 1, size=b)
            lengths[0] = longest
            x = rng.normal(size=(b, padded_to, i)).astype(np.float32)
            x[np.arange(padded_to)[None, :] >= lengths[:, None]] = 0.0  # padding is zeros
            x, lengths = jnp.asarray(x), jnp.asarray(lengths, jnp.int32)
        else:
            x = jax.ShapeDtypeStruct((b, T, i), jnp.float32)
            lengths = None

        options = {"implementation": spec.get("implementation", "auto")}

        def fn(cell, x, lengths):
            return recurrax.dynamic_rnn(
                cell, x, sequence_length=lengths, dtype=jnp.float32, **options
            )

        args = (cell, x, lengths)
    with open(spec["stamp"], "w") as f:  # imports and data are ready: tracing starts now
        f.write(repr(time.time()))
    report = recurrax.inspect_program(fn, *args, grad=grad, run=run, repeats=spec.get("repeats", 5))
    out = {k: getattr(report, k) for k in report.__dataclass_fields__}
    out["build_s"] = report.build_s
    return out


def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_one(spec: dict, cap_s: float, mem_cap_gib: float) -> dict:
    """Run :func:`_measure` in a fresh process; ``{"killed": why, ...}`` if it overran."""
    fd, stamp = tempfile.mkstemp(suffix=".stamp")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps({**spec, "stamp": stamp})]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, peak = None, 0.0
    while proc.poll() is None:
        elapsed = time.perf_counter() - start
        peak = max(peak, _rss_gib(proc.pid))
        if elapsed > cap_s:
            killed = f"not finished after {cap_s:.0f} s"
        elif peak > mem_cap_gib:
            killed = f"over {mem_cap_gib:g} GiB of memory after {elapsed:.0f} s"
        if killed:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if killed:
        # Seconds spent building when killed: from the child's start stamp, not its launch.
        with open(stamp) as f:
            text = f.read().strip()
        os.unlink(stamp)
        building = time.time() - float(text) if text else 0.0
        return {
            "spec": spec,
            "killed": killed,
            "wall_s": wall,
            "building_s": building,
            "peak_rss_gib": peak,
        }
    os.unlink(stamp)
    if proc.returncode != 0:  # recorded, not raised: one failure should not lose an hour's run
        print(f"\nmeasurement {spec} failed:\n{stderr[-3000:]}", file=sys.stderr)
        error = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"spec": spec, "failed": f"failed ({error})", "wall_s": wall, "peak_rss_gib": peak}
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(spec=spec, wall_s=wall, peak_rss_gib=peak)
    return result


# ---------------------------------------------------------------------- the benchmark ----


def _note(result: dict) -> str:
    """What a plain progress line ends with: the outcome of one measurement."""
    note = result.get("killed") or result.get("failed") or f"{result['build_s']:.2f} s to build"
    if result.get("run_s") is not None:
        note += f", {result['run_s'] * 1e3:.2f} ms to run"
    return f"{note} ({result['wall_s']:.1f} s)"


def _fmt_s(r: dict) -> str:
    if "failed" in r:
        return r["failed"]
    if "killed" in r:
        return f"> {r['building_s']:.0f} (killed: {r['killed']}, peak {r['peak_rss_gib']:.1f} GiB)"
    return f"{r['build_s']:.3f}"


def _ratio(a: dict, b: dict) -> str:
    if "failed" in a or "failed" in b or "killed" in b:
        return "n/a"
    if "killed" in a:
        return f"> {a['building_s'] / b['build_s']:.0f}x"
    return f"{a['build_s'] / b['build_s']:.1f}x"


_ONCE_S = 60.0  # a measurement slower than this is not repeated


def _best_of(spec: dict, repeats: int, cap: float, mem: float, step, done) -> dict:
    """The fastest-building of ``repeats`` runs of ``spec`` (one run if it takes > 60 s)."""
    runs = []
    for k in range(repeats):
        step(f"{spec['cell']} T={spec['time']} {spec['runner']} {spec['mode']} ({k + 1})")
        runs.append(run_one(spec, cap, mem))
        done(runs[-1])
        if "build_s" not in runs[-1] or runs[-1]["wall_s"] > _ONCE_S:
            return runs[-1]
    return min(runs, key=lambda r: r["build_s"])


def compile_ratio(cell: str, lengths, repeats: int, cap, mem, step, done) -> list[str]:
    lines = [
        "| T | pass | static_rnn s | dynamic_rnn s | static / dynamic | static HLO ops | "
        "dynamic HLO ops | static XLA compile s | dynamic XLA compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for T in lengths:
        for mode in ("forward", "gradient"):
            res = {}
            for runner in ("static_rnn", "dynamic_rnn"):
                spec = dict(cell=cell, runner=runner, time=T, mode=mode)
                res[runner] = _best_of(spec, repeats, cap, mem, step, done)
            s, d = res["static_rnn"], res["dynamic_rnn"]
            lines.append(
                f"| {T} | {mode} | {_fmt_s(s)} | {_fmt_s(d)} | {_ratio(s, d)} | "
                f"{s.get('hlo_ops', '-')} | {d.get('hlo_ops', '-')} | "
                f"{s.get('compile_s', float('nan')):.3f} | {d.get('compile_s', float('nan')):.3f} |"
            )
    return lines


def compile_huge(cell: str, small: int, huge: int, repeats: int, cap, mem, step, done):
    """Dynamic gradient-step build seconds at ``huge`` over ``small``: best of ``repeats``."""
    best = {}
    for T in (small, huge):
        runs = []
        for k in range(repeats):
            step(f"{cell} T={T} dynamic_rnn gradient, compile only ({k + 1}/{repeats})")
            spec = dict(cell=cell, runner="dynamic_rnn", time=T, mode="gradient")
            runs.append(run_one(spec, cap, mem))
            done(runs[-1])
        ok = [r for r in runs if "build_s" in r]
        if not ok:
            return [f"T = {T}: {_fmt_s(runs[0])}; no ratio."]
        best[T] = min(ok, key=lambda r: r["build_s"])
    a, b = best[huge], best[small]
    ratio = a["build_s"] / b["build_s"]
    xla = a["compile_s"] / b["compile_s"]
    return [
        f"| T | build s (best of {repeats}) | XLA compile s | HLO ops | jaxpr eqns |",
        "|---|---|---|---|---|",
        f"| {small} | {b['build_s']:.3f} | {b['compile_s']:.3f} | {b['hlo_ops']} | "
        f"{b['jaxpr_eqns']} |",
        f"| {huge:,} | {a['build_s']:.3f} | {a['compile_s']:.3f} | {a['hlo_ops']} | "
        f"{a['jaxpr_eqns']} |",
        "",
        f"T = {huge:,} over T = {small}: **{ratio:.2f}x** build, {xla:.2f}x XLA compile "
        f"(target <= 1.5: {'met' if ratio <= 1.5 else 'missed'}).",
    ]


def early_exit(padded: int, longest: int, repeats: int, implementation, cap, mem, step, done):
    lines = [
        f"| pass | padded T={padded} ms | unpadded T={longest} ms | padded / unpadded | "
        f"padded temp KiB | unpadded temp KiB |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for mode in ("forward", "gradient"):
        res = {}
        for T in (padded, longest):
            step(f"early exit: T={T} (longest row {longest}) {mode}")
            spec = dict(
                cell="lstm",
                runner="dynamic_rnn",
                time=T,
                longest=longest,
                mode=mode,
                run=True,
                repeats=repeats,
                implementation=implementation,
            )
            res[T] = run_one(spec, cap, mem)
            done(res[T])
        p, u = res[padded], res[longest]
        if "run_s" not in p or "run_s" not in u:
            lines.append(f"| {mode} | {_fmt_s(p)} | {_fmt_s(u)} | n/a | - | - |")
            continue
        ratio = p["run_s"] / u["run_s"]
        verdicts.append(f"{mode} {ratio:.2f}x ({'met' if ratio <= 1.2 else 'missed'})")
        lines.append(
            f"| {mode} | {p['run_s'] * 1e3:.3f} | {u['run_s'] * 1e3:.3f} | **{ratio:.2f}x** | "
            f"{p['temp_bytes'] / 1024:.0f} | {u['temp_bytes'] / 1024:.0f} |"
        )
    lines += ["", f"Padded over unpadded (target <= 1.2): {', '.join(verdicts)}."]
    return lines


def _environment(meta: dict) -> list[str]:
    """The report's header, from :func:`recurrax.apps.bench_report.environment`."""
    return [
        f"- command: `{meta['command']}`",
        f"- machine: {meta['cores']}-core CPU ({meta['machine']}), JAX on {meta['backend']} "
        f"({meta['device']})",
        f"- versions: {meta['versions']}",
        f"- date: {meta['date']}",
        f"- load average (1 min) at start: {meta['load_start']:.2f}",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--cell", default="lstm", choices=("rnn", "gru", "lstm"))
    parser.add_argument("--cap", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--mem-cap", type=float, default=8.0, help="GiB per measurement")
    parser.add_argument(
        "--parts", default="ratio,huge,early", help="comma-separated: ratio, huge, early"
    )
    parser.add_argument(
        "--implementation",
        choices=("auto", "fused", "generic"),
        default="auto",
        help="early exit: dynamic_rnn's implementation= (auto: its default, the fused path)",
    )
    parser.add_argument("--progress", choices=MODES, default="auto", help="on stderr")
    parser.add_argument("--json", metavar="FILE", help="write every measurement to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(json.loads(args.one))))
        return 0
    parts = set(args.parts.split(","))
    # (ratio lengths, small T, huge T, compile repeats, padded T, longest row, run repeats)
    sizes = ((10, 20), 10, 1000, 1, 512, 32, 5) if args.quick else FULL
    lengths, small, huge, repeats, padded, longest, run_repeats = sizes
    total = 4 * len(lengths) * repeats * ("ratio" in parts) + 2 * repeats * ("huge" in parts)
    total += 4 * ("early" in parts)
    bar, records = TaskBar(total, args.progress), []

    def step(what: str) -> None:
        bar.start(what)

    def done(result: dict) -> None:
        records.append(result)
        bar.finish(_note(result))

    n, i, b = CELL_SIZES["num_units"], CELL_SIZES["input_size"], CELL_SIZES["batch"]
    argv = sys.argv[1:] if argv is None else argv
    meta = environment(" ".join(["python benchmarks/bench_compile.py", *argv]))
    out = _environment(meta) + [""]
    with bar:  # one line per measurement, or a bar
        if "ratio" in parts:
            out += [
                f"**Compile time, static / dynamic** ({args.cell}, {n} units, {i} inputs, batch "
                f"{b}; seconds to trace + lower + compile, best of {repeats} (once when over "
                f"{_ONCE_S:.0f} s); cap {args.cap:.0f} s and {args.mem_cap:g} GiB per "
                "measurement):",
                "",
            ]
            out += compile_ratio(args.cell, lengths, repeats, args.cap, args.mem_cap, step, done)
            out += [""]
        if "huge" in parts:
            out += [
                f"**dynamic_rnn gradient-step compile at T = {huge:,} vs T = {small}** "
                f"({args.cell}, inputs as ShapeDtypeStruct):",
                "",
            ]
            out += compile_huge(args.cell, small, huge, repeats, args.cap, args.mem_cap, step, done)
            out += [""]
        if "early" in parts:
            out += [
                f"**Early exit** (lstm, {n} units, {i} inputs, batch {b}; lengths random in "
                f"[1, {longest}], one row {longest}; run time = fastest of {run_repeats} calls; "
                f"lengths are traced inputs; implementation={args.implementation}):",
                "",
            ]
            out += early_exit(
                padded,
                longest,
                run_repeats,
                args.implementation,
                args.cap,
                args.mem_cap,
                step,
                done,
            )
    if args.json:
        write_results(args.json, records, dict(meta, **vars(args)))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
