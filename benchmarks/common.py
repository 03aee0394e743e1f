"""Shared by the benchmark scripts: the environment record, JSON result rows and the README
table made from them, FLOP counts, device peaks, and jaxpid's fused pass compiled apart from
its runs.

Nothing here times anything by itself; the scripts do. Every row a script appends carries
``environment()`` (device, versions, git commit, load average), so a number is never separated
from the machine and the moment it was taken on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Environment and result rows.


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=REPO, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict:
    """Device, package versions, git commit, CPU and the load average right now."""
    device = jax.devices()[0]
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "n_devices": len(jax.devices()),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "diffusers": _version("diffusers"),
        "numpy": np.__version__,
        "jaxpid": _version("jaxpid"),
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(dirty),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def append_rows(name: str, rows: Sequence[dict], results_dir: Path = RESULTS_DIR) -> Path:
    """Append one JSON object per line to ``results_dir / f"{name}.jsonl"``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.jsonl"
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_json_default) + "\n")
    return path


def _json_default(value: Any):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_rows(name: str, results_dir: Path = RESULTS_DIR) -> list[dict]:
    path = results_dir / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """Rows -> a Markdown table; ``columns`` are (key, header) pairs, missing values as '–'."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            cells.append("–" if value is None else _format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def device_label(env: dict) -> str:
    """A short device name for tables: the CPU model and core count, or the accelerator."""
    if env.get("device", "").startswith("cpu"):
        return f"CPU {env.get('cpu') or '?'} ({env.get('cpu_count')} cores)"
    return env.get("device", "?").split(":", 1)[-1]


def _latest(rows: Sequence[dict], key: Callable[[dict], tuple]) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[key(row)] = row  # files are appended in time order
    return list(latest.values())


def readme_table(results_dir: Path = RESULTS_DIR) -> str:
    """The README's results tables, from the newest saved row per device and model."""
    shipped = lambda rows: [r for r in rows if r.get("code", r.get("jaxpid_code", "shipped")) == "shipped"]
    vs = _latest(shipped(load_rows("vs_pytorch", results_dir)), lambda r: (device_label(r["environment"]), r["model"]))
    for r in vs:
        r["_device"] = device_label(r["environment"])
        r["_best"] = f"{r['best_evals_per_s']:.4g} ({r['best_how']}{', bf16' if r['best_variant']['bf16'] else ''})"
        r["_ratio_a"] = f"{r['ratio_reference']:.2f}x"
        r["_ratio_b"] = f"{r['ratio_best']:.2f}x"
        r["_load"] = r["environment"]["loadavg"][0]
        r["_input"] = "x".join(str(d) for d in r["input_shape"])
    out = ["jaxpid vs PyTorch, one 2-source PID (4 x N UNet evaluations), fp32, steady state:", ""]
    out.append(markdown_table(vs, [
        ("_device", "device"), ("model", "model"), ("_input", "input"), ("n_samples", "N"),
        ("jaxpid_evals_per_s", "jaxpid evals/s"), ("reference_evals_per_s", "(a) reference evals/s"),
        ("_best", "(b) best PyTorch evals/s"), ("_ratio_a", "jaxpid / (a)"), ("_ratio_b", "jaxpid / (b)"),
        ("jaxpid_compile_s", "jaxpid compile s"), ("max_atom_diff_jaxpid_reference", "max atom diff (nats)"),
        ("_load", "load avg"),
    ]) if vs else "(no rows yet: run benchmarks/bench_vs_pytorch.py)")
    tp = shipped(load_rows("throughput", results_dir))
    newest: dict[tuple, str] = {}
    for r in tp:  # a run's rows share its environment record (and time)
        key = (device_label(r["environment"]), r["model"], r["dtype"], r["attention"])
        newest[key] = max(newest.get(key, ""), r["environment"]["time"])
    best: dict[tuple, dict] = {}
    for r in tp:  # the fastest chunk size of the newest run per device, model, dtype, attention
        key = (device_label(r["environment"]), r["model"], r["dtype"], r["attention"])
        if r["environment"]["time"] == newest[key] and (key not in best or r["evals_per_s"] > best[key]["evals_per_s"]):
            best[key] = r
    rows = list(best.values())
    for r in rows:
        r["_device"] = device_label(r["environment"])
        r["_mfu"] = f"{100 * r['mfu']:.1f}%"
        r["_temp"] = None if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
    out += ["", "Fused-estimator throughput (best chunk size; MFU against the peak named in the row):", ""]
    out.append(markdown_table(rows, [
        ("_device", "device"), ("model", "model"), ("dtype", "dtype"), ("attention", "attention"),
        ("batch", "batch"), ("evals_per_s", "evals/s"), ("achieved_gflop_s", "GFLOP/s"), ("_mfu", "MFU"),
        ("peak_gflop_s", "peak GFLOP/s"), ("compile_s", "compile s"), ("_temp", "temp MiB"),
    ]) if rows else "(no rows yet: run benchmarks/bench_throughput.py)")
    return "\n".join(out)


def _format(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3g}"
    return str(value)


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
class CompiledPass:
    """jaxpid's fused estimator pass for fixed shapes, with what XLA says about it."""

    run: Callable[[], Any]  # runs the compiled program on its arguments, waits for the result
    compile_s: float  # lowering + XLA compilation
    temp_bytes: int | None  # XLA's temporary-buffer size (peak scratch memory of the program)
    argument_bytes: int | None
    evaluations: int  # UNet evaluations per run (padding included)


def compile_fused_pass(denoiser, x, conds, *, n_samples: int, chunk: int, sampler=None,
                       key_seed: int = 0) -> CompiledPass:
    """Lower and compile ``jaxpid.information``'s fused pass on one device, as it would."""
    from jaxpid.estimator import _fused_pass, _image_keys, _Plan, _split_denoiser
    from jaxpid.sampling import LogisticSampler

    x = jnp.asarray(x)
    conds = jnp.broadcast_to(jnp.asarray(conds)[None], (x.shape[0],) + tuple(conds.shape))
    keys = _image_keys(jax.random.key(key_seed), x.shape[0])
    dynamic, static = _split_denoiser(denoiser)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    plan = _Plan(static, sampler or LogisticSampler(), n_samples, 0, chunk, mesh)
    t0 = time.perf_counter()
    with jax.threefry_partitionable(False):  # as jaxpid.information compiles it
        compiled = _fused_pass.lower(plan, dynamic, x, conds, keys).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    steps = math.ceil(x.shape[0] * n_samples / chunk)
    return CompiledPass(
        run=lambda: jax.block_until_ready(compiled(dynamic, x, conds, keys)),
        compile_s=compile_s,
        temp_bytes=None if memory is None else int(memory.temp_size_in_bytes),
        argument_bytes=None if memory is None else int(memory.argument_size_in_bytes),
        evaluations=steps * chunk * conds.shape[1],
    )


def device_peak_memory() -> int | None:
    """Peak bytes in use on device 0 (GPU/TPU); None where the backend does not track it (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")
