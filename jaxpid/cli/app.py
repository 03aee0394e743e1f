"""The ``jaxpid`` command: parse, configure the process, run one command, report errors.

A command's handler module (which loads models) is imported when that command runs, so
``jaxpid --help`` and argument errors answer at once.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading

from jaxpid.cli.bench import run_bench
from jaxpid.cli.parsers import build_parser
from jaxpid.devices import use_compilation_cache, use_cpu_cores
from jaxpid.errors import JaxpidError
from jaxpid.io.atomic import release_all_outputs

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
    from_shell = argv is None  # the `jaxpid` command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: arguments after "--" go to the benchmark programs
        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    use_cpu_cores()  # before JAX starts: one CPU device per core unless the user chose (jaxpid.devices)
    use_compilation_cache()  # a second run reuses the compiled programs (JAXPID_CACHE_DIR=off: none)
    module, function = COMMANDS[args.command]
    handler = getattr(importlib.import_module(module), function)
    try:  # SIGTERM unwinds like Ctrl-C: staging folders removed, committed parts kept
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    previous_hook, sys.unraisablehook = sys.unraisablehook, functools.partial(_stop_again, sys.unraisablehook)
    try:
        return handler(args)
    except JaxpidError as error:
        print(f"jaxpid {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        code = 143 if isinstance(stop, Terminated) else 130
        print(f"jaxpid {args.command}: {'terminated' if code == 143 else 'interrupted'}; nothing half-written "
              "was left (committed parts are kept)", file=sys.stderr)
        if from_shell:
            # XLA's threads may still be inside the interrupted work: an interrupted compilation
            # goes on in XLA's compile thread pool, and an interrupted pass runs to its end. The
            # interpreter's teardown destroys the devices under them; the compile thread then
            # segfaults (PjRtLoadedExecutable::Create -> SingleDeviceSharding::Create on a freed
            # device: 3 of 4 tries without this exit). Everything is written or removed by now:
            # leave at once, running no destructor.
            release_all_outputs()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    finally:
        sys.unraisablehook = previous_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release_all_outputs()


class Terminated(BaseException):
    """SIGTERM, raised where the run is, so every cleanup on the way out runs."""


def _terminate(signum, frame):
    raise Terminated()


def _stop_again(previous_hook, unraisable) -> None:
    """A signal's exception raised where Python can only print and drop it, not unwind (a gc
    callback, a ``__del__``): send the signal again a moment later, from another thread (sent from
    here, its handler would raise inside this hook and be dropped again), so that it stops the run.
    Seen: Ctrl-C while the fused pass was lowered landed in JAX's gc callback, and the pass ran on."""
    stops = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}
    signum = next((s for kind, s in stops.items() if isinstance(unraisable.exc_value, kind)), None)
    if signum is None:
        previous_hook(unraisable)
        return
    threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
