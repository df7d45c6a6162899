"""recurrax: TensorFlow 1.x style recurrent networks for JAX.

Cells (one time step, shared weights) and the two runners of TF1: :func:`static_rnn`, which
unrolls one copy of the cell per step, and :func:`dynamic_rnn`, which runs one compiled loop.
"""

from ._base import LSTMStateTuple as LSTMStateTuple
from ._buckets import BucketedFunction as BucketedFunction
from ._buckets import bucketed as bucketed
from ._buckets import pad_to_bucket as pad_to_bucket
from ._cells import BasicLSTMCell as BasicLSTMCell
from ._cells import BasicRNNCell as BasicRNNCell
from ._cells import GRUCell as GRUCell
from ._cells import LSTMCell as LSTMCell
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import save_checkpoint as save_checkpoint
from ._dynamic import bidirectional_dynamic_rnn as bidirectional_dynamic_rnn
from ._dynamic import dynamic_rnn as dynamic_rnn
from ._inspect import ProgramReport as ProgramReport
from ._inspect import inspect_program as inspect_program
from ._lengths import reverse_sequence as reverse_sequence
from ._memory import CheckpointEvery as CheckpointEvery
from ._memory import Recompute as Recompute
from ._memory import Revolve as Revolve
from ._memory import StoreAll as StoreAll
from ._serialize import load_weights as load_weights
from ._serialize import save_weights as save_weights
from ._static import static_bidirectional_rnn as static_bidirectional_rnn
from ._static import static_rnn as static_rnn
from ._tf1 import load_tf1_weights as load_tf1_weights
from ._tf1 import tf1_variable_names as tf1_variable_names
from ._tf1 import tf1_weights as tf1_weights
from ._train import RecurrentModel as RecurrentModel
from ._train import TrainConfig as TrainConfig
from ._train import TrainResult as TrainResult
from ._train import train as train
from ._wrappers import DropoutWrapper as DropoutWrapper
from ._wrappers import MultiRNNCell as MultiRNNCell
from ._wrappers import ResidualWrapper as ResidualWrapper

__version__ = "0.1.0"
