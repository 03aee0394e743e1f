"""Thin wrapper: the program lives in the package, ``jaxpid.bench.adaptive`` (``python -m jaxpid.bench.adaptive``);
this script keeps ``python benchmarks/bench_adaptive.py [options]`` working."""

import sys

from jaxpid.bench.adaptive import main

if __name__ == "__main__":
    sys.exit(main())
