"""Compile the Pallas kernels for a Hopper GPU on a machine without one: shared memory and
registers per kernel, as ``benchmarks/PALLAS_NOTES.md`` reports them.

JAX lowers each kernel for CUDA on the CPU (``lower(lowering_platforms=("cuda",))``); the
Triton IR is captured from Pallas's lowering and compiled with Triton for ``sm_90``, then
``ptxas -v`` (shipped with Triton) reports registers and spills. Needs ``triton`` (3.6 is the
version JAX's CUDA plugin used on the GPU machine) next to JAX, e.g.::

    python -m venv --system-site-packages /tmp/tenv && /tmp/tenv/bin/pip install triton==3.6.0
    /tmp/tenv/bin/python benchmarks/experiments/triton_offline.py

Nothing runs on a GPU: the figures are the compiler's, not measurements of speed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax._src.pallas.triton import pallas_call_registration as registration  # noqa: E402

import recurrax  # noqa: E402
from recurrax.engine import pallas as P  # noqa: E402

KEY = jax.random.PRNGKey(0)
CASES = {
    "BasicLSTMCell H=64": lambda: recurrax.BasicLSTMCell(64, 8, key=KEY),
    "LSTMCell H=64 peepholes, cell_clip": lambda: recurrax.LSTMCell(
        64, 8, key=KEY, use_peepholes=True, cell_clip=3.0
    ),
    "LSTMCell H=64 P=32 all options": lambda: recurrax.LSTMCell(
        64, 8, key=KEY, use_peepholes=True, cell_clip=3.0, num_proj=32, proj_clip=1.0
    ),
    "LSTMCell H=128 P=64": lambda: recurrax.LSTMCell(128, 8, key=KEY, num_proj=64),
    "GRUCell H=64": lambda: recurrax.GRUCell(64, 8, key=KEY),
}


def triton_ir(cell, batch: int, steps: int, dtype) -> list[str]:
    """The forward and backward kernels' Triton IR (text) of ``cell``'s layer."""
    captured = []
    lower = registration.lowering.lower_jaxpr_to_triton_module

    def capture(*args, **kwargs):
        result = lower(*args, **kwargs)
        captured.append(result.module.operation.get_asm(enable_debug_info=False))
        return result

    family = P.cell_family(cell)
    w_x, _, w_h = P.cell_params(cell)
    w_h = jax.tree_util.tree_map(lambda a: a.astype(dtype), w_h)
    xw = jnp.zeros((steps, batch, w_x.shape[1]), dtype)
    state = cell.zero_state(batch, jnp.float32)
    state0 = tuple(state) if family.kind == "lstm" else state
    lengths = jnp.full((batch,), steps, jnp.int32)

    def loss(w_h, xw, state0):
        ys, _ = P.pallas_layer(family, w_h, xw, state0, lengths, interpret=False)
        return jnp.sum(ys)

    registration.lowering.lower_jaxpr_to_triton_module = capture
    try:
        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        grad.trace(w_h, xw, state0).lower(lowering_platforms=("cuda",))
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = lower
    return captured


def compile_report(ir: str, num_warps: int, num_stages: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget

    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp, "kernel.ttir")
        src.write_text(ir)
        kernel = triton.compile(
            str(src),
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": num_warps, "num_stages": num_stages},
        )
        ptx = pathlib.Path(tmp, "kernel.ptx")
        ptx.write_text(kernel.asm["ptx"])
        ptxas = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas")
        report = subprocess.run(
            [ptxas, "-v", "--gpu-name=sm_90a", str(ptx), "-o", str(ptx.with_suffix(".cubin"))],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = re.findall(r"Used (\d+) registers", report)
    spills = re.findall(r"(\d+) bytes spill stores", report)
    return (
        f"shared {kernel.metadata.shared / 1024:.0f} KiB, registers {','.join(regs)}, "
        f"spill stores {','.join(spills)} B"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--bfloat16", action="store_true", help="bfloat16 weights and inputs")
    opts = parser.parse_args()
    dtype = jnp.bfloat16 if opts.bfloat16 else jnp.float32
    for name, build in CASES.items():
        cell = build()
        family = P.cell_family(cell)
        width = max(cell.num_units, getattr(cell, "num_proj", None) or 0)
        _, chunk, *resident = P.plan_for(family, width, dtype)
        warps = 4 if opts.batch * chunk <= 16 * 64 else 8  # pallas_layer's default
        irs = triton_ir(cell, opts.batch, opts.steps, dtype)
        for kind, ir, kept in zip(("forward", "backward"), irs, resident):
            stages = 3 if kept else 1  # Triton's default; 1 for streamed weights
            report = compile_report(ir, warps, stages)
            print(f"{name:36s} {kind:8s} ({'resident' if kept else 'streamed'}): {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
