"""Weight initialisers: TF1's defaults (Glorot uniform, zeros, ones), TF1's
``random_uniform_initializer``, and how a cell applies one (checked shape, the cell's dtype).

An initialiser is a function ``(key, shape, dtype) -> array``, JAX's convention
(``jax.nn.initializers``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_real

__all__ = [
    "check_initializer",
    "glorot_uniform",
    "init_weight",
    "ones_init",
    "random_uniform_initializer",
    "zeros_init",
]


def random_uniform_initializer(minval: float = 0.0, maxval: float = 1.0):
    """TF1's ``tf.random_uniform_initializer(minval, maxval)`` as a JAX initializer
    ``(key, shape, dtype) -> array``, uniform on ``[minval, maxval)``.

    The PTB tutorial's ``tf.random_uniform_initializer(-init_scale, init_scale)`` becomes
    ``random_uniform_initializer(-init_scale, init_scale)``, passed as a cell's
    ``kernel_initializer`` (``initializer`` for :class:`~recurrax.LSTMCell`).

    >>> init = random_uniform_initializer(-0.1, 0.1)
    >>> cell = recurrax.BasicLSTMCell(8, 3, key=jax.random.key(0), kernel_initializer=init)
    """
    low, high = check_real(minval, "minval"), check_real(maxval, "maxval")
    if not low < high:
        raise ValueError(f"random_uniform_initializer needs minval < maxval; got {low}, {high}.")

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=low, maxval=high)

    return init


def check_initializer(init, name: str):
    """``init`` if it is ``None`` or callable as ``init(key, shape, dtype)``; else a TypeError."""
    if init is not None and not callable(init):
        raise TypeError(
            f"{name} must be callable as {name}(key, shape, dtype) -> array (a JAX initializer "
            f"such as recurrax.random_uniform_initializer(-0.1, 0.1)) or None; got {init!r}."
        )
    return init


def init_weight(init, default, key, shape, dtype, name: str) -> jax.Array:
    """``init(key, shape, dtype)`` (``default`` when ``init`` is ``None``), checked for its
    shape and cast to ``dtype``."""
    w = (default if init is None else init)(key, shape, dtype)
    if tuple(np.shape(w)) != tuple(shape):
        raise ValueError(
            f"{name} returned shape {tuple(np.shape(w))} for the weight of shape {tuple(shape)}; "
            "an initializer must return an array of the shape it is given."
        )
    return jnp.asarray(w, dtype)


def zeros_init(key, shape, dtype) -> jax.Array:
    return jnp.zeros(shape, dtype)


def ones_init(key, shape, dtype) -> jax.Array:
    return jnp.ones(shape, dtype)


def glorot_uniform(key, shape, dtype) -> jax.Array:
    """TF1's default ``glorot_uniform_initializer`` (fans as TF computes them, rank 1 included)."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)
