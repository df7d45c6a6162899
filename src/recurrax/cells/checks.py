"""Checks shared by the cells, the wrappers and the runners: each raises a ``TypeError`` or a
``ValueError`` that names the argument, what was expected, what arrived and the fix."""

from __future__ import annotations

import difflib
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

from .shapes import TensorShape, size_shape

__all__ = [
    "check_activation",
    "check_batch_size",
    "check_cell",
    "check_float_dtype",
    "check_key",
    "check_kwargs",
    "check_positive_int",
    "check_real",
    "check_state",
    "check_state_is_tuple",
    "check_step",
    "is_size_leaf",
    "is_traced",
    "size_to_str",
]


def is_size_leaf(x) -> bool:
    """Whether ``x`` is one size of a ``state_size`` / ``output_size`` nest: an int, or a
    :class:`~recurrax.TensorShape` (a tuple or list of ints is a nest of sizes, as in TF1)."""
    return isinstance(x, TensorShape) or (
        isinstance(x, (int, np.integer)) and not isinstance(x, bool)
    )


def size_to_str(size) -> str:
    def show(n):
        return n if isinstance(n, TensorShape) else int(n)

    return str(jax.tree_util.tree_map(show, size, is_leaf=is_size_leaf))


def check_cell(cell, name: str = "cell") -> None:
    """Raise ``TypeError`` unless ``cell`` follows the cell protocol."""
    missing = [a for a in ("state_size", "output_size") if not hasattr(cell, a)]
    if missing or not callable(cell):
        what = missing or ["__call__"]
        raise TypeError(
            f"{name} must be a cell: callable as cell(inputs, state) -> (output, new_state), "
            f"with state_size and output_size; got {type(cell).__name__} lacking {what}."
        )


def check_positive_int(value, name: str, what: str | None = None) -> int:
    """``value`` as an ``int`` if it is a positive int (not a bool), else a clear error."""
    detail = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int{detail}; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int{detail}; got {value}.")
    return int(value)


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int; got {type(batch_size).__name__}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")


def check_float_dtype(dtype, name: str):
    """Return ``dtype`` as a ``jnp.dtype`` if it is floating, else raise a ``TypeError``."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{name} must be a floating dtype; got {dtype!r}.") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (float16, bfloat16, float32, float64); got {dt}."
        )
    return dt


def check_key(key, name: str = "key", purpose: str = "to initialise weights"):
    if key is None:
        raise TypeError(
            f"{name} is required: pass a PRNG key such as jax.random.key(0) {purpose}; got None."
        )
    return key


def check_activation(activation):
    """``activation``, or ``jnp.tanh`` for ``None`` (TF1's default)."""
    if activation is None:
        return jnp.tanh
    if not callable(activation):
        raise TypeError(f"activation must be callable; got {activation!r}.")
    return activation


def check_real(value, name: str, what: str = "a number", minimum: float | None = None) -> float:
    """``value`` as a ``float``: a ``TypeError`` unless it is a number, a ``ValueError`` if it is
    NaN or below ``minimum``; ``what`` says what is expected."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be {what}; got {type(value).__name__}.")
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be {what}; got {type(value).__name__}.") from e
    if math.isnan(number) or (minimum is not None and number < minimum):
        raise ValueError(f"{name} must be {what}; got {value}.")
    return number


def check_state_is_tuple(state_is_tuple, owner: str) -> None:
    """TF1's ``state_is_tuple``: ``True`` (its default) is the only state layout recurrax has."""
    if state_is_tuple is not True:
        raise ValueError(
            f"{owner}: state_is_tuple={state_is_tuple!r} is not supported: TF1 deprecated the "
            "concatenated [batch, c + h] state, and recurrax keeps the state as a tuple "
            "(LSTMStateTuple(c, h) for an LSTM). Drop the argument or pass state_is_tuple=True; "
            "split a concatenated state with LSTMStateTuple(s[:, :num_units], s[:, num_units:])."
        )


def check_scope_name(name, owner: str) -> str | None:
    """TF1's ``name=`` of a cell: ``None`` (the class's own scope) or the variable scope its
    weights are named under, a non-empty string."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip("/"):
        raise TypeError(
            f"{owner}: name must be None or a non-empty string, the TF1 variable scope of the "
            f"cell's weights (e.g. 'basic_lstm_cell'); got {name!r}."
        )
    return name.strip("/")


def check_kwargs(owner: str, kwargs: dict, init, notes: dict[str, str] | None = None) -> None:
    """A ``TypeError`` for the first unknown keyword in ``kwargs``, naming the closest argument
    of ``init`` (or of ``notes``, TF1 arguments recurrax spells differently, each with its
    explanation)."""
    if not kwargs:
        return
    notes = notes or {}
    name = next(iter(kwargs))
    if name in notes:
        raise TypeError(f"{owner} does not take {name}=: {notes[name]}")
    params = inspect.signature(init).parameters.values()
    known = [p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    close = difflib.get_close_matches(name, known + list(notes), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(known)}."
    raise TypeError(f"{owner} got an unexpected keyword argument {name!r}; {hint}")


#: TF1 arguments of other cells, named with the fix when passed to the wrong cell.
KERNEL_INITIALIZER_NOTES = {
    "initializer": "that is LSTMCell's argument; this cell takes kernel_initializer= "
    "(and bias_initializer=).",
}
LSTM_INITIALIZER_NOTES = {
    "kernel_initializer": "LSTMCell takes TF1's initializer= (for the kernel, the peepholes and "
    "the projection; the bias starts at zeros).",
    "bias_initializer": "TF1's LSTMCell starts its bias at zeros; set another with "
    "eqx.tree_at(lambda c: c.bias, cell, bias).",
}
ONE_ARRAY_STATE_NOTES = {
    "state_is_tuple": "this cell's state is one [batch, num_units] array (TF1's cell has no "
    "state_is_tuple either).",
}


def _shapes(tree) -> str:
    return str(jax.tree_util.tree_map(lambda x: tuple(int(d) for d in np.shape(x)), tree))


def check_state(name: str, state_size, batch: int, state) -> None:
    """A ``ValueError`` unless ``state`` has one ``[batch, n]`` array per size ``n`` of
    ``state_size`` (``[batch, *shape]`` per :class:`~recurrax.TensorShape`), in its structure
    (static shapes only: nothing is computed)."""
    sizes = jax.tree_util.tree_leaves(state_size, is_leaf=is_size_leaf)
    if is_size_leaf(state_size):
        parts = None if isinstance(state, (tuple, list, dict)) or state is None else [state]
    elif isinstance(state, (tuple, list)) and len(state) == len(sizes):
        parts = list(state)
    else:
        parts = None
    if parts is not None and all(
        not isinstance(p, (tuple, list, dict))
        and p is not None
        and np.shape(p) == (batch, *size_shape(n))
        for p, n in zip(parts, sizes)
    ):
        return
    want = jax.tree_util.tree_map(
        lambda n: (batch, *size_shape(n)), state_size, is_leaf=is_size_leaf
    )
    raise ValueError(
        f"{name}: state must have shape {want} ([batch, state size], batch {batch} from the "
        f"inputs); got {_shapes(state)}. Build it with cell.zero_state(batch_size, dtype)."
    )


def is_traced(x) -> bool:
    """Whether ``x`` is a tracer (a value only known when the program runs)."""
    return isinstance(x, jax.core.Tracer)


def check_step(name: str, inputs, input_size, state_size, state) -> None:
    """A cell's call: ``inputs [batch, input_size]`` (``[batch, *input_size]`` for a
    :class:`~recurrax.TensorShape` ``input_size``) and a ``state`` matching ``state_size`` for
    that batch (shapes only, static: also under ``jax.jit``)."""
    shape = np.shape(inputs)
    if isinstance(input_size, TensorShape):
        if len(shape) < 1 or tuple(shape[1:]) != input_size.dims:
            want = ", ".join(["batch", *map(str, input_size)])
            raise ValueError(
                f"{name}: inputs must have shape [{want}] ([batch, *input_size], input_size="
                f"{input_size}); got {tuple(shape)}."
            )
    elif len(shape) != 2 or shape[-1] != input_size:
        raise ValueError(
            f"{name}: inputs must have shape [batch, input_size={input_size}]; got {tuple(shape)}."
        )
    check_state(name, state_size, shape[0], state)
