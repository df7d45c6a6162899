"""The built-in cells by name, one vocabulary for every tool: ``"rnn"``, ``"gru"``, ``"lstm"``."""

from __future__ import annotations

from .gru import GRUCell
from .lstm import BasicLSTMCell
from .rnn import BasicRNNCell

__all__ = ["BUILTIN"]

#: The built-in single-layer cells the command line, the trainer and the benchmarks build by
#: name (``LSTMCell``, with its options, is built directly).
BUILTIN = {"rnn": BasicRNNCell, "gru": GRUCell, "lstm": BasicLSTMCell}
