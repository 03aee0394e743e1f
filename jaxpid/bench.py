"""``jaxpid bench``: run the benchmark scripts of a jaxpid checkout, or print their results table.

The benchmarks are stand-alone scripts in ``benchmarks/`` beside the package (they are not
installed with it). This command finds that folder -- ``--scripts``, ``$JAXPID_BENCHMARKS``, the
checkout the package was imported from (``pip install -e .``), or ``./benchmarks`` when run
inside a clone -- and runs the scripts with this interpreter, one process each, so their
timings and JAX settings do not mix with this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = {"vs-pytorch": "bench_vs_pytorch.py", "throughput": "bench_throughput.py", "sweep": "bench_sweep.py"}


def find_benchmarks(explicit: str | Path | None = None) -> Path | None:
    """The benchmarks folder to use, or None if there is none to be found."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("JAXPID_BENCHMARKS"):
        candidates.append(Path(os.environ["JAXPID_BENCHMARKS"]))
    candidates.append(Path(__file__).resolve().parent.parent / "benchmarks")
    candidates.append(Path.cwd() / "benchmarks")
    for folder in candidates:
        if all((folder / script).is_file() for script in SCRIPTS.values()):
            return folder.resolve()
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxpid bench",
        description=(
            "Benchmark jaxpid: the same 2-source PID job against PyTorch (reference-style loop and "
            "best-effort batched/compiled), the fused estimator's throughput (evaluations/s, "
            "compile time, memory, MFU), and a bias sweep on the demo model (jobs/min, where the designed "
            "bias ranks). Results are printed and appended to benchmarks/results/."
        ),
        epilog="Arguments after '--' go to the benchmark script(s) unchanged.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="the demo model only; about 5 minutes per script on a 2-core CPU (1 for the sweep)")
    parser.add_argument("--only", choices=sorted(SCRIPTS), default=None, help="run one of the benchmarks")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown results table (README) from the saved rows and exit")
    parser.add_argument("--scripts", default=None, help="the benchmarks folder of a jaxpid checkout")
    return parser


def run_bench(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxpid bench``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, forwarded = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    folder = find_benchmarks(args.scripts)
    if folder is None:
        print(
            "jaxpid bench: error: the benchmark scripts were not found. They live in the benchmarks/ "
            "folder of a jaxpid checkout: run this inside the clone, or pass --scripts PATH "
            "(or set JAXPID_BENCHMARKS).",
            file=sys.stderr,
        )
        return 2
    if args.table:
        print(_load_common(folder).readme_table())
        return 0
    names = [args.only] if args.only else list(SCRIPTS)
    status = 0
    for name in names:
        command = [sys.executable, "-u", str(folder / SCRIPTS[name])]
        command += (["--quick"] if args.quick else []) + forwarded
        print(f"$ {' '.join(command)}", flush=True)
        status = subprocess.run(command, check=False).returncode or status
    return status


def _load_common(folder: Path):
    name = "jaxpid_benchmarks_common"
    if name not in sys.modules:  # dataclasses look their module up in sys.modules
        spec = importlib.util.spec_from_file_location(name, folder / "common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
