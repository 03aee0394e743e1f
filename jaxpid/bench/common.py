"""Shared by the benchmark programs: the environment record, result rows, timing helpers, FLOP
counts, device peaks, and jaxpid's fused pass (the public ``jaxpid.core.FusedPass``) compiled
apart from its runs.

Nothing here times anything by itself; the programs do. Every row a program appends carries
``environment()`` (``jaxpid.io.provenance.environment``: device, versions, git commit, load
average), so a number is never separated from the machine and the moment it was taken on. Rows
and the README table live in the light ``jaxpid.bench.results`` (re-exported here).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.bench.results import (
    append_rows,
    device_label,
    json_default,
    load_rows,
    markdown_table,
    readme_table,
    results_dir,
)
from jaxpid.core import FusedPass, LogisticSampler
from jaxpid.io.provenance import environment

__all__ = [
    "FusedPassTimer", "KNOWN_PEAKS_TFLOPS", "add_results_option", "append_rows", "best_of", "compile_fused_pass",
    "device_label", "device_peak", "device_peak_memory", "environment", "jaxpr_flops", "json_default", "load_note",
    "load_rows", "markdown_table", "measured_matmul_flops", "readme_table", "results_dir", "save_rows",
    "torch_matmul_flops", "xla_flops",
]

# ---------------------------------------------------------------------------------------------
# Result rows: where the programs append them.


def add_results_option(parser: argparse.ArgumentParser) -> None:
    """Every program's ``--results DIR`` and ``--no-save``."""
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="folder the result rows are appended to (default: $JAXPID_BENCH_RESULTS, else "
                             "benchmarks/results of the jaxpid checkout, else ./benchmark-results)")
    parser.add_argument("--no-save", action="store_true", help="print only; append no rows")


def save_rows(name: str, rows: Sequence[dict], args: argparse.Namespace) -> str:
    """Append ``rows`` as the program's options say; returns where they went (for printing)."""
    if args.no_save:
        return "nowhere (--no-save)"
    return str(append_rows(name, rows, results_dir(args.results)))


def load_note(max_ok: float = 1.5) -> str:
    """A warning when the 1-minute load average says other work is sharing the CPU."""
    load = os.getloadavg()[0]
    if load > max_ok:
        return f"WARNING: load average {load:.2f} > {max_ok}: other processes share the CPU; timings are pessimistic"
    return f"load average {load:.2f}"


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Minimum wall time of ``repeats`` calls (the least-disturbed run) and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ---------------------------------------------------------------------------------------------
# FLOPs and peaks.


def jaxpr_flops(fn: Callable, *args) -> int:
    """Analytic FLOPs of ``fn(*args)``: 2·MACs of every dot_general and convolution it traces.

    Elementwise work (norms, softmax, activations) is left out, as in the usual model FLOP
    counts. Loops are counted by trip count (scan) and once (while).
    """
    closed = jax.make_jaxpr(fn)(*args)
    return _count_jaxpr(closed.jaxpr)


def _count_jaxpr(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
            (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
            rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
            total += 2 * math.prod(lhs) * math.prod(rhs_free)
        elif name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out = eqn.outvars[0].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * math.prod(out) * math.prod(kernel) // out_features
        times = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in _subjaxprs(eqn.params):
            total += times * _count_jaxpr(sub)
    return total


def _subjaxprs(params: dict):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):  # a Jaxpr
                yield item
            elif hasattr(getattr(item, "jaxpr", None), "eqns"):  # a ClosedJaxpr
                yield item.jaxpr


def xla_flops(fn: Callable, *args, compile: bool = False) -> float | None:
    """XLA's HLO cost analysis of ``jax.jit(fn)`` (of the lowered module, or the compiled one)."""
    lowered = jax.jit(fn).lower(*args)
    analysis = lowered.compile().cost_analysis() if compile else lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


# Dense peak FLOP/s of known accelerators (vendor data sheets, without sparsity).
KNOWN_PEAKS_TFLOPS = {
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989.0,
    ("NVIDIA H100 80GB HBM3", "float32"): 494.0,  # TF32 tensor cores (XLA's default precision)
    ("NVIDIA H200", "bfloat16"): 989.0,
    ("NVIDIA H200", "float32"): 494.0,
    ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312.0,
    ("NVIDIA A100-SXM4-80GB", "float32"): 156.0,
    ("NVIDIA A100-SXM4-40GB", "bfloat16"): 312.0,
    ("NVIDIA A100-SXM4-40GB", "float32"): 156.0,
    ("NVIDIA H100 PCIe", "bfloat16"): 756.0,
    ("NVIDIA H100 PCIe", "float32"): 378.0,
    ("NVIDIA L4", "bfloat16"): 121.0,
    ("NVIDIA L4", "float32"): 60.0,
    # TPUs (per chip; device_kind as JAX reports it). XLA's default precision runs float32 matmuls
    # as one bf16 pass on a TPU, so the bf16 peak is the ceiling of both.
    ("TPU v4", "bfloat16"): 275.0,
    ("TPU v4", "float32"): 275.0,
    ("TPU v5 lite", "bfloat16"): 197.0,  # v5e
    ("TPU v5 lite", "float32"): 197.0,
    ("TPU v5", "bfloat16"): 459.0,  # v5p
    ("TPU v5", "float32"): 459.0,
    ("TPU v6 lite", "bfloat16"): 918.0,  # v6e (Trillium)
    ("TPU v6 lite", "float32"): 918.0,
}


def measured_matmul_flops(dtype=jnp.float32, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul under XLA: the practical peak of this device."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    matmul(a, a).block_until_ready()
    seconds, _ = best_of(lambda: matmul(a, a).block_until_ready(), repeats)
    return 2 * size**3 / seconds


def torch_matmul_flops(size: int = 2048, repeats: int = 5) -> float | None:
    """The same with PyTorch (oneDNN/MKL on CPU), for comparison; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    a = torch.randn(size, size)
    torch.mm(a, a)
    seconds, _ = best_of(lambda: torch.mm(a, a), repeats)
    return 2 * size**3 / seconds


def device_peak(dtype_name: str, peak_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained): given, looked up for known GPUs, or measured."""
    if peak_tflops:
        return peak_tflops * 1e12, "given on the command line"
    device = jax.devices()[0]
    known = KNOWN_PEAKS_TFLOPS.get((device.device_kind, dtype_name))
    if known:
        return known * 1e12, f"data-sheet dense peak of {device.device_kind}"
    measured = measured_matmul_flops(jnp.float32, repeats=10)
    return measured, "measured: best of 10 fp32 2048x2048 matmuls under XLA on this device (practical peak)"


# ---------------------------------------------------------------------------------------------
# The fused pass, compiled once and timed apart from its compilation.


@dataclasses.dataclass
class FusedPassTimer:
    """jaxpid's fused estimator pass for fixed shapes, with what XLA says about it."""

    run: Callable[[], Any]  # runs the compiled program on its arguments, waits for the result
    compile_s: float  # lowering + XLA compilation (when the program was built: compiled once per process)
    temp_bytes: int | None  # XLA's temporary-buffer size (peak scratch memory of the program)
    argument_bytes: int | None
    evaluations: int  # UNet evaluations per run (padding included)


def compile_fused_pass(denoiser, x, conds, *, n_samples: int, chunk: int, sampler=None, key_seed: int = 0,
                       devices: Sequence[jax.Device] | None = None) -> FusedPassTimer:
    """``jaxpid.information``'s fused pass (``jaxpid.core.FusedPass``) compiled for these
    shapes, by default on one device; ``conds`` is (S, ...), shared by the images of ``x``."""
    fused = FusedPass(denoiser, n_samples=n_samples, sampler=sampler or LogisticSampler(), chunk_size=chunk,
                      devices=jax.devices()[:1] if devices is None else devices)
    inputs = fused.prepare(x, conds, key=jax.random.key(key_seed))
    compiled = fused.compile(inputs)
    return FusedPassTimer(
        run=lambda: jax.block_until_ready(fused.run(inputs, compiled)),
        compile_s=compiled.compile_seconds,
        temp_bytes=compiled.temp_bytes,
        argument_bytes=compiled.argument_bytes,
        evaluations=compiled.evaluations,
    )


def device_peak_memory() -> int | None:
    """Peak bytes in use on device 0 (GPU/TPU); None where the backend does not track it (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")
