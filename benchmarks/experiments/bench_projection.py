"""Why the fused path projects the inputs inside each step on CPU: an LSTM step loop, eight ways.

One compiled ``lax.scan`` of an LSTM's step (gates ``i, j, f, o``; the forward pass only) at
(B, T, I, H) = (32, 1000, 64, 128), float32, on JAX's CPU backend, with the input's
contribution to the pre-activations supplied in eight ways:

* ``in-loop``: ``concat([x_t, h]) @ [W_x; W_h]`` in each step (the fused path's CPU default);
* ``XW [T, B, 4H]``: ``XW = X @ W_x`` for all steps before the loop, ``xw_t + h @ W_h`` in the
  step, the gates split from the sum;
* ``XW cached``: the same, but the step reads one of 8 rows of ``XW`` (cycling), which stay in
  cache: what is left is not the cost of streaming ``XW`` from memory;
* ``XW + barrier``: as ``XW [T, B, 4H]``, the sum behind ``lax.optimization_barrier``;
* ``XW read ahead``: as ``XW [T, B, 4H]``, step ``t`` reading row ``t + 1`` into the loop's
  carry, so that its own fusions read a whole buffer;
* ``XW per-gate slices``: as ``XW [T, B, 4H]``, the step taking gate ``k``'s block of row ``t``
  as its own ``dynamic_slice`` (offset ``(t, 0, kH)``) instead of slicing row ``t``;
* ``four [T, B, H]``: ``XW`` computed as one array per gate, each step adding gate ``k``'s
  slice of its own array to gate ``k``'s block of ``h @ W_h``;
* ``no input``: ``h @ W_h`` alone (the recurrence without an input, for scale).

    python benchmarks/experiments/bench_projection.py          # ~1 minute on 2 cores
    python benchmarks/experiments/bench_projection.py --fused  # the fused path's two settings
    python benchmarks/experiments/bench_projection.py --dots   # a step's matmul: both cores?
    taskset -c 0 python benchmarks/experiments/bench_projection.py --dots  # on one core

Prints the median of 9 round-robin rounds per variant and the ratio to ``in-loop`` (and, with
``--json FILE``, writes the rows as the benchmarks' results file). With
``--fused``, for each cell and (B, T, I, H) of the speed grid, ``dynamic_rnn``'s forward and
forward+backward with the engine's ``input_projection`` option set to ``"in_loop"`` and to
``"before_loop"`` (through ``dynamic_rnn``'s engine entry point), compiled and timed in one
process, and the efficiency (floor / time) of each.
With ``--dots``, the recurrent matmul ``[B, H] x [H, 4H]`` of the grid's LSTM steps, chained 200
times in one compiled loop, in microseconds per step and GFLOP/s: run with all cores and under
``taskset -c 0``, it shows which of them XLA:CPU spreads over more than one core.
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from recurrax.apps.bench import round_robin
from recurrax.apps.bench_report import environment, write_results

B, T, N_IN, H = 32, 1000, 64, 128


def _lstm(zi, zj, zf, zo, c):
    c = c * jax.nn.sigmoid(zf + 1.0) + jax.nn.sigmoid(zi) * jnp.tanh(zj)
    return jnp.tanh(c) * jax.nn.sigmoid(zo), c


def _xw(x, w_x):
    """``X @ W_x`` for all steps as one matmul: ``[T, B, 4H]``."""
    return (x.reshape(T * B, N_IN) @ w_x).reshape(T, B, 4 * H)


def variants():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((T, B, N_IN)), jnp.float32)
    w_x = jnp.asarray(0.1 * rng.standard_normal((N_IN, 4 * H)), jnp.float32)
    w_h = jnp.asarray(0.1 * rng.standard_normal((H, 4 * H)), jnp.float32)
    w = jnp.concatenate([w_x, w_h])
    zero = jnp.zeros((B, H), jnp.float32)

    def run(step, xs):
        def body(s, x_t):
            h, c = step(x_t, *s)
            return (h, c), h

        return lax.scan(body, (zero, zero), xs)[1]

    def in_loop(x, w):
        return run(
            lambda x_t, h, c: _lstm(*jnp.split(jnp.concatenate([x_t, h], 1) @ w, 4, 1), c), x
        )

    def whole(x, w_x, w_h):
        xw = _xw(x, w_x)
        return run(lambda xw_t, h, c: _lstm(*jnp.split(xw_t + h @ w_h, 4, 1), c), xw)

    def cached(x, w_x, w_h):
        xw = (x[:8].reshape(8 * B, N_IN) @ w_x).reshape(8, B, 4 * H)

        def step(t, h, c):
            xw_t = lax.dynamic_index_in_dim(xw, t % 8, keepdims=False)
            return _lstm(*jnp.split(xw_t + h @ w_h, 4, 1), c)

        return run(step, jnp.arange(T))

    def barrier(x, w_x, w_h):
        xw = _xw(x, w_x)
        return run(
            lambda xw_t, h, c: _lstm(*jnp.split(lax.optimization_barrier(xw_t + h @ w_h), 4, 1), c),
            xw,
        )

    def ahead(x, w_x, w_h):
        xw = _xw(x, w_x)

        def body(s, t):
            h, c, xw_t = s
            h, c = _lstm(*jnp.split(xw_t + h @ w_h, 4, 1), c)
            xw_next = lax.dynamic_index_in_dim(xw, jnp.minimum(t + 1, T - 1), keepdims=False)
            return (h, c, xw_next), h

        return lax.scan(body, (zero, zero, xw[0]), jnp.arange(T))[1]

    def gate_slices(x, w_x, w_h):
        xw = _xw(x, w_x)

        def step(t, h, c):
            gates = [lax.dynamic_slice(xw, (t, 0, k * H), (1, B, H))[0] for k in range(4)]
            return _lstm(*(a + z for a, z in zip(gates, jnp.split(h @ w_h, 4, 1))), c)

        return run(step, jnp.arange(T))

    def per_gate(x, w_x, w_h):
        flat = x.reshape(T * B, N_IN)
        xws = tuple((flat @ wk).reshape(T, B, H) for wk in jnp.split(w_x, 4, 1))

        def step(xw_t, h, c):
            return _lstm(*(a + z for a, z in zip(xw_t, jnp.split(h @ w_h, 4, 1))), c)

        return run(step, xws)

    def no_input(x, w_h):
        return run(lambda t, h, c: _lstm(*jnp.split(h @ w_h, 4, 1), c), jnp.arange(T))

    return {
        "in-loop": (in_loop, (x, w)),
        "XW [T, B, 4H]": (whole, (x, w_x, w_h)),
        "XW cached": (cached, (x, w_x, w_h)),
        "XW + barrier": (barrier, (x, w_x, w_h)),
        "XW read ahead": (ahead, (x, w_x, w_h)),
        "XW per-gate slices": (gate_slices, (x, w_x, w_h)),
        "four [T, B, H]": (per_gate, (x, w_x, w_h)),
        "no input": (no_input, (x, w_h)),
    }


def fused_grid() -> list[dict]:
    from recurrax.apps.bench import CELLS, GRID, Case, floor, recurrax_layer

    print(
        "| cell | (B, T, I, H) | mode | in the loop ms | before the loop ms | speed-up |"
        " efficiency in -> before |\n|---|---|---|---|---|---|---|"
    )
    records = []
    for shape in GRID:
        fns = {}
        for name in CELLS:
            case = Case(name, *shape)
            for where in ("in_loop", "before_loop"):
                layer = recurrax_layer(case, "engine", input_projection=where)
                for mode, f in layer.items():
                    f()
                    fns[(name, mode, where)] = f
            for mode, f in floor(case).items():
                fns[(name, mode, "floor")] = f
        med = {k: float(np.median(v)) for k, v in round_robin(fns, repeats=9, warmup=1).items()}
        for name in CELLS:
            for mode in ("fwd", "fwd+bwd"):
                a, b, f = (med[(name, mode, w)] for w in ("in_loop", "before_loop", "floor"))
                records.append(
                    {
                        "cell": name,
                        "shape": shape,
                        "mode": mode,
                        "in_loop_s": a,
                        "before_loop_s": b,
                        "floor_s": f,
                    }
                )
                print(
                    f"| {name} | {shape} | {mode} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x"
                    f" | {f / a:.2f} -> {f / b:.2f} |",
                    flush=True,
                )
    return records


def _chain(a, w, steps: int):
    """``steps`` chained ``tanh(a @ w)[:, :H]``: a step's recurrent matmul and little else."""
    return lax.fori_loop(0, steps, lambda i, a: jnp.tanh(a @ w)[:, : a.shape[1]], a)


def dots() -> list[dict]:
    import os

    from recurrax.apps.bench import GRID

    print(f"{len(os.sched_getaffinity(0))} core(s)\n| [B, H] x [H, 4H] | us per step | GFLOP/s |")
    print("|---|---|---|")
    records = []
    loop = jax.jit(partial(_chain, steps=200))
    for b, _, _, h in GRID:
        w = jnp.full((h, 4 * h), 1e-3, jnp.float32)
        a = jnp.ones((b, h), jnp.float32)
        fns = {"loop": lambda a=a, w=w: jax.block_until_ready(loop(a, w))}
        times = round_robin(fns, repeats=7)
        sec = float(np.median(times["loop"])) / 200
        flops = 8 * b * h * h / sec / 1e9
        print(f"| [{b}, {h}] x [{h}, {4 * h}] | {sec * 1e6:.1f} | {flops:.0f} |")
        records.append({"batch": b, "units": h, "seconds_per_step": sec, "gflops": flops})
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fused", action="store_true", help="A/B the fused path over the grid")
    p.add_argument("--dots", action="store_true", help="time a step's recurrent matmul alone")
    p.add_argument("--json", metavar="FILE", help="write the results file too")
    args = p.parse_args()
    meta = environment()
    records = fused_grid() if args.fused else dots() if args.dots else step_variants()
    if args.json:
        write_results(args.json, records, meta)


def step_variants() -> list[dict]:
    """The eight variants, timed round-robin; the table, and its rows as records."""
    fns, diffs = {}, {}
    for name, (fn, args) in variants().items():
        compiled = jax.jit(fn).lower(*args).compile()
        fns[name] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
        diffs[name] = fns[name]()
    ref_out = diffs["in-loop"]
    other = ("no input", "XW cached")  # different functions
    diffs = {k: float(jnp.max(jnp.abs(v - ref_out))) for k, v in diffs.items() if k not in other}
    times = round_robin(fns, repeats=9, warmup=1)
    ref = float(np.median(times["in-loop"]))
    print(f"LSTM step loop, (B, T, I, H) = {(B, T, N_IN, H)}, jax {jax.__version__} on CPU")
    print("| variant | ms | / in-loop | max abs diff from in-loop |\n|---|---|---|---|")
    for name, t in times.items():
        med = float(np.median(t))
        diff = f"{diffs[name]:.1e}" if name in diffs else "-"
        print(f"| {name} | {med * 1e3:.1f} | {med / ref:.2f} | {diff} |")
    return [
        {"variant": k, "seconds": float(np.median(t)), "max_abs_diff": diffs.get(k)}
        for k, t in times.items()
    ]


if __name__ == "__main__":
    main()
