"""``recurrax demo``: the source article's example through both runners, then the trade-off
between them as ``T`` grows: program size, compile time, run time and gradient-step memory.

The command line is in :mod:`recurrax.apps.cli`; the figure in :mod:`recurrax.apps.plots`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import BasicRNNCell, ProgramReport, dynamic_rnn, inspect_program, static_rnn
from recurrax.cells.registry import BUILTIN

from .plots import plot_tradeoff, pyplot
from .progress import TaskBar

__all__ = [
    "ARTICLE_BATCH",
    "DEMO_LENGTHS",
    "TradeoffRow",
    "run_article_example",
    "measure_tradeoff",
    "format_tradeoff",
    "run_demo",
]

# 4 instances x 2 time steps x 3 inputs, exactly as in the article.
ARTICLE_BATCH = np.array(
    [
        [[0, 1, 2], [9, 8, 7]],  # instance 0   (t = 0, t = 1)
        [[3, 4, 5], [0, 0, 0]],  # instance 1
        [[6, 7, 8], [6, 5, 4]],  # instance 2
        [[9, 0, 1], [3, 2, 1]],  # instance 3
    ]
)
DEMO_LENGTHS = (2, 10, 50, 100, 200, 500)
_RUNNERS = ("static_rnn", "dynamic_rnn")


def run_article_example(seed: int = 42, echo=print) -> bool:
    """Run the article's example with ``static_rnn`` and ``dynamic_rnn``; return whether equal."""
    x = ARTICLE_BATCH
    cell = BasicRNNCell(num_units=5, input_size=3, key=jax.random.key(seed))
    outputs, states = dynamic_rnn(cell, x, dtype=jnp.float32)  # [4, 2, 5], [4, 5]
    (y0, y1), static_states = static_rnn(cell, [x[:, 0], x[:, 1]], dtype=jnp.float32)
    static_outputs = jnp.stack([y0, y1], axis=1)  # [4, 2, 5]

    np.set_printoptions(precision=6, suppress=True, linewidth=100)
    echo(f"X_batch {x.shape}: 4 instances x 2 time steps x 3 inputs; BasicRNNCell(num_units=5)\n")
    echo(f"dynamic_rnn outputs {tuple(outputs.shape)}:\n{np.asarray(outputs)}\n")
    echo(
        f"static_rnn outputs {tuple(static_outputs.shape)} (Y0, Y1 stacked):\n"
        f"{np.asarray(static_outputs)}\n"
    )
    echo(f"dynamic_rnn final state {tuple(states.shape)}:\n{np.asarray(states)}\n")
    echo(f"static_rnn final state {tuple(static_states.shape)}:\n{np.asarray(static_states)}\n")
    diff = max(
        float(jnp.max(jnp.abs(outputs - static_outputs))),
        float(jnp.max(jnp.abs(states - static_states))),
    )
    equal = bool(np.allclose(outputs, static_outputs, rtol=1e-6, atol=1e-6)) and bool(
        np.allclose(states, static_states, rtol=1e-6, atol=1e-6)
    )
    echo(f"static_rnn and dynamic_rnn agree: {'yes' if equal else 'NO'} (max |diff| = {diff:.2e})")
    echo(
        "the final state equals the last output for BasicRNNCell: "
        f"{'yes' if np.allclose(states, outputs[:, -1]) else 'NO'}"
    )
    return equal


@dataclasses.dataclass(frozen=True)
class TradeoffRow:
    """One runner at one length: the forward pass and the gradient step, as inspected."""

    time: int
    runner: str
    forward: ProgramReport
    gradient: ProgramReport


def _static(cell, xs):
    return static_rnn(cell, xs, dtype=jnp.float32)


def _dynamic(cell, x):
    return dynamic_rnn(cell, x, dtype=jnp.float32)


def _predict_seconds(history: Sequence[tuple[int, float]], time_steps: int) -> float:
    """Extrapolate a runner's seconds at ``time_steps`` from ``(T, seconds)`` measured so far.

    The growth exponent comes from the last two points, kept in ``[1, 3]``: at least linear (the
    program holds one cell per step), at most cubic (XLA's passes are superlinear in program
    size, and small ``T`` hide it under fixed costs).
    """
    (t1, s1), (t2, s2) = (history[-2] if len(history) > 1 else (0, 0.0)), history[-1]
    power = 1.0
    if t1 > 0 and s1 > 0 and t2 > t1:
        power = min(max(math.log(s2 / s1) / math.log(t2 / t1), 1.0), 3.0)
    return s2 * (time_steps / t2) ** power


def measure_tradeoff(
    lengths: Sequence[int] = DEMO_LENGTHS,
    *,
    budget_s: float = 60.0,
    cell: str = "rnn",
    num_units: int = 5,
    input_size: int = 3,
    batch: int = 4,
    seed: int = 42,
    progress: str = "auto",
) -> tuple[list[TradeoffRow], str | None]:
    """Inspect ``static_rnn`` and ``dynamic_rnn`` at each length, within a time budget.

    At each ``T`` both runners' forward pass and gradient step (with respect to the cell's
    weights, loss ``0.5 * sum of squares`` of outputs and final state) are traced, compiled and
    run by :func:`~recurrax.inspect_program`. The first length is always measured. Before each
    later one each runner's cost there is extrapolated from the lengths already measured (the
    static one grows at least linearly); if the budget is spent, or the next length would
    overrun it, the table stops there.

    **Arguments:**

    - ``lengths``: increasing positive numbers of time steps.
    - ``budget_s``: seconds the whole measurement may take (``>= 0``).
    - ``cell``: a name of :data:`recurrax.cells.registry.BUILTIN`: ``"rnn"`` (the article's
      ``BasicRNNCell``), ``"gru"`` or ``"lstm"`` (``BasicLSTMCell``).
    - ``num_units``, ``input_size``, ``batch``: sizes; the default is the article's example.
    - ``seed``: seeds the weights and the random inputs ``[batch, T, input_size]``.
    - ``progress``: ``"auto"`` (a rich bar on a terminal, else plain lines), ``"rich"``,
      ``"plain"`` or ``"none"``; progress goes to stderr.

    **Returns:** ``(rows, stopped)``: two :class:`TradeoffRow` per measured length (static
    first), and ``None`` or a sentence saying where and why the table stopped early.
    """
    lengths = [int(t) for t in lengths]
    if not lengths or any(t < 1 for t in lengths) or sorted(set(lengths)) != lengths:
        raise ValueError(f"lengths must be increasing positive integers; got {lengths}.")
    if not budget_s >= 0:
        raise ValueError(f"budget_s must be a number of seconds >= 0; got {budget_s}.")
    if cell not in BUILTIN:
        raise ValueError(f"cell must be one of {sorted(BUILTIN)}; got {cell!r}.")
    kcell, kx = jax.random.split(jax.random.key(seed))
    rnn = BUILTIN[cell](num_units, input_size, key=kcell, dtype=jnp.float32)
    rows: list[TradeoffRow] = []
    cost: dict[str, list[tuple[int, float]]] = {r: [] for r in _RUNNERS}
    stopped = None
    t_start = time.perf_counter()
    with TaskBar(4 * len(lengths), progress) as bar:
        for k, steps in enumerate(lengths):
            spent = time.perf_counter() - t_start
            if k > 0:
                need = sum(_predict_seconds(cost[r], steps) for r in _RUNNERS)
                if spent >= budget_s or spent + need > budget_s:
                    stopped = (
                        f"stopped before T={steps}: {spent:.1f} s of the {budget_s:g} s budget "
                        f"spent, and T={steps} would take about {need:.0f} s more "
                        f"(extrapolated from T={lengths[k - 1]}). Raise --budget to go on."
                    )
                    break
            x = jax.random.normal(kx, (batch, steps, input_size), jnp.float32)
            for runner, fn, data in (
                ("static_rnn", _static, list(jnp.moveaxis(x, 1, 0))),
                ("dynamic_rnn", _dynamic, x),
            ):
                t0 = time.perf_counter()
                reports = []
                for mode in ("forward", "gradient"):
                    bar.start(f"T={steps} {runner} {mode}")
                    reports.append(inspect_program(fn, rnn, data, grad=mode == "gradient"))
                    bar.finish()
                cost[runner].append((steps, time.perf_counter() - t0))
                rows.append(TradeoffRow(steps, runner, *reports))
    return rows, stopped


_COLUMNS = (
    ("T", "{:>5}", lambda r: r.time),
    ("runner", "{:<11}", lambda r: r.runner),
    ("jaxpr eqns", "{:>10}", lambda r: r.forward.jaxpr_eqns),
    ("HLO ops", "{:>8}", lambda r: r.forward.hlo_ops),
    ("compile s", "{:>9.3f}", lambda r: r.forward.build_s),
    ("run ms", "{:>8.3f}", lambda r: r.forward.run_s * 1e3),
    ("grad ops", "{:>8}", lambda r: r.gradient.hlo_ops),
    ("grad compile s", "{:>14.3f}", lambda r: r.gradient.build_s),
    ("grad run ms", "{:>11.3f}", lambda r: r.gradient.run_s * 1e3),
    ("grad temp KiB", "{:>13}", lambda r: _kib(r.gradient.temp_bytes)),
)


def _kib(n) -> str:
    return "n/a" if n is None else f"{n / 1024:.1f}"


def format_tradeoff(rows: Sequence[TradeoffRow]) -> str:
    """The rows as a plain-text table, one line per runner and length, with a legend."""
    body = [[fmt.format(get(row)) for _, fmt, get in _COLUMNS] for row in rows]
    widths = [
        max([len(name)] + [len(b[k]) for b in body]) for k, (name, _, _) in enumerate(_COLUMNS)
    ]
    lines = ["  ".join(name.rjust(w) for (name, _, _), w in zip(_COLUMNS, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in body]
    lines.append(
        "compile s = trace + lower + XLA compile (the wait before the first call); run = the "
        "fastest of 5 calls;\ngrad = value and gradient of a loss with respect to the weights; "
        "grad temp = XLA's scratch memory for that step (saved activations)."
    )
    return "\n".join(lines)


def run_demo(
    seed: int = 42,
    *,
    lengths: Sequence[int] = DEMO_LENGTHS,
    budget_s: float = 60.0,
    cell: str = "rnn",
    table: bool = True,
    plot=None,
    progress: str = "auto",
    echo=print,
) -> bool:
    """``recurrax demo``: the article's example, then (``table=True``) the trade-off table.

    **Arguments:** ``seed`` of the weights; ``lengths``, ``budget_s``, ``cell`` and ``progress``
    as in :func:`measure_tradeoff` (the table uses the article's sizes: 5 units, 3 inputs, a
    batch of 4); ``plot``, a path to draw the table to (needs matplotlib; checked before any
    work); ``echo``, the line printer.

    **Returns:** whether ``static_rnn`` and ``dynamic_rnn`` agreed on the example.
    """
    if plot is not None:
        pyplot()  # fails now, not after the table, when matplotlib is missing
    equal = run_article_example(seed=seed, echo=echo)
    if not table:
        return equal
    echo(
        f"\nstatic_rnn vs dynamic_rnn as T grows ({cell}, 5 units, 3 inputs, batch 4; "
        f"budget {budget_s:g} s):"
    )
    rows, stopped = measure_tradeoff(
        lengths, budget_s=budget_s, cell=cell, seed=seed, progress=progress
    )
    echo(format_tradeoff(rows))
    if stopped:
        echo(stopped)
    static = [r for r in rows if r.runner == "static_rnn"]
    dynamic = [r for r in rows if r.runner == "dynamic_rnn"]
    if len(static) > 1:
        first, last = static[0], static[-1]
        echo(
            f"from T={first.time} to T={last.time}: static_rnn's program grew "
            f"{last.forward.hlo_ops / first.forward.hlo_ops:.1f}x, dynamic_rnn's "
            f"{dynamic[-1].forward.hlo_ops / dynamic[0].forward.hlo_ops:.1f}x."
        )
    if plot is not None:
        plot_tradeoff(rows, plot)
        echo(f"plot written to {plot}")
    return equal
