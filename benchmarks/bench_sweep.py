"""Thin wrapper: the program lives in the package, ``jaxpid.bench.sweep`` (``python -m jaxpid.bench.sweep``,
or ``jaxpid bench``); this script keeps ``python benchmarks/bench_sweep.py [options]`` working."""

import sys

from jaxpid.bench.sweep import main

if __name__ == "__main__":
    sys.exit(main())
