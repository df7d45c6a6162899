"""TF1 variable names for recurrax cells: import weights from, and export them to, TF1 layout.

TF1 names a cell's variables by the variable scopes it creates when it is first called inside
``tf.nn.dynamic_rnn`` / ``tf.nn.static_rnn`` (scope ``rnn``) or a bidirectional runner (scope
``bidirectional_rnn``, then ``fw`` and ``bw``)::

    rnn/basic_rnn_cell/kernel                      [in + u, u]
    rnn/gru_cell/gates/kernel, .../gates/bias      [in + u, 2u], [2u]
    rnn/gru_cell/candidate/kernel, .../bias        [in + u, u], [u]
    rnn/basic_lstm_cell/kernel, .../bias           [in + u, 4u], [4u]
    rnn/lstm_cell/kernel, bias, w_f_diag, w_i_diag, w_o_diag, projection/kernel
    rnn/layer_norm_basic_lstm_cell/kernel, input/gamma, input/beta, ... state/beta
    rnn/multi_rnn_cell/cell_<k>/<the layer's names>
    rnn/output_projection_wrapper/<the cell's names>, .../kernel, .../bias
    rnn/input_projection_wrapper/kernel, .../bias, .../<the cell's names>
    rnn/embedding_wrapper/embedding, .../<the cell's names>
    bidirectional_rnn/fw/<names>, bidirectional_rnn/bw/<names>

``DropoutWrapper`` and ``ResidualWrapper`` add no scope of their own (as in TF1). The arrays have
the same shapes and gate orders in recurrax, so they are copied as they are.

Every other cell class declares its names itself (``cells/``): ``tf1_scope``, the variable scope
it opens, and ``tf1_variables``, pairs ``(name, attribute)`` in TF1's creation order. An
attribute holding an array is the variable ``<scope>/<name>``; one holding ``None`` is absent;
one holding a cell (a wrapper's wrapped cell) puts that cell's variables under ``<scope>/<name>``
(``name`` empty: directly under the scope).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..cells.wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper

__all__ = [
    "tf1_variable_names",
    "tf1_weights",
    "load_tf1_weights",
    "variable_entries",
    "default_scope",
]


def variable_entries(cell, prefix: str, where: tuple) -> list[tuple[str, tuple]]:
    """``[(TF1 name, attribute path from the root)]`` for every weight of ``cell``."""
    if isinstance(cell, tuple) and len(cell) == 2 and not hasattr(cell, "state_size"):
        return variable_entries(cell[0], f"{prefix}/fw", (*where, 0)) + variable_entries(
            cell[1], f"{prefix}/bw", (*where, 1)
        )
    if isinstance(cell, MultiRNNCell):
        out = []
        for k, layer in enumerate(cell.cells):
            out += variable_entries(
                layer, f"{prefix}/multi_rnn_cell/cell_{k}", (*where, "cells", k)
            )
        return out
    if isinstance(cell, (DropoutWrapper, ResidualWrapper)):
        return variable_entries(cell.cell, prefix, (*where, "cell"))
    scope = getattr(cell, "variable_scope", None) or getattr(type(cell), "tf1_scope", None)
    variables = getattr(type(cell), "tf1_variables", None)
    if scope is None or variables is None:
        raise TypeError(
            "cell must be built from recurrax's TF1 cells and wrappers (BasicRNNCell, GRUCell, "
            "BasicLSTMCell, LSTMCell, LayerNormBasicLSTMCell, MultiRNNCell, DropoutWrapper, "
            "ResidualWrapper, the projection and embedding wrappers) or be a (cell_fw, cell_bw) "
            f"pair to have TF1 variable names; got {type(cell).__name__}. Set the weights of "
            "other cells with eqx.tree_at, or declare tf1_scope and tf1_variables on the class."
        )
    out = []
    for tf_name, attr in variables:
        value = getattr(cell, attr)
        name = "/".join(part for part in (prefix, scope, tf_name) if part)
        if value is None:
            continue
        if hasattr(value, "state_size"):  # a wrapped cell: its names go under this scope
            out += variable_entries(value, name, (*where, attr))
        else:
            out.append((name, (*where, attr)))
    return out


def _get(tree, path: tuple):
    for step in path:
        tree = tree[step] if isinstance(step, int) else getattr(tree, step)
    return tree


def default_scope(cell, scope: str | None) -> str:
    """``scope`` checked, or TF1's default for ``cell``: ``rnn``, or ``bidirectional_rnn`` for a
    ``(cell_fw, cell_bw)`` pair."""
    if scope is not None:
        if not isinstance(scope, str) or not scope.strip("/"):
            raise ValueError(f"scope must be a non-empty string such as 'rnn'; got {scope!r}.")
        return scope.strip("/")
    is_pair = isinstance(cell, tuple) and not hasattr(cell, "state_size")
    return "bidirectional_rnn" if is_pair else "rnn"


def tf1_variable_names(cell, scope: str | None = None) -> list[str]:
    """The TF1 names of ``cell``'s variables, in TF1's creation order.

    **Arguments:**

    - ``cell``: a built-in cell, a ``MultiRNNCell``/wrapper of them (the projection and
      embedding wrappers add their own scope), any cell whose class declares ``tf1_scope`` and
      ``tf1_variables``, or a ``(cell_fw, cell_bw)`` pair for a bidirectional runner.
    - ``scope``: the TF1 variable scope the runner used; default ``"rnn"`` for one cell and
      ``"bidirectional_rnn"`` for a pair (TF1's defaults). Outer scopes may be included, e.g.
      ``"encoder/rnn"``.

    **Returns:** a list of names without the ``":0"`` suffix, e.g.
    ``["rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias"]``.
    """
    return [name for name, _ in variable_entries(cell, default_scope(cell, scope), ())]


def tf1_weights(cell, scope: str | None = None) -> dict[str, np.ndarray]:
    """Export ``cell``'s weights as a dict of TF1 variable names (no ``":0"``) to NumPy arrays.

    **Arguments:** as :func:`tf1_variable_names`.

    **Returns:** ``{name: array}`` with TF1's shapes, e.g.
    ``{"rnn/gru_cell/gates/kernel": [in + u, 2u], ...}``; ``load_tf1_weights`` reads it back.
    """
    return {
        name: np.asarray(_get(cell, path))
        for name, path in variable_entries(cell, default_scope(cell, scope), ())
    }


_SUFFIX = re.compile(r":\d+$")


def _match(expected: list[str], given: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Map each expected name to the given name equal to it or ending in ``"/" + name``.

    Returns ``(matches, missing, ambiguous)``.
    """
    matches, missing, ambiguous = {}, [], []
    for name in expected:
        found = [g for g in given if _SUFFIX.sub("", g) == name]
        found = found or [g for g in given if _SUFFIX.sub("", g).endswith("/" + name)]
        if not found:
            missing.append(name)
        elif len(found) > 1:
            ambiguous.append(f"{name} <- {found}")
        else:
            matches[name] = found[0]
    return matches, missing, ambiguous


def _scope_hint(expected: list[str], missing: list[str], scope: str, given: list[str]):
    """The ``scope=`` that would make the cell's names match ``given``, as a sentence (or
    ``None`` when no other scope places a missing name).

    Each expected name is ``<scope>/<rest>``; a given name ``<prefix>/<rest>`` proposes
    ``prefix``. The prefixes that place every ``rest`` are named (several when the names sit
    under several scopes); otherwise the one that places the most, with how many it places.
    """
    rests = [name[len(scope) + 1 :] for name in expected]
    lacking = {name[len(scope) + 1 :] for name in missing}
    bare = [_SUFFIX.sub("", g) for g in given]
    placed: dict[str, set[str]] = {}
    for rest in rests:
        for g in bare:
            if g.endswith("/" + rest) and len(g) > len(rest) + 1:
                placed.setdefault(g[: -len(rest) - 1], set()).add(rest)
    placed = {p: found for p, found in placed.items() if found & lacking}
    if not placed:
        return None
    whole = [p for p, found in placed.items() if len(found) == len(rests)]
    if len(whole) == 1:
        return f"They sit under scope {whole[0]!r}: pass scope={whole[0]!r}."
    if whole:
        options = " or ".join(f"scope={p!r}" for p in whole)
        return f"They sit under several scopes: pass {options}."
    best = max(placed, key=lambda p: len(placed[p]))
    return (
        f"{len(placed[best])} of the {len(rests)} names sit under scope {best!r}: pass "
        f"scope={best!r} and check the cell types and options for the rest."
    )


def load_tf1_weights(cell, variables: Mapping, scope: str | None = None, *, strict: bool = True):
    """Return ``cell`` with its weights taken from TF1 variables.

    **Arguments:**

    - ``cell``: a built-in cell, ``MultiRNNCell``/wrapper of them, or a ``(cell_fw, cell_bw)``
      pair; it must have the TF1 model's sizes (``num_units``, ``input_size``, options).
    - ``variables``: a mapping of TF1 variable names to arrays, e.g. from
      ``{v.name: sess.run(v) for v in tf.global_variables()}`` or a checkpoint reader. Names may
      end in ``":0"`` and may carry any outer scope (``"model/rnn/lstm_cell/kernel:0"``).
    - ``scope``: as in :func:`tf1_variable_names`.
    - ``strict``: if ``True`` (default), a variable that is not one of the cell's is an error;
      with ``False`` other variables (say, a dense layer's) are ignored.

    **Returns:** a copy of ``cell`` (or of the pair) holding the arrays, cast to the cell's dtype.

    Raises ``ValueError`` for missing, unexpected (when ``strict``), ambiguous or wrongly shaped
    variables, naming them (when the names sit under another scope, the message gives the
    ``scope=`` that makes them match); ``TypeError`` for a cell without TF1 names or a
    non-mapping.

    **Example:**

    >>> cell = recurrax.BasicLSTMCell(128, 32, key=jax.random.key(0))
    >>> cell = recurrax.load_tf1_weights(cell, {"rnn/basic_lstm_cell/kernel:0": k,
    ...                                         "rnn/basic_lstm_cell/bias:0": b})
    """
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"variables must be a mapping of TF1 variable names to arrays; "
            f"got {type(variables).__name__}."
        )
    entries = variable_entries(cell, default_scope(cell, scope), ())
    expected = [name for name, _ in entries]
    given = [str(g) for g in variables]
    matches, missing, ambiguous = _match(expected, given)
    if ambiguous:
        raise ValueError(
            "variables holds several candidates for "
            + "; ".join(ambiguous)
            + ". Pass scope with the outer scopes that tell them apart, e.g. scope='encoder/rnn'."
        )
    if missing:
        unused = [g for g in given if g not in matches.values()]
        hint = _scope_hint(expected, missing, default_scope(cell, scope), given)
        raise ValueError(
            f"variables lacks {missing} (the cell's TF1 variables under scope "
            f"{default_scope(cell, scope)!r})"
            + (f"; variables not matched: {unused}" if unused else "")
            + (
                f". {hint}"
                if hint
                else ". Check the scope and the cell types (BasicLSTMCell is basic_lstm_cell, "
                "LSTMCell lstm_cell)."
            )
        )
    extra = [g for g in given if g not in matches.values()]
    if strict and extra:
        raise ValueError(
            f"variables holds {extra}, which are not variables of this cell (it has "
            f"{expected}). Pass strict=False to ignore them, or build the cell with those "
            "options (peepholes, num_proj, more layers)."
        )
    new = []
    for name, path in entries:
        old = _get(cell, path)
        value = np.asarray(variables[matches[name]])
        if value.shape != old.shape:
            raise ValueError(
                f"TF1 variable {matches[name]!r} has shape {list(value.shape)} but the cell "
                f"expects {list(old.shape)}. Build the cell with the TF1 model's num_units and "
                "input_size (kernels are [input_size + num_units, k * num_units])."
            )
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(
                f"TF1 variable {matches[name]!r} must hold floating values; got {value.dtype}."
            )
        new.append(jnp.asarray(value, old.dtype))
    return eqx.tree_at(lambda c: [_get(c, path) for _, path in entries], cell, new)
