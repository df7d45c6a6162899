"""The training data sets (no downloads) and their deterministic splits and batch order.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes). Each image
  is read as a sequence: row ``t`` of the image is the input at time step ``t`` (8 steps of 8
  pixels), as one does with MNIST's 28 rows of 28 pixels.
- ``sine``: noisy mixtures of sines of random periods, amplitudes and phases, of random lengths;
  the target at step ``t`` is the series' value at ``t + 1`` (many-to-many forecasting).

Everything random here derives from a seed: the split from ``seed``, the order of epoch ``e``
from ``(seed, e)``, so a run can stop and resume and see the same batches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "digits_dataset", "sine_dataset", "batch_indices", "last_value_mse"]


class Dataset(NamedTuple):
    """Train and test arrays of one task.

    - ``x_train [N, T, F]`` float32, ``y_train``: int32 ``[N]`` labels (digits) or float32
      ``[N, T, 1]`` next values (sine); ``x_test``, ``y_test`` likewise.
    - ``len_train``, ``len_test``: int32 ``[N]`` sequence lengths (sine), or ``None``.
    - ``num_classes``: 10 for digits, 0 for a regression task.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    len_train: np.ndarray | None
    len_test: np.ndarray | None
    num_classes: int


def digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as ``[N, 8, 8]`` sequences in ``[0, 1]``, split per class.

    **Arguments:** ``test_fraction`` of each class held out for testing (default 0.2: 360 of the
    1,797 images); ``seed`` of the split.

    **Returns:** a :class:`Dataset` with ``x [N, 8 steps, 8 pixels]`` float32 and int32 labels.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "the digits task needs scikit-learn: pip install 'recurrax[train]'."
        ) from e
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8): pixel values 0..16
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in range(10):  # stratified: every class keeps the same share in both splits
        idx = rng.permutation(np.nonzero(y == label)[0])
        test[idx[: round(test_fraction * len(idx))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], None, None, 10)


def _sine_series(rng, n: int, num_steps: int, noise: float):
    t = np.arange(num_steps + 1, dtype=np.float64)  # one more step: the last target
    periods = rng.uniform(6.0, 30.0, (n, 3, 1))
    amplitudes = rng.uniform(0.2, 1.0, (n, 3, 1))
    phases = rng.uniform(0.0, 2 * np.pi, (n, 3, 1))
    clean = (amplitudes * np.sin(2 * np.pi * t / periods + phases)).sum(1)  # (n, T + 1)
    series = clean + noise * rng.standard_normal(clean.shape)
    lengths = rng.integers(num_steps // 2, num_steps + 1, n).astype(np.int32)
    steps = np.arange(num_steps)
    valid = steps[None, :] < lengths[:, None]  # (n, T): zero past each row's length
    x = np.where(valid, series[:, :-1], 0.0)[..., None].astype(np.float32)  # (n, T, 1)
    y = np.where(valid, series[:, 1:], 0.0)[..., None].astype(np.float32)  # (n, T, 1)
    return x, y, lengths


def sine_dataset(
    num_train: int = 2048,
    num_test: int = 512,
    num_steps: int = 40,
    noise: float = 0.05,
    seed: int = 0,
) -> Dataset:
    """Noisy sums of three sines; predict the next value at every step.

    Each series is ``sum_k a_k sin(2 pi t / p_k + phi_k) + noise * N(0, 1)`` with periods
    ``p_k ~ U(6, 30)`` steps, amplitudes ``a_k ~ U(0.2, 1)`` and phases ``phi_k ~ U(0, 2 pi)``.
    Each row has a random length in ``[num_steps // 2, num_steps]``; inputs and targets are zero
    past it.

    **Returns:** a :class:`Dataset` with ``x [N, num_steps, 1]`` (the series at ``t``),
    ``y [N, num_steps, 1]`` (the series at ``t + 1``) and int32 lengths ``[N]``.
    """
    rng = np.random.default_rng(seed)
    x_tr, y_tr, l_tr = _sine_series(rng, num_train, num_steps, noise)
    x_te, y_te, l_te = _sine_series(rng, num_test, num_steps, noise)
    return Dataset(x_tr, y_tr, x_te, y_te, l_tr, l_te, 0)


def last_value_mse(x: np.ndarray, y: np.ndarray, lengths: np.ndarray) -> float:
    """The forecasting baseline: predict ``y[t] = x[t]``; mean squared error over valid steps."""
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T)
    err = (x[..., 0].astype(np.float64) - y[..., 0]) ** 2
    return float(err[valid].mean())


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """The example indices of global batch ``step``: ``[batch_size]`` int64.

    Epoch ``e = step // (num_examples // batch_size)`` visits the examples in the order
    ``permutation(seed, e)``, a batch at a time; the last partial batch is dropped. So the batch
    of any step is known from ``(seed, step)`` alone, which is what exact resume needs.
    """
    per_epoch = num_examples // batch_size
    if per_epoch < 1:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {num_examples} training examples; "
            "use a smaller batch_size."
        )
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[k * batch_size : (k + 1) * batch_size]
