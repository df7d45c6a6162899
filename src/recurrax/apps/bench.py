"""``recurrax bench``: forward and forward+backward time of RNN layers, against their peers.

For each cell (``rnn``, ``gru``, ``lstm``) and size ``(B, T, I, H)`` every implementation runs
the same layer, ``[B, T, I]`` inputs to ``[B, T, H]`` outputs from a zero state, in float32:

- ``recurrax``: :func:`~recurrax.dynamic_rnn` with the built-in cell of
  :data:`recurrax.cells.registry.BUILTIN` (the fused path), jitted;
- ``static``: :func:`~recurrax.static_rnn`, jitted, in a child process that is stopped when a
  compilation takes longer than ``static_cap`` seconds (its program holds ``T`` cells);
- ``torch``: PyTorch's ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` (oneDNN on CPU) with
  ``torch.set_num_threads(os.cpu_count())``, the peer every ratio is taken to; ``torch_1t``,
  the same with one thread;
- ``torch_cells``: a Python loop over ``nn.RNNCell`` / ``nn.GRUCell`` / ``nn.LSTMCell``;
- ``flax``: ``flax.linen.RNN`` over ``SimpleCell`` / ``GRUCell`` / ``OptimizedLSTMCell``, jitted;
- ``floor``: the matmuls alone in one compiled program: ``T`` chained ``[B, H] x [H, gH]`` plus
  one ``[B*T, I] x [I, gH]`` forward (``g`` = 1, 3, 4 gates); forward+backward adds ``T``
  chained ``[B, gH] x [gH, H]`` and ``dW_h``, ``dW_x`` as ``[H, B*T] x [B*T, gH]`` and
  ``[I, B*T] x [B*T, gH]``. recurrax's *efficiency* is ``floor / time``.

"forward+backward" is the value and gradient of ``sum(outputs)`` with respect to the weights
(the inputs are data). Implementations are timed in turn, round after round, so that a change
in the machine's load hits all of them alike; each figure is the median of the rounds.

This is the one runner of the benchmarks (``benchmarks/``): a :class:`Case`, the builders
(:func:`build`, or :func:`recurrax_layer`, :func:`torch_layer`, :func:`flax_layer`,
:func:`floor` with their options), :func:`round_robin` to time them, :func:`measure_case` and
:func:`run_bench` for the grid. The report, the results file and the command line are in
:mod:`recurrax.apps.bench_report` and :mod:`recurrax.apps.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from recurrax.cells.registry import BUILTIN

from .progress import TaskBar

__all__ = [
    "GRID",
    "QUICK_GRID",
    "CELLS",
    "IMPLS",
    "MODES",
    "Case",
    "recurrax_layer",
    "torch_layer",
    "flax_layer",
    "floor",
    "build",
    "round_robin",
    "measure_static",
    "measure_case",
    "run_bench",
]

GRID = ((4, 1000, 3, 5), (32, 1000, 64, 128), (64, 200, 128, 256), (16, 100, 512, 1024))
QUICK_GRID = ((8, 50, 16, 32),)
CELLS = tuple(BUILTIN)  # "rnn", "gru", "lstm"
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
IMPLS = ("recurrax", "static", "torch", "torch_1t", "torch_cells", "flax", "floor")
MODES = ("fwd", "fwd+bwd")


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer to time: ``cell`` in :data:`CELLS`, batch, time steps, inputs, units."""

    cell: str
    batch: int
    time: int
    inputs: int
    units: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.batch, self.time, self.inputs, self.units

    def data(self) -> np.ndarray:
        """The ``[B, T, I]`` float32 inputs every implementation reads."""
        return np.random.default_rng(0).standard_normal(self.shape[:3]).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Each builder returns {"fwd": fn, "fwd+bwd": fn}; calling fn runs one pass to completion.


def recurrax_layer(case: Case, runner: str = "dynamic", **options) -> dict[str, Callable]:
    """recurrax's layer: ``runner`` ``"dynamic"`` (:func:`~recurrax.dynamic_rnn`, given
    ``options``: ``implementation``, ``unroll``, ...), ``"static"``
    (:func:`~recurrax.static_rnn`) or ``"engine"`` (``dynamic_rnn``'s engine entry point,
    ``recurrax.engine.dispatch.run_cell``, whose ``options`` may also set the engine's own
    policies, e.g. ``input_projection``)."""
    import jax
    import jax.numpy as jnp

    import recurrax

    cell = BUILTIN[case.cell](case.units, case.inputs, key=jax.random.key(0))
    x = jnp.asarray(case.data())
    if runner == "static":
        x = list(jnp.moveaxis(x, 1, 0))  # T arrays [B, I]

    def outputs(cell, x):
        if runner == "static":
            return jnp.stack(recurrax.static_rnn(cell, x)[0])
        if runner == "engine":
            from recurrax.engine.dispatch import run_cell
            from recurrax.engine.options import resolve_options

            state = cell.zero_state(case.batch, jnp.float32)
            return run_cell(cell, x, state, jnp.float32, None, resolve_options(**options))[0]
        return recurrax.dynamic_rnn(cell, x, **options)[0]

    fwd = jax.jit(outputs)
    grad = jax.jit(jax.value_and_grad(lambda c, x: jnp.sum(outputs(c, x))))
    return {
        "fwd": lambda: jax.block_until_ready(fwd(cell, x)),
        "fwd+bwd": lambda: jax.block_until_ready(grad(cell, x)),
    }


def torch_layer(
    case: Case, threads: int | None = None, cells: bool = False, device: str = "cpu"
) -> dict[str, Callable]:
    """PyTorch's layer (or, ``cells=True``, a Python loop over its cell) on ``threads`` CPU
    threads (``None``: one per core); on ``device`` ``"cuda"`` each call also waits for the GPU
    to finish."""
    import torch

    torch.manual_seed(0)
    n_in, n = case.inputs, case.units
    if cells:
        layer = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[
            case.cell
        ](n_in, n)
    else:
        layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[case.cell](
            n_in, n, batch_first=True
        )
    layer = layer.to(device)
    x = torch.from_numpy(case.data()).to(device)
    params = list(layer.parameters())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def outputs():
        if not cells:
            return layer(x)[0]
        h = torch.zeros(case.batch, n, device=device)
        state, ys = ((h, h) if case.cell == "lstm" else h), []
        for t in range(case.time):
            state = layer(x[:, t], state)
            ys.append(state[0] if case.cell == "lstm" else state)
        return torch.stack(ys, 1)

    def with_threads(fn):
        def run():
            before = torch.get_num_threads()
            torch.set_num_threads(threads or os.cpu_count() or 1)
            try:
                fn()
            finally:
                torch.set_num_threads(before)

        return run

    def fwd():
        with torch.no_grad():
            outputs()
        sync()

    def fwd_bwd():
        for p in params:
            p.grad = None
        outputs().sum().backward()
        sync()

    return {"fwd": with_threads(fwd), "fwd+bwd": with_threads(fwd_bwd)}


def flax_layer(case: Case) -> dict[str, Callable]:
    """Flax's ``nn.RNN`` over its cell of the same kind, jitted."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    cell = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}[case.cell]
    layer = nn.RNN(cell(case.units))
    x = jnp.asarray(case.data())
    params = layer.init(jax.random.key(0), x)
    fwd = jax.jit(layer.apply)
    grad = jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(layer.apply(p, x))))
    return {
        "fwd": lambda: jax.block_until_ready(fwd(params, x)),
        "fwd+bwd": lambda: jax.block_until_ready(grad(params, x)),
    }


def floor(case: Case) -> dict[str, Callable]:
    """The matmuls of the layer alone, in one compiled program (see the module's docstring)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    b, t, n_in, n = case.shape
    g = GATES[case.cell] * n
    rng = np.random.default_rng(1)
    w_x, w_h = (jnp.asarray(0.1 * rng.standard_normal(s), jnp.float32) for s in ((n_in, g), (n, g)))
    w_ht = jnp.asarray(np.asarray(w_h).T.copy())  # [gH, H], as the fused backward reads it
    x = jnp.asarray(case.data()).reshape(b * t, n_in)

    def forward(w_x, w_h, x):
        xw = x @ w_x  # (B*T, gH)

        def step(h, _):
            return (h @ w_h)[:, :n], None

        return lax.scan(step, jnp.zeros((b, n), jnp.float32), None, length=t)[0], xw

    def forward_backward(w_x, w_h, w_ht, x):
        h, dz = forward(w_x, w_h, x)  # dz stands for the [B*T, gH] gate gradients

        def step(d, _):
            return jnp.tile(d @ w_ht, (1, g // n)), None

        d = lax.scan(step, dz[:b], None, length=t)[0]
        return h, d, dz[:, :n].T @ dz, x.T @ dz  # dW_h, dW_x

    fwd, fwd_bwd = jax.jit(forward), jax.jit(forward_backward)
    return {
        "fwd": lambda: jax.block_until_ready(fwd(w_x, w_h, x)),
        "fwd+bwd": lambda: jax.block_until_ready(fwd_bwd(w_x, w_h, w_ht, x)),
    }


def build(impl: str, case: Case, **options) -> dict[str, Callable]:
    """The ``{"fwd": fn, "fwd+bwd": fn}`` of one implementation of :data:`IMPLS` (``static``
    excepted: it runs in a child process, see :func:`measure_static`); calling ``fn`` runs one
    pass to completion. ``options``: of ``recurrax``, for ``dynamic_rnn``; of the ``torch``
    peers, ``device``."""
    if impl == "recurrax":
        return recurrax_layer(case, "dynamic", **options)
    if impl in ("torch", "torch_1t", "torch_cells"):
        threads = 1 if impl == "torch_1t" else None
        return torch_layer(case, threads, cells=impl == "torch_cells", **options)
    if impl == "flax":
        return flax_layer(case)
    if impl == "floor":
        return floor(case)
    raise ValueError(f"impl must be one of {IMPLS} (static runs in a child process); got {impl!r}.")


# ------------------------------------------------------------------------------------------
# Timing.


def round_robin(fns: dict, repeats: int, warmup: int = 1, budget_s: float = 30.0) -> dict:
    """Seconds per call of each function: ``warmup`` untimed calls each (compilation), then
    ``repeats`` rounds calling every function once in turn. A function whose timed calls have
    used ``budget_s`` sits out the later rounds (it keeps at least 3 figures, or all it has)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    for r in range(repeats):
        for key, fn in fns.items():
            if r >= 3 and sum(times[key]) > budget_s:
                continue
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return times


def _static_child(spec: str) -> None:
    """Child process: per mode, compile static_rnn (reporting the seconds), then time it."""
    args = json.loads(spec)
    case = Case(**args["case"])
    fns = recurrax_layer(case, "static")
    print(json.dumps({"ready": True}), flush=True)  # imports done: the compile clock starts
    for mode in MODES:
        t0 = time.perf_counter()
        fns[mode]()  # compiles
        print(json.dumps({"compiled": time.perf_counter() - t0}), flush=True)
        times = round_robin({mode: fns[mode]}, args["repeats"], warmup=0)[mode]
        print(json.dumps({"times": times}), flush=True)


def _reader(proc) -> tuple[Callable[[float], dict | None], threading.Thread]:
    """``(next_message, thread)``: ``next_message(seconds)`` is the child's next JSON line, or
    ``None`` once ``seconds`` have passed or the child has exited without one."""
    lines: queue.Queue = queue.Queue()
    thread = threading.Thread(target=lambda: [lines.put(s) for s in proc.stdout], daemon=True)
    thread.start()

    def next_message(seconds: float) -> dict | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                return json.loads(lines.get(timeout=min(0.5, seconds)))
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    return None
        return None

    return next_message, thread


def measure_static(case: Case, repeats: int, cap_s: float) -> dict:
    """Run :func:`_static_child` in a fresh process, stopping it when a compilation (forward,
    then forward+backward) takes more than ``cap_s`` seconds.

    **Returns:** ``{"compile": {mode: s}, "times": {mode: [s, ...]}, "skipped": str | None}``.
    """
    spec = json.dumps({"case": dataclasses.asdict(case), "repeats": repeats})
    code = f"from recurrax.apps.bench import _static_child; _static_child({spec!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    next_message, reader = _reader(proc)
    result: dict = {"compile": {}, "times": {}, "skipped": None}
    try:
        if next_message(600) is None:  # imports and building the cell
            result["skipped"] = f"the child process failed (exit code {proc.poll()})"
            return result
        for mode in MODES:
            msg = next_message(cap_s)
            if msg is None:
                result["skipped"] = f"{mode} did not compile in {cap_s:.0f} s"
                return result
            result["compile"][mode] = msg["compiled"]
            msg = next_message(600)
            if msg is None:
                result["skipped"] = f"{mode} did not finish its timed calls"
                return result
            result["times"][mode] = msg["times"]
        return result
    finally:
        proc.kill()
        proc.wait()
        reader.join(10)
        proc.stdout.close()


def measure_case(
    case: Case, impls=IMPLS, repeats: int = 5, static_cap_s: float = 60.0, on_start=None
) -> dict:
    """Time every implementation of ``impls`` on ``case``.

    **Returns:** ``{"case": Case, "times": {impl: {mode: [seconds, ...]}},
    "static": measure_static's result or None}``.
    """
    static = None
    if "static" in impls:
        if on_start:
            on_start("static (child process)")
        static = measure_static(case, repeats, static_cap_s)
    fns = {}
    for impl in impls:
        if impl == "static":
            continue
        if on_start:
            on_start(f"{impl} (build, compile)")
        for mode, fn in build(impl, case).items():
            fns[(impl, mode)] = fn
    if on_start:
        on_start("timing round-robin")
    timed = round_robin(fns, repeats)
    times: dict = {}
    for (impl, mode), ts in timed.items():
        times.setdefault(impl, {})[mode] = ts
    if static is not None and static["times"]:
        times["static"] = static["times"]
    return {"case": case, "times": times, "static": static}


def run_bench(
    grid=GRID,
    cells=CELLS,
    impls=IMPLS,
    repeats: int = 5,
    static_cap_s: float = 60.0,
    progress: str = "none",
) -> list[dict]:
    """:func:`measure_case` for every size of ``grid`` x cell of ``cells``, in that order.

    ``progress`` (a mode of :mod:`recurrax.apps.progress`) shows each build and each timing
    round-robin on stderr as a task. **Returns:** :func:`measure_case`'s results.
    """
    cases = [Case(c, *shape) for shape in grid for c in cells]
    results = []
    with TaskBar(len(cases) * (len(impls) + 1), progress) as bar:
        for case in cases:

            def on_start(what, label=f"{case.cell} {case.shape}"):
                bar.start(f"{label}: {what}")

            results.append(measure_case(case, impls, repeats, static_cap_s, on_start))
    return results
