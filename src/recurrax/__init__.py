"""recurrax: TensorFlow 1.x style recurrent networks for JAX.

Cells (one time step, shared weights) and the two runners of TF1: :func:`static_rnn`, which
unrolls one copy of the cell per step, and :func:`dynamic_rnn`, which runs one compiled loop.
The applications built on the library (the ``recurrax`` command, the trainer, the benchmarks)
live in :mod:`recurrax.apps`, which ``import recurrax`` does not import.
"""

from .buckets import BucketedFunction as BucketedFunction
from .buckets import bucketed as bucketed
from .buckets import pad_to_bucket as pad_to_bucket
from .cells.base import LSTMStateTuple as LSTMStateTuple
from .cells.base import RNNCell as RNNCell
from .cells.gru import GRUCell as GRUCell
from .cells.initializers import random_uniform_initializer as random_uniform_initializer
from .cells.layernorm import LayerNormBasicLSTMCell as LayerNormBasicLSTMCell
from .cells.lstm import BasicLSTMCell as BasicLSTMCell
from .cells.lstm import LSTMCell as LSTMCell
from .cells.projection import EmbeddingWrapper as EmbeddingWrapper
from .cells.projection import InputProjectionWrapper as InputProjectionWrapper
from .cells.projection import OutputProjectionWrapper as OutputProjectionWrapper
from .cells.rnn import BasicRNNCell as BasicRNNCell
from .cells.shapes import TensorShape as TensorShape
from .cells.wrappers import DropoutWrapper as DropoutWrapper
from .cells.wrappers import MultiRNNCell as MultiRNNCell
from .cells.wrappers import ResidualWrapper as ResidualWrapper
from .dynamic import bidirectional_dynamic_rnn as bidirectional_dynamic_rnn
from .dynamic import dynamic_rnn as dynamic_rnn
from .engine.strategies import CheckpointEvery as CheckpointEvery
from .engine.strategies import Recompute as Recompute
from .engine.strategies import Revolve as Revolve
from .engine.strategies import StoreAll as StoreAll
from .inspect import ProgramReport as ProgramReport
from .inspect import inspect_program as inspect_program
from .io.checkpoint import Checkpoint as Checkpoint
from .io.checkpoint import load_checkpoint as load_checkpoint
from .io.checkpoint import save_checkpoint as save_checkpoint
from .io.tf1 import load_tf1_weights as load_tf1_weights
from .io.tf1 import tf1_variable_names as tf1_variable_names
from .io.tf1 import tf1_weights as tf1_weights
from .io.tf1_checkpoint import load_tf1_checkpoint as load_tf1_checkpoint
from .io.weights import load_weights as load_weights
from .io.weights import save_weights as save_weights
from .lengths import reverse_sequence as reverse_sequence
from .raw import raw_rnn as raw_rnn
from .static import static_bidirectional_rnn as static_bidirectional_rnn
from .static import static_rnn as static_rnn

__version__ = "0.1.0"
