"""``recurrax train`` end to end, with a PyTorch peer trained the same way in the same run.

For each task (``digits``, ``sine``) this times, in fresh processes, the whole command from
Python start to the final line:

- ``recurrax train --task <task>`` with its defaults (LSTM of 64 units, ``dynamic_rnn``, Adam at
  0.01 cosine-decayed to 0, gradients clipped to norm 1, batch 32; 40 epochs for digits,
  20 for sine);
- the same model and schedule in PyTorch (``nn.LSTM`` + ``nn.Linear``, ``torch.optim.Adam``,
  a cosine ``LambdaLR``, ``clip_grad_norm_``), on the same split and the same batch order
  (``recurrax.apps.data.batch_indices``). PyTorch's LSTM has its own initialisation and no forget
  bias of 1, so its numbers are a peer's, not a replica's. It runs twice: with PyTorch's
  default intra-op threads, and with ``torch.set_num_threads(1)`` (on a loaded 2-core machine
  the default's threads contend).

It prints a Markdown table: the test metric, the wall time and its ratios to both peers';
``--json FILE`` writes the same rows as the results file of every benchmark.

    python benchmarks/bench_train.py              # both tasks (a few minutes)
    python benchmarks/bench_train.py --task digits --json train.json
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from recurrax.apps.bench_report import environment, write_results

TORCH_PEER = r"""
import math, sys, time
import numpy as np
import torch
from recurrax.apps.data import batch_indices, digits_dataset, last_value_mse, sine_dataset

task, threads = sys.argv[1], int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
data = digits_dataset() if task == "digits" else sine_dataset()
epochs = 40 if task == "digits" else 20
n, batch = len(data.x_train), 32
total = epochs * (n // batch)
lstm = torch.nn.LSTM(data.x_train.shape[-1], 64, batch_first=True)
head = torch.nn.Linear(64, 10 if task == "digits" else 1)
params = list(lstm.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, lr=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))


def forward(x, lengths):
    out, _ = lstm(torch.from_numpy(x))
    if task == "digits":
        return head(out[:, -1])
    mask = torch.arange(x.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
    return head(out), mask[..., None]


def loss_fn(x, y, lengths):
    if task == "digits":
        return torch.nn.functional.cross_entropy(forward(x, None), torch.from_numpy(y).long())
    pred, mask = forward(x, lengths)
    return (((pred - torch.from_numpy(y)) ** 2) * mask).sum() / mask.sum()


for step in range(total):
    idx = batch_indices(step, n, batch, 0)
    lengths = None if data.len_train is None else data.len_train[idx]
    opt.zero_grad()
    loss_fn(data.x_train[idx], data.y_train[idx], lengths).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
with torch.no_grad():
    if task == "digits":
        acc = (forward(data.x_test, None).argmax(-1).numpy() == data.y_test).mean()
        print(f"test accuracy: {acc:.4f}")
    else:
        mse = float(loss_fn(data.x_test, data.y_test, data.len_test))
        base = last_value_mse(data.x_test, data.y_test, data.len_test)
        print(f"test mse: {mse:.5f} (last-value baseline: {base:.5f})")
"""


def _timed(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{argv} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def _metric(out: str) -> str:
    line = [ln for ln in out.splitlines() if ln.startswith("test ")][-1]
    return re.sub(r"^test ", "", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["digits", "sine", "both"], default="both")
    parser.add_argument("--json", metavar="FILE", help="write the rows to this results file")
    args = parser.parse_args()
    meta = environment()
    tasks = ["digits", "sine"] if args.task == "both" else [args.task]
    rows = []
    for task in tasks:
        cmd = [sys.executable, "-m", "recurrax.apps.cli", "train", "--task", task]
        cmd += ["--progress", "none"]
        ours, out = _timed(cmd)
        print(out, file=sys.stderr)
        peer, peer_out = _timed([sys.executable, "-c", TORCH_PEER, task, "0"])
        one, one_out = _timed([sys.executable, "-c", TORCH_PEER, task, "1"])
        for impl, text, seconds in (
            ("recurrax train (JAX)", out, ours),
            ("PyTorch peer (default threads)", peer_out, peer),
            ("PyTorch peer (1 thread)", one_out, one),
        ):
            rows.append((task, impl, _metric(text), seconds, seconds / peer, seconds / one))
    print(
        "| task | implementation | test metric | wall time (s) | ratio to PyTorch default "
        "| ratio to PyTorch 1 thread |"
    )
    print("|---|---|---|---|---|---|")
    for task, impl, metric, seconds, r_default, r_one in rows:
        print(f"| {task} | {impl} | {metric} | {seconds:.1f} | {r_default:.2f} | {r_one:.2f} |")
    if args.json:
        keys = ("task", "implementation", "test_metric", "seconds", "ratio_default", "ratio_1t")
        write_results(args.json, [dict(zip(keys, row)) for row in rows], meta)


if __name__ == "__main__":
    main()
