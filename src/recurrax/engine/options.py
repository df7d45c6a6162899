"""The options of one ``dynamic_rnn`` call, checked and resolved once into a frozen object.

The runners call :func:`resolve_options` at the public boundary; everything below them (the
loop, the fused path, the planner) reads the resulting :class:`RunOptions` and checks nothing
again. The engine's fixed policies are constants here, not settings to mutate:

- :data:`EXIT_CHUNK`: with traced lengths, a loop over more than this many steps runs in chunks
  (segments) of this many steps, recomputing one chunk at a time in the backward pass, so that
  no buffer is sized by the padded ``T`` (``loop.py`` and ``fused.py`` share
  :func:`runs_in_chunks`).
- :data:`GPU_UNROLL`: steps per loop iteration of the fused path on a GPU when ``unroll`` is not
  given; each iteration of XLA's compiled loop carries a fixed cost there (see
  ``benchmarks/RESULTS.md``, "On a GPU"). Elsewhere 1, as fast as any and the quickest to
  compile.
- Where the fused path projects the inputs (:func:`projects_first`): before the loop
  (``XW = X @ W_x`` for all steps as one matmul, cuDNN's way) on GPU and TPU; on CPU before the
  loop for a one-gate cell or when ``W_x`` is larger than :data:`CPU_CACHE_BYTES`, else inside
  each step (XLA:CPU is slow at static slices, the gates, of a per-step slice of ``XW``:
  ``benchmarks/RESULTS.md``, "The input projection on CPU").
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ..cells.checks import check_positive_int
from .planner import check_budget
from .strategies import StoreAll, Strategy, resolve_memory

__all__ = [
    "CPU_CACHE_BYTES",
    "EXIT_CHUNK",
    "GPU_UNROLL",
    "IMPLEMENTATIONS",
    "PROJECTIONS",
    "RunOptions",
    "runs_in_chunks",
    "projects_first",
    "resolve_options",
]

EXIT_CHUNK = 64
GPU_UNROLL = 8
CPU_CACHE_BYTES = 4 * 2**20
PROJECTIONS = ("auto", "before_loop", "in_loop")
IMPLEMENTATIONS = ("auto", "generic", "fused", "pallas")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How one call runs (hashable: it keys JAX's caches). Build it with
    :func:`resolve_options`, which checks every field.

    - ``implementation``: the path asked for, one of :data:`IMPLEMENTATIONS` (``"auto"``: the
      engine picks; ``dispatch.choose_path``).
    - ``unroll``: steps per loop iteration, or ``None`` (per path and backend, see above).
    - ``memory``: the backprop strategy; ``memory_budget``: bytes, when the planner picks it.
    - ``swap_memory``: keep what the strategy saves in pinned host memory.
    - ``time_major``: the layout of the inputs and outputs.
    - ``input_projection``: the fused path's projection, one of :data:`PROJECTIONS`.
    - ``exit_chunk``: the chunk length with traced lengths (:data:`EXIT_CHUNK`).
    """

    implementation: str = "auto"
    unroll: int | None = None
    memory: Strategy = StoreAll()
    memory_budget: int | None = None
    swap_memory: bool = False
    time_major: bool = False
    input_projection: str = "auto"
    exit_chunk: int = EXIT_CHUNK

    @property
    def axis(self) -> int:
        """The time axis of the inputs and outputs."""
        return 0 if self.time_major else 1

    @property
    def stores_all(self) -> bool:
        """Every step's values kept on the device: the only strategy of the fused path."""
        return (
            isinstance(self.memory, StoreAll)
            and not self.swap_memory
            and self.memory_budget is None
        )

    def unroll_for(self, path: str, backend: str | None = None) -> int:
        """``unroll``, or its default for ``path`` (``"fused"``, ``"generic"``) on
        ``backend``."""
        if self.unroll is not None:
            return self.unroll
        backend = backend or jax.default_backend()
        return GPU_UNROLL if path == "fused" and backend == "gpu" else 1


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False); got {value!r}.")
    return bool(value)


def _check_host_memory() -> None:
    kinds = [m.kind for m in jax.devices()[0].addressable_memories()]
    if "pinned_host" not in kinds:
        raise ValueError(
            f"swap_memory=True needs a device with pinned_host memory; {jax.devices()[0]} has "
            f"{kinds}. Use memory='recompute' or a checkpointing strategy instead."
        )


def resolve_options(
    *,
    implementation="auto",
    unroll=None,
    memory="store",
    memory_budget=None,
    swap_memory=False,
    time_major=False,
    input_projection: str = "auto",
    exit_chunk: int = EXIT_CHUNK,
) -> RunOptions:
    """Check a call's options and return them as one :class:`RunOptions`."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS} ('auto' picks the path); "
            f"got {implementation!r}."
        )
    if unroll is not None:
        unroll = check_positive_int(unroll, "unroll", "steps per loop iteration")
    strategy = resolve_memory(memory)
    if memory_budget is not None:
        memory_budget = check_budget(memory_budget)
        if memory not in (None, "store"):
            raise ValueError(
                f"pass memory or memory_budget, not both: memory={memory!r} fixes the strategy "
                f"and memory_budget={memory_budget} asks for one to be chosen."
            )
    if not isinstance(swap_memory, bool):
        raise TypeError(f"swap_memory must be a bool; got {type(swap_memory).__name__}.")
    if swap_memory:
        _check_host_memory()
    if input_projection not in PROJECTIONS:
        raise ValueError(
            f"input_projection must be one of {PROJECTIONS}; got {input_projection!r}."
        )
    return RunOptions(
        implementation=implementation,
        unroll=unroll,
        memory=strategy,
        memory_budget=memory_budget,
        swap_memory=swap_memory,
        time_major=_check_bool(time_major, "time_major"),
        input_projection=input_projection,
        exit_chunk=check_positive_int(exit_chunk, "exit_chunk", "steps per chunk"),
    )


def runs_in_chunks(time: int, n, exit_chunk: int) -> bool:
    """Whether a loop over ``time`` padded steps, ``n`` of them to run, runs in chunks.

    With a traced trip count ``n`` and more than one chunk of steps, buffers of every step's
    values would be sized by the padded ``time`` (allocated and cleared at every call, however
    short the batch): the loop then keeps one chunk of ``exit_chunk`` steps at a time and
    recomputes it in the backward pass. Up to one chunk, or with a concrete ``n``, every step's
    values are kept.
    """
    return not isinstance(n, (int, np.integer)) and time > exit_chunk


def projects_first(options: RunOptions, w_x, gates: int, backend: str | None = None) -> bool:
    """Whether the fused path projects the inputs before the loop (see the module's doc)."""
    if options.input_projection != "auto":
        return options.input_projection == "before_loop"
    backend = backend or jax.default_backend()
    big = w_x.size * w_x.dtype.itemsize > CPU_CACHE_BYTES
    return backend != "cpu" or big or gates == 1
