"""Backprop memory strategies of ``dynamic_rnn``: temp memory and time of one gradient step.

The model: a ``BasicLSTMCell`` of 128 units on 32 inputs, batch 16, float32, over T steps.
One gradient step is ``jax.grad`` of the sum of the final ``h`` with respect to the cell's
weights, jitted. Per strategy and T the script records XLA's temp bytes of that compiled step
(``compiled.memory_analysis()``, nothing allocated) and, where it fits in memory, the time of
one step (compiled and warmed up first; the best of ``--reps`` runs, strategies interleaved so
that load on the machine hits them alike), in wall-clock seconds and in CPU seconds of the
process (``time.process_time``, all threads), the latter less disturbed by other processes.

The inputs are generated inside the loop, from ``t``: at T = 1,000,000 they would take 2 GB
(16 x 32 float32 per step), the outputs ``[T, 16, 128]`` 8 GB, so a step under 2 GiB must not
hold either. A cell wrapper (``StreamedInputs``) computes ``x_t[b, i] = sin(0.01 (t + 1)
(i + 1) + b)`` and feeds it to the LSTM; ``dynamic_rnn`` gets an empty ``[T, 16, 0]`` input
and the loss reads only the final state, so XLA drops the outputs. Every strategy pays the
same ~512 ``sin`` per step for this.

    python benchmarks/bench_memory.py --sizes 1000 10000        # rows into memory.json
    python benchmarks/bench_memory.py --sizes 100000 --reps 1
    /usr/bin/time -v python benchmarks/bench_memory.py --sizes 1000000 --run every --reps 1 \
        --no-warmup
    python benchmarks/bench_memory.py --report                  # the table, and memory.png

Rows are merged into ``benchmarks/memory.json``, the benchmarks' results file (records of kind
``"strategy"``, one per T and strategy, and ``"budget"``; each run described in ``meta["runs"]``);
``--report`` prints the Markdown table of all rows and draws ``benchmarks/memory.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

import recurrax
from recurrax.apps.bench import round_robin
from recurrax.apps.bench_report import environment, read_results, write_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "memory.json"
UNITS, INPUTS, BATCH = 128, 32, 16
STATE_BYTES = 2 * BATCH * UNITS * 4  # LSTMStateTuple(c, h), float32
# What StoreAll keeps per step for this cell (StepResiduals.stored_bytes: 11 [16, 128] arrays
# and the [16, 160] concatenated input); sets CheckpointEvery's segment length.
STEP_BYTES = 100_352
# Fits in memory (24 GiB, shared): beyond this temp size a step is compiled but not run.
RUN_LIMIT = [6 * 2**30]


class StreamedInputs(eqx.Module):
    """The LSTM fed ``x_t[b, i] = sin(0.01 (t + 1) (i + 1) + b)``, computed in the loop."""

    cell: recurrax.BasicLSTMCell
    t: jax.Array | None = None

    input_size = property(lambda self: 0)
    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)
    dtype = property(lambda self: self.cell.dtype)

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    def at_step(self, t):
        return StreamedInputs(self.cell, jnp.asarray(t, jnp.float32))

    def __call__(self, inputs, state):
        i = jnp.arange(1, INPUTS + 1, dtype=jnp.float32)
        b = jnp.arange(inputs.shape[0], dtype=jnp.float32)[:, None]
        x = jnp.sin(0.01 * (self.t + 1) * i + b)  # (B, 32)
        return self.cell(x, state)


def strategies(time_steps: int) -> dict:
    """The rows of the table: label -> dynamic_rnn keyword arguments."""
    from recurrax.engine.planner import segment_length

    every = segment_length(time_steps, STATE_BYTES, STEP_BYTES)
    return {
        "store": dict(memory="store"),
        "store+swap": dict(memory="store", swap_memory=True),
        "recompute": dict(memory="recompute"),
        "every": dict(memory=recurrax.CheckpointEvery(every)),
        "every+swap": dict(memory=recurrax.CheckpointEvery(every), swap_memory=True),
        "revolve": dict(memory=recurrax.Revolve(64)),
    }


def gradient_step(time_steps: int, **kwargs):
    """The jitted gradient step and its argument (the LSTM)."""
    cell = recurrax.BasicLSTMCell(UNITS, INPUTS, key=jax.random.key(0), dtype=jnp.float32)

    def loss(cell):
        xs = jnp.zeros((time_steps, BATCH, 0), jnp.float32)  # no features: see StreamedInputs
        _, state = recurrax.dynamic_rnn(StreamedInputs(cell), xs, time_major=True, **kwargs)
        return jnp.sum(state.h)

    return jax.jit(jax.grad(loss)), cell


def describe(memory) -> str:
    if isinstance(memory, recurrax.CheckpointEvery):
        return f"CheckpointEvery({memory.every})"
    if isinstance(memory, recurrax.Revolve):
        return f"Revolve({memory.checkpoints})"
    return {"store": "StoreAll", "recompute": "Recompute"}.get(memory, str(memory))


def measure(time_steps: int, names, reps: int, run=None, warmup=True) -> list[dict]:
    """Compile every strategy in ``names``; run those in ``run`` (default: all that fit)."""
    rows, compiled = [], {}
    for name in names:
        kwargs = strategies(time_steps)[name]
        step, cell = gradient_step(time_steps, **kwargs)
        t0 = time.perf_counter()
        exe = step.lower(cell).compile()
        stats = exe.memory_analysis()
        row = dict(
            T=time_steps,
            strategy=name,
            plan=describe(kwargs["memory"]),
            swap=kwargs.get("swap_memory", False),
            compile_s=round(time.perf_counter() - t0, 2),
            temp_bytes=int(stats.temp_size_in_bytes),
            host_temp_bytes=int(stats.host_temp_size_in_bytes),
            step_s=None,
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["temp_bytes"] <= RUN_LIMIT[0] and (run is None or name in run):
            compiled[name] = (exe, cell)
    cpu = {name: [] for name in compiled}  # CPU seconds of every call, warm-up included

    def call(name, exe, cell):
        def run():
            c0 = time.process_time()
            jax.block_until_ready(exe(cell))
            cpu[name].append(time.process_time() - c0)

        return run

    fns = {name: call(name, exe, cell) for name, (exe, cell) in compiled.items()}
    wall = round_robin(fns, reps, warmup=int(warmup), budget_s=float("inf"))
    for row in rows:
        if wall.get(row["strategy"]):
            row["step_s"] = round(min(wall[row["strategy"]]), 4)
            row["cpu_s"] = round(min(cpu[row["strategy"]][int(warmup) :]), 4)
            row["reps"] = reps
            print(f"{row['strategy']}: {row['step_s']:.3f} s wall", flush=True)
    return rows


def budgets(time_steps: int, store_temp: int) -> list[dict]:
    """memory_budget at 20%, 5% and 1% of store-everything's temp bytes: the plan it picks and
    the temp bytes of the compiled step (which must not exceed the budget)."""
    rows = []
    for fraction in (0.2, 0.05, 0.01):
        budget = int(fraction * store_temp)
        step, cell = gradient_step(time_steps, memory_budget=budget)
        try:
            temp = step.lower(cell).compile().memory_analysis().temp_size_in_bytes
        except ValueError as e:  # too small for any plan: the message names the least budget
            rows.append(dict(T=time_steps, budget=budget, plan=None, error=str(e)))
            continue
        from recurrax.engine.planner import planned

        plan = planned(budget)[-1]
        row = dict(T=time_steps, budget=budget, plan=describe(plan), temp_bytes=int(temp))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def load() -> tuple[list[dict], list[dict], dict]:
    """``(rows, budget rows, meta)`` of :data:`RESULTS`: records of kind "strategy" and
    "budget" in the benchmarks' results file, and its ``meta`` (``runs``: one per run)."""
    if not RESULTS.exists():
        return [], [], {"runs": []}
    records, meta = read_results(RESULTS)
    rows = [r for r in records if r["kind"] == "strategy"]
    return rows, [r for r in records if r["kind"] == "budget"], meta


def save(rows, budget_rows):
    """Merge ``rows`` (one per T, strategy) and ``budget_rows`` into :data:`RESULTS`."""
    old_rows, old_budgets, meta = load()
    keep = {(r["T"], r["strategy"]) for r in rows}
    rows = [r for r in old_rows if (r["T"], r["strategy"]) not in keep] + [
        dict(r, kind="strategy") for r in rows
    ]
    rows.sort(key=lambda r: (r["T"], list(LABELS).index(r["strategy"])))
    keep = {(r["T"], r["budget"]) for r in budget_rows}
    budgets = [r for r in old_budgets if (r["T"], r["budget"]) not in keep]
    budgets += [dict(r, kind="budget") for r in budget_rows]
    run = dict(environment(), sizes=sorted({r["T"] for r in rows}))
    meta.setdefault("runs", []).append(run)
    write_results(RESULTS, rows + budgets, meta)


def _mib(n):
    return "-" if n is None else f"{n / 2**20:,.1f}"


def _ratio(a, b):
    return "-" if not (a and b) else f"{a / b:.2f}"


def report():
    rows, budget_rows, _ = load()
    base = {r["T"]: r for r in rows if r["strategy"] == "store"}
    print(
        "| T | strategy | temp MiB | / store | step s (wall) | / store | step s (CPU) | / store |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base[r["T"]]
        step = "not run" if r["step_s"] is None else f"{r['step_s']:.3f}"
        cpu = "-" if r.get("cpu_s") is None else f"{r['cpu_s']:.3f}"
        label = r["plan"] + (" + swap" if r["swap"] else "")
        mem = f"{_mib(r['temp_bytes'])} | {r['temp_bytes'] / b['temp_bytes']:.3f}"
        wall = f"{step} | {_ratio(r['step_s'], b['step_s'])}"
        cpu = f"{cpu} | {_ratio(r.get('cpu_s'), b.get('cpu_s'))}"
        print(f"| {r['T']:,} | {label} | {mem} | {wall} | {cpu} |")
    print()
    print("| T | memory_budget MiB | plan | temp MiB |")
    print("|---|---|---|---|")
    for r in budget_rows:
        plan = r["plan"] or ("error: " + r["error"])
        print(f"| {r['T']:,} | {_mib(r['budget'])} | {plan} | {_mib(r.get('temp_bytes'))} |")
    plot(rows)


LABELS = {
    "store": "StoreAll",
    "store+swap": "StoreAll + swap",
    "recompute": "Recompute",
    "every": "CheckpointEvery(k ~ 0.4 sqrt(T))",
    "every+swap": "CheckpointEvery + swap",
    "revolve": "Revolve(64)",
}


def plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, label in LABELS.items():
        pts = sorted((r["T"], r) for r in rows if r["strategy"] == name)
        if not pts:
            continue
        ts = [t for t, _ in pts]
        style = "o--" if "swap" in name else "o-"
        ax_mem.plot(ts, [r["temp_bytes"] / 2**20 for _, r in pts], style, label=label)
        run = [(t, 1e6 * r["cpu_s"] / t) for t, r in pts if r.get("cpu_s")]
        if run:
            ax_time.plot(*zip(*run), style, label=label)
    ax_mem.axhline(2048, color="grey", ls=":", lw=1)
    ax_mem.text(1.1e3, 2500, "2 GiB", color="grey", fontsize=8)
    ax_mem.set(xscale="log", yscale="log", ylabel="MiB", title="XLA temp memory, one gradient step")
    ax_time.set(
        xscale="log", ylabel="CPU µs per step", title="CPU time per step, one gradient step"
    )
    ax_time.set_ylim(bottom=0)
    for ax in (ax_mem, ax_time):
        ax.set_xlabel("T (steps)")
        ax.grid(True, which="both", lw=0.3)
    ax_mem.legend(fontsize=8)
    fig.suptitle("dynamic_rnn backprop strategies: BasicLSTMCell(128), batch 16, 32 inputs")
    fig.tight_layout()
    fig.savefig(HERE / "memory.png", dpi=110)
    print(f"\nwrote {HERE / 'memory.png'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--only", nargs="*", help="strategy names (default: all)")
    parser.add_argument("--run", nargs="*", help="of those, the ones to run (default: all)")
    parser.add_argument("--no-warmup", action="store_true", help="time the first run")
    parser.add_argument("--max-run-gib", type=float, default=6.0, help="run steps up to this")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budgets", action="store_true", help="also run memory_budget rows")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    RUN_LIMIT[0] = int(args.max_run_gib * 2**30)
    for size in args.sizes:
        names = args.only or list(strategies(size))
        rows = measure(size, names, args.reps, args.run, not args.no_warmup)
        budget_rows = []
        if args.budgets:
            store = next(r for r in rows if r["strategy"] == "store")
            budget_rows = budgets(size, store["temp_bytes"])
        save(rows, budget_rows)
    if args.report:
        report()
    if not args.sizes and not args.report:
        parser.print_help()


if __name__ == "__main__":
    main()
