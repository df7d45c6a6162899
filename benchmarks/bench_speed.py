"""Forward and forward+backward time of recurrax's RNN, GRU and LSTM against PyTorch and Flax.

The same measurement as ``recurrax bench`` (see ``src/recurrax/_bench.py`` for what is timed
and how); results are recorded in ``benchmarks/RESULTS.md`` under "Speed".

    python benchmarks/bench_speed.py --plot benchmarks/speed.png   # the full grid
    python benchmarks/bench_speed.py --quick                        # small sizes, < 2 minutes
"""

from __future__ import annotations

import argparse
import sys

from recurrax._bench_report import add_bench_arguments, run_bench_cli

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    sys.exit(run_bench_cli(parser.parse_args()))
