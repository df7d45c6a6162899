"""Program inspection: how big a compiled step is, how long it takes to build and run, and how
much scratch memory XLA gives it.

This is what makes the static-versus-dynamic trade-off measurable: :func:`static_rnn` puts one
copy of the cell per step into the program, so every figure below grows with ``T``;
:func:`dynamic_rnn` puts one copy inside one loop, so its program size and compile time do not.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.extend.core as jex
import jax.numpy as jnp

__all__ = ["ProgramReport", "inspect_program", "count_jaxpr_eqns", "count_hlo_ops"]

# An instruction line of XLA's HLO text: "  %name = f32[2]{0} add(...)" or "  ROOT %name = ...".
_HLO_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?[\w.\-]+ = ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ProgramReport:
    """What :func:`inspect_program` measured for one program.

    **Fields:**

    - ``mode``: ``"forward"`` (``fn`` itself) or ``"gradient"`` (value and gradient of a loss).
    - ``jaxpr_eqns``: equations in the program's jaxpr, sub-jaxprs included (see
      :func:`count_jaxpr_eqns`).
    - ``hlo_ops``: operations in the lowered StableHLO module (see :func:`count_hlo_ops`).
    - ``compiled_ops``: instructions in the HLO that XLA produced after optimisation.
    - ``trace_s``, ``lower_s``, ``compile_s``: seconds to trace ``fn`` to a jaxpr, to lower the
      jaxpr to StableHLO, and for XLA to compile it. Their sum is what the first call waits for.
    - ``run_s``: seconds per call of the compiled program, the fastest of ``repeats`` timed calls
      after one warm-up call (``None`` when ``run=False``).
    - ``temp_bytes``, ``argument_bytes``, ``output_bytes``: from XLA's ``memory_analysis()``:
      scratch memory the program allocates while it runs (for a gradient step this holds the
      activations saved for the backward pass), its inputs and its outputs. ``None`` where the
      backend does not report them.
    """

    mode: str
    jaxpr_eqns: int
    hlo_ops: int
    compiled_ops: int
    trace_s: float
    lower_s: float
    compile_s: float
    run_s: float | None
    temp_bytes: int | None
    argument_bytes: int | None
    output_bytes: int | None

    @property
    def build_s(self) -> float:
        """Trace, lower and compile seconds together: the wait before the first call runs."""
        return self.trace_s + self.lower_s + self.compile_s

    def __str__(self) -> str:
        def mib(n):
            if n is None:
                return "n/a"
            return (
                f"{n} B"
                if n < 1024
                else f"{n / 1024:.1f} KiB"
                if n < 2**20
                else f"{n / 2**20:.2f} MiB"
            )

        run = "not run" if self.run_s is None else f"{self.run_s * 1e3:.3f} ms"
        return (
            f"{self.mode} program: {self.jaxpr_eqns} jaxpr equations, {self.hlo_ops} StableHLO "
            f"ops, {self.compiled_ops} compiled HLO instructions\n"
            f"  trace {self.trace_s:.3f} s, lower {self.lower_s:.3f} s, compile "
            f"{self.compile_s:.3f} s (first call waits {self.build_s:.3f} s); run {run}\n"
            f"  memory: temp {mib(self.temp_bytes)}, arguments {mib(self.argument_bytes)}, "
            f"outputs {mib(self.output_bytes)}"
        )


def count_jaxpr_eqns(jaxpr) -> int:
    """Count the equations of ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``), recursively.

    Every equation counts once, and so does every equation of every jaxpr held in an equation's
    parameters: ``scan`` and ``while`` bodies (and a ``while``'s condition), ``cond`` branches,
    ``pjit`` (nested ``jax.jit``), ``remat`` and the primal ``call_jaxpr`` of ``custom_jvp`` /
    ``custom_vjp``. The backward rule of a ``custom_vjp`` is a Python function, not a jaxpr, and
    is not counted. A loop body counts once however many times the loop runs.
    """
    if isinstance(jaxpr, jex.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    if not isinstance(jaxpr, jex.Jaxpr):
        raise TypeError(f"jaxpr must be a Jaxpr or ClosedJaxpr; got {type(jaxpr).__name__}.")
    total = 0
    for eqn in jaxpr.eqns:
        total += 1 + sum(count_jaxpr_eqns(sub) for sub in jex.jaxprs_in_params(eqn.params))
    return total


def count_hlo_ops(module) -> int:
    """Count the operations of a lowered StableHLO module (``Lowered.compiler_ir("stablehlo")``).

    Every operation counts, in any dialect (``stablehlo``, ``func``, ...) and at any depth (loop
    bodies, conditionals, called functions, terminators); the enclosing module does not.
    """
    from jax._src.lib.mlir import ir

    count = 0

    def visit(op):
        nonlocal count
        count += 1
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return count - 1  # the module itself


def _is_input(x) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _loss(out) -> jax.Array:
    """The scalar a gradient step differentiates: ``out`` itself if it is a float scalar, else
    half the sum of squares of every floating leaf of ``out``."""
    leaves = [y for y in jax.tree_util.tree_leaves(out) if eqx.is_inexact_array(y)]
    if not leaves:
        raise TypeError(
            "fn must return at least one floating array to take a gradient step; got "
            f"{jax.tree_util.tree_structure(out)} with no floating leaves."
        )
    if len(leaves) == 1 and leaves[0].shape == ():
        return leaves[0]
    return sum(0.5 * jnp.sum(jnp.square(y)) for y in leaves)


def _check_argnums(argnums, n_args: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) and not isinstance(argnums, bool) else argnums
    if not isinstance(nums, Sequence) or not all(
        isinstance(k, int) and not isinstance(k, bool) for k in nums
    ):
        raise TypeError(f"argnums must be an int or a tuple of ints; got {argnums!r}.")
    bad = [k for k in nums if not -n_args <= k < n_args]
    if bad or not nums:
        raise ValueError(
            f"argnums must name arguments of fn: integers in [0, {n_args}) "
            f"({n_args} example arguments were given); got {argnums!r}."
        )
    return tuple(k % n_args for k in nums)


def _gradient_program(fn: Callable, n_args: int, argnums: tuple[int, ...]) -> Callable:
    """``(*args) -> (loss, grads)``: gradients for the floating leaves of ``args[argnums]``."""

    def step(*args):
        wrt = [args[k] if k in argnums else None for k in range(n_args)]
        diff, fixed = eqx.partition(wrt, eqx.is_inexact_array)

        def loss_of(diff):
            merged = eqx.combine(diff, fixed)
            full = [merged[k] if k in argnums else args[k] for k in range(n_args)]
            return _loss(fn(*full))

        return jax.value_and_grad(loss_of)(diff)

    return step


def inspect_program(
    fn: Callable,
    *args,
    grad: bool = False,
    argnums: int | Sequence[int] = 0,
    run: bool = True,
    repeats: int = 5,
) -> ProgramReport:
    """Trace, lower, compile and run ``fn(*args)`` once, and report what each stage produced.

    **Arguments:**

    - ``fn``: the function to inspect, called as ``fn(*args)``. It need not be jitted (it is
      traced afresh here, so earlier calls and caches do not hide compile time).
    - ``*args``: example arguments; their shapes and dtypes fix the program. Arrays (JAX or
      NumPy, anywhere in a pytree such as a cell) become inputs of the program; every other leaf
      (Python numbers, strings, functions) is held fixed, as ``eqx.filter_jit`` does. A
      ``jax.ShapeDtypeStruct`` stands for an array without allocating it (needs ``run=False``).
    - ``grad``: ``False`` inspects the forward pass, ``fn`` itself. ``True`` inspects a gradient
      step: the value and gradient of a scalar loss with respect to the floating array leaves
      of ``args[argnums]``. The loss is ``fn``'s output when that is a float scalar, else half
      the sum of squares of every floating leaf of the output.
    - ``argnums``: with ``grad=True``, which arguments to differentiate (an int or a tuple);
      default ``0``, the first (the cell or model, as in a training step).
    - ``run``: whether to run the compiled program and time it.
    - ``repeats``: timed calls after the warm-up call; ``run_s`` is the fastest.

    **Returns:** a :class:`ProgramReport`; ``str(report)`` is a readable summary.

    **Example:**

    >>> cell = recurrax.BasicLSTMCell(64, 32, key=jax.random.key(0))
    >>> x = jnp.zeros((16, 100, 32))
    >>> fwd = recurrax.inspect_program(lambda c, x: recurrax.dynamic_rnn(c, x)[0], cell, x)
    >>> step = recurrax.inspect_program(lambda c, x: recurrax.dynamic_rnn(c, x)[0], cell, x,
    ...                                 grad=True)
    >>> fwd.hlo_ops, step.compile_s, step.temp_bytes
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
    if not isinstance(grad, bool):
        raise TypeError(f"grad must be a bool; got {type(grad).__name__}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int; got {repeats!r}.")
    target = fn
    if grad:
        if not args:
            raise ValueError("grad=True needs at least one argument to differentiate; got none.")
        target = _gradient_program(fn, len(args), _check_argnums(argnums, len(args)))
    dynamic, fixed = eqx.partition(args, _is_input)
    if run and any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(args)):
        raise ValueError(
            "args hold jax.ShapeDtypeStruct placeholders, which can be compiled but not run: "
            "pass run=False, or real arrays."
        )

    # A fresh function object per call: jax's caches key on it, so nothing is reused.
    def program(dynamic):
        return target(*eqx.combine(dynamic, fixed))

    jitted = jax.jit(program)
    t0 = time.perf_counter()
    traced = jitted.trace(dynamic)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()

    run_s = None
    if run:
        jax.block_until_ready(compiled(dynamic))  # warm-up: first-call allocations
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(dynamic))
            times.append(time.perf_counter() - start)
        run_s = min(times)

    memory = compiled.memory_analysis()
    return ProgramReport(
        mode="gradient" if grad else "forward",
        jaxpr_eqns=count_jaxpr_eqns(traced.jaxpr),
        hlo_ops=count_hlo_ops(lowered.compiler_ir("stablehlo")),
        compiled_ops=len(_HLO_INSTRUCTION.findall(compiled.as_text() or "")),
        trace_s=t1 - t0,
        lower_s=t2 - t1,
        compile_s=t3 - t2,
        run_s=run_s,
        temp_bytes=getattr(memory, "temp_size_in_bytes", None),
        argument_bytes=getattr(memory, "argument_size_in_bytes", None),
        output_bytes=getattr(memory, "output_size_in_bytes", None),
    )
