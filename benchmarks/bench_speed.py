"""Forward and forward+backward time of recurrax's RNN, GRU and LSTM against PyTorch and Flax.

The same measurement as ``recurrax bench``, which this script runs with its own arguments (see
``src/recurrax/apps/bench.py`` for what is timed and how); results are recorded in
``benchmarks/RESULTS.md`` under "Speed".

    python benchmarks/bench_speed.py --plot benchmarks/speed.png   # the full grid
    python benchmarks/bench_speed.py --quick                        # small sizes, < 2 minutes
    python benchmarks/bench_speed.py --quick --json speed.json      # and the results file
"""

from __future__ import annotations

import sys

from recurrax.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
