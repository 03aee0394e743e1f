"""Benchmark result rows (one JSON object per line) and the README tables made from them.

Light on purpose (no JAX), so ``jaxpid bench --table`` prints at once. Rows are written through
``jaxpid.io.atomic.append_lines``: in jaxpid only ``jaxpid.io`` writes files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxpid.io.atomic import append_lines
from jaxpid.io.atomic import json_default as _io_json_default

ENV_VAR = "JAXPID_BENCH_RESULTS"
# <checkout>/benchmarks/results when jaxpid runs from a clone (jaxpid/bench/results.py -> <checkout>).
CHECKOUT_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
LOCAL_RESULTS = "benchmark-results"


def results_dir(explicit: str | Path | None = None) -> Path:
    """Where result rows go and are read from.

    ``explicit`` (a program's ``--results DIR``), else ``$JAXPID_BENCH_RESULTS``, else the
    ``benchmarks/results`` folder of the checkout jaxpid is imported from (when there is one),
    else ``./benchmark-results`` (created when a row is written).
    """
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if CHECKOUT_RESULTS.is_dir():
        return CHECKOUT_RESULTS
    return Path.cwd() / LOCAL_RESULTS


_resolve = results_dir  # for the functions below, whose ``results_dir`` argument shadows it


def json_default(value: Any):
    """JSON for numpy scalars and arrays, paths and configs (as jaxpid.io writes them); else str."""
    try:
        return _io_json_default(value)
    except TypeError:
        return str(value)


def append_rows(name: str, rows: Sequence[dict], results_dir: str | Path | None = None) -> Path:
    """Append one JSON object per line to ``<results dir>/<name>.jsonl``; returns the file."""
    folder = _resolve(results_dir)
    return append_lines(folder / f"{name}.jsonl", [json.dumps(row, default=json_default) for row in rows])


def load_rows(name: str, results_dir: str | Path | None = None) -> list[dict]:
    path = _resolve(results_dir) / f"{name}.jsonl"
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


def readme_table(results_dir: str | Path | None = None) -> str:
    """The README's results tables, from the newest saved row per device and model."""
    folder = _resolve(results_dir)
    shipped = lambda rows: [r for r in rows if r.get("code", r.get("jaxpid_code", "shipped")) == "shipped"]
    vs = _latest(shipped(load_rows("vs_pytorch", folder)), lambda r: (device_label(r["environment"]), r["model"]))
    for r in vs:
        r["_device"] = device_label(r["environment"])
        low = ", bf16" if r["best_variant"]["bf16"] else ", fp16" if r["best_variant"].get("fp16") else ""
        r["_best"] = f"{r['best_evals_per_s']:.4g} ({r['best_how']}{low})"
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
    ]) if vs else "(no rows yet: run python -m jaxpid.bench.vs_pytorch)")
    tp = shipped(load_rows("throughput", folder))
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
    ]) if rows else "(no rows yet: run python -m jaxpid.bench.throughput)")
    return "\n".join(out)


def _format(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3g}"
    return str(value)
