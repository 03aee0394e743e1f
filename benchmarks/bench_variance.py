"""Thin wrapper: the program lives in the package, ``jaxpid.bench.variance`` (``python -m jaxpid.bench.variance``);
this script keeps ``python benchmarks/bench_variance.py [options]`` working."""

import sys

from jaxpid.bench.variance import main

if __name__ == "__main__":
    sys.exit(main())
