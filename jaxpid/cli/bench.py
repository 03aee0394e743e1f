"""``jaxpid bench``: run the benchmark programs shipped in ``jaxpid.bench``, or print their table.

Each program runs as ``python -m jaxpid.bench.<program>`` with this interpreter, one process
each, so their timings and JAX settings (one CPU device per core) do not mix with this process.
Nothing here needs a checkout: the programs ship with the package, and their rows go to
``--results DIR``, ``$JAXPID_BENCH_RESULTS``, ``benchmarks/results`` of the checkout jaxpid runs
from, or ``./benchmark-results`` (``jaxpid.bench.results.results_dir``). A program that needs an
optional extra (vs-pytorch: PyTorch and diffusers) says which, and how to install it.

This module only parses and prints; it imports nothing heavy (no JAX).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

from jaxpid.bench.results import readme_table

# name on the command line -> module of jaxpid.bench
PROGRAMS = {"vs-pytorch": "vs_pytorch", "throughput": "throughput", "sweep": "sweep"}


def program_module(name: str) -> str:
    return f"jaxpid.bench.{PROGRAMS[name]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxpid bench",
        description=(
            "Benchmark jaxpid: the same 2-source PID job against PyTorch (reference-style loop and "
            "best-effort batched/compiled), the fused estimator's throughput (evaluations/s, "
            "compile time, memory, MFU), and a bias sweep on the demo model (jobs/min, where the designed "
            "bias ranks). Results are printed and appended to the results folder (--results)."
        ),
        epilog=("Arguments after '--' go to the benchmark program(s) unchanged. Each program also runs on its "
                "own: python -m jaxpid.bench.vs_pytorch | throughput | sweep | estimator | variance (--help)."),
    )
    parser.add_argument("--quick", action="store_true",
                        help="the demo model only; about 5 minutes per program on a 2-core CPU (1 for the sweep)")
    parser.add_argument("--only", choices=sorted(PROGRAMS), default=None, help="run one of the benchmarks")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown results table (README) from the saved rows and exit")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="folder of the result rows (default: $JAXPID_BENCH_RESULTS, else benchmarks/results "
                             "of the jaxpid checkout, else ./benchmark-results)")
    return parser


def run_bench(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxpid bench``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, forwarded = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    if args.table:
        print(readme_table(args.results))
        return 0
    names = [args.only] if args.only else list(PROGRAMS)
    missing = [program_module(n) for n in names if importlib.util.find_spec(program_module(n)) is None]
    if missing:
        print(f"jaxpid bench: error: this jaxpid installation lacks {', '.join(missing)}: reinstall jaxpid",
              file=sys.stderr)
        return 2
    status = 0
    for name in names:
        command = [sys.executable, "-u", "-m", program_module(name)]
        command += (["--quick"] if args.quick else []) + (["--results", args.results] if args.results else [])
        command += forwarded
        print(f"$ {' '.join(command)}", flush=True)
        status = subprocess.run(command, check=False).returncode or status
    return status
