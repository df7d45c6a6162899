"""``TensorShape``: a state or output of any shape, as one leaf of ``state_size`` / ``output_size``.

A cell's ``state_size`` and ``output_size`` are nests whose leaves say how large each array is,
without its batch axis. An ``int`` ``n`` is an array ``[batch, n]``; a :class:`TensorShape`
``(d1, ..., dk)`` is an array ``[batch, d1, ..., dk]`` (a convolutional LSTM's ``[H, W, C]``).
As in TF1, a tuple or list of ints is *not* a shape but a nest of separate sizes: ``(3, 4)`` is
two states, ``[batch, 3]`` and ``[batch, 4]`` (an ``LSTMStateTuple``'s layout); a shape must be
wrapped in a :class:`TensorShape`.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["TensorShape", "size_shape"]


def _dimension(d, k: int, dims) -> int:
    """Dimension ``k`` of ``dims`` as an ``int``, or a clear error."""
    if d is None:
        raise TypeError(
            f"TensorShape dimensions must be known ints; got None at index {k} of {dims!r}. "
            "recurrax sizes every state when the cell is built: give the size."
        )
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
        raise TypeError(
            f"TensorShape dimensions must be ints; got {type(d).__name__} {d!r} at index {k} "
            f"of {dims!r}."
        )
    if d < 0:
        raise ValueError(
            f"TensorShape dimensions must be >= 0; got {int(d)} at index {k} of {dims!r}."
        )
    return int(d)


class TensorShape:
    """The shape of one state or output array without its batch axis (TF1's ``tf.TensorShape``
    in a ``state_size`` or ``output_size``).

    A ``TensorShape`` is one leaf of a ``state_size`` / ``output_size`` nest: the array it
    describes is ``[batch, *dims]``. An ``int`` ``n`` stays a leaf meaning ``[batch, n]``, the
    same array as ``TensorShape((n,))``. A tuple or list of ints is a nest of separate sizes, as
    in TF1 (``(3, 4)`` is two states ``[batch, 3]`` and ``[batch, 4]``), so a shape of several
    dimensions must be wrapped: a convolutional LSTM declares
    ``state_size = LSTMStateTuple(TensorShape((H, W, C)), TensorShape((H, W, C)))`` and
    ``output_size = TensorShape((H, W, C))``.

    **Arguments:**

    - ``dims``: the dimensions, an iterable of non-negative ints (``(H, W, C)``, a list, an
      array's ``.shape``, another ``TensorShape``), or one int ``n`` for ``(n,)``. ``()`` is a
      scalar per row, ``[batch]``. A dimension that is not an int (``None``, a float, a bool)
      is a ``TypeError``, a negative one a ``ValueError``.

    A ``TensorShape`` is immutable and hashable (a static field of an Equinox cell), iterates
    over its dimensions (``(batch, *shape)``), has a length, indexes like a tuple (a slice is a
    ``TensorShape``) and equals another ``TensorShape`` with the same dimensions (never a plain
    tuple, which would be a nest). It is not a pytree node: JAX sees it as a leaf.

    **Example:**

    >>> shape = recurrax.TensorShape((8, 8, 16))
    >>> shape
    TensorShape((8, 8, 16))
    >>> (4, *shape), shape.rank, shape.num_elements()
    ((4, 8, 8, 16), 3, 1024)
    """

    __slots__ = ("dims",)
    dims: tuple[int, ...]

    def __init__(self, dims):
        if isinstance(dims, TensorShape):
            checked = dims.dims
        elif isinstance(dims, (int, np.integer)) and not isinstance(dims, (bool, np.bool_)):
            checked = (_dimension(dims, 0, dims),)
        elif dims is None or isinstance(dims, (str, bytes, dict)):
            raise TypeError(
                "TensorShape takes an iterable of ints such as (H, W, C), or one int; got "
                f"{dims!r}. recurrax sizes every state when the cell is built: give the shape."
            )
        else:
            try:
                items = tuple(dims)
            except TypeError as e:
                raise TypeError(
                    "TensorShape takes an iterable of ints such as (H, W, C), or one int; "
                    f"got {type(dims).__name__}."
                ) from e
            checked = tuple(_dimension(d, k, dims) for k, d in enumerate(items))
        object.__setattr__(self, "dims", checked)

    def __setattr__(self, name, value):
        raise AttributeError(f"TensorShape is immutable: cannot set {name}.")

    def __delattr__(self, name):
        raise AttributeError(f"TensorShape is immutable: cannot delete {name}.")

    def __reduce__(self):
        return (TensorShape, (self.dims,))

    @property
    def rank(self) -> int:
        """The number of dimensions (TF1's ``ndims``)."""
        return len(self.dims)

    ndims = rank

    def as_list(self) -> list[int]:
        """The dimensions as a list (TF1's ``as_list``)."""
        return list(self.dims)

    def num_elements(self) -> int:
        """The product of the dimensions: the number of values per batch row."""
        return int(np.prod(self.dims, dtype=np.int64))

    def __iter__(self):
        return iter(self.dims)

    def __len__(self) -> int:
        return len(self.dims)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return TensorShape(self.dims[index])
        return self.dims[operator.index(index)]

    def __eq__(self, other):
        if isinstance(other, TensorShape):
            return self.dims == other.dims
        return NotImplemented

    def __hash__(self) -> int:
        return hash((TensorShape, self.dims))

    def __repr__(self) -> str:
        return f"TensorShape({self.dims!r})"


def size_shape(size) -> tuple[int, ...]:
    """The per-row shape of one leaf of a ``state_size`` / ``output_size`` nest: ``(n,)`` for an
    int ``n``, the dimensions of a :class:`TensorShape`."""
    if isinstance(size, TensorShape):
        return size.dims
    return (int(size),)
