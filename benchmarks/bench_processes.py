"""Training steps/s of ``recurrax train`` in 1 and in 2 processes on this machine.

Each measurement is one fresh command, ``recurrax train --progress plain`` with the same global
batch and settings, whose per-epoch lines are timed as they arrive::

    epoch   1/10  step    16  loss ...     <- t1: after start-up, joining, compiling
    ...
    epoch  10/10  step   160  loss ...     <- t10

``(steps of epochs 2..E) / (tE - t1)`` is the steady rate of training, per-epoch evaluation on
the test set included: starting Python, importing JAX, joining the processes and compiling all
happen before the first line. ``--num-processes 2`` is the command's own launcher (two CPU
processes, one device each, gradients all-reduced through gloo on localhost), which passes
process 0's lines on as they come. The runs alternate (1, 2, 1, 2, ...) so that a change of the
machine's load hits both alike; the table gives the median, the spread (min to max) and the
ratio of the medians.

    python benchmarks/bench_processes.py                 # 3 rounds (a few minutes)
    python benchmarks/bench_processes.py --repeats 5 --json processes.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from recurrax.apps.bench_report import environment, write_results

SETTINGS = ["--task", "sine", "--cell", "lstm", "--num-units", "64"]
NUM_TRAIN = 2048  # the sine task's training series


def _rate(processes: int, batch: int, epochs: int) -> float:
    """Steps/s from the first epoch's line to the last one's, in a fresh command."""
    argv = [sys.executable, "-m", "recurrax.apps.cli", "train", *SETTINGS]
    argv += ["--batch-size", str(batch), "--epochs", str(epochs), "--progress", "plain"]
    argv += ["--num-processes", str(processes)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"  # one CPU device per process, also beside a GPU
    env["PYTHONUNBUFFERED"] = "1"  # each line as it is printed
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    seen = []
    for line in proc.stdout:
        if line.startswith("epoch"):
            seen.append(time.perf_counter())
    err = proc.stderr.read()
    if proc.wait() or len(seen) != epochs:
        raise SystemExit(f"{argv} failed (exit status {proc.returncode}):\n{err[-2000:]}")
    return (epochs - 1) * (NUM_TRAIN // batch) / (seen[-1] - seen[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (1, 2) processes")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (128)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run, >= 2 (10)")
    parser.add_argument("--json", metavar="FILE", help="write the rows to this results file")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch's line starts the clock")
    meta = environment()
    meta["settings"] = " ".join([*SETTINGS, "--batch-size", str(args.batch_size)])
    meta["settings"] += f" --epochs {args.epochs}"
    rates: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.repeats):
        for n in (1, 2):
            rates[n].append(_rate(n, args.batch_size, args.epochs))
            print(f"round {r + 1}, {n} process(es): {rates[n][-1]:.2f} steps/s", file=sys.stderr)
    meta["load_end"] = os.getloadavg()[0]
    rows = [
        {
            "processes": n,
            "steps_per_s": rates[n],
            "median": statistics.median(rates[n]),
            "min": min(rates[n]),
            "max": max(rates[n]),
        }
        for n in (1, 2)
    ]
    ratio = rows[1]["median"] / rows[0]["median"]
    print(
        f"{meta['settings']}; load average {meta['load_start']:.1f} at the start, "
        f"{meta['load_end']:.1f} at the end"
    )
    print("| processes | steps/s (median) | spread (min to max) | runs |")
    print("|---|---|---|---|")
    for row in rows:
        runs = ", ".join(f"{v:.2f}" for v in row["steps_per_s"])
        print(
            f"| {row['processes']} | {row['median']:.2f} | {row['min']:.2f} to "
            f"{row['max']:.2f} | {runs} |"
        )
    print(f"\n2 processes / 1 process (medians): {ratio:.2f}x")
    if args.json:
        write_results(args.json, [*rows, {"ratio_2_to_1": ratio}], meta)


if __name__ == "__main__":
    main()
