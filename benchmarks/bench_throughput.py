"""Thin wrapper: the program lives in the package, ``jaxpid.bench.throughput`` (``python -m jaxpid.bench.throughput``,
or ``jaxpid bench``); this script keeps ``python benchmarks/bench_throughput.py [options]`` working."""

import sys

from jaxpid.bench.throughput import main

if __name__ == "__main__":
    sys.exit(main())
