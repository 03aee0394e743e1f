"""Thin wrapper: the program lives in the package, ``jaxpid.bench.estimator`` (``python -m jaxpid.bench.estimator``);
this script keeps ``python benchmarks/bench_estimator.py [options]`` working."""

import sys

from jaxpid.bench.estimator import main

if __name__ == "__main__":
    sys.exit(main())
