"""One RNN layer's whole recurrence in one Pallas kernel launch (GPU), forward and backward.

``config.py`` (the family, the tiling, what fits on chip), ``kernels.py`` (the forward and
backward kernels), ``calls.py`` (their launches and the custom VJP), ``layer.py``
(:func:`pallas_layer`: its checks and padding) and
``cells.py`` (the cells and options it runs: ``dynamic_rnn(..., implementation="pallas")``).
Design notes and measurements: ``benchmarks/PALLAS_NOTES.md``.
"""

from .cells import cell_family as cell_family
from .cells import cell_params as cell_params
from .cells import pallas_dynamic_rnn as pallas_dynamic_rnn
from .cells import pallas_layers as pallas_layers
from .cells import unsupported as unsupported
from .config import MAX_TILES as MAX_TILES
from .config import RESIDENT_BYTES as RESIDENT_BYTES
from .config import RESIDENT_BYTES_BACKWARD as RESIDENT_BYTES_BACKWARD
from .config import Family as Family
from .config import plan_for as plan_for
from .layer import pallas_layer as pallas_layer
from .layer import project as project
