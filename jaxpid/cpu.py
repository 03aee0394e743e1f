"""One JAX CPU device per core, so the fused pass uses every core of a CPU-only machine.

XLA:CPU runs one program on one device with little parallelism across cores for the small
convolutions and matmuls of a UNet; the estimator shards its (image, sample) items over all
local devices, so splitting the host into one device per core puts every core to work. Measured
on the demo model (2 cores, ``benchmarks/bench_vs_pytorch.py``): 195 UNet evaluations/s as one
device, 256 as two. Results do not depend on the device count (each item draws from its own key).

This only takes effect before JAX starts its backends, hence at ``import jaxpid``; it leaves
JAX alone when the user chose already (``XLA_FLAGS=--xla_force_host_platform_device_count``,
``jax.config.update("jax_num_cpu_devices", n)``, or ``JAXPID_CPU_DEVICES=n``; ``0`` turns it off),
and it does not change which devices JAX uses by default on a GPU or TPU machine.
"""

from __future__ import annotations

import os

MAX_DEVICES = 8  # beyond this, more devices only add padding and per-device overhead


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_cpu_devices() -> int | None:
    """Ask JAX for one CPU device per core (at most ``MAX_DEVICES``); returns the count set, or
    None when the user chose already or JAX's backends are already running."""
    import jax

    wanted = os.environ.get("JAXPID_CPU_DEVICES")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if getattr(jax.config, "jax_num_cpu_devices", None) not in (-1, None):
        return None
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return None
    except (ImportError, AttributeError):
        return None
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
    jax.config.update("jax_num_cpu_devices", count)
    return count
