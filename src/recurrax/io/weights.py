"""Save and load the weights of a cell, or of any pytree built from cells, as one file.

The file is a safetensors file (``tensorfile.py``: checksummed, written atomically). A model
with TF1 names (the built-in cells, ``MultiRNNCell``, the wrappers, a ``(cell_fw, cell_bw)``
pair) is stored under its TF1 variable names::

    rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel   F32 [7, 16]
    rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias     F32 [16]

and any other array leaf (a dropout key, a model's own layers) under its pytree path
(``".cells[1].key"``, ``".dense.weight"``); the metadata holds the model's configuration
(``"config"``: class names and static fields, as JSON) and what the keys are (``"keys"``:
``"tf1"`` or ``"paths"``). Loading maps the names back through the ``like`` model and checks
every array against it, so a file written for another model is reported as such.

An interrupted write (the process killed while writing) can leave its temporary file,
``.<name>.<random>.tmp``, next to the destination; it is never read as the file, and the next
write to the same path removes it (``tensorfile.remove_leftovers``). A path is written by one
process at a time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .tensorfile import read_arrays, write_arrays
from .tf1 import default_scope, variable_entries

__all__ = [
    "save_weights",
    "load_weights",
    "write_arrays",
    "read_arrays",
    "tree_arrays",
    "fill_like",
]


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def tree_arrays(tree) -> dict[str, Any]:
    """The array leaves of ``tree`` by pytree path, e.g. ``{".cells[0].kernel": Array}``.

    Non-array leaves (sizes, flags, functions, ``None``) are not included: they are the
    structure, which the loader takes from a ``like`` tree.
    """
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
    return {jax.tree_util.keystr(path): x for path, x in leaves}


def _describe(x) -> tuple[tuple[int, ...], str]:
    if _is_key(x):
        return tuple(x.shape), f"key<{jax.random.key_impl(x)}>"
    return tuple(np.shape(x)), jnp.dtype(x.dtype).name


def fill_like(
    arrays: dict[str, Any],
    like,
    *,
    source: str,
    what: str = "model",
    labels: dict[str, str] | None = None,
):
    """``like`` with its array leaves replaced by ``arrays`` (matched by pytree path).

    Raises ``ValueError`` naming the missing and unexpected paths, or the first leaf whose shape
    or dtype differs; ``source`` names where ``arrays`` came from in the messages, and
    ``labels`` (pytree path -> name in the file) how the file names a path.
    """
    labels = labels or {}
    dynamic, static = eqx.partition(like, eqx.is_array)
    flat, treedef = jax.tree_util.tree_flatten_with_path(dynamic)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    missing = [labels.get(n, n) for n in names if n not in arrays]
    extra = [n for n in arrays if n not in set(names)]
    if missing or extra:
        raise ValueError(
            f"{source} does not match the {what}: "
            + "; ".join(
                s
                for s in (
                    f"arrays the {what} needs but the file lacks: {missing}" if missing else "",
                    f"arrays in the file the {what} does not have: {extra}" if extra else "",
                )
                if s
            )
            + f". Build the {what} with the same structure (cell types, layers, options) as the "
            "one that was saved."
        )
    leaves = []
    for name, (_, x) in zip(names, flat):
        new = arrays[name]
        if _describe(new) != _describe(x):
            (s_new, d_new), (s_old, d_old) = _describe(new), _describe(x)
            raise ValueError(
                f"{source} does not match the {what}: array {labels.get(name, name)!r} is "
                f"{d_new}{list(s_new)} "
                f"in the file but {d_old}{list(s_old)} in the {what}. Build the {what} with "
                "the sizes and dtype it was saved with."
            )
        leaves.append(new if _is_key(new) else jnp.asarray(new))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def _tf1_paths(model) -> dict[str, str]:
    """``{pytree path: TF1 name}`` for the weights of a model with TF1 names; else ``{}``."""
    try:
        entries = variable_entries(model, default_scope(model, None), ())
    except TypeError:  # not built from the built-in cells: pytree paths it is
        return {}
    return {
        "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in where): name
        for name, where in entries
    }


def _config(x):
    """A JSON description of ``x``'s structure: classes and static fields, no arrays."""
    if isinstance(x, eqx.Module):
        out = {"class": type(x).__name__}
        for field in dataclasses.fields(x):
            value = getattr(x, field.name, None)
            if field.metadata.get("static") or isinstance(value, (eqx.Module, list, tuple, dict)):
                out[field.name] = _config(value)
        return out
    if isinstance(x, (list, tuple)):
        return [_config(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _config(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if eqx.is_array(x):
        return "array"
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        return jnp.dtype(x).name
    return getattr(x, "__name__", type(x).__name__)


def save_weights(path, model, *, meta: dict | None = None) -> Path:
    """Save every array of ``model`` (a cell, or any pytree built from cells) to ``path``.

    **Arguments:**

    - ``path``: the file to write (its directory must exist), e.g. ``"lstm.safetensors"``. It
      is replaced atomically; temporary files an interrupted earlier write left beside it are
      removed.
    - ``model``: a cell, wrapper, ``MultiRNNCell`` or ``(cell_fw, cell_bw)`` pair (its weights
      are stored under their TF1 variable names, ``"rnn/basic_lstm_cell/kernel"``), or an
      ``eqx.Module`` holding cells, or any pytree (its arrays are stored under their pytree
      paths, ``".cell.kernel"``). Shapes and dtypes are kept.
    - ``meta``: optional JSON-serialisable dict stored alongside (e.g. how to rebuild the model).

    **Returns:** the path written: a safetensors file, which ``safetensors.numpy.load_file``
    reads too.

    **Example:**

    >>> recurrax.save_weights("lstm.safetensors", cell)
    >>> same = recurrax.load_weights("lstm.safetensors", recurrax.BasicLSTMCell(64, 8, key=key))
    """
    names = _tf1_paths(model)
    arrays = {names.get(k, k): v for k, v in tree_arrays(model).items()}
    info = {"keys": "tf1" if names else "paths", "config": json.dumps(_config(model))}
    return write_arrays(path, arrays, kind="weights", meta=meta, info=info)


def load_weights(path, like):
    """Load weights saved by :func:`save_weights` into a model shaped like ``like``.

    **Arguments:**

    - ``path``: the file to read (a ``.safetensors`` file written by :func:`save_weights`; files
      of recurrax's first weights format are read too).
    - ``like``: a model of the same structure as the saved one (same cell types, sizes, dtypes);
      its own weights are ignored, its configuration (static fields) is kept.

    **Returns:** ``like`` with every array replaced by the saved one, bit for bit.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    recurrax weights file, is truncated or corrupted (checksum), or does not match ``like``
    (missing or unexpected arrays, other shapes or dtypes); the message says which.
    """
    arrays, _ = read_arrays(path, kind="weights")
    labels = _tf1_paths(like)
    paths = {name: where for where, name in labels.items()}
    arrays = {paths.get(k, k): v for k, v in arrays.items()}
    return fill_like(arrays, like, source=str(path), labels=labels)
