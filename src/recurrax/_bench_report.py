"""``recurrax bench``'s command line, report and plot (the measurements are in ``_bench.py``).

The report is Markdown on stdout: the machine, versions, date, command and load, then per mode
one table of median times with every peer as a ratio to PyTorch's ``nn.*`` layer measured in
the same run, recurrax's efficiency (the matmul floor over its time), and the targets:

- forward+backward, median ratio recurrax / PyTorch ``nn.*`` over the grid ``<= 1.0``, and no
  configuration above ``1.3``;
- at least 5x faster than the PyTorch loop over ``nn.*Cell``;
- efficiency ``>= 0.8`` where ``H >= 128``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np

from ._bench import CELLS, GRID, IMPLS, MODES, QUICK_GRID, run_bench
from ._progress import task_bar

__all__ = ["add_bench_arguments", "run_bench_cli", "summarize", "markdown", "plot_ratios"]

PEERS = ("static", "torch_1t", "torch_cells", "flax")  # shown as ratios to "torch"


def _median(ts) -> float | None:
    return float(np.median(ts)) if ts else None


def summarize(results: list[dict]) -> list[dict]:
    """One row per case and mode: median seconds per implementation, ratios to ``torch``,
    efficiency ``floor / recurrax``."""
    rows = []
    for res in results:
        for mode in MODES:
            t = {impl: _median(res["times"].get(impl, {}).get(mode)) for impl in IMPLS}
            ref, mine = t["torch"], t["recurrax"]
            ratio = {
                impl: (t[impl] / ref if t[impl] and ref else None)
                for impl in IMPLS
                if impl != "torch"
            }
            static = res.get("static") or {}
            rows.append(
                {
                    "cell": res["case"].cell,
                    "shape": res["case"].shape,
                    "mode": mode,
                    "seconds": t,
                    "ratio": ratio,
                    "efficiency": t["floor"] / mine if t["floor"] and mine else None,
                    "static_compile": static.get("compile", {}).get(mode),
                    "static_skipped": static.get("skipped"),
                }
            )
    return rows


def _targets(rows: list[dict]) -> list[str]:
    fb = [r for r in rows if r["mode"] == "fwd+bwd"]
    lines = []
    ratios = [r["ratio"]["recurrax"] for r in fb if r["ratio"]["recurrax"] is not None]
    if ratios:
        med, worst = float(np.median(ratios)), max(ratios)
        at = fb[[r["ratio"]["recurrax"] for r in fb].index(worst)]
        lines.append(
            f"- median ratio recurrax / PyTorch nn.* (forward+backward) over the grid: "
            f"**{med:.2f}** (target <= 1.0: {'met' if med <= 1.0 else 'missed'})"
        )
        lines.append(
            f"- largest ratio: **{worst:.2f}** at {at['cell']} {at['shape']} (target <= 1.3: "
            f"{'met' if worst <= 1.3 else 'missed'})"
        )
        one = [
            r["ratio"]["recurrax"] / r["ratio"]["torch_1t"] for r in fb if r["ratio"]["torch_1t"]
        ]
        if one:
            lines.append(
                f"- against PyTorch nn.* on one thread: median {float(np.median(one)):.2f}, "
                f"largest {max(one):.2f}"
            )
    speed = [
        r["ratio"]["torch_cells"] / r["ratio"]["recurrax"]
        for r in fb
        if r["ratio"]["torch_cells"] and r["ratio"]["recurrax"]
    ]
    if speed:
        lines.append(
            f"- speed-up over the PyTorch cell loop: least **{min(speed):.1f}x** "
            f"(target >= 5x: {'met' if min(speed) >= 5 else 'missed'})"
        )
    eff = [(r["efficiency"], r) for r in fb if r["efficiency"] and r["shape"][3] >= 128]
    if eff:
        low, at = min(eff, key=lambda e: e[0])
        lines.append(
            f"- efficiency (floor / time) where H >= 128: least **{low:.2f}** at {at['cell']} "
            f"{at['shape']} (target >= 0.8: {'met' if low >= 0.8 else 'missed'})"
        )
    return lines


def _fmt(x, spec=".2f", none="-") -> str:
    return none if x is None else format(x, spec)


def _malloc_settings() -> str:
    """glibc's allocator settings from the environment (they change host-side speed: see the
    README, "Speed on CPU: the allocator")."""
    tuned = sorted(f"`{k}={v}`" for k, v in os.environ.items() if k.startswith("MALLOC_"))
    return ", ".join(tuned) if tuned else "glibc defaults (no `MALLOC_*` variables set)"


def markdown(rows: list[dict], meta: dict) -> str:
    """The report: header, one table per mode, the targets."""
    out = [
        "## Speed",
        "",
        f"`{meta['command']}`, {meta['date']}, on {meta['machine']} ({meta['cores']} cores); "
        f"{meta['versions']}. Load average (1 min) {meta['load_start']:.1f} at the start, "
        f"{meta['load_end']:.1f} at the end. Allocator: {meta.get('malloc', 'default')}.",
        "",
        "Times are medians in ms; every other column is a ratio to PyTorch `nn.*` "
        f"({meta['torch_threads']} threads) in the same run (below 1 is faster). "
        "Efficiency = matmul floor / recurrax time.",
    ]
    for mode in MODES:
        out += [
            "",
            f"### {mode}",
            "",
            "| cell | (B, T, I, H) | PyTorch nn.* ms | recurrax ms | recurrax | static_rnn | "
            "PyTorch 1 thread | PyTorch cell loop | Flax | floor ms | efficiency |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["mode"] == mode):
            s, q = r["seconds"], r["ratio"]
            static = _fmt(q["static"])
            if q["static"] is None and r["static_skipped"]:
                static = f"({r['static_skipped']})"
            out.append(
                f"| {r['cell']} | {r['shape']} | {_fmt(s['torch'] and s['torch'] * 1e3, '.1f')} | "
                f"{_fmt(s['recurrax'] and s['recurrax'] * 1e3, '.1f')} | {_fmt(q['recurrax'])} | "
                f"{static} | {_fmt(q['torch_1t'])} | {_fmt(q['torch_cells'])} | "
                f"{_fmt(q['flax'])} | {_fmt(s['floor'] and s['floor'] * 1e3, '.1f')} | "
                f"{_fmt(r['efficiency'])} |"
            )
    out += ["", "Targets (forward+backward):", "", *_targets(rows)]
    return "\n".join(out) + "\n"


def plot_ratios(rows: list[dict], path: str) -> None:
    """Bars of each peer's time as a ratio to PyTorch ``nn.*``, per configuration (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("recurrax", "static", "torch_1t", "torch_cells", "flax")
    fig, axes = plt.subplots(len(MODES), 1, figsize=(12, 4.5 * len(MODES)), squeeze=False)
    for ax, mode in zip(axes[:, 0], MODES):
        sub = [r for r in rows if r["mode"] == mode]
        xs = np.arange(len(sub))
        width = 0.8 / len(shown)
        for k, impl in enumerate(shown):
            vals = [r["ratio"][impl] or np.nan for r in sub]
            ax.bar(xs + (k - len(shown) / 2 + 0.5) * width, vals, width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        labels = [f"{r['cell']}\n" + ",".join(map(str, r["shape"])) for r in sub]
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_xlabel("cell, (B, T, I, H)", fontsize=8)
        ax.set_ylabel("time / PyTorch nn.* time")
        ax.set_title(f"{mode}: below 1 is faster than PyTorch nn.*")
        ax.legend(fontsize=8, ncol=len(shown))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return f"`{line.split(':', 1)[1].strip()}`"
    return platform.processor() or platform.machine()


def _versions() -> str:
    import jax
    import jaxlib

    parts = [
        f"Python {platform.python_version()}",
        f"jax/jaxlib {jax.__version__}/{jaxlib.__version__}",
    ]
    for name in ("torch", "flax"):
        with contextlib.suppress(ImportError):
            parts.append(f"{name} {__import__(name).__version__}")
    return ", ".join(parts)


def _check_peers(impls) -> None:
    if "recurrax" not in impls or "torch" not in impls:
        raise SystemExit("recurrax bench: recurrax and torch cannot be skipped (ratios need both).")
    for module, impl_names in (
        ("torch", ("torch", "torch_1t", "torch_cells")),
        ("flax", ("flax",)),
    ):
        if any(i in impls for i in impl_names):
            try:
                __import__(module)
            except ImportError as e:
                raise SystemExit(
                    f"recurrax bench: the {module} peer is not installed ({e}). Install the "
                    'benchmark extras with `pip install -e ".[bench]"` (torch==2.13.0, flax, '
                    "matplotlib, rich), or leave that peer out with --skip."
                ) from None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help=f"small sizes {QUICK_GRID}, 3 rounds: under 2 minutes"
    )
    parser.add_argument(
        "--shape",
        action="append",
        metavar="B,T,I,H",
        help="time this (batch, steps, inputs, units) instead of the grid; repeatable",
    )
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated: rnn,gru,lstm")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default 5; 3 quick)"
    )
    parser.add_argument(
        "--static-cap",
        type=float,
        default=60.0,
        help="seconds a static_rnn compilation may take before it is skipped",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated peers to leave out of {IMPLS}")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the ratios to this file")
    parser.add_argument("--json", metavar="FILE", help="write the raw times to this file")
    parser.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress on stderr (auto: a rich bar on a terminal)",
    )


def _progress(mode: str):
    if mode == "none":
        return None, None
    bar = task_bar(mode)
    if bar is not None:
        task = bar.add_task("starting", total=1)

        def update(i, n, what):
            bar.update(task, total=n, completed=i, description=what)

        return update, bar

    def plain(i, n, what):
        print(f"[{min(i + 1, n)}/{n}] {what}", file=sys.stderr, flush=True)

    return plain, None


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """``"B,T,I,H"`` as four positive ints, else ``SystemExit`` naming ``--shape``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise SystemExit(
            f"recurrax bench: --shape must be four positive integers B,T,I,H; got {text!r}."
        )
    return shape


def run_bench_cli(args: argparse.Namespace) -> int:
    cells = tuple(c for c in args.cells.split(",") if c)
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise SystemExit(f"recurrax bench: --cells must name some of {CELLS}; got {args.cells!r}.")
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(IMPLS):
        raise SystemExit(f"recurrax bench: --skip must name some of {IMPLS}; got {args.skip!r}.")
    if args.shape and args.quick:
        raise SystemExit("recurrax bench: give --quick or --shape, not both.")
    if args.shape:
        grid = tuple(parse_shape(t) for t in args.shape)
    else:
        grid = QUICK_GRID if args.quick else GRID
    impls = tuple(i for i in IMPLS if i not in skip)
    _check_peers(impls)
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        raise SystemExit(f"recurrax bench: --repeats must be >= 1; got {repeats}.")
    meta = {
        "command": "recurrax bench " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "cores": os.cpu_count(),
        "versions": _versions(),
        "torch_threads": os.cpu_count(),
        "load_start": os.getloadavg()[0],
        "malloc": _malloc_settings(),
    }
    update, bar = _progress(args.progress)
    with bar if bar is not None else contextlib.nullcontext():
        results = run_bench(grid, cells, impls, repeats, args.static_cap, update)
    meta["load_end"] = os.getloadavg()[0]
    rows = summarize(results)
    print(markdown(rows, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "rows": rows,
                    "times": [
                        {
                            "case": r["case"].shape,
                            "cell": r["case"].cell,
                            "times": r["times"],
                            "static": r["static"],
                        }
                        for r in results
                    ],
                },
                f,
                indent=1,
                default=str,
            )
    if args.plot:
        plot_ratios(rows, args.plot)
        print(f"(ratios plotted to {args.plot})", file=sys.stderr)
    return 0
