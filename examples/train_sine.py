"""Train a small GRU to forecast noisy sines with the trainer of ``recurrax train``.

The trainer is an application on top of the library: it lives in ``recurrax.apps.train`` (and
needs the ``[train]`` extra, for optax). ``recurrax train --task sine --cell gru`` runs the same.

Run: python examples/train_sine.py
"""

from recurrax.apps.train import TrainConfig, train

config = TrainConfig(task="sine", cell="gru", num_units=16, batch_size=64, epochs=2, seed=0)
result = train(config, progress="plain")  # a line per epoch

print(f"test mse {result.test_metric:.4f}, repeating the last value: {result.baseline:.4f}")
assert result.test_metric < result.baseline  # it learned more than "tomorrow is like today"
print(type(result.model).__name__, "with a", type(result.model.cell).__name__)
