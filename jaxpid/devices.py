"""JAX runtime set-up, by explicit call only: one CPU device per core, and the persistent
compilation cache.

One JAX CPU device per core, so the fused pass uses every core of a CPU-only machine.

XLA:CPU runs one program on one device with little parallelism across cores for the small
convolutions and matmuls of a UNet; the estimator shards its (image, sample) items over all
local devices, so splitting the host into one device per core puts every core to work. Measured
on the demo model (2 cores, ``python -m jaxpid.bench.vs_pytorch``): 195 UNet evaluations/s as
one device, 256 as two. Results do not depend on the device count (each item draws from its own
key).

Importing jaxpid changes nothing: the ``jaxpid`` command (and its sweeps and benchmarks) call
``use_cpu_cores()`` first; a library user calls it right after ``import jax`` (or sets the usual
JAX option, ``jax.config.update("jax_num_cpu_devices", n)``, themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

CACHE_ENV = "JAXPID_CACHE_DIR"  # a folder for compiled programs, or "off"
CACHE_OFF = ("off", "0", "none", "false", "no")
MAX_DEVICES = 8  # beyond this, more devices only add padding and per-device overhead


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_cores(count: int | None = None) -> int | None:
    """Give JAX one CPU device per core (at most ``MAX_DEVICES``), or ``count`` of them.

    It must run before JAX starts its backends (before the first JAX computation). It leaves JAX
    alone when the user chose already: ``XLA_FLAGS=--xla_force_host_platform_device_count=n``,
    ``jax_num_cpu_devices`` set, or ``JAXPID_CPU_DEVICES=n`` in the environment (``0``: leave
    JAX's default). It does not change which devices JAX uses by default on a GPU or TPU machine.

    Returns:
      The number of CPU devices asked for, or None when nothing was changed (the user chose,
      one core, or JAX's backends were already running).
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if getattr(jax.config, "jax_num_cpu_devices", -1) not in (-1, None):
        return None
    if count is None:
        wanted = os.environ.get("JAXPID_CPU_DEVICES")
        if wanted is not None:
            try:
                count = int(wanted)
            except ValueError:
                return None
            if count <= 0:
                return None
        else:
            count = min(cpu_cores(), MAX_DEVICES)
    if count <= 1:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except RuntimeError:  # JAX's backends already run: the device count is fixed for this process
        return None
    return int(count)


def default_cache_dir() -> Path:
    """The platform's user cache folder for jaxpid's compiled programs ($XDG_CACHE_HOME/jaxpid/xla,
    ~/.cache/jaxpid/xla; ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxpid" / "xla"


def use_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep every compiled program in a persistent cache, so a new process reuses it instead of
    compiling again (the fused pass and generation compile for seconds to minutes).

    The folder is ``path``, else ``$JAXPID_CACHE_DIR``, else ``default_cache_dir()``;
    ``JAXPID_CACHE_DIR=off`` (or ``path="off"``) turns the cache off. A cached program gives the
    same numbers as a freshly compiled one. JAX creates the folder when it first writes; a folder
    it cannot write is skipped with a warning, never an error. The ``jaxpid`` command calls this
    for every run; a library user calls it once, before the first computation.

    Returns:
      The cache folder, or None when the cache is off.
    """
    value = os.fspath(path) if path is not None else os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in CACHE_OFF + ("",):
        return None
    folder = Path(value).expanduser() if value else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # jaxpid's programs are many and small (tests, toy models) as well as large: cache them all
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
