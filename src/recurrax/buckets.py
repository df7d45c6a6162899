"""Compile once, serve many lengths: pad batches up to bucket edges and pass ``sequence_length``.

``jax.jit`` compiles one program per input *shape*. Feeding a jitted step batches of every size
and length would compile once per ``(batch, time)`` pair met. Padding the time axis up to the
smallest of a few *edges* (and, optionally, the batch axis up to a batch edge with rows of
length 0) leaves a handful of shapes, so at most one compilation per bucket; ``sequence_length``
tells :func:`~recurrax.dynamic_rnn` where each row really ends, and by TF1's contract the padded
steps output zeros and leave the state unchanged, so every real row's outputs and final state
are the same as without padding.

:func:`~recurrax.static_rnn` gains nothing from a jitted step of varying length: its Python loop
runs while JAX traces, so the program holds ``T`` copies of the cell and each new ``T`` is a new
trace and a new compilation, of a program that grows with ``T``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .cells.checks import is_traced
from .lengths import check_sequence_length

__all__ = ["check_edges", "pad_to_bucket", "BucketedFunction", "bucketed"]


def check_edges(edges, name: str = "edges") -> tuple[int, ...]:
    """Return ``edges`` as a tuple of ints if they are strictly increasing positive integers.

    Raises ``TypeError`` when ``edges`` is not a sequence of integers and ``ValueError`` when it
    is empty, holds a value below 1, or does not strictly increase; the message names ``name``.
    """
    if isinstance(edges, (str, bytes)) or not isinstance(edges, (Sequence, np.ndarray)):
        raise TypeError(
            f"{name} must be a sequence of increasing positive integers, e.g. (32, 64, 128); "
            f"got {type(edges).__name__}."
        )
    values = []
    for k, e in enumerate(edges):
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)):
            raise TypeError(
                f"{name} must hold integers (numbers of steps or rows); "
                f"got {name}[{k}]={e!r} of type {type(e).__name__}."
            )
        values.append(int(e))
    if not values:
        raise ValueError(f"{name} must hold at least one edge, e.g. (32, 64, 128); got none.")
    if values[0] < 1:
        raise ValueError(f"{name} must be positive integers; got {name}[0]={values[0]}.")
    for k in range(1, len(values)):
        if values[k] <= values[k - 1]:
            raise ValueError(
                f"{name} must be strictly increasing positive integers; got {name}[{k - 1}]="
                f"{values[k - 1]} then {name}[{k}]={values[k]}. Sort them and drop duplicates."
            )
    return tuple(values)


def _bucket(size: int, edges: tuple[int, ...], name: str, what: str) -> int:
    """The smallest edge ``>= size``."""
    for e in edges:
        if size <= e:
            return e
    raise ValueError(
        f"inputs has {what} {size} but the largest of {name} is {edges[-1]}: add an edge of at "
        f"least {size} to {name} (e.g. {name}={edges + (max(size, 2 * edges[-1]),)}), or split "
        "the batch."
    )


def _check_lengths(sequence_length, batch: int, time: int) -> np.ndarray:
    if sequence_length is None:
        return np.full((batch,), time, np.int32)
    if is_traced(sequence_length):
        raise TypeError(
            "sequence_length must be concrete (a NumPy array or a list) to choose a bucket; got a "
            "traced value. Pad outside jax.jit, before the jitted step."
        )
    return check_sequence_length(sequence_length, batch, time)


def pad_to_bucket(
    inputs,
    sequence_length=None,
    *,
    edges: Sequence[int],
    batch_edges: Sequence[int] | None = None,
    time_major: bool = False,
):
    """Pad ``inputs`` with zeros up to the smallest time edge (and batch edge) that holds it.

    **Arguments:**

    - ``inputs``: ``[batch, time, ...]`` (``[time, batch, ...]`` with ``time_major=True``), a
      NumPy or JAX array; the result is of the same kind, so padding NumPy data costs no device
      work and no compilation.
    - ``sequence_length``: optional int ``[batch]`` with values in ``[0, time]``; ``None`` means
      every row is ``time`` steps long.
    - ``edges``: strictly increasing positive ints, the time lengths to pad to. ``time`` must be
      at most ``edges[-1]``.
    - ``batch_edges``: optional strictly increasing positive ints; the batch is padded up to the
      smallest one ``>= batch`` with all-zero rows of length 0. ``None`` keeps the batch size.
    - ``time_major``: the layout of ``inputs``.

    **Returns:** ``(padded, lengths)``: ``padded`` is ``[batch_edge, time_edge, ...]`` (or
    time-major) with the original data in the leading corner, ``lengths`` an int32 NumPy
    ``[batch_edge]`` array: each row's length, 0 for added rows. Passing both to
    :func:`~recurrax.dynamic_rnn` gives the unpadded run's outputs in ``outputs[:batch, :time]``
    (zeros elsewhere) and its final state in ``state[:batch]``.

    **Example:**

    >>> x = np.zeros((3, 37, 8))                       # 3 rows, 37 steps
    >>> padded, lengths = recurrax.pad_to_bucket(x, [37, 20, 5], edges=(16, 64, 256),
    ...                                          batch_edges=(4, 8))
    >>> padded.shape, lengths                          # (4, 64, 8), [37, 20, 5, 0]
    """
    edges = check_edges(edges, "edges")
    if batch_edges is not None:
        batch_edges = check_edges(batch_edges, "batch_edges")
    if not hasattr(inputs, "ndim"):
        inputs = np.asarray(inputs)
    if inputs.ndim < 2:
        layout = "[time, batch, ...]" if time_major else "[batch, time, ...]"
        raise ValueError(
            f"inputs must have a batch and a time axis, {layout}; got shape {inputs.shape}."
        )
    t_axis, b_axis = (0, 1) if time_major else (1, 0)
    batch, time = inputs.shape[b_axis], inputs.shape[t_axis]
    lengths = _check_lengths(sequence_length, batch, time)
    time_edge = _bucket(time, edges, "edges", "time length")
    batch_edge = (
        batch if batch_edges is None else _bucket(batch, batch_edges, "batch_edges", "batch")
    )

    widths = [(0, 0)] * inputs.ndim
    widths[t_axis], widths[b_axis] = (0, time_edge - time), (0, batch_edge - batch)
    xp = np if isinstance(inputs, np.ndarray) else jnp
    padded = xp.pad(inputs, widths)
    lengths = np.concatenate([lengths, np.zeros((batch_edge - batch,), np.int32)])
    return padded, lengths


class BucketedFunction:
    """``fn`` compiled once per bucket: calls are padded to bucket edges, then run jitted.

    Build it with :func:`bucketed`. A call ``f(inputs, sequence_length=None, *args, **kwargs)``
    pads ``inputs`` with :func:`pad_to_bucket` and runs
    ``fn(padded, lengths, *args, **kwargs)`` through ``eqx.filter_jit``: arrays (the padded
    inputs, the lengths, a cell's weights) are traced, every other argument is static. Batches
    that fall in the same bucket reuse one compiled program, so over any stream of batches there
    is at most one compilation per ``(batch edge, time edge)`` pair (per distinct static
    argument).

    ``fn`` sees padded shapes and returns what it likes, unchanged: rows past the real batch and
    steps past each row's length are padding (with :func:`~recurrax.dynamic_rnn` its outputs
    there are zeros), so slice ``outputs[:batch, :time]`` or mask a loss with ``lengths``.

    **Attributes:** ``fn``, ``edges``, ``batch_edges``, ``time_major``; ``trace_count``, the
    number of times ``fn`` has been traced (each trace is one compilation); ``buckets``, the
    sorted ``(batch, time)`` shapes traced so far.
    """

    def __init__(
        self,
        fn: Callable,
        *,
        edges: Sequence[int],
        batch_edges: Sequence[int] | None = None,
        time_major: bool = False,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
        self.fn = fn
        self.edges = check_edges(edges, "edges")
        self.batch_edges = None if batch_edges is None else check_edges(batch_edges, "batch_edges")
        self.time_major = bool(time_major)
        self.trace_count = 0
        self._buckets: set[tuple[int, int]] = set()

        def traced(padded, lengths, *args, **kwargs):
            # Runs only while tracing: once per compilation.
            self.trace_count += 1
            shape = (padded.shape[1], padded.shape[0]) if self.time_major else padded.shape[:2]
            self._buckets.add(tuple(int(n) for n in shape))
            return fn(padded, lengths, *args, **kwargs)

        self._jitted = eqx.filter_jit(traced)

    @property
    def buckets(self) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(self._buckets))

    def pad(self, inputs, sequence_length=None):
        """``pad_to_bucket`` with this function's edges: ``(padded, lengths)``."""
        return pad_to_bucket(
            inputs,
            sequence_length,
            edges=self.edges,
            batch_edges=self.batch_edges,
            time_major=self.time_major,
        )

    def __call__(self, inputs, sequence_length=None, *args, **kwargs):
        padded, lengths = self.pad(inputs, sequence_length)
        return self._jitted(jnp.asarray(padded), jnp.asarray(lengths), *args, **kwargs)


def bucketed(
    fn: Callable | None = None,
    *,
    edges: Sequence[int],
    batch_edges: Sequence[int] | None = None,
    time_major: bool = False,
):
    """Make ``fn(inputs, sequence_length, *args)`` compile once per bucket (a decorator).

    **Arguments:**

    - ``fn``: called as ``fn(padded_inputs, lengths, *args, **kwargs)`` with ``padded_inputs``
      ``[batch_edge, time_edge, ...]`` (or time-major) and ``lengths`` int32 ``[batch_edge]``;
      usually it calls :func:`~recurrax.dynamic_rnn` with ``sequence_length=lengths``.
    - ``edges``, ``batch_edges``, ``time_major``: as in :func:`pad_to_bucket`.

    **Returns:** a :class:`BucketedFunction`, or a decorator making one when ``fn`` is omitted.

    **Example:**

    >>> @recurrax.bucketed(edges=(32, 64, 128, 256), batch_edges=(8, 16, 32))
    ... def encode(x, lengths, cell):
    ...     return recurrax.dynamic_rnn(cell, x, sequence_length=lengths)
    >>> outputs, state = encode(x, lengths, cell)      # x: [B <= 32, T <= 256, in]
    >>> outputs[:B, :T], state[:B]                     # the unpadded run's results
    """

    def wrap(fn):
        return BucketedFunction(fn, edges=edges, batch_edges=batch_edges, time_major=time_major)

    return wrap if fn is None else wrap(fn)
