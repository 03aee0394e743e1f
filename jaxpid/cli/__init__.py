"""The ``jaxpid`` command line: the only code that parses arguments and prints results.

    app        main(): parse, configure the process (one JAX CPU device per core), dispatch
    parsers    the top-level subcommands' options (light: ``jaxpid --help`` loads no model code)
    study_parsers   ``jaxpid study <name>``'s options
    option_groups   the option groups commands share; defaults read from the config classes
    options    parsed arguments -> RunConfig / SweepConfig / ModelSpec / a study's estimator
    analysis   pid, mi, rerun, generate
    sweeps     sweep, report
    studies    the one executor of every study (run, resume, summarise, print)
    study_<name>   a study's arguments -> its config, items and plan
    toy        the Gaussian-mixture ground truth
    bench      jaxpid bench: runs the benchmark programs of jaxpid.bench
"""

from jaxpid.cli.app import main

__all__ = ["main"]
