"""Thin wrapper: the program lives in the package, ``jaxpid.bench.vs_pytorch`` (``python -m jaxpid.bench.vs_pytorch``,
or ``jaxpid bench``); this script keeps ``python benchmarks/bench_vs_pytorch.py [options]`` working."""

import sys

from jaxpid.bench.vs_pytorch import main

if __name__ == "__main__":
    sys.exit(main())
