"""The ``jaxpid`` command: parse, configure the process, run one command, report errors.

A command's handler module (which loads models) is imported when that command runs, so
``jaxpid --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib
import sys

from jaxpid.cli.bench import run_bench
from jaxpid.cli.parsers import build_parser
from jaxpid.devices import use_compilation_cache, use_cpu_cores
from jaxpid.errors import JaxpidError

# command -> (handler module, function)
COMMANDS = {
    "toy": ("jaxpid.cli.toy", "toy_command"),
    "pid": ("jaxpid.cli.analysis", "pid_command"),
    "mi": ("jaxpid.cli.analysis", "mi_command"),
    "rerun": ("jaxpid.cli.analysis", "rerun_command"),
    "generate": ("jaxpid.cli.analysis", "generate_command"),
    "sweep": ("jaxpid.cli.sweeps", "sweep_command"),
    "report": ("jaxpid.cli.sweeps", "report_command"),
    "study": ("jaxpid.cli.studies", "study_command"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: arguments after "--" go to the benchmark programs
        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    use_cpu_cores()  # before JAX starts: one CPU device per core unless the user chose (jaxpid.devices)
    use_compilation_cache()  # a second run reuses the compiled programs (JAXPID_CACHE_DIR=off: none)
    module, function = COMMANDS[args.command]
    handler = getattr(importlib.import_module(module), function)
    try:
        return handler(args)
    except JaxpidError as error:
        print(f"jaxpid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
