"""The ``jaxpid`` command line: the only code that parses arguments and prints results.

    app        main(): parse, configure the process (one JAX CPU device per core), dispatch
    parsers    every subcommand's options (light: ``jaxpid --help`` loads no model code)
    options    parsed arguments -> RunConfig / SweepConfig / ModelSpec
    analysis   pid, mi, rerun, generate
    sweeps     sweep, report
    toy        the Gaussian-mixture ground truth
    bench      jaxpid bench: runs the benchmark programs of jaxpid.bench
"""

from jaxpid.cli.app import main

__all__ = ["main"]
