"""How many log-SNR samples a device evaluates per step: the fused pass's chunk size chosen from
the device's free memory rather than from a fixed cap.

The fused pass (``jaxpid.core.estimator``) scans each device's items in chunks of ``chunk``
samples; every sample is evaluated under all S conditionings, so one step is a denoiser batch of
``chunk × S`` evaluations, and the step's scratch memory grows linearly in it. A constant cap
(``DEFAULT_MAX_BATCH`` evaluations per step) is right for a CPU but far too small for an 80 GB
accelerator running the SD 2.1 UNet, where larger batches raise the MFU; so when no chunk size is
given and the devices track their memory, ``FusedPass.prepare`` compiles the default chunk once,
feeds its scratch size to this rule and re-plans with the chunk it returns (recorded in the
result's ``config["chunk_memory"]``).

The rule here is plain arithmetic on numbers, tested with made-up memory figures:

    usable  = headroom × (free_bytes − reserved_bytes)
    chunk   = ⌊ usable / (bytes_per_evaluation × S) ⌋, capped by max_chunk,
              then balanced over the device's items (equal steps, least padding) when their
              number is known, else rounded down to a power of two (fewer distinct shapes).

``free_device_memory`` reads the free bytes of a device from ``device.memory_stats()``; it is
None on backends that do not track device memory (the CPU), where the fixed cap stays the rule.
``bytes_per_evaluation`` turns a compiled pass's scratch size (``CompiledPass.temp_bytes``) into
the per-evaluation figure the rule needs.
"""

from __future__ import annotations

import math
from typing import Any

from jaxpid.core.config import check_int
from jaxpid.errors import ConfigError

DEFAULT_HEADROOM = 0.8  # share of the free memory a step may use: XLA needs room for outputs and fragmentation


def free_device_memory(device: Any) -> int | None:
    """Free bytes on ``device`` for XLA's allocator: ``bytes_limit − bytes_in_use``.

    Returns None where the backend does not track device memory (``memory_stats()`` is None or
    raises, as on the CPU) or reports no limit. On a GPU with JAX's default preallocation the
    limit is the preallocated pool, so this is what the pass can still allocate.
    """
    stats_of = getattr(device, "memory_stats", None)
    if stats_of is None:
        return None
    try:
        stats = stats_of()
    except Exception:  # backends raise different types (NotImplementedError, XlaRuntimeError) for "not tracked"
        return None
    if not stats:
        return None
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    if not limit:
        return None
    return max(0, int(limit) - int(stats.get("bytes_in_use", 0)))


def bytes_per_evaluation(temp_bytes: int, evaluations_per_step: int, fixed_bytes: int = 0) -> int:
    """One denoiser evaluation's share of a compiled pass's scratch memory (bytes, rounded up).

    Args:
      temp_bytes: the compiled pass's temporary-buffer size per device
        (``CompiledPass.temp_bytes``, from XLA's memory analysis).
      evaluations_per_step: the denoiser batch of one step on one device: ``chunk × S``.
      fixed_bytes: scratch that does not grow with the chunk (the accumulated maps,
        ``3 × I × S × H × W × 4`` bytes), subtracted first.
    """
    temp_bytes = check_int("temp_bytes", temp_bytes, 0)
    evaluations_per_step = check_int("evaluations_per_step", evaluations_per_step, 1)
    fixed_bytes = check_int("fixed_bytes", fixed_bytes, 0)
    return max(1, math.ceil(max(0, temp_bytes - fixed_bytes) / evaluations_per_step))


def chunk_size_for_memory(
    free_bytes: int,
    bytes_per_item: int,
    n_conditionings: int,
    *,
    reserved_bytes: int = 0,
    headroom: float = DEFAULT_HEADROOM,
    max_chunk: int | None = None,
    items_per_device: int | None = None,
    power_of_two: bool = True,
) -> int:
    """The largest chunk (log-SNR samples per device per step) whose step fits in free memory.

    Args:
      free_bytes: free device memory (``free_device_memory``).
      bytes_per_item: scratch bytes of one denoiser evaluation in the step's batch
        (``bytes_per_evaluation``); a sample costs ``n_conditionings`` of them.
      n_conditionings: S, the conditionings every sample is evaluated under.
      reserved_bytes: memory to leave alone (e.g. arguments not yet on the device).
      headroom: the share of the rest a step may use, in (0, 1].
      max_chunk: an upper bound (e.g. the caller's ``chunk_size`` cap).
      items_per_device: the samples one device evaluates in all (``⌈I × N / devices⌉``). When
        given, the chunk is balanced over them: the fewest steps the memory allows, split
        evenly, so no more padding is computed than needed.
      power_of_two: without ``items_per_device``, round down to a power of two (fewer distinct
        compiled shapes across jobs).

    Raises:
      ConfigError: invalid figures, or not even one sample (S evaluations) fits.
    """
    free_bytes = check_int("free_bytes", free_bytes, 0)
    bytes_per_item = check_int("bytes_per_item (bytes of one denoiser evaluation)", bytes_per_item, 1)
    n_conditionings = check_int("n_conditionings", n_conditionings, 1)
    reserved_bytes = check_int("reserved_bytes", reserved_bytes, 0)
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 < headroom <= 1:
        raise ConfigError(f"headroom must be a fraction in (0, 1], got {headroom!r}")
    if max_chunk is not None:
        max_chunk = check_int("max_chunk", max_chunk, 1)
    if items_per_device is not None:
        items_per_device = check_int("items_per_device", items_per_device, 1)

    usable = headroom * max(0, free_bytes - reserved_bytes)
    per_sample = bytes_per_item * n_conditionings
    fits = int(usable // per_sample)
    if fits < 1:
        raise ConfigError(
            f"not even one log-SNR sample fits in device memory: it needs {per_sample:,} bytes "
            f"({n_conditionings} conditionings x {bytes_per_item:,} bytes per evaluation), and "
            f"{headroom:g} x ({free_bytes:,} free - {reserved_bytes:,} reserved) = {int(usable):,} bytes may be used; "
            "use fewer conditionings, a smaller model dtype (bf16), or more devices"
        )
    chunk = fits if max_chunk is None else min(fits, max_chunk)
    if items_per_device is not None:
        steps = math.ceil(items_per_device / chunk)
        return math.ceil(items_per_device / steps)
    if power_of_two:
        chunk = 1 << (chunk.bit_length() - 1)
    return chunk


def chunk_size_for_device(device: Any, bytes_per_item: int, n_conditionings: int, **options) -> int | None:
    """``chunk_size_for_memory`` with the free memory of ``device``; None where it is not tracked
    (the CPU: keep the fixed cap there). ``options`` as in ``chunk_size_for_memory``."""
    free = free_device_memory(device)
    if free is None:
        return None
    return chunk_size_for_memory(free, bytes_per_item, n_conditionings, **options)
