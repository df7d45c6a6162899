"""The results of the benchmarks: one file format, one description of the machine, and the
speed report of ``recurrax bench``.

Every benchmark writes its results the same way, with :func:`write_results`: a JSON object
``{"format": 1, "meta": {...}, "records": [{...}, ...]}``, where ``meta`` describes the run
(:func:`environment`: command, date, machine, versions, load, plus the script's own settings)
and each record is one measurement, a flat-ish dict of plain numbers and strings.
:func:`read_results` reads it back.

The speed report (``recurrax bench``, ``benchmarks/bench_speed.py``) is Markdown on stdout: the
machine, versions, date, command and load, then per mode one table of median times with every
peer as a ratio to PyTorch's ``nn.*`` layer measured in the same run, recurrax's efficiency (the
matmul floor over its time), and the targets:

- forward+backward, median ratio recurrax / PyTorch ``nn.*`` over the grid ``<= 1.0``, and no
  configuration above ``1.3``;
- at least 5x faster than the PyTorch loop over ``nn.*Cell``;
- efficiency ``>= 0.8`` where ``H >= 128``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench import IMPLS, MODES

__all__ = ["environment", "write_results", "read_results", "summarize", "markdown"]

FORMAT = 1

PEERS = ("static", "torch_1t", "torch_cells", "flax")  # shown as ratios to "torch"


def _median(ts) -> float | None:
    return float(np.median(ts)) if ts else None


def summarize(results: list[dict]) -> list[dict]:
    """One row per case and mode: median seconds per implementation, ratios to ``torch``,
    efficiency ``floor / recurrax``, and the raw times; these are the records of the results
    file of ``recurrax bench --json``."""
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
                    "times": {k: v[mode] for k, v in res["times"].items() if mode in v},
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


# ------------------------------------------------------------------------------------------
# The machine and the results file, shared by every benchmark.


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
    import equinox
    import jax
    import jaxlib

    parts = [
        f"Python {platform.python_version()}",
        f"jax/jaxlib {jax.__version__}/{jaxlib.__version__}",
        f"equinox {equinox.__version__}",
        f"numpy {np.__version__}",
    ]
    for name in ("torch", "flax"):
        if name in sys.modules:  # a peer this run imported
            with contextlib.suppress(AttributeError):
                parts.append(f"{name} {sys.modules[name].__version__}")
    return ", ".join(parts)


def _malloc_settings() -> str:
    """glibc's allocator settings from the environment (they change host-side speed: see the
    README, "Speed on CPU: the allocator")."""
    tuned = sorted(f"`{k}={v}`" for k, v in os.environ.items() if k.startswith("MALLOC_"))
    return ", ".join(tuned) if tuned else "glibc defaults (no `MALLOC_*` variables set)"


def environment(command: str | None = None) -> dict:
    """The description of a run that every results file and report starts with.

    **Returns:** ``command`` (default: this process's command line), ``date`` (UTC),
    ``machine`` (the CPU's model name), ``cores``, ``versions`` (Python, jax, jaxlib, equinox,
    numpy, and torch/flax when imported), ``backend`` and ``device`` (JAX's default),
    ``load_start`` (1-minute load average now) and ``malloc`` (glibc's allocator settings).
    """
    import jax

    if command is None:
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "cores": os.cpu_count(),
        "versions": _versions(),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "load_start": os.getloadavg()[0],
        "malloc": _malloc_settings(),
    }


def _plain(x):
    """``x`` as JSON can hold it: tuples as lists, NumPy scalars as numbers, else ``str``."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "_asdict"):
        return x._asdict()
    return str(x)


def write_results(path, records: list[dict], meta: dict) -> Path:
    """Write ``records`` and ``meta`` to ``path`` as the benchmarks' one results format.

    The file is ``{"format": 1, "meta": meta, "records": records}`` (JSON, indented), written
    to a temporary file beside ``path`` and renamed over it, so it is whole or absent.
    **Returns:** the path written.
    """
    path = Path(path)
    text = json.dumps(
        {"format": FORMAT, "meta": meta, "records": list(records)}, indent=1, default=_plain
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_results(path) -> tuple[list[dict], dict]:
    """``(records, meta)`` of a file written by :func:`write_results`."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a results file of format {FORMAT} (written by write_results)."
        )
    return data["records"], data["meta"]
